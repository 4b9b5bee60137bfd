"""Keypoints to tracks: detection, seeding, verification, refinement and extension (package docs, steps 1-4)."""

from __future__ import annotations

import math
import time

import cv2
import numpy as np
from tqdm.auto import tqdm

from ...datasets.scenes import Scene, fundamental_matrix
from ...features.image import read_image
from ...features.keypoints import detect_keypoints
from ...features.patches import DEFAULT_PATCH_SIZE
from .config import MultiviewConfig, MultiviewSet, validation_views
from .geometry import Views, epipolar_lines, homogeneous, region_fits, reprojection_errors, triangulate
from .negatives import find_distractors, find_hard_negatives
from .pairing import pair_views

__all__ = ["build_multiview", "detect_views"]


def _pair_candidates(views: Views, i: int, j: int, conf: MultiviewConfig) -> dict[str, np.ndarray] | None:
    """Triangulated, verified candidate points seeded by the detections of views i and j (module docs, 2-3)."""
    kp_i, kp_j = views.kp[i], views.kp[j]
    if len(kp_i) == 0 or len(kp_j) == 0:
        return None
    F = fundamental_matrix(views.cams[i], views.cams[j])
    lines = epipolar_lines(F, kp_i[:, :2])
    hj = homogeneous(kp_j[:, :2])
    rows, cols = [], []
    for s in range(0, len(kp_i), 256):
        r, c = np.nonzero(np.abs(lines[s : s + 256] @ hj.T) <= conf.epipolar_px)
        rows.append(r + s)
        cols.append(c)
    a, b = np.concatenate(rows), np.concatenate(cols)
    if a.size == 0:
        return None
    Xh = cv2.triangulatePoints(views.P[i], views.P[j], kp_i[a, :2].T.copy(), kp_j[b, :2].T.copy())
    with np.errstate(divide="ignore", invalid="ignore"):
        X = (Xh[:3] / Xh[3]).T
    ok = np.isfinite(X).all(axis=1)
    uv_i, z_i = views.project(i, np.nan_to_num(X))
    uv_j, z_j = views.project(j, np.nan_to_num(X))
    err = np.maximum(np.hypot(*(uv_i - kp_i[a, :2]).T), np.hypot(*(uv_j - kp_j[b, :2]).T))
    ok &= (z_i > 0) & (z_j > 0) & (err <= conf.max_reproj_px)
    ok &= views.ray_angle(np.nan_to_num(X), i, j) >= conf.min_triangulation_angle
    a, b, X, err = a[ok], b[ok], X[ok], err[ok]
    if a.size == 0:
        return None
    ref_views = np.full(len(a), i)
    _, _, size, angle = views.transfer(X, ref_views, kp_i[a], j)
    ok = views.consistent(j, b, size, angle, conf)
    a, b, X, err = a[ok], b[ok], X[ok], err[ok]
    if a.size == 0:
        return None
    obs = np.full((len(a), views.n), -1, np.int64)
    obs[:, i], obs[:, j] = a, b
    ref_views = ref_views[: len(a)]
    for v in range(views.n):
        if v in (i, j):
            continue
        uv, depth, size, angle = views.transfer(X, ref_views, kp_i[a], v)
        linked = np.minimum(views.ray_angle(X, i, v), views.ray_angle(X, j, v)) <= conf.max_link_angle
        vis = np.flatnonzero((depth > 0) & views.inside(v, uv, -conf.snap_px) & linked)
        if vis.size:
            obs[vis, v], _ = views.snap(v, uv[vis], size[vis], angle[vis], conf)
    support = (obs >= 0).sum(axis=1)
    keep = support >= conf.min_views
    a, obs, X, err, support = a[keep], obs[keep], X[keep], err[keep], support[keep]
    if a.size == 0:
        return None
    # one candidate per detection of view i: the best supported; a tie between different points is ambiguous
    order = np.lexsort((err, -support, a))
    a, obs, X, err, support = a[order], obs[order], X[order], err[order], support[order]
    first = np.r_[True, a[1:] != a[:-1]]
    second_same = np.r_[a[1:] == a[:-1], False] & first
    tie = np.zeros(len(a), bool)
    idx = np.flatnonzero(second_same)
    tie[idx] = support[idx + 1] == support[idx]
    keep = first & ~tie
    return {"obs": obs[keep], "X": X[keep], "err": err[keep], "support": support[keep]}


def _claim(views: Views, obs_row: np.ndarray, track: int) -> None:
    for v in np.flatnonzero(obs_row >= 0):
        views.site_owner[v][views.site[v][obs_row[v]]] = track


