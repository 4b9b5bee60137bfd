"""Recover the 3D-point groups of a PhotoTour (Brown) set without ``info.txt``.

The Brown data sets store the patches of one 3D point consecutively (sheet after sheet, row-major), each point
with at least two patches. So a set's ``info.txt`` can be rebuilt from the sequence itself: a new point starts
where a patch no longer looks like its predecessors.

The detector:

1. describe every patch: ``rootsift`` (OpenCV SIFT of the patch centre, upright, ``region`` px wide,
   L1-normalised and square-rooted; no learned model, so nothing was trained on the data it is measured on) or
   ``deepdesc`` (a DeepDesc model's descriptors, unit length);
2. the *link distance* between patch ``b - 1`` and patch ``b`` is the distance of their descriptors; with
   ``bridge`` it is the smallest distance of the pairs ``(b-1, b)``, ``(b-2, b)`` and ``(b-1, b+1)``, all
   of which straddle the boundary, so a single odd view inside a group (occlusion, blur) does not split it;
3. a boundary is where the link distance exceeds ``threshold``, under the prior that every group has at least
   ``min_size`` patches: the boundaries minimise ``sum(threshold - link[b])`` over the chosen boundaries (plain
   thresholding without the prior) subject to that minimum group size, solved exactly by dynamic programming.

Thresholds were chosen on validation sheets of a labelled set (``bench/phototour_groups.py``).
:func:`grouping_metrics` scores a grouping against known labels. All functions are pure; only
:func:`recover_groups` reads sheets, through :class:`~deepdesc.datasets.phototour.PhotoTour`.
"""

from __future__ import annotations

import os
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from ..errors import DatasetFormatError
from ..features.describe import describe
from ..hub.registry import load_model
from ..nn.base import DescriptorNet
from .phototour import PATCH_SIZE, PhotoTour

__all__ = [
    "DEFAULT_METHOD",
    "DEFAULT_THRESHOLDS",
    "METHODS",
    "boundaries_from_ids",
    "group_statistics",
    "grouping_metrics",
    "ids_from_boundaries",
    "infer_groups",
    "link_distances",
    "patch_descriptors",
    "recover_groups",
    "rootsift_patches",
    "segment",
]

METHODS = ("rootsift", "deepdesc")
DEFAULT_METHOD = "rootsift"
#: Link-distance thresholds (unit-length descriptors, L2) chosen on validation sheets (bench/phototour_groups.py).
DEFAULT_THRESHOLDS = {"rootsift": 0.50, "deepdesc": 1.00}
#: Side in pixels of the patch centre that the RootSIFT descriptor covers.
DEFAULT_REGION = 32.0
_MOSAIC = 16  # patches per mosaic row: SIFT runs on 16x16 mosaics, the size of one sheet


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")


