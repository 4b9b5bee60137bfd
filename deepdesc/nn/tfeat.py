"""TFeat (Balntas, Riba, Ponsa, Mikolajczyk, BMVC 2016, "Learning local feature descriptors with triplets
and shallow convolutional neural networks"): ``conf["arch"] = "tfeat"``.

A shallow network at 32x32, with the interface of the others (64x64 patches of raw 0..255 intensities,
cut as CNN3's are), ~0.60 M parameters and ~12.6 MFLOP per patch (of which the linear layer is 1.0)::

    (B, 1, 64, 64) raw intensities in 0..255
    -> input normalisation ("patch": per-patch zero mean / unit std; "pixel": per-pixel maps)
    -> 2x2 average pooling (anti-aliased downsampling)                        (B, 1, 32, 32)
    -> conv 7x7, 32 -> tanh                                                   (B, 32, 26, 26)
    -> max pooling 2x2                                                        (B, 32, 13, 13)
    -> conv 6x6, 64 -> tanh                                                   (B, 64, 8, 8)
    -> flatten -> linear 4096 -> 128 -> tanh                                  (B, 128)
    -> L2 normalisation (``l2_normalize``)                                    (B, 128)

The paper's network takes 32x32 patches; the 2x2 average pooling here (as in
:class:`~deepdesc.nn.compact.CompactNet`) makes those from the project's 64x64 ones. Every layer has a
bias; there is no BatchNorm or dropout, so training and eval modes compute the same thing.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import PATCH_SIZE, DescriptorNet

__all__ = ["DESCRIPTOR_SIZE", "TFeatNet", "default_conf", "tfeat_shapes"]

DESCRIPTOR_SIZE = 128
POOLED_SIZE = PATCH_SIZE // 2  # after the 2x2 average pooling
CHANNELS = (32, 64)
KERNELS = (7, 6)
MAX_POOL = 2
MAP_SIZE = (POOLED_SIZE - KERNELS[0] + 1) // MAX_POOL - KERNELS[1] + 1  # 8: the last map is 8x8
FEATURES = CHANNELS[1] * MAP_SIZE * MAP_SIZE  # 4096 inputs to the linear layer

default_conf: dict[str, Any] = {
    "arch": "tfeat",
    # "patch": per-patch zero mean, unit variance (the paper's); "pixel": per-pixel mean/std maps in the weights
    "input_norm": "patch",
    "l2_normalize": True,
    # Patch extraction the weights were trained for (deepdesc.patches.extract_patches arguments);
    # None: the library defaults.
    "region_scale": None,
    "blur_sigma": None,
}


def tfeat_shapes() -> dict[str, tuple[int, ...]]:
    """The shapes of the learned tensors (state dict names, without the ``mean``/``std`` maps)."""
    (c1, c2), (k1, k2) = CHANNELS, KERNELS
    return {
        "conv1.weight": (c1, 1, k1, k1),
        "conv1.bias": (c1,),
        "conv2.weight": (c2, c1, k2, k2),
        "conv2.bias": (c2,),
        "fc.weight": (DESCRIPTOR_SIZE, FEATURES),
        "fc.bias": (DESCRIPTOR_SIZE,),
    }


class TFeatNet(DescriptorNet):
    """The TFeat network. (B, 1, 64, 64) float intensities in 0..255 -> (B, 128) float.

    ``conf`` overrides keys of :data:`default_conf` (the layer sizes are fixed). Modules ``conv1``
    (1 -> 32, 7x7), ``conv2`` (32 -> 64, 6x6) and ``fc`` (4096 -> 128), all with biases; initialised
    Glorot-uniform with the tanh gain and zero biases. A descriptor depends on its own patch only, in
    either mode.
    """

    arch = "tfeat"
    default_conf = default_conf

    def __init__(self, conf: dict[str, Any] | None = None):
        super().__init__(conf)
        self.conv1 = nn.Conv2d(1, CHANNELS[0], KERNELS[0])
        self.conv2 = nn.Conv2d(CHANNELS[0], CHANNELS[1], KERNELS[1])
        self.fc = nn.Linear(FEATURES, DESCRIPTOR_SIZE)
        gain = nn.init.calculate_gain("tanh")
        for layer in (self.conv1, self.conv2, self.fc):
            nn.init.xavier_uniform_(layer.weight, gain=gain)
            nn.init.zeros_(layer.bias)

    @property
    def descriptor_size(self) -> int:
        return DESCRIPTOR_SIZE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(self.normalize_input(x), 2)  # (B, 1, 32, 32)
        x = F.max_pool2d(torch.tanh(self.conv1(x)), MAX_POOL)  # (B, 32, 13, 13)
        x = torch.tanh(self.conv2(x)).flatten(1)  # (B, 4096)
        x = torch.tanh(self.fc(x))  # (B, 128)
        if self.conf["l2_normalize"]:
            x = F.normalize(x, dim=1)
        return x

    def num_flops(self) -> int:
        """Multiply-accumulates x 2 of the convolutions and the linear layer for one 64x64 patch."""
        size1 = POOLED_SIZE - KERNELS[0] + 1  # 26
        conv1 = size1 * size1 * CHANNELS[0] * KERNELS[0] ** 2
        conv2 = MAP_SIZE * MAP_SIZE * CHANNELS[1] * CHANNELS[0] * KERNELS[1] ** 2
        return 2 * (conv1 + conv2 + FEATURES * DESCRIPTOR_SIZE)
