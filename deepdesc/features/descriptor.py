"""A patch descriptor ``nn.Module`` in kornia's convention, for kornia's LAF pipelines and ``torch.hub``.

kornia's descriptors (``kornia.feature.HardNet``, ``SIFTDescriptor``) take float patches in **0..1**;
DeepDesc's networks take raw intensities in **0..255**. :class:`DeepDescDescriptor` states the range it
expects (``input_range``) and rescales, so it plugs into ``kornia.feature.LAFDescriptor``::

    import kornia.feature as KF
    desc = KF.LAFDescriptor(DeepDescDescriptor(), patch_size=DeepDescDescriptor.patch_size)
    descriptors = desc(image_0_1, lafs)            # (B, 1, H, W) in 0..1 -> (B, N, 128)
"""

from __future__ import annotations

import os

import torch
from torch import nn

from ..hub.registry import load_model
from ..nn.base import PATCH_SIZE, DescriptorNet

__all__ = ["DeepDescDescriptor"]


class DeepDescDescriptor(nn.Module):
    """DeepDesc as a kornia-style patch descriptor. (B, 1, 64, 64) in 0..``input_range`` -> (B, 128) float32.

    ``model``: a registry name (``"default"``, ``"split1"``..``"split4"``), a .t7/.safetensors path or a
    network (any :class:`~deepdesc.nn.base.DescriptorNet`). ``input_range``: the value of white in the input,
    1.0 (kornia, default) or 255.0 (raw 8-bit intensities). Differentiable (it runs the network's own
    forward), so it can be fine-tuned.
    """

    patch_size: int = PATCH_SIZE

    def __init__(self, model: DescriptorNet | str | os.PathLike = "default", input_range: float = 1.0):
        super().__init__()
        if not input_range > 0:
            raise ValueError(f"input_range must be positive (1.0: 0..1 patches, 255.0: 0..255), got {input_range}")
        self.input_range = float(input_range)
        self.net = model if isinstance(model, DescriptorNet) else load_model(model, device="cpu")

    @property
    def descriptor_size(self) -> int:
        return self.net.descriptor_size

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        if patches.ndim != 4 or tuple(patches.shape[1:]) != (1, PATCH_SIZE, PATCH_SIZE):
            raise ValueError(
                f"expected patches of shape (B, 1, {PATCH_SIZE}, {PATCH_SIZE}) in 0..{self.input_range:g}, "
                f"got {tuple(patches.shape)}"
            )
        return self.net(patches.float() * (255.0 / self.input_range))

    def extra_repr(self) -> str:
        return f"input_range={self.input_range:g}, patch_size={self.patch_size}"
