"""The DeepDesc CNN3 network, reproducing the Torch7 ``nn`` modules of the original models.

Architecture of the released models (Simo-Serra et al., ICCV 2015)::

    (B, 1, 64, 64) raw intensities in 0..255
    -> (x - mean) / std                        per-pixel 64x64 maps stored with the model
    -> conv 7x7, 32  -> tanh -> L2 pool 2/2 -> subtractive norm (5x5 Gaussian)   (B, 32, 29, 29)
    -> conv 6x6, 64  -> tanh -> L2 pool 3/3 -> subtractive norm (5x5 Gaussian)   (B, 64, 8, 8)
    -> conv 5x5, 128 -> tanh -> L2 pool 4/4                                       (B, 128, 1, 1)
    -> (B, 128)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import PATCH_SIZE, DescriptorNet
from .layers import LPPool2d, SubtractiveNorm2d, gaussian_kernel

__all__ = ["PATCH_SIZE", "DeepDescNet", "default_conf"]

default_conf: dict[str, Any] = {
    "arch": "cnn3",
    "channels": [32, 64, 128],
    "kernel_sizes": [7, 6, 5],
    "pool_sizes": [2, 3, 4],
    # Torch7 SpatialLPPooling = Square, SpatialAveragePooling, MulConstant(k*k), Sqrt:
    # sqrt(k*k * mean(x^2)), i.e. the L2 norm over each k x k window.
    "norm_kernel_size": 5,
    # "pixel": (x - mean_map) / std_map, as the original models (maps stored in the weights).
    # "patch": per-patch zero mean, unit variance (robust to contrast changes).
    "input_norm": "pixel",
    # L2-normalise the output descriptor (the original models do not).
    "l2_normalize": False,
    # Patch extraction the weights were trained for (deepdesc.patches.extract_patches arguments);
    # None: the library defaults, chosen for the original models.
    "region_scale": None,
    "blur_sigma": None,
}


class DeepDescNet(DescriptorNet):
    """DeepDesc descriptor network. (B, 1, 64, 64) float intensities in 0..255 -> (B, 128) float.

    ``conf`` overrides keys of :data:`default_conf`. Input normalisation lives inside the model:
    pass raw intensities. Use :func:`deepdesc.describe` for numpy/uint8 input, batching and validation.
    """

    arch = "cnn3"
    default_conf = default_conf

    def __init__(self, conf: dict[str, Any] | None = None):
        super().__init__(conf)
        c1, c2, c3 = self.conf["channels"]
        k1, k2, k3 = self.conf["kernel_sizes"]
        p1, p2, p3 = self.conf["pool_sizes"]
        size = PATCH_SIZE
        for k, p in zip((k1, k2, k3), (p1, p2, p3)):
            size = (size - k + 1) // p
        if size != 1:
            raise ValueError(f"layer sizes {self.conf} do not reduce a 64x64 patch to 1x1 (got {size})")
        self.conv1 = nn.Conv2d(1, c1, k1)
        self.pool1 = LPPool2d(p1)
        self.norm1 = SubtractiveNorm2d(c1, gaussian_kernel(self.conf["norm_kernel_size"]))
        self.conv2 = nn.Conv2d(c1, c2, k2)
        self.pool2 = LPPool2d(p2)
        self.norm2 = SubtractiveNorm2d(c2, gaussian_kernel(self.conf["norm_kernel_size"]))
        self.conv3 = nn.Conv2d(c2, c3, k3)
        self.pool3 = LPPool2d(p3)

    @property
    def descriptor_size(self) -> int:
        return self.conf["channels"][2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize_input(x)
        x = self.norm1(self.pool1(torch.tanh(self.conv1(x))))
        x = self.norm2(self.pool2(torch.tanh(self.conv2(x))))
        x = self.pool3(torch.tanh(self.conv3(x)))
        x = x.flatten(1)
        if self.conf["l2_normalize"]:
            x = F.normalize(x, dim=1)
        return x

    def static_state(self) -> tuple[str, ...]:
        """The LP pooling scales (Torch7 files store them; older ones are not k*k)."""
        return tuple(f"pool:{pool.kernel_size}:{pool.scale};" for pool in (self.pool1, self.pool2, self.pool3))

    def num_flops(self) -> int:
        """Multiply-accumulates x 2 of the convolutions for one 64x64 patch."""
        total, size, cin = 0, PATCH_SIZE, 1
        for cout, k, p in zip(self.conf["channels"], self.conf["kernel_sizes"], self.conf["pool_sizes"]):
            out = size - k + 1
            total += 2 * out * out * cout * cin * k * k
            size, cin = out // p, cout
        return total
