"""Layer 1, networks: CNN3's layers as pure functions, :class:`DeepDescNet`, fast inference, ONNX export."""

from .cnn3 import PATCH_SIZE, DeepDescNet, default_conf
from .fast import FastDescriber, PreparedNet, fast_describer
from .layers import LPPool2d, SubtractiveNorm2d, gaussian_kernel, l2_pool, normalize_patches, subtractive_norm

__all__ = [
    # cnn3
    "PATCH_SIZE",
    "DeepDescNet",
    "default_conf",
    # fast
    "FastDescriber",
    "PreparedNet",
    "fast_describer",
    # layers
    "LPPool2d",
    "SubtractiveNorm2d",
    "gaussian_kernel",
    "l2_pool",
    "normalize_patches",
    "subtractive_norm",
]
