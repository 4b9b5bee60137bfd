"""Which views seed tracks together (package docs, step 2). Neither pairing depends on the order of the files.

``nearest`` (:func:`seed_pairs`, the default) pairs each view with its nearest camera centres among views facing
its way. ``covisibility`` (:func:`covisibility_pairs`) pairs each view with the views that see most of what it
sees at a baseline within a range: it skips what nearest centres get wrong, a view beside another but turned
away (a baseline of a degree) or a close-up next to a wide view of the same object (little shared content).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .config import PAIRINGS, MultiviewConfig
from .geometry import Views

__all__ = ["axis_depths", "covisibility_pairs", "frustum_overlap", "pair_views", "seed_pairs"]


def seed_pairs(views: Views, neighbours: int, max_pair_angle: float) -> list[tuple[int, int]]:
    """View pairs (i < j) to seed tracks from: each view with its nearest centres among views facing its way."""
    axes = views.R[:, 2, :]  # optical axes in world coordinates
    pairs = set()
    for i in range(views.n):
        cos = axes @ axes[i]
        ok = np.degrees(np.arccos(np.clip(cos, -1, 1))) <= max_pair_angle
        ok[i] = False
        dist = np.linalg.norm(views.C - views.C[i], axis=1)
        dist[~ok] = np.inf
        for j in np.argsort(dist, kind="stable")[:neighbours]:
            if np.isfinite(dist[j]) and dist[j] > 0:
                pairs.add((min(i, int(j)), max(i, int(j))))
    return sorted(pairs)


def axis_depths(views: Views) -> np.ndarray:
    """(V,) how far each view looks, in world units along its optical axis: the median depth of the points where
    its axis passes closest to the other views' axes, counting only those in front of both cameras (nan: none).

    For views around an object this is the distance to the object; it needs no 3D points."""
    a = views.R[:, 2, :]  # unit optical axes in world coordinates
    w0 = views.C[:, None, :] - views.C[None, :, :]  # C_i - C_j
    b = a @ a.T
    d = np.einsum("ik,ijk->ij", a, w0)
    e = np.einsum("jk,ijk->ij", a, w0)
    denom = 1.0 - b**2
    valid = denom > 1e-9  # parallel axes never meet
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(valid, (b * e - d) / denom, np.nan)  # depth of the closest point along axis i
        u = np.where(valid, (e - b * d) / denom, np.nan)  # ... and along axis j
    valid &= (np.nan_to_num(s) > 0) & (np.nan_to_num(u) > 0)
    np.fill_diagonal(valid, False)
    out = np.full(views.n, np.nan)
    for i in range(views.n):
        if valid[i].any():
            out[i] = float(np.median(s[i, valid[i]]))
    return out


def frustum_overlap(views: Views, i: int, j: int, depth: float, grid: int = 8) -> float:
    """Share of view i's image that view j sees, with the scene taken as the plane at ``depth`` parallel to
    image i: a ``grid`` x ``grid`` lattice of pixels of i lifted to that depth and projected into j (in front,
    inside the image)."""
    w, h = views.size[i]
    u, v = np.meshgrid((np.arange(grid) + 0.5) * w / grid - 0.5, (np.arange(grid) + 0.5) * h / grid - 0.5)
    pix = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], axis=1)
    X = (depth * pix @ views.Kinv[i].T - views.t[i]) @ views.R[i]  # R^T (x_cam - t)
    uv, z = views.project(j, X)
    return float(((z > 0) & views.inside(j, uv)).mean())


def covisibility_pairs(
    views: Views,
    neighbours: int,
    min_angle: float,
    max_angle: float,
    min_overlap: float,
    grid: int = 8,
) -> tuple[list[tuple[int, int]], dict[tuple[int, int], tuple[float, float]]]:
    """View pairs (i < j) that see the same part of the scene, each view with its ``neighbours`` best partners.

    Each view looks at the point of its optical axis at :func:`axis_depths`. A pair is a candidate when the
    baseline (the angle between the rays from those points to the two centres, degrees, mean of both views) is
    within ``[min_angle, max_angle]`` and the symmetric frustum overlap (the smaller of :func:`frustum_overlap`
    both ways, so that a close-up and a wide view of one object overlap little) is at least ``min_overlap``.
    Partners are ranked by overlap x cos(baseline) (shared content, discounted for the change of viewpoint that
    makes detections repeat less), then by the smaller baseline; file order plays no part. Returns the sorted
    pairs and, per pair, (overlap, baseline in degrees).
    """
    depth = axis_depths(views)
    target = views.C + depth[:, None] * views.R[:, 2, :]  # nan rows: views whose axis meets no other
    scores: dict[tuple[int, int], tuple[float, float]] = {}
    for i in range(views.n):
        for j in range(i + 1, views.n):
            if not (np.isfinite(depth[i]) and np.isfinite(depth[j])):
                continue
            baseline = 0.5 * float(views.ray_angle(target[i], i, j) + views.ray_angle(target[j], i, j))
            if not min_angle <= baseline <= max_angle:
                continue
            overlap = min(frustum_overlap(views, i, j, depth[i], grid), frustum_overlap(views, j, i, depth[j], grid))
            if overlap >= min_overlap:
                scores[(i, j)] = (overlap, baseline)
    partners: list[list[tuple[float, float, int]]] = [[] for _ in range(views.n)]
    for (i, j), (overlap, baseline) in scores.items():
        score = overlap * np.cos(np.radians(baseline))
        partners[i].append((-score, baseline, j))
        partners[j].append((-score, baseline, i))
    pairs: dict[tuple[int, int], tuple[float, float]] = {}
    for i, ranked in enumerate(partners):
        for _, _, j in sorted(ranked)[:neighbours]:
            key = (min(i, j), max(i, j))
            pairs[key] = scores[key]
    return sorted(pairs), pairs


def pair_views(views: Views, conf: MultiviewConfig) -> tuple[str, list[tuple[int, int]], dict[str, Any]]:
    """The seed pairs of ``conf.pairing`` (:data:`~.config.PAIRINGS`): the pairing used, the pairs (i < j), and
    numbers for the summary (views without a seed partner; for covisibility the median overlap and baseline)."""
    if conf.pairing not in PAIRINGS:
        raise ValueError(f"unknown pairing {conf.pairing!r}; expected one of {', '.join(PAIRINGS)}")
    method = conf.pairing
    stats: dict[str, Any] = {"pairing": method}
    if method == "covisibility":
        pairs, info = covisibility_pairs(
            views, conf.seed_neighbours, conf.min_pair_angle, conf.max_pair_angle, conf.min_overlap
        )
        if info:
            overlap, baseline = np.array(list(info.values())).T
            stats["seed_overlap_median"] = round(float(np.median(overlap)), 2)
            stats["seed_baseline_deg_median"] = round(float(np.median(baseline)), 1)
    else:
        pairs = seed_pairs(views, conf.seed_neighbours, conf.max_pair_angle)
    stats["views_without_seed_pair"] = views.n - len({v for pair in pairs for v in pair})
    return method, pairs, stats
