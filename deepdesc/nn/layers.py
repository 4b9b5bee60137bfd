"""The networks' layers as pure functions, and the Torch7-named modules built on them.

One definition of each operation serves three callers: the networks (:class:`~deepdesc.nn.cnn3.DeepDescNet`,
:class:`~deepdesc.nn.compact.CompactNet`; training and reference forward), :mod:`deepdesc.nn.fast`
(prepared CPU/GPU inference, in place) and :mod:`deepdesc.nn.export` (ONNX). Flags select the
variants; the arithmetic is the same.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LPPool2d",
    "SubtractiveNorm2d",
    "border_coefficient",
    "fold_batch_norm",
    "gaussian_kernel",
    "l2_pool",
    "normalize_patches",
    "shared_kernel",
    "subtractive_norm",
    "tanh_l2_pool",
]

INPUT_NORMS = ("pixel", "patch")


def gaussian_kernel(size: int = 5, sigma_fraction: float = 0.25) -> torch.Tensor:
    """Torch7 ``image.gaussian(size)``: peak 1, sigma = ``sigma_fraction * size`` px. (size, size)."""
    x = torch.arange(1, size + 1, dtype=torch.float64)
    center = (size + 1) / 2
    g = torch.exp(-0.5 * ((x - center) / (sigma_fraction * size)) ** 2)
    return torch.outer(g, g).float()


def normalize_patches(
    x: torch.Tensor, mode: str, mean: torch.Tensor | None = None, inv_std: torch.Tensor | None = None
) -> torch.Tensor:
    """Raw 0..255 patches -> the network's input. (B, 1, 64, 64) -> (B, 1, 64, 64).

    ``mode="pixel"``: ``(x - mean) * inv_std`` with the per-pixel (1, 64, 64) maps of the original
    models; ``"patch"``: per-patch zero mean and ``1 / (std + 1)`` scale (robust to contrast).
    """
    if mode == "pixel":
        return (x - mean) * inv_std
    if mode == "patch":
        mu = x.mean(dim=(1, 2, 3), keepdim=True)
        sd = x.std(dim=(1, 2, 3), keepdim=True)
        return (x - mu) / (sd + 1.0)
    raise ValueError(f"input_norm must be one of {INPUT_NORMS}, got {mode!r}")


def l2_pool(x: torch.Tensor, kernel_size: int, scale: float) -> torch.Tensor:
    """Torch7 ``SpatialLPPooling`` (p = 2): ``sqrt(scale * avg_pool(x^2))``. (B, C, H, W) -> (B, C, H/k, W/k).

    Non-overlapping ``kernel_size`` windows; trailing rows/columns that do not fill one are dropped.
    """
    k = kernel_size
    return torch.sqrt(F.avg_pool2d(x * x, k, k) * scale)


def tanh_l2_pool(
    y: torch.Tensor, kernel_size: int, scale: float, via_sigmoid: bool = False, inplace: bool = False
) -> torch.Tensor:
    """``l2_pool(tanh(y))``, optionally in place and via the sigmoid. (B, C, H, W) -> (B, C, H/k, W/k).

    ``via_sigmoid``: ``y`` holds ``2 * y`` (the factor folded into the convolution weights) and
    ``tanh(y) = 2 sigmoid(2y) - 1`` is used, which ATen computes ~6x faster than tanh on CPU.
    ``inplace`` overwrites ``y`` (inference only).
    """
    if not (via_sigmoid or inplace):
        return l2_pool(torch.tanh(y), kernel_size, scale)
    k = kernel_size
    factor = scale / (k * k)
    if via_sigmoid:
        t = y.sigmoid_().sub_(0.5) if inplace else torch.sigmoid(y) - 0.5
        factor *= 4.0  # tanh^2 = 4 (sigmoid(2y) - 1/2)^2
    else:
        t = y.tanh_()
    t = t.mul_(t) if inplace else t * t
    s = F.avg_pool2d(t, k, k, divisor_override=1)
    if inplace:
        return s.mul_(factor).sqrt_() if factor != 1.0 else s.sqrt_()
    return torch.sqrt(s * factor)


def border_coefficient(weight: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The subtractive normalisation filter's response to an all-ones map: (1, 1, H, W).

    1 inside, less than 1 within ``k // 2`` of the border (where zero padding biases the local mean).
    ``weight``: (1, C, k, k), the per-plane filter.
    """
    ones = torch.ones(1, weight.shape[1], height, width, dtype=weight.dtype, device=weight.device)
    return F.conv2d(ones, weight, padding=(weight.shape[2] // 2, weight.shape[3] // 2))


def subtractive_norm(
    x: torch.Tensor, weight: torch.Tensor, inv_coef: torch.Tensor, inplace: bool = False
) -> torch.Tensor:
    """Torch7 ``SpatialSubtractiveNormalization``: ``x - local_mean / coef``. (B, C, H, W) -> (B, C, H, W).

    ``weight``: (1, C, k, k) per-plane filter, or (1, 1, k, k) when all planes share one kernel (as in
    every Torch7 model); then the local mean is one channel sum and a single-channel convolution.
    ``inv_coef``: ``1 / border_coefficient`` for this (H, W), broadcastable to (1, 1, H, W).
    """
    pad = (weight.shape[2] // 2, weight.shape[3] // 2)
    src = x.sum(1, keepdim=True) if weight.shape[1] == 1 and x.shape[1] != 1 else x
    local = F.conv2d(src, weight.to(x.dtype), padding=pad)
    if inplace:
        return x.sub_(local.mul_(inv_coef))
    return x - local * inv_coef


def fold_batch_norm(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d
) -> tuple[torch.Tensor, torch.Tensor]:
    """A convolution followed by eval-mode ``bn``, as one convolution: (weight, bias) in float32.

    ``bn(conv(x)) = (conv(x) - running_mean) / sqrt(running_var + eps) * gamma + beta`` is linear in
    the convolution's output, so it scales each output channel's weights and shifts its bias. Computed
    in float64 and rounded once. ``weight``: (Cout, Cin, kh, kw); ``bias``: (Cout,) or None.
    """
    scale = (bn.running_var.detach().double() + bn.eps).rsqrt()
    if bn.affine:
        scale = scale * bn.weight.detach().double()
    shift = -bn.running_mean.detach().double() * scale
    if bias is not None:
        shift = shift + bias.detach().double() * scale
    if bn.affine:
        shift = shift + bn.bias.detach().double()
    folded = weight.detach().double() * scale.view(-1, *([1] * (weight.ndim - 1)))
    return folded.float(), shift.float()


def shared_kernel(weight: torch.Tensor) -> torch.Tensor:
    """(1, C, k, k) -> (1, 1, k, k) when every plane has the same kernel, else ``weight`` unchanged."""
    if torch.equal(weight, weight[:, :1].expand_as(weight)):
        return weight[:, :1].contiguous()
    return weight


class LPPool2d(nn.Module):
    """Torch7 ``SpatialLPPooling`` with p = 2 as stored in the models. (B, C, H, W) -> (B, C, H/k, W/k).

    ``sqrt(scale * avg_pool(x^2))`` with the stored ``scale`` (= k*k) and non-overlapping windows;
    trailing rows/columns that do not fill a window are dropped (floor mode).
    """

    def __init__(self, kernel_size: int, scale: float | None = None):
        super().__init__()
        self.kernel_size = kernel_size
        self.scale = float(kernel_size * kernel_size if scale is None else scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return l2_pool(x, self.kernel_size, self.scale)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, scale={self.scale:g}"


class SubtractiveNorm2d(nn.Module):
    """Torch7 ``SpatialSubtractiveNormalization`` with a 2-D kernel. (B, C, H, W) -> (B, C, H, W).

    Subtracts a local mean taken over a kernel-weighted neighbourhood *and across all planes*:
    ``local = sum_c conv(zero_pad(x_c), w_c)`` with ``w = kernel / (kernel.sum() * C)``. Near the
    border the zero padding biases that mean towards 0, so Torch7 divides it by ``coef``, the same
    filter applied to an all-ones input (:func:`border_coefficient`).
    """

    def __init__(self, channels: int, kernel: torch.Tensor | None = None):
        super().__init__()
        kernel = gaussian_kernel() if kernel is None else torch.as_tensor(kernel, dtype=torch.float32)
        if kernel.ndim != 2 or kernel.shape[0] % 2 == 0 or kernel.shape[1] % 2 == 0:
            raise ValueError(f"subtractive normalisation needs an odd 2-D kernel, got {tuple(kernel.shape)}")
        weight = (kernel / (kernel.sum() * channels)).expand(1, channels, *kernel.shape)
        self.register_buffer("weight", weight.contiguous())

    def border_coef(self, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
        """The filter's response to an all-ones map, (1, 1, H, W), in ``like``'s dtype and device."""
        return border_coefficient(self.weight.to(device=like.device, dtype=like.dtype), height, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return subtractive_norm(x, self.weight, 1.0 / self.border_coef(x.shape[2], x.shape[3], x))
