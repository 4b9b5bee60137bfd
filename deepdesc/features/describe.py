"""Describe 64x64 patches: input validation, batching, device handling.

:func:`describe` validates its input (shape, dtype, NaN/inf, values far outside 0..255): patches from users.
:func:`describe_extracted` is the same computation for patches this library cut itself
(:func:`~deepdesc.features.patches.extract_patches` returns finite float32 0..255 by construction): it keeps
the cheap shape and dtype checks and skips the scans over every value, which cost a noticeable share of a
fast model's time.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch

from ..hub.registry import load_model
from ..nn.base import PATCH_SIZE, DescriptorNet
from ..nn.fast import chunk_bounds, fast_describer

__all__ = ["describe", "as_patch_tensor"]

DEFAULT_BATCH_SIZE = 512
_EXPECTED = "patches of shape (N, 64, 64) or (N, 1, 64, 64) with intensities in 0..255"


def _patch_tensor(patches: Any) -> tuple[torch.Tensor, bool]:
    """Type and shape checks only (no pass over the values): float32 (N, 1, 64, 64) and whether the input
    was floating point. Shares memory with a float32 contiguous numpy input."""
    if isinstance(patches, np.ndarray):
        if patches.dtype.kind not in "uif":
            raise ValueError(f"expected {_EXPECTED}; got a numpy array of dtype {patches.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(patches, dtype=np.float32))
        is_float = patches.dtype.kind == "f"
    elif isinstance(patches, torch.Tensor):
        if patches.is_complex() or patches.dtype == torch.bool:
            raise ValueError(f"expected {_EXPECTED}; got a tensor of dtype {patches.dtype}")
        is_float = patches.is_floating_point()
        x = patches.detach().float()
    else:
        raise TypeError(f"expected {_EXPECTED} as a numpy array or torch tensor; got {type(patches).__name__}")
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4 or tuple(x.shape[1:]) != (1, PATCH_SIZE, PATCH_SIZE):
        raise ValueError(f"expected {_EXPECTED}; got shape {tuple(patches.shape)}")
    return x, is_float


def _check_values(patches: Any, x: torch.Tensor, is_float: bool) -> None:
    """Raise for NaN/inf or values far outside 0..255; warn for floats that look scaled to 0..1.

    One min/max pass: ``torch.aminmax`` propagates NaN (documented) and an infinity becomes an extreme, so a
    non-finite extreme is exactly a non-finite input. uint8 input needs no pass at all.
    """
    if x.shape[0] == 0 or (isinstance(patches, np.ndarray) and patches.dtype == np.uint8):
        return
    if isinstance(patches, torch.Tensor) and patches.dtype == torch.uint8:
        return
    lo_t, hi_t = torch.aminmax(x)
    lo, hi = float(lo_t), float(hi_t)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("patches contain NaN or inf values; expected finite intensities in 0..255")
    if lo < -1.0 or hi > 256.0:
        raise ValueError(f"patch values span [{lo:g}, {hi:g}]; expected intensities in 0..255 (e.g. uint8 pixels)")
    if is_float and hi <= 1.0 and hi > 0.0:
        warnings.warn(
            f"patch values lie in [{lo:g}, {hi:g}]: they look scaled to 0..1, but deepdesc expects 0..255 "
            "intensities; multiply by 255",
            UserWarning,
            stacklevel=4,
        )


def as_patch_tensor(patches: Any) -> torch.Tensor:
    """Validate ``patches`` and return them as a float32 (N, 1, 64, 64) tensor on their device.

    Accepts numpy arrays or torch tensors of any real dtype. Raises ``ValueError`` for a wrong
    shape, dtype, NaN/inf, or values far outside 0..255; warns when floats look scaled to 0..1.
    """
    x, is_float = _patch_tensor(patches)
    _check_values(patches, x, is_float)
    return x


def _run(
    x: torch.Tensor,
    patches: Any,
    model: DescriptorNet | str | None,
    batch_size: int,
    device: str | torch.device | None,
    precision: str,
) -> Any:
    """The network on validated (N, 1, 64, 64) float32 ``x``; returns the kind of ``patches``."""
    if not isinstance(model, DescriptorNet):
        model = load_model("default" if model is None else model, device=device or "auto")
    elif device is not None:
        model = load_model(model, device=device)
    run_on = model.device
    out = torch.empty(x.shape[0], model.descriptor_size, dtype=torch.float32, device=run_on)
    fast = fast_describer(model, precision)  # eval-mode inference; never modifies the model
    with torch.inference_mode():
        for start, stop in chunk_bounds(x.shape[0], batch_size):  # no lone last patch: chunking-free values
            out[start:stop] = fast(x[start:stop].to(run_on, non_blocking=True))
    if isinstance(patches, np.ndarray):
        return out.cpu().numpy()
    return out.to(patches.device)


def describe(
    patches: Any,
    model: DescriptorNet | str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> Any:
    """Describe patches with a DeepDesc model. (N, 64, 64) or (N, 1, 64, 64) -> (N, D) float32 (D = 128).

    ``patches``: numpy array or torch tensor, uint8 or float, intensities 0..255.
    ``model``: a loaded network (any :class:`~deepdesc.nn.base.DescriptorNet`: CNN3, compact), a registry
    name or a model path; ``None`` is ``default``.
    ``device``: ``auto``, ``cpu`` or ``cuda``; ``None`` runs where the model is.
    ``precision``: ``fp32`` (default; same descriptors as the module to ~1e-6), ``bf16`` (CPU) or
    ``fp16`` (CUDA); see :mod:`deepdesc.fast` for their measured speed and accuracy.
    Returns the same kind as the input: a numpy array, or a tensor on the input's device.
    Patches are processed ``batch_size`` at a time so memory stays bounded for any N.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    x = as_patch_tensor(patches)
    return _run(x, patches, model, batch_size, device, precision)


def describe_extracted(
    patches: np.ndarray | torch.Tensor,
    model: DescriptorNet | str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> Any:
    """:func:`describe` for patches this library cut itself (``extract_patches``: (N, 64, 64) float32, finite,
    0..255 by construction): bit-identical descriptors, without the passes over every value that check user
    input (NaN/inf, range). Shape and dtype are still checked. Patches from users go through :func:`describe`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    x, _ = _patch_tensor(patches)
    return _run(x, patches, model, batch_size, device, precision)
