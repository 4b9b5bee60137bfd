"""Layer 1, networks: :class:`DescriptorNet` and its archs (CNN3 :class:`DeepDescNet`, :class:`CompactNet`,
TFeat :class:`TFeatNet`), their layers as pure functions, fast inference, ONNX export."""

from .base import PATCH_SIZE, DescriptorNet
from .cnn3 import DeepDescNet, default_conf
from .compact import CompactNet
from .factory import ARCHS, build_net
from .fast import FastDescriber, PreparedCompactNet, PreparedNet, PreparedTFeatNet, fast_describer, prepare_net
from .layers import LPPool2d, SubtractiveNorm2d, gaussian_kernel, l2_pool, normalize_patches, subtractive_norm
from .tfeat import TFeatNet

__all__ = [
    # base
    "PATCH_SIZE",
    "DescriptorNet",
    # cnn3
    "DeepDescNet",
    "default_conf",
    # compact
    "CompactNet",
    # tfeat
    "TFeatNet",
    # factory
    "ARCHS",
    "build_net",
    # fast
    "FastDescriber",
    "PreparedCompactNet",
    "PreparedNet",
    "PreparedTFeatNet",
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
