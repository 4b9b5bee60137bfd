"""Layer 1, networks: :class:`DescriptorNet` and its archs (CNN3 :class:`DeepDescNet`, :class:`CompactNet`),
their layers as pure functions, fast inference, ONNX export."""

from .base import PATCH_SIZE, DescriptorNet
from .cnn3 import DeepDescNet, default_conf
from .compact import CompactNet
from .factory import ARCHS, build_net
from .fast import FastDescriber, PreparedCompactNet, PreparedNet, fast_describer, prepare_net
from .layers import LPPool2d, SubtractiveNorm2d, gaussian_kernel, l2_pool, normalize_patches, subtractive_norm

__all__ = [
    # base
    "PATCH_SIZE",
    "DescriptorNet",
    # cnn3
    "DeepDescNet",
    "default_conf",
    # compact
    "CompactNet",
    # factory
    "ARCHS",
    "build_net",
    # fast
    "FastDescriber",
    "PreparedCompactNet",
    "PreparedNet",
    "fast_describer",
    "prepare_net",
    # layers
    "LPPool2d",
    "SubtractiveNorm2d",
    "gaussian_kernel",
    "l2_pool",
    "normalize_patches",
    "subtractive_norm",
]