def _refine(views: Views, obs: np.ndarray, conf: MultiviewConfig) -> tuple[np.ndarray, np.ndarray]:
    """Re-triangulate, drop detections reprojecting beyond ``max_reproj_px`` (worst first), release their sites."""
    X = triangulate(views, obs)
    for factor in (4.0, 2.0, 1.0, 1.0, 1.0):
        err = reprojection_errors(views, X, obs)
        bad = np.nan_to_num(err, nan=0.0, posinf=np.inf) > conf.max_reproj_px * factor
        if not bad.any():
            continue
        for v in range(views.n):
            sel = np.flatnonzero(bad[:, v])
            views.site_owner[v][views.site[v][obs[sel, v]]] = -1
            obs[sel, v] = -1
        X = triangulate(views, obs)
    return X, obs


def _keep_linked(views: Views, X: np.ndarray, obs: np.ndarray, max_angle: float) -> int:
    """Keep each track's largest set of detections linked by rays at most ``max_angle`` apart; returns removals."""
    removed = 0
    for t in range(len(obs)):
        seen = np.flatnonzero(obs[t] >= 0)
        if seen.size < 2:
            continue
        rays = views.C[seen] - X[t]
        rays /= np.maximum(np.linalg.norm(rays, axis=1, keepdims=True), 1e-12)
        link = rays @ rays.T >= math.cos(math.radians(max_angle))
        if link.all():
            continue
        label = np.full(seen.size, -1)
        for start in range(seen.size):
            if label[start] >= 0:
                continue
            label[start], stack = start, [start]
            while stack:
                k = stack.pop()
                for m in np.flatnonzero(link[k] & (label < 0)):
                    label[m] = start
                    stack.append(int(m))
        best = np.bincount(label).argmax()
        for v in seen[label != best]:
            views.site_owner[v][views.site[v][obs[t, v]]] = -1
            obs[t, v] = -1
            removed += 1
    return removed


