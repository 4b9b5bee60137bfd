"""Descriptor matching by L2 distance: nearest neighbour, mutual check, Lowe's ratio test, distance threshold.

The distance matrix is never built whole: ``desc1`` is processed ``chunk_size`` rows at a time and ``desc2``
``col_chunk_size`` rows at a time, keeping running per-row top-2 and per-column minimum statistics, so the
working memory is one ``chunk_size x min(N2, col_chunk_size)`` tile (float32: 4 bytes an entry; the default
2048 x 32768 tile is 256 MiB) plus O(N1 + N2) for the statistics, whatever N1 and N2 are.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..utils import resolve_device

__all__ = ["match_descriptors", "DEFAULT_CHUNK_SIZE", "DEFAULT_COL_CHUNK_SIZE"]

DEFAULT_CHUNK_SIZE = 2048
DEFAULT_COL_CHUNK_SIZE = 32768


def _as_descriptor_tensor(desc: Any, name: str) -> torch.Tensor:
    """Validate one descriptor array and return it as a 2-D real tensor (dtype kept, not copied when possible)."""
    if isinstance(desc, np.ndarray):
        if desc.dtype.kind not in "uif":
            raise ValueError(f"{name}: expected real-valued descriptors of shape (N, D); got dtype {desc.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(desc))
    elif isinstance(desc, torch.Tensor):
        if desc.is_complex() or desc.dtype == torch.bool:
            raise ValueError(f"{name}: expected real-valued descriptors of shape (N, D); got dtype {desc.dtype}")
        t = desc.detach()
    else:
        raise TypeError(f"{name}: expected a numpy array or torch tensor of shape (N, D); got {type(desc).__name__}")
    if t.ndim != 2:
        raise ValueError(f"{name}: expected descriptors of shape (N, D); got shape {tuple(t.shape)}")
    if t.shape[1] == 0:
        raise ValueError(f"{name}: descriptors have dimension D = 0")
    return t


def _empty() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((0, 2), dtype=np.int64), np.zeros((0,), dtype=np.float32)


def match_descriptors(
    desc1: Any,
    desc2: Any,
    mutual: bool = True,
    ratio: float | None = None,
    max_distance: float | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    col_chunk_size: int | None = DEFAULT_COL_CHUNK_SIZE,
    device: str | torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Match ``desc1`` (N1, D) to ``desc2`` (N2, D) by L2 distance -> matches (K, 2) int64, distances (K,) float32.

    Every row ``i`` of ``desc1`` proposes its nearest neighbour ``j`` in ``desc2``; the match ``(i, j)`` is kept
    when all the enabled tests pass:

    - ``mutual``: ``i`` is also the nearest neighbour of ``j`` among the rows of ``desc1``;
    - ``ratio``: Lowe's test ``d1 < ratio * d2`` with ``d1``, ``d2`` the nearest and second-nearest L2 distances
      (``0 < ratio <= 1``). With a single descriptor in ``desc2`` there is no second neighbour: ``d2`` is taken as
      +inf and the test passes (use ``max_distance`` to bound such matches). Ties are ambiguous and fail: when two
      rows of ``desc2`` are equally near, ``d1 == d2`` and the match is dropped;
    - ``max_distance``: ``d1 <= max_distance``.

    Ties for the nearest neighbour go to the lowest index (in both directions). Rows of the output are sorted by
    ``i``; ``distances`` are the L2 distances ``d1`` of the kept matches.

    Inputs are numpy arrays or torch tensors of any real dtype with the same D; they are compared in float64
    when either is float64, else in float32. Empty inputs give empty outputs. ``device``: ``None`` computes on
    ``desc1``'s device (CPU for numpy), or ``auto``/``cpu``/``cuda``. Memory: one ``chunk_size`` x
    ``min(N2, col_chunk_size)`` tile of distances at a time (``col_chunk_size=None``: all of ``desc2``).
    Neighbours are ranked with ``|a|^2 + |b|^2 - 2 a.b`` (one matrix product per tile); the returned distances,
    and the ``d1`` used by the tests, are recomputed directly as ``|a_i - b_j|`` for accuracy.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if col_chunk_size is not None and col_chunk_size < 1:
        raise ValueError(f"col_chunk_size must be positive or None, got {col_chunk_size}")
    if ratio is not None and not (0.0 < ratio <= 1.0):
        raise ValueError(f"ratio must lie in (0, 1], got {ratio}")
    if max_distance is not None and not max_distance >= 0.0:
        raise ValueError(f"max_distance must be non-negative, got {max_distance}")
    d1 = _as_descriptor_tensor(desc1, "desc1")
    d2 = _as_descriptor_tensor(desc2, "desc2")
    if d1.shape[1] != d2.shape[1]:
        raise ValueError(
            f"descriptor dimensions differ: desc1 is {tuple(d1.shape)}, desc2 is {tuple(d2.shape)} (need the same D)"
        )
    n1, n2 = d1.shape[0], d2.shape[0]
    if n1 == 0 or n2 == 0:
        return _empty()

    if device is None:
        run_on = d1.device
    else:
        run_on = resolve_device(device)
    dtype = torch.float64 if torch.float64 in (d1.dtype, d2.dtype) else torch.float32
    a = d1.to(run_on, dtype)
    b = d2.to(run_on, dtype)
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise ValueError("descriptors contain NaN or inf values")

    need_second = ratio is not None
    cols = n2 if col_chunk_size is None else min(col_chunk_size, n2)

    with torch.inference_mode():
        na = (a * a).sum(1)
        nb = (b * b).sum(1)
        # Running statistics (squared distances).
        best_d = torch.full((n1,), float("inf"), dtype=dtype, device=run_on)
        best_i = torch.zeros((n1,), dtype=torch.int64, device=run_on)
        second_d = torch.full((n1,), float("inf"), dtype=dtype, device=run_on) if need_second else None
        col_d = torch.full((n2,), float("inf"), dtype=dtype, device=run_on) if mutual else None
        col_i = torch.zeros((n2,), dtype=torch.int64, device=run_on) if mutual else None

        for r0 in range(0, n1, chunk_size):
            r1 = min(r0 + chunk_size, n1)
            a_chunk, na_chunk = a[r0:r1], na[r0:r1]
            for c0 in range(0, n2, cols):
                c1 = min(c0 + cols, n2)
                # tile = |a|^2 + |b|^2 - 2 a.b, clamped at 0 against rounding: (r1 - r0, c1 - c0).
                tile = torch.addmm(nb[c0:c1].unsqueeze(0), a_chunk, b[c0:c1].T, beta=1.0, alpha=-2.0)
                tile.add_(na_chunk.unsqueeze(1)).clamp_(min=0.0)
                if mutual:
                    # Column minima before the row minima are masked out below; earlier rows win ties.
                    cd, ci = tile.min(dim=0)
                    better = cd < col_d[c0:c1]
                    col_d[c0:c1] = torch.where(better, cd, col_d[c0:c1])
                    col_i[c0:c1] = torch.where(better, ci + r0, col_i[c0:c1])
                rd, ri = tile.min(dim=1)
                prev_d = best_d[r0:r1]
                better = rd < prev_d  # strict: earlier columns win ties
                if need_second:
                    tile.scatter_(1, ri.unsqueeze(1), float("inf"))
                    rd2 = tile.min(dim=1).values
                    # Top-2 of {best, second, rd, rd2}: the larger of the two minima competes with the seconds.
                    second_d[r0:r1] = torch.minimum(torch.maximum(prev_d, rd), torch.minimum(second_d[r0:r1], rd2))
                best_d[r0:r1] = torch.where(better, rd, prev_d)
                best_i[r0:r1] = torch.where(better, ri + c0, best_i[r0:r1])
                del tile

        # The expanded form loses ~eps * (|a|^2 + |b|^2) to cancellation: recompute the nearest distances directly.
        dist = torch.cat(
            [(a[r0 : r0 + chunk_size] - b[best_i[r0 : r0 + chunk_size]]).norm(dim=1) for r0 in range(0, n1, chunk_size)]
        )
        keep = torch.ones(n1, dtype=torch.bool, device=run_on)
        if mutual:
            keep &= col_i[best_i] == torch.arange(n1, device=run_on)
        if need_second:
            keep &= dist < ratio * second_d.sqrt()
        if max_distance is not None:
            keep &= dist <= max_distance
        idx1 = torch.nonzero(keep).squeeze(1)
        matches = torch.stack([idx1, best_i[idx1]], dim=1)
        distances = dist[idx1].float()
    return matches.cpu().numpy().astype(np.int64, copy=False), distances.cpu().numpy()
