"""A compact descriptor network (HardNet / L2-Net-like, at 32x32): ``conf["arch"] = "compact"``.

Same interface as CNN3 (64x64 patches of raw 0..255 intensities, cut as CNN3's are), a fifth of its
arithmetic at the default width 16 (~20 vs ~102 MFLOP per patch, ~0.6 M parameters)::

    (B, 1, 64, 64) raw intensities in 0..255
    -> input normalisation ("patch": per-patch zero mean / unit std; "pixel": per-pixel maps)
    -> 2x2 average pooling (anti-aliased downsampling)                        (B, 1, 32, 32)
    -> [conv 3x3, BN, ReLU] x 6, widths w, w, 2w, 2w, 4w, 4w, stride 2 at the 3rd and 5th
                                                                               (B, 4w, 8, 8)
    -> dropout (training only) -> conv 8x8, 128 -> BN                          (B, 128, 1, 1)
    -> flatten -> L2 normalisation                                             (B, 128)

Every BatchNorm is without affine parameters (HardNet, and L2-Net, which fixes them to 1 and 0):
a learned scale before ReLU is absorbed by the next convolution, and the L2-normalised output
makes the last one meaningless; without them weight decay does not fight a BN scale, and a
model file holds only convolution weights and running statistics. No convolution has a bias
(the BN after it would cancel it). At inference the BNs fold exactly into the convolutions
(:class:`deepdesc.nn.fast.PreparedCompactNet`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import PATCH_SIZE, DescriptorNet

__all__ = ["DESCRIPTOR_SIZE", "CompactNet", "conv_layout", "default_conf"]

DESCRIPTOR_SIZE = 128
POOLED_SIZE = PATCH_SIZE // 2  # after the 2x2 average pooling
_MULTIPLIERS = (1, 1, 2, 2, 4, 4)
_STRIDES = (1, 1, 2, 1, 2, 1)
HEAD_KERNEL = POOLED_SIZE // 4  # the 8x8 map after the two stride-2 convolutions

default_conf: dict[str, Any] = {
    "arch": "compact",
    # channels of the first 3x3 convolutions; the others have 2x and 4x as many
    "width": 16,
    # dropout probability before the last convolution (training only)
    "dropout": 0.1,
    # "patch": per-patch zero mean, unit variance; "pixel": per-pixel mean/std maps stored in the weights
    "input_norm": "patch",
    "l2_normalize": True,
    # Patch extraction the weights were trained for (deepdesc.patches.extract_patches arguments);
    # None: the library defaults.
    "region_scale": None,
    "blur_sigma": None,
}


def conv_layout(width: int) -> list[tuple[int, int, int, int, int]]:
    """(in channels, out channels, kernel, stride, padding) of the 7 convolutions of width ``width``."""
    layout, cin = [], 1
    for mult, stride in zip(_MULTIPLIERS, _STRIDES):
        layout.append((cin, mult * width, 3, stride, 1))
        cin = mult * width
    layout.append((cin, DESCRIPTOR_SIZE, HEAD_KERNEL, 1, 0))
    return layout


class CompactNet(DescriptorNet):
    """The compact network. (B, 1, 64, 64) float intensities in 0..255 -> (B, 128) float.

    ``conf`` overrides keys of :data:`default_conf`. Modules ``conv1``..``conv7`` (no bias) each
    followed by ``bn1``..``bn7`` (BatchNorm2d, no affine), ``dropout`` before ``conv7``. In training
    mode the BNs use batch statistics (a batch needs at least 2 patches) and dropout is active; in
    eval mode a descriptor depends on its own patch only.
    """

    arch = "compact"
    default_conf = default_conf

    def __init__(self, conf: dict[str, Any] | None = None):
        super().__init__(conf)
        width, dropout = self.conf["width"], self.conf["dropout"]
        if not isinstance(width, int) or isinstance(width, bool) or width < 1:
            raise ValueError(f"width must be a positive integer, got {width!r}")
        if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
        for i, (cin, cout, k, stride, pad) in enumerate(conv_layout(width), 1):
            if i == 7:
                self.dropout = nn.Dropout(float(dropout))
            setattr(self, f"conv{i}", nn.Conv2d(cin, cout, k, stride, pad, bias=False))
            setattr(self, f"bn{i}", nn.BatchNorm2d(cout, affine=False))
        for i in range(1, 8):  # HardNet's initialisation
            nn.init.orthogonal_(getattr(self, f"conv{i}").weight, gain=0.6)

    @property
    def descriptor_size(self) -> int:
        return DESCRIPTOR_SIZE

    def layers(self) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
        """The 7 (convolution, batch norm) pairs in order."""
        return [(getattr(self, f"conv{i}"), getattr(self, f"bn{i}")) for i in range(1, 8)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(self.normalize_input(x), 2)
        layers = self.layers()
        for conv, bn in layers[:-1]:
            x = F.relu(bn(conv(x)))
        conv, bn = layers[-1]
        x = bn(conv(self.dropout(x))).flatten(1)
        if self.conf["l2_normalize"]:
            x = F.normalize(x, dim=1)
        return x

    def num_flops(self) -> int:
        """Multiply-accumulates x 2 of the convolutions for one 64x64 patch."""
        total, size = 0, POOLED_SIZE
        for cin, cout, k, stride, pad in conv_layout(self.conf["width"]):
            size = (size + 2 * pad - k) // stride + 1
            total += 2 * size * size * cout * cin * k * k
        return total