def rootsift_patches(patches: np.ndarray, region: float = DEFAULT_REGION, progress: bool = False) -> np.ndarray:
    """RootSIFT of the centre of each patch. (N, 64, 64) uint8 -> (N, 128) float32, unit L2 rows.

    Upright SIFT (the patches are already oriented) whose 4x4 grid spans ``region`` pixels around the patch
    centre; the patches are laid out as 16x16 mosaics so OpenCV builds one scale space per 256 patches.
    ``region`` up to ~48 keeps every sample inside its own patch.
    """
    patches = np.asarray(patches)
    if patches.ndim != 3 or patches.shape[1:] != (PATCH_SIZE, PATCH_SIZE):
        raise ValueError(f"expected patches of shape (N, {PATCH_SIZE}, {PATCH_SIZE}), got {patches.shape}")
    if not 4.0 <= region <= 48.0:
        raise ValueError(f"region must be 4..48 px (the patch centre), got {region}")
    n = len(patches)
    out = np.zeros((n, 128), np.float32)
    per = _MOSAIC * _MOSAIC
    sift = cv2.SIFT_create()
    centre = (PATCH_SIZE - 1) / 2.0
    starts = range(0, n, per)
    for start in tqdm(starts, desc="rootsift", unit="sheet", disable=not progress):
        block = np.zeros((per, PATCH_SIZE, PATCH_SIZE), np.uint8)
        part = patches[start : start + per]
        block[: len(part)] = part
        side = _MOSAIC * PATCH_SIZE
        mosaic = block.reshape(_MOSAIC, _MOSAIC, PATCH_SIZE, PATCH_SIZE).transpose(0, 2, 1, 3).reshape(side, side)
        keypoints = [
            cv2.KeyPoint(float(k % _MOSAIC * PATCH_SIZE + centre), float(k // _MOSAIC * PATCH_SIZE + centre),
                         region / 6.0, 0.0, 0.0, 0, k)
            for k in range(len(part))
        ]  # fmt: skip
        got, desc = sift.compute(np.ascontiguousarray(mosaic), keypoints)
        if desc is not None:
            out[start + np.array([k.class_id for k in got], np.int64)] = desc
    out = np.sqrt(out / (out.sum(axis=1, keepdims=True) + 1e-7))
    return out.astype(np.float32)


def patch_descriptors(
    patches: np.ndarray,
    method: str = DEFAULT_METHOD,
    model: DescriptorNet | str | None = None,
    region: float = DEFAULT_REGION,
    progress: bool = False,
) -> np.ndarray:
    """Unit-length descriptors for grouping. (N, 64, 64) uint8 -> (N, D) float32.

    ``method``: ``rootsift`` (:func:`rootsift_patches` with ``region``) or ``deepdesc`` (``model``: a loaded
    network, registry name or path; ``None`` is the packaged default).
    """
    _check_method(method)
    if method == "rootsift":
        return rootsift_patches(patches, region=region, progress=progress)
    chunks = []
    if not isinstance(model, DescriptorNet):  # load once, not per chunk
        model = load_model("default" if model is None else model, device="cpu")
    step = 2048
    for start in tqdm(range(0, len(patches), step), desc="deepdesc", unit="chunk", disable=not progress):
        chunks.append(describe(np.asarray(patches[start : start + step]), model=model))
    desc = np.concatenate(chunks) if chunks else np.zeros((0, model.descriptor_size), np.float32)
    return (desc / (np.linalg.norm(desc, axis=1, keepdims=True) + 1e-12)).astype(np.float32)


def link_distances(descriptors: np.ndarray, bridge: bool = True) -> np.ndarray:
    """Distance across each possible boundary. (N, D) -> (N - 1,) float64; entry ``b - 1`` is between patches
    ``b - 1`` and ``b``: their L2 distance, or with ``bridge`` the least of the pairs (b-1, b), (b-2, b),
    (b-1, b+1)."""
    d = np.asarray(descriptors, np.float64)
    n = len(d)
    if n < 2:
        return np.zeros(0, np.float64)
    link = np.linalg.norm(d[1:] - d[:-1], axis=1)
    if bridge and n >= 3:
        skip = np.linalg.norm(d[2:] - d[:-2], axis=1)  # skip[k]: (k, k + 2)
        link[1:] = np.minimum(link[1:], skip)  # boundary b >= 2: pair (b - 2, b)
        link[:-1] = np.minimum(link[:-1], skip)  # boundary b <= n - 2: pair (b - 1, b + 1)
    return link


def segment(link: np.ndarray, threshold: float, min_size: int = 2) -> np.ndarray:
    """Boundaries (N - 1,) bool from link distances (N - 1,): where ``link > threshold``, subject to every group
    holding at least ``min_size`` patches (exact: minimises ``sum(threshold - link)`` over the boundaries).

    ``min_size=1`` is plain thresholding. Fewer than ``min_size`` patches in all: one group.
    """
    link = np.asarray(link, np.float64)
    if link.ndim != 1:
        raise ValueError(f"link distances must be 1-D, got shape {link.shape}")
    if min_size < 1:
        raise ValueError(f"min_size must be >= 1, got {min_size}")
    n = len(link) + 1
    if min_size == 1:
        return link > threshold
    if n < 2 * min_size:
        return np.zeros(n - 1, bool)
    gain = threshold - link  # cost of a boundary before patch b is gain[b - 1]; negative = wanted
    cost = np.full(n + 1, np.inf)  # cost[j]: best segmentation of patches [0, j) ending a group at j
    back = np.zeros(n + 1, np.int64)  # where that last group starts
    cost[0] = 0.0
    best_i, best = 0, 0.0  # min over starts i <= j - min_size of cost[i] + boundary cost at i
    for j in range(min_size, n + 1):
        i = j - min_size
        if i > 0 and np.isfinite(cost[i]):
            cand = cost[i] + gain[i - 1]
            if cand < best:
                best, best_i = cand, i
        cost[j], back[j] = best, best_i
    bounds = np.zeros(n - 1, bool)
    j = n
    while j > 0:
        i = back[j]
        if i > 0:
            bounds[i - 1] = True
        j = i
    return bounds


def ids_from_boundaries(boundaries: np.ndarray) -> np.ndarray:
    """Point ids 0, 1, ... of consecutive groups. (N - 1,) bool -> (N,) int64."""
    b = np.asarray(boundaries, bool)
    return np.concatenate([[0], np.cumsum(b)]).astype(np.int64)


def boundaries_from_ids(point_ids: np.ndarray) -> np.ndarray:
    """Where a new point starts. (N,) ids -> (N - 1,) bool (entry ``b - 1``: patch ``b`` starts a point)."""
    ids = np.asarray(point_ids).reshape(-1)
    return ids[1:] != ids[:-1]


def infer_groups(
    patches: np.ndarray,
    method: str = DEFAULT_METHOD,
    threshold: float | None = None,
    bridge: bool = True,
    min_size: int = 2,
    model: DescriptorNet | str | None = None,
    region: float = DEFAULT_REGION,
    progress: bool = False,
) -> np.ndarray:
    """3D-point ids of patches stored point after point, as in Brown's sets. (N, 64, 64) uint8 -> (N,) int64,
    0, 1, 2, ... in order. ``threshold`` ``None``: :data:`DEFAULT_THRESHOLDS` of ``method`` (module docs)."""
    patches = np.asarray(patches)
    if patches.ndim != 3 or patches.shape[1:] != (PATCH_SIZE, PATCH_SIZE):
        raise ValueError(f"expected patches of shape (N, {PATCH_SIZE}, {PATCH_SIZE}), got {patches.shape}")
    _check_method(method)
    threshold = DEFAULT_THRESHOLDS[method] if threshold is None else float(threshold)
    if not np.isfinite(threshold) or threshold <= 0:
        raise ValueError(f"threshold must be a positive distance (unit-length descriptors: 0..2), got {threshold}")
    desc = patch_descriptors(patches, method, model=model, region=region, progress=progress)
    return ids_from_boundaries(segment(link_distances(desc, bridge), threshold, min_size))


def grouping_metrics(true_ids: np.ndarray, pred_ids: np.ndarray) -> dict[str, Any]:
    """How well predicted consecutive groups match the true ones. Both (N,) ids of the same patches.

    ``boundary_precision`` / ``boundary_recall``: of the predicted / true group starts; ``wrongly_merged``:
    share of patches whose predicted group also holds another point's patches; ``wrongly_split``: share of true
    groups spread over several predicted groups; ``exact``: share of true groups predicted exactly. Ids are
    compared by runs, so only the order of the patches matters (a point whose patches are not consecutive
    counts as several groups).
    """
    t, p = np.asarray(true_ids).reshape(-1), np.asarray(pred_ids).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"true and predicted ids differ in length: {t.shape[0]} vs {p.shape[0]}")
    tb, pb = boundaries_from_ids(t), boundaries_from_ids(p)
    t_run, p_run = ids_from_boundaries(tb), ids_from_boundaries(pb)
    hits = int((tb & pb).sum())
    n_true, n_pred = int(t_run[-1]) + 1 if t.size else 0, int(p_run[-1]) + 1 if p.size else 0
    # true groups per predicted group, and predicted groups per true group
    pairs = np.unique(np.stack([t_run, p_run], axis=1), axis=0) if t.size else np.zeros((0, 2), np.int64)
    true_per_pred = np.bincount(pairs[:, 1], minlength=n_pred)
    pred_per_true = np.bincount(pairs[:, 0], minlength=n_true)
    merged = true_per_pred[p_run] > 1
    exact = int(((pred_per_true[pairs[:, 0]] == 1) & (true_per_pred[pairs[:, 1]] == 1)).sum())
    return {
        "patches": int(t.size),
        "true_groups": n_true,
        "predicted_groups": n_pred,
        "boundary_precision": hits / max(int(pb.sum()), 1) if pb.any() else float(not tb.any()),
        "boundary_recall": hits / int(tb.sum()) if tb.any() else 1.0,
        "wrongly_merged": float(merged.mean()) if t.size else 0.0,
        "wrongly_split": float((pred_per_true > 1).mean()) if n_true else 0.0,
        "exact": exact / n_true if n_true else 1.0,
    }