def _depth_maps(views: Views, X: np.ndarray, obs: np.ndarray, cell: int) -> list[np.ndarray]:
    """Per view: minimum depth of the observed tracks per ``cell`` x ``cell`` block, then over 3x3 blocks."""
    maps = []
    for v in range(views.n):
        w, h = views.size[v]
        grid = np.full((int(h // cell) + 1, int(w // cell) + 1), np.inf, np.float32)
        sel = np.flatnonzero(obs[:, v] >= 0)
        if sel.size:
            _, depth = views.project(v, X[sel])
            xy = views.kp[v][obs[sel, v], :2]
            cx = np.clip((xy[:, 0] // cell).astype(int), 0, grid.shape[1] - 1)
            cy = np.clip((xy[:, 1] // cell).astype(int), 0, grid.shape[0] - 1)
            np.minimum.at(grid, (cy, cx), depth.astype(np.float32))
            grid = cv2.erode(grid, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE)
        maps.append(grid)
    return maps


def _extend(views: Views, X: np.ndarray, obs: np.ndarray, conf: MultiviewConfig) -> int:
    """Reproject every track into every view where it is unobserved and visible; snap. Returns detections added."""
    added = 0
    maps = _depth_maps(views, X, obs, conf.occlusion_cell)
    observed = obs >= 0
    for v in range(views.n):
        cand = np.flatnonzero(~observed[:, v])
        if cand.size == 0:
            continue
        uv, depth = views.project(v, X[cand])
        vis = (depth > 0) & views.inside(v, uv, -conf.snap_px)
        cand, uv, depth = cand[vis], uv[vis], depth[vis]
        if cand.size == 0:
            continue
        cell = conf.occlusion_cell
        dm = maps[v]
        cx = np.clip((uv[:, 0] // cell).astype(int), 0, dm.shape[1] - 1)
        cy = np.clip((uv[:, 1] // cell).astype(int), 0, dm.shape[0] - 1)
        visible = dm[cy, cx] >= depth * (1.0 - conf.occlusion_depth)
        cand = cand[visible]
        if cand.size == 0:
            continue
        # reference: the observing view whose ray to the point is closest to v's
        angles = np.stack([views.ray_angle(X[cand], u, v) for u in range(views.n)], axis=1)
        angles[~observed[cand]] = np.inf
        ref = np.argmin(angles, axis=1)
        near = angles[np.arange(cand.size), ref] <= conf.max_link_angle
        cand, ref = cand[near], ref[near]
        if cand.size == 0:
            continue
        ref_det = obs[cand, ref]
        ref_kp = np.empty((cand.size, 5))
        for u in np.unique(ref).tolist():
            m = ref == u
            ref_kp[m] = views.kp[u][ref_det[m]]
        uv, _, size, angle = views.transfer(X[cand], ref, ref_kp, v)
        det, dist = views.snap(v, uv, size, angle, conf, free_only=True)
        hit = np.flatnonzero(det >= 0)
        if hit.size == 0:
            continue
        # several tracks on one site: the nearest wins
        hit = hit[np.argsort(dist[hit], kind="stable")]
        sites = views.site[v][det[hit]]
        _, first = np.unique(sites, return_index=True)
        hit = hit[first]
        obs[cand[hit], v] = det[hit]
        views.site_owner[v][views.site[v][det[hit]]] = cand[hit]
        added += hit.size
    return added


def detect_views(scene: Scene, conf: MultiviewConfig, progress: bool = True) -> list[np.ndarray]:
    """DoG keypoints of every view, those whose patch region leaves the image removed (module docs, 1)."""
    out = []
    for path, cam in tqdm(list(zip(scene.image_paths, scene.cameras)), desc="detect", unit="img", disable=not progress):
        gray = read_image(path, "gray")
        if gray.shape != (cam.height, cam.width):
            raise ValueError(f"{path}: image is {gray.shape[1]}x{gray.shape[0]}, its camera {cam.width}x{cam.height}")
        kp = detect_keypoints(gray, max_keypoints=conf.max_keypoints)
        out.append(kp[region_fits(kp, cam.width, cam.height, conf.region_scale, DEFAULT_PATCH_SIZE)])
    return out


def build_multiview(
    scene: Scene,
    config: MultiviewConfig | None = None,
    keypoints: list[np.ndarray] | None = None,
    progress: bool = True,
) -> MultiviewSet:
    """Tracks, distractors and hard negatives of ``scene`` (module docs, steps 1-5). ``keypoints``: per-view
    (K, 5) detections to use instead of detecting (they must fit the patch region)."""
    conf = config or MultiviewConfig()
    t0 = time.perf_counter()
    if keypoints is None:
        keypoints = detect_views(scene, conf, progress)
    if len(keypoints) != len(scene):
        raise ValueError(f"{len(keypoints)} keypoint arrays for {len(scene)} views")
    t_detect = time.perf_counter() - t0
    views = Views(scene, keypoints)
    _, pairs, pairing_stats = pair_views(views, conf)
    parts = []
    for i, j in tqdm(pairs, desc="seed", unit="pair", disable=not progress):
        found = _pair_candidates(views, i, j, conf)
        if found is not None:
            parts.append(found)
    num_candidates = sum(len(p["X"]) for p in parts)
    tracks: list[np.ndarray] = []
    if parts:
        obs_all = np.concatenate([p["obs"] for p in parts])
        support = np.concatenate([p["support"] for p in parts])
        err = np.concatenate([p["err"] for p in parts])
        for k in np.lexsort((err, -support)):
            row = obs_all[k]
            seen = np.flatnonzero(row >= 0)
            if any(views.site_owner[v][views.site[v][row[v]]] >= 0 for v in seen):
                continue
            _claim(views, row, len(tracks))
            tracks.append(row)
    obs = np.array(tracks, dtype=np.int64).reshape(-1, views.n)
    num_seeded = len(obs)
    X, obs = _refine(views, obs, conf)
    added = 0
    for _ in range(conf.extend_passes):
        n_added = _extend(views, X, obs, conf)
        added += n_added
        X, obs = _refine(views, obs, conf)
        if n_added == 0:
            break
    unlinked = _keep_linked(views, X, obs, conf.max_link_angle)
    X, obs = _refine(views, obs, conf)
    # drop tracks left with fewer than min_views detections, renumber the owners
    keep = (obs >= 0).sum(axis=1) >= conf.min_views
    for v in range(views.n):
        views.site_owner[v][:] = -1
    X, obs = X[keep], obs[keep]
    for t in range(len(obs)):
        _claim(views, obs[t], t)
    rng = np.random.default_rng(conf.seed)
    distractors = find_distractors(views, X, conf, rng)
    is_val_view = validation_views(views.n, conf.val_every)
    val_counts = (obs[:, is_val_view] >= 0).sum(axis=1)
    track_val = (val_counts >= 2) & (np.random.default_rng([conf.seed, 1]).random(len(obs)) < conf.val_share)
    hard = find_hard_negatives(views, X, obs, conf, rng, is_val_view, track_val)
    stats = {
        "seed_pairs": len(pairs),
        **pairing_stats,
        "candidates": int(num_candidates),
        "seeded_tracks": int(num_seeded),
        "extension_detections": int(added),
        "unlinked_detections_removed": int(unlinked),
        "detect_seconds": round(t_detect, 2),
        "track_seconds": round(time.perf_counter() - t0 - t_detect, 2),
    }
    kps = [np.asarray(k, np.float32) for k in keypoints]
    return MultiviewSet(scene, conf, kps, X, obs, distractors, hard, track_val, stats, views)