def group_statistics(point_ids: np.ndarray, max_size: int = 12) -> dict[str, Any]:
    """Group count, mean size and size histogram of consecutive groups; sizes above ``max_size`` are pooled
    under ``f">{max_size}"``."""
    runs = ids_from_boundaries(boundaries_from_ids(point_ids)) if len(point_ids) else np.zeros(0, np.int64)
    sizes = np.bincount(runs) if runs.size else np.zeros(0, np.int64)
    hist = {str(k): int((sizes == k).sum()) for k in range(1, max_size + 1)}
    hist[f">{max_size}"] = int((sizes > max_size).sum())
    return {
        "patches": int(runs.size),
        "groups": int(sizes.size),
        "mean_size": float(sizes.mean()) if sizes.size else 0.0,
        "max_size": int(sizes.max()) if sizes.size else 0,
        "size_histogram": hist,
    }


def recover_groups(
    folder: str | os.PathLike,
    method: str = DEFAULT_METHOD,
    threshold: float | None = None,
    bridge: bool = True,
    min_size: int = 2,
    model: DescriptorNet | str | None = None,
    region: float = DEFAULT_REGION,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> tuple[PhotoTour, np.ndarray]:
    """Read a Brown-layout folder's sheets (its ``info.txt``, if any, is not used) and infer its groups.

    Returns the data set and the point ids (N,) int64 of its N patches (:func:`infer_groups`). Errors for a
    folder without sheets or with a sheet of the wrong size come from the loader before any description.
    """
    _check_method(method)  # before reading anything
    data = PhotoTour(folder, cache_dir=cache_dir, info=False)
    if len(data) == 0:
        raise DatasetFormatError(f"{folder}: the sheets hold no patches (all black)")
    ids = infer_groups(
        data.patches, method, threshold, bridge=bridge, min_size=min_size, model=model, region=region,
        progress=progress,
    )  # fmt: skip
    return data, ids
