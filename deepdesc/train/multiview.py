"""Real multi-view training patches from a scene with cameras, written in the PhotoTour (Brown) layout.

``deepdesc make-patches SCENE -o DIR`` (:func:`make_patches`) turns a scene with known cameras (a Strecha folder,
ground truth; or a COLMAP model, pseudo ground truth) into labelled patches that teach what synthetic warps
cannot: real viewpoint changes of non-planar structure, occlusion, lighting, and the noise of a detector run
independently in every view. Everything is geometric; no descriptor decides what matches.

Method (:class:`MultiviewConfig` holds every threshold; pixels are image pixels):

1. **Detect** DoG keypoints in every view (:func:`~deepdesc.features.keypoints.detect_keypoints`,
   ``max_keypoints`` strongest, oriented) and keep those whose patch region (``region_scale`` x size, rotated)
   lies inside the image, so every patch is real image content. OpenCV reports a location with several dominant
   orientations as several keypoints; such siblings are one *site*: a site belongs to at most one track.
2. **Seed**: every view is paired with its ``seed_neighbours`` nearest views (camera centres) whose optical axes
   differ by at most ``max_pair_angle``. For each detection of view i, every detection of view j within
   ``epipolar_px`` of its epipolar line (ground-truth F) is a candidate; candidates are triangulated and kept
   when the point is in front of both cameras, reprojects within ``max_reproj_px`` in both, its rays meet at
   ``min_triangulation_angle`` or more, and the detection in j agrees with the one in i transferred through the
   point: size within a factor ``2 ** max_log2_scale`` and orientation within ``max_angle_deg`` (the transfer
   assumes the surface is fronto-parallel to the reference camera at the point's depth).
3. **Verify** each candidate in every other view whose ray to the point is within ``max_link_angle`` of a seed's:
   project it, transfer the keypoint, and snap to a detection within ``snap_px`` with consistent size and
   orientation. A candidate needs detections in ``min_views`` views (the two seeds included); for one detection
   of view i the best supported candidate wins, and a tie makes the detection ambiguous (dropped). Candidates
   are accepted greedily, best supported first, only if none of their sites is already taken, which merges the
   seeds of one point found from several pairs.
4. **Refine and extend**: tracks are re-triangulated from all their detections (linear, depth-weighted); detections
   reprojecting beyond ``max_reproj_px`` are dropped. Then every track is reprojected into **every** view (all
   baselines) where it is not yet observed; it must be in front of the camera, inside the image and not occluded,
   i.e. no track observed in that view within about ``occlusion_cell`` px (a coarse depth map: minimum depth per
   cell, 3x3 cells) is closer by more than ``occlusion_depth`` (relative); the keypoint is transferred from the
   observing view with the most similar viewing direction (at most ``max_link_angle`` away) and snapped as in 3.
   (``extend_passes`` passes, each followed by re-triangulation). Wide baselines are reached through chains of
   views: at the end a track keeps its largest set of detections linked by rays at most ``max_link_angle`` apart,
   and tracks with fewer than ``min_views`` detections are dropped. A patch uses the detection's own position,
   size and orientation: training sees real detector noise, not the reprojection. (Geometry alone also accepts
   the rare T-junction of an occluding edge with background texture that slides along the epipolar lines: a
   phantom point whose patches look alike.)
5. **Distractors**: free sites (no track) with no track of positive depth projecting within ``distractor_px``;
   up to ``max_distractors_per_view`` per view, each its own 3D point id (a single-patch point, a negative).
   **Hard negatives**: for ``hard_negatives_per_track`` random pairs of views (v, w) of a track (views of the
   track's split, step 6), the detection of
   w within ``hard_epipolar_px`` of the epipolar line of the track's detection in v, at least ``hard_min_px``
   from the track's projection, with a size within ``2 ** max_log2_scale`` of the track's own detection there,
   nearest to the projection: what a matcher restricted to the epipolar line would confuse. Its patch is added
   (as a single-patch point when it belongs to no track) and the pair goes into the match file as a negative
   (at most half of a match file's negatives are hard ones).
6. **Split by image**: views ``i % val_every == val_every - 1`` are validation views. A track with detections in
   at least two validation views goes to the validation set with probability ``val_share`` (seeded), otherwise to
   training; a track keeps only its detections in its split's views, and needs two of them. So validation
   patches come only from validation views, training patches only from training views, and no 3D point (track)
   has patches in both. Distractors and hard negatives follow their views.

Output of :func:`make_patches` (written into a temporary folder beside ``DIR`` and renamed at the end):
``DIR/`` the training set and ``DIR/val/`` the validation set, each in the PhotoTour layout
(:func:`~deepdesc.datasets.phototour.write_phototour`: ``patchesNNNN.bmp``, ``info.txt`` = 3D point id and
view index, ``interest.txt`` = view index, x, y, orientation in radians (OpenCV's angle, y down), keypoint size
(OpenCV diameter, pixels), and ``m50_{n}_{n}_0.txt`` with ``n`` pairs, half positive, ``n = pairs`` (default
100000, the name the PhotoTour evaluation reads by default) or twice the number of distinct positive pairs when
fewer: positives are distinct pairs of detections of one track, negatives the hard negatives (last column 1)
plus random pairs of different points (distractors included)); ``images.txt`` (view index, image name, split);
``summary.json`` / ``summary.md``.
Patches of one track are consecutive; point ids are tracks first, then single-patch points. ``phototour:DIR``
training sources and :func:`~deepdesc.eval.phototour.evaluate_phototour` read the sets as they are (note that a
``phototour:`` source holds out every 10th 3D point of its folder for its own validation pairs).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm.auto import tqdm

from ..datasets.phototour import write_phototour
from ..datasets.scenes import Scene, fundamental_matrix, load_colmap_scene, load_strecha_scene
from ..features.image import read_image
from ..features.keypoints import detect_keypoints
from ..features.patches import DEFAULT_BLUR_SIGMA, DEFAULT_PATCH_SIZE, DEFAULT_REGION_SCALE, extract_patches

__all__ = [
    "MultiviewConfig",
    "MultiviewSet",
    "SplitSet",
    "build_multiview",
    "cut_patches",
    "detect_views",
    "load_scene",
    "make_patches",
    "seed_pairs",
    "split_multiview",
    "summarize",
    "summary_markdown",
    "symmetric_epipolar_error",
    "validation_views",
    "write_multiview",
]

#: Track length histogram bins (the last one is open-ended) and baseline angle bins (degrees) of the summary.
LENGTH_BINS = (2, 3, 4, 5, 6, 8, 10, 15, 20)
ANGLE_BINS = (0, 5, 10, 20, 30, 45, 60, 90, 180)


@dataclass(frozen=True)
class MultiviewConfig:
    """Every setting of :func:`build_multiview` and :func:`split_multiview` (module docs, steps 1-6)."""

    max_keypoints: int = 4000
    region_scale: float = DEFAULT_REGION_SCALE
    blur_sigma: float = DEFAULT_BLUR_SIGMA
    seed_neighbours: int = 3
    max_pair_angle: float = 45.0
    epipolar_px: float = 1.5
    max_reproj_px: float = 1.0
    min_triangulation_angle: float = 2.0
    max_log2_scale: float = 0.5
    max_angle_deg: float = 30.0
    snap_px: float = 2.0
    min_views: int = 3
    max_link_angle: float = 45.0
    extend_passes: int = 2
    occlusion_cell: int = 8
    occlusion_depth: float = 0.1
    distractor_px: float = 8.0
    max_distractors_per_view: int = 300
    hard_epipolar_px: float = 2.0
    hard_min_px: float = 10.0
    hard_negatives_per_track: int = 1
    val_every: int = 4
    val_share: float = 0.5
    pairs: int = 100_000
    seed: int = 0

    def __post_init__(self) -> None:
        positive = ("region_scale", "epipolar_px", "max_reproj_px", "max_log2_scale", "max_angle_deg", "snap_px")
        positive += ("max_link_angle",)
        for name in positive + ("distractor_px", "hard_epipolar_px", "hard_min_px", "occlusion_depth"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"MultiviewConfig.{name} must be a positive number, got {value!r}")
        if not (math.isfinite(self.blur_sigma) and self.blur_sigma >= 0):
            raise ValueError(f"MultiviewConfig.blur_sigma must be >= 0, got {self.blur_sigma!r}")
        if self.min_views < 2:
            raise ValueError(f"MultiviewConfig.min_views must be >= 2, got {self.min_views}")
        if self.max_keypoints < 1 or self.seed_neighbours < 1 or self.occlusion_cell < 1:
            raise ValueError("MultiviewConfig: max_keypoints, seed_neighbours and occlusion_cell must be >= 1")
        if self.val_every < 0 or self.val_every == 1:
            raise ValueError(f"MultiviewConfig.val_every must be 0 (no validation) or >= 2, got {self.val_every}")
        if not 0.0 <= self.val_share <= 1.0:
            raise ValueError(f"MultiviewConfig.val_share must be in [0, 1], got {self.val_share}")
        if self.pairs < 2:
            raise ValueError(f"MultiviewConfig.pairs must be >= 2, got {self.pairs}")


@dataclass
class MultiviewSet:
    """Tracks, distractors and hard negatives of a scene (before the split). Detections are indices into
    ``keypoints[view]`` ((K_v, 5) float32, x y size angle response).

    ``points`` (T, 3) world coordinates; ``observations`` (T, V) int64 detection index per view, -1 where the
    track is not observed; ``distractors``: (D, 2) (view, detection); ``hard_negatives``: (H, 5) (track, view v,
    view w, detection in w), the track's detection in v being the anchor, plus the distance in pixels of the
    negative to the track's projection in w (as an int, rounded); ``track_val`` (T,) bool: the track goes to the
    validation set (module docs, step 6)."""

    scene: Scene
    config: MultiviewConfig
    keypoints: list[np.ndarray]
    points: np.ndarray
    observations: np.ndarray
    distractors: np.ndarray
    hard_negatives: np.ndarray
    track_val: np.ndarray
    stats: dict[str, Any] = field(default_factory=dict)
    views: Any = field(default=None, repr=False)  # the internal per-view state (cameras, sites and their owners)

    @property
    def num_views(self) -> int:
        return len(self.keypoints)

    def track_lengths(self) -> np.ndarray:
        return (self.observations >= 0).sum(axis=1)


@dataclass
class SplitSet:
    """One split, ready to write: one row per patch; ``pairs`` (M, 3) patch indices and a hard-negative flag.

    ``views`` (N,) view index, ``detections`` (N,) detection index in that view, ``point_ids`` (N,) (tracks first,
    consecutive patches), ``kinds`` (N,) 0 track, 1 distractor, 2 hard-negative detection without track;
    ``track_of`` (N,) the :class:`MultiviewSet` track index or -1."""

    name: str
    views: np.ndarray
    detections: np.ndarray
    point_ids: np.ndarray
    kinds: np.ndarray
    track_of: np.ndarray
    pairs: np.ndarray
    unique_positive_pairs: int
    num_tracks: int
    num_hard_negatives: int


# --------------------------------------------------------------------------------------------------
# geometry helpers
# --------------------------------------------------------------------------------------------------


def _angle_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Absolute difference of angles in degrees, in [0, 180]."""
    return np.abs((np.asarray(a) - np.asarray(b) + 180.0) % 360.0 - 180.0)


def _region_fits(kp: np.ndarray, width: int, height: int, region_scale: float, patch_size: int) -> np.ndarray:
    """Mask of keypoints whose rotated sampling grid lies inside the image (``extract_patches``' border='drop')."""
    if len(kp) == 0:
        return np.zeros(0, bool)
    theta = np.deg2rad(kp[:, 3].astype(np.float64))
    step = region_scale * kp[:, 2].astype(np.float64) / patch_size
    a, b = step * np.cos(theta), step * np.sin(theta)
    half = (patch_size - 1) / 2.0
    corners = np.array([[-1, -1], [-1, 1], [1, -1], [1, 1]], dtype=np.float64) * half
    cx = kp[:, 0, None] + a[:, None] * corners[:, 0] - b[:, None] * corners[:, 1]
    cy = kp[:, 1, None] + b[:, None] * corners[:, 0] + a[:, None] * corners[:, 1]
    margin = 1e-3  # a little inside extract_patches' own tolerance, so nothing is dropped there
    inside = (cx >= margin) & (cx <= width - 1 - margin) & (cy >= margin) & (cy <= height - 1 - margin)
    return inside.all(axis=1)


class _Grid:
    """Fixed-radius neighbour search over 2D points: cells of side ``2 * radius``, a query reads 2x2 cells."""

    def __init__(self, xy: np.ndarray, radius: float):
        self.xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        self.radius = float(radius)
        self.cell = 2.0 * self.radius
        n = len(self.xy)
        if n == 0:
            self.table = np.full((1, 1, 1), -1, np.int64)
            self.origin = np.zeros(2)
            return
        self.origin = self.xy.min(axis=0) - self.cell
        cells = np.floor((self.xy - self.origin) / self.cell).astype(np.int64)
        shape = cells.max(axis=0) + 2
        flat = cells[:, 1] * shape[0] + cells[:, 0]
        order = np.argsort(flat, kind="stable")
        flat_sorted = flat[order]
        starts = np.flatnonzero(np.r_[True, flat_sorted[1:] != flat_sorted[:-1]])
        counts = np.diff(np.r_[starts, n])
        rank = np.arange(n) - np.repeat(starts, counts)
        table = np.full((int(shape[1]), int(shape[0]), int(counts.max())), -1, np.int64)
        c = cells[order]
        table[c[:, 1], c[:, 0], rank] = order
        self.table = table

    def query(self, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Candidates within ``radius`` of each query: (M, C) indices (-1 none) and distances (inf), nearest first."""
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        m = len(uv)
        cap = self.table.shape[2]
        if m == 0 or len(self.xy) == 0:
            return np.full((m, 1), -1, np.int64), np.full((m, 1), np.inf)
        c0 = np.floor((uv - self.radius - self.origin) / self.cell).astype(np.int64)
        h, w = self.table.shape[:2]
        out = np.full((m, 4 * cap), -1, np.int64)
        ok = np.isfinite(uv).all(axis=1)
        for k, (dx, dy) in enumerate(((0, 0), (1, 0), (0, 1), (1, 1))):
            cx, cy = c0[:, 0] + dx, c0[:, 1] + dy
            inside = ok & (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)
            out[inside, k * cap : (k + 1) * cap] = self.table[cy[inside], cx[inside]]
        dist = np.full(out.shape, np.inf)
        has = out >= 0
        diff = self.xy[np.where(has, out, 0)] - uv[:, None, :]
        dist[has] = np.hypot(diff[..., 0], diff[..., 1])[has]
        out[dist > self.radius] = -1
        dist[out < 0] = np.inf
        order = np.argsort(dist, axis=1, kind="stable")
        return np.take_along_axis(out, order, 1), np.take_along_axis(dist, order, 1)


def _homogeneous(xy: np.ndarray) -> np.ndarray:
    return np.concatenate([np.asarray(xy, dtype=np.float64), np.ones((len(xy), 1))], axis=1)


def _epipolar_lines(F: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Lines ``F x`` (N, 3) in the other image, normalised so that ``l . (x, y, 1)`` is a distance in pixels."""
    lines = _homogeneous(xy) @ F.T
    return lines / np.maximum(np.hypot(lines[:, 0], lines[:, 1]), 1e-12)[:, None]


def symmetric_epipolar_error(F: np.ndarray, x0: np.ndarray, x1: np.ndarray) -> np.ndarray:
    """Mean of the distances of ``x1`` to ``F x0`` and of ``x0`` to ``F^T x1`` (pixels), (N,) for (N, 2) points."""
    x0, x1 = np.asarray(x0, np.float64).reshape(-1, 2), np.asarray(x1, np.float64).reshape(-1, 2)
    d1 = np.abs((_epipolar_lines(F, x0) * _homogeneous(x1)).sum(axis=1))
    d0 = np.abs((_epipolar_lines(F.T, x1) * _homogeneous(x0)).sum(axis=1))
    return 0.5 * (d0 + d1)


class _Views:
    """Per-view cameras as stacked arrays, and the keypoints of every view."""

    def __init__(self, scene: Scene, keypoints: list[np.ndarray]):
        cams = scene.cameras
        self.cams = cams
        self.K = np.stack([c.K for c in cams])
        self.Kinv = np.linalg.inv(self.K)
        self.R = np.stack([c.R for c in cams])
        self.t = np.stack([c.t for c in cams])
        self.P = np.stack([c.P for c in cams])
        self.C = np.stack([c.center for c in cams])
        self.size = np.array([(c.width, c.height) for c in cams], dtype=np.float64)
        self.kp = [np.asarray(k, dtype=np.float64) for k in keypoints]
        self.n = len(cams)
        self.grids: dict[float, list[_Grid]] = {}
        # sites: detections at one location with one size (OpenCV's several orientations) share a site
        self.site: list[np.ndarray] = []
        for k in self.kp:
            if len(k):
                _, inverse = np.unique(np.round(k[:, :3], 3), axis=0, return_inverse=True)
                self.site.append(inverse.reshape(-1).astype(np.int64))
            else:
                self.site.append(np.zeros(0, np.int64))
        self.site_owner = [np.full(int(s.max()) + 1 if len(s) else 0, -1, np.int64) for s in self.site]

    def grid(self, v: int, radius: float) -> _Grid:
        if radius not in self.grids:
            self.grids[radius] = [_Grid(k[:, :2], radius) for k in self.kp]
        return self.grids[radius][v]

    def project(self, v: int, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(all="ignore"):  # non-finite points (failed triangulations) give nan pixels
            x = X @ self.R[v].T + self.t[v]
            depth = x[:, 2]
            uv = (x @ self.K[v].T)[:, :2] / depth[:, None]
        return uv, depth

    def inside(self, v: int, uv: np.ndarray, margin: float = 0.0) -> np.ndarray:
        w, h = self.size[v]
        with np.errstate(invalid="ignore"):
            return (
                (uv[:, 0] >= margin)
                & (uv[:, 0] <= w - 1 - margin)
                & (uv[:, 1] >= margin)
                & (uv[:, 1] <= h - 1 - margin)
            )

    def transfer(self, X: np.ndarray, ref_views: np.ndarray, ref_kp: np.ndarray, v: int) -> tuple[np.ndarray, ...]:
        """Keypoints ``ref_kp`` (M, 5) of views ``ref_views`` (M,) moved to view ``v`` through the points ``X``.

        The keypoint's radius vector along its orientation is lifted to 3D on the plane through X parallel to the
        reference image and projected into ``v``. Returns pixel (M, 2), depth (M,), size (M,), angle (M,) deg.
        """
        R, t, Kinv = self.R[ref_views], self.t[ref_views], self.Kinv[ref_views]
        depth_r = np.einsum("mij,mj->mi", R, X)[:, 2] + t[:, 2]
        theta = np.deg2rad(ref_kp[:, 3])
        radius = 0.5 * ref_kp[:, 2]
        offset = np.stack([radius * np.cos(theta), radius * np.sin(theta), np.zeros(len(X))], axis=1)
        d_cam = depth_r[:, None] * np.einsum("mij,mj->mi", Kinv, offset)
        D = np.einsum("mji,mj->mi", R, d_cam)  # R^T d
        uv0, z0 = self.project(v, X)
        uv1, _ = self.project(v, X + D)
        vec = uv1 - uv0
        size = 2.0 * np.hypot(vec[:, 0], vec[:, 1])
        angle = np.degrees(np.arctan2(vec[:, 1], vec[:, 0])) % 360.0
        return uv0, z0, size, angle

    def consistent(self, v: int, det: np.ndarray, size: np.ndarray, angle: np.ndarray, conf: MultiviewConfig):
        kp = self.kp[v][det]
        with np.errstate(divide="ignore", invalid="ignore"):
            ok = np.abs(np.log2(kp[..., 2] / size)) <= conf.max_log2_scale
        return ok & (_angle_diff(kp[..., 3], angle) <= conf.max_angle_deg)

    def snap(
        self,
        v: int,
        uv: np.ndarray,
        size: np.ndarray,
        angle: np.ndarray,
        conf: MultiviewConfig,
        free_only: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Nearest detection of view ``v`` within ``snap_px`` of ``uv`` with consistent size and orientation.

        Returns detection indices (M,) (-1 none) and distances (M,). ``free_only``: only sites without a track.
        """
        idx, dist = self.grid(v, conf.snap_px).query(uv)
        has = idx >= 0
        safe = np.where(has, idx, 0)
        valid = has & self.consistent(v, safe, size[:, None], angle[:, None], conf)
        if free_only and len(self.kp[v]):
            valid &= self.site_owner[v][self.site[v][safe]] < 0
        first = np.argmax(valid, axis=1)
        rows = np.arange(len(uv))
        found = valid[rows, first]
        return np.where(found, safe[rows, first], -1), np.where(found, dist[rows, first], np.inf)

    def ray_angle(self, X: np.ndarray, u: np.ndarray | int, v: np.ndarray | int) -> np.ndarray:
        """Angle in degrees between the rays from X to the centres of views u and v."""
        a = self.C[u] - X
        b = self.C[v] - X
        cos = (a * b).sum(axis=-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)
        return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def seed_pairs(views: _Views, neighbours: int, max_pair_angle: float) -> list[tuple[int, int]]:
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


def _triangulate(views: _Views, obs: np.ndarray) -> np.ndarray:
    """Linear multi-view triangulation (normalised coordinates, rows weighted by 1/depth). (M, V) -> (M, 3)."""
    m, nv = obs.shape
    X = np.zeros((m, 3))
    if m == 0:
        return X
    weights = np.ones((m, nv))
    for _ in range(2):
        ata = np.zeros((m, 4, 4))
        for v in range(nv):
            sel = np.flatnonzero(obs[:, v] >= 0)
            if sel.size == 0:
                continue
            y = _homogeneous(views.kp[v][obs[sel, v], :2]) @ views.Kinv[v].T
            Rt = np.hstack([views.R[v], views.t[v][:, None]])
            w = weights[sel, v][:, None]
            r0 = (y[:, 0:1] * Rt[2] - Rt[0]) * w
            r1 = (y[:, 1:2] * Rt[2] - Rt[1]) * w
            ata[sel] += np.einsum("mi,mj->mij", r0, r0) + np.einsum("mi,mj->mij", r1, r1)
        _, vecs = np.linalg.eigh(ata)
        Xh = vecs[:, :, 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            X = Xh[:, :3] / Xh[:, 3:4]
        for v in range(nv):
            _, depth = views.project(v, np.nan_to_num(X))
            weights[:, v] = 1.0 / np.maximum(np.abs(depth), 1e-9)
    return X


def _reprojection_errors(views: _Views, X: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """(M, V) pixel distance of each detection to the projection of its track (nan where unobserved, inf behind)."""
    err = np.full(obs.shape, np.nan)
    for v in range(views.n):
        sel = np.flatnonzero(obs[:, v] >= 0)
        if sel.size == 0:
            continue
        uv, depth = views.project(v, X[sel])
        e = np.hypot(*(uv - views.kp[v][obs[sel, v], :2]).T)
        err[sel, v] = np.where((depth > 0) & np.isfinite(e), e, np.inf)
    return err


# --------------------------------------------------------------------------------------------------
# tracks
# --------------------------------------------------------------------------------------------------


def _pair_candidates(views: _Views, i: int, j: int, conf: MultiviewConfig) -> dict[str, np.ndarray] | None:
    """Triangulated, verified candidate points seeded by the detections of views i and j (module docs, 2-3)."""
    kp_i, kp_j = views.kp[i], views.kp[j]
    if len(kp_i) == 0 or len(kp_j) == 0:
        return None
    F = fundamental_matrix(views.cams[i], views.cams[j])
    lines = _epipolar_lines(F, kp_i[:, :2])
    hj = _homogeneous(kp_j[:, :2])
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


def _claim(views: _Views, obs_row: np.ndarray, track: int) -> None:
    for v in np.flatnonzero(obs_row >= 0):
        views.site_owner[v][views.site[v][obs_row[v]]] = track


def _refine(views: _Views, obs: np.ndarray, conf: MultiviewConfig) -> tuple[np.ndarray, np.ndarray]:
    """Re-triangulate, drop detections reprojecting beyond ``max_reproj_px`` (worst first), release their sites."""
    X = _triangulate(views, obs)
    for factor in (4.0, 2.0, 1.0, 1.0, 1.0):
        err = _reprojection_errors(views, X, obs)
        bad = np.nan_to_num(err, nan=0.0, posinf=np.inf) > conf.max_reproj_px * factor
        if not bad.any():
            continue
        for v in range(views.n):
            sel = np.flatnonzero(bad[:, v])
            views.site_owner[v][views.site[v][obs[sel, v]]] = -1
            obs[sel, v] = -1
        X = _triangulate(views, obs)
    return X, obs


def _keep_linked(views: _Views, X: np.ndarray, obs: np.ndarray, max_angle: float) -> int:
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


def _depth_maps(views: _Views, X: np.ndarray, obs: np.ndarray, cell: int) -> list[np.ndarray]:
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


def _extend(views: _Views, X: np.ndarray, obs: np.ndarray, conf: MultiviewConfig) -> int:
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


def _find_distractors(views: _Views, X: np.ndarray, conf: MultiviewConfig, rng: np.random.Generator) -> np.ndarray:
    rows = []
    for v in range(views.n):
        kp = views.kp[v]
        if len(kp) == 0:
            continue
        free = views.site_owner[v][views.site[v]] < 0
        _, first_of_site = np.unique(views.site[v], return_index=True)
        one = np.zeros(len(kp), bool)
        one[first_of_site] = True
        uv, depth = views.project(v, X) if len(X) else (np.zeros((0, 2)), np.zeros(0))
        near = np.zeros(len(kp), bool)
        front = uv[(depth > 0) & views.inside(v, uv, -conf.distractor_px)]
        if len(front):
            idx, _ = _Grid(front, conf.distractor_px).query(kp[:, :2])
            near = (idx >= 0).any(axis=1)
        cand = np.flatnonzero(free & one & ~near)
        if cand.size > conf.max_distractors_per_view:
            cand = np.sort(rng.choice(cand, conf.max_distractors_per_view, replace=False))
        rows += [(v, int(d)) for d in cand]
    return np.array(rows, dtype=np.int64).reshape(-1, 2)


def _find_hard_negatives(
    views: _Views,
    X: np.ndarray,
    obs: np.ndarray,
    conf: MultiviewConfig,
    rng: np.random.Generator,
    is_val_view: np.ndarray,
    track_val: np.ndarray,
) -> np.ndarray:
    """(H, 5) track, view v, view w, negative detection in w, distance (px) to the projection (module docs, 5).

    v and w are views of the track's own split, so that the split keeps the pair.
    """
    rows = []
    fundamentals: dict[tuple[int, int], np.ndarray] = {}
    for t in range(len(X)):
        seen = np.flatnonzero((obs[t] >= 0) & (is_val_view == track_val[t]))
        if seen.size < 2:
            continue
        for _ in range(conf.hard_negatives_per_track):
            v, w = (int(x) for x in rng.choice(seen, 2, replace=False))
            kp_w = views.kp[w]
            anchor = views.kp[v][obs[t, v]]
            if (v, w) not in fundamentals:
                fundamentals[(v, w)] = fundamental_matrix(views.cams[v], views.cams[w])
            F = fundamentals[(v, w)]
            line = _epipolar_lines(F, anchor[None, :2])[0]
            d_line = np.abs(kp_w[:, :2] @ line[:2] + line[2])
            uv, _ = views.project(w, X[t : t + 1])
            d_true = np.hypot(*(kp_w[:, :2] - uv[0]).T)
            own = kp_w[obs[t, w]]
            with np.errstate(divide="ignore"):
                similar = np.abs(np.log2(kp_w[:, 2] / own[2])) <= conf.max_log2_scale
            owner = views.site_owner[w][views.site[w]]
            other = np.maximum(owner, 0)
            # a free detection, or the very detection of another track of the same split: both get written
            written = (owner < 0) | ((obs[other, w] == np.arange(len(kp_w))) & (track_val[other] == track_val[t]))
            ok = (d_line <= conf.hard_epipolar_px) & (d_true >= conf.hard_min_px) & similar & (owner != t) & written
            cand = np.flatnonzero(ok)
            if cand.size == 0:
                continue
            c = int(cand[np.argmin(d_true[cand])])
            rows.append((t, v, w, c, int(round(float(d_true[c])))))
    return np.array(rows, dtype=np.int64).reshape(-1, 5)


def validation_views(n: int, val_every: int) -> np.ndarray:
    """Boolean mask (n,) of the validation views: ``i % val_every == val_every - 1`` (none for 0)."""
    idx = np.arange(n)
    return (idx % val_every == val_every - 1) if val_every else np.zeros(n, bool)


def detect_views(scene: Scene, conf: MultiviewConfig, progress: bool = True) -> list[np.ndarray]:
    """DoG keypoints of every view, those whose patch region leaves the image removed (module docs, 1)."""
    out = []
    for path, cam in tqdm(list(zip(scene.image_paths, scene.cameras)), desc="detect", unit="img", disable=not progress):
        gray = read_image(path, "gray")
        if gray.shape != (cam.height, cam.width):
            raise ValueError(f"{path}: image is {gray.shape[1]}x{gray.shape[0]}, its camera {cam.width}x{cam.height}")
        kp = detect_keypoints(gray, max_keypoints=conf.max_keypoints)
        out.append(kp[_region_fits(kp, cam.width, cam.height, conf.region_scale, DEFAULT_PATCH_SIZE)])
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
    views = _Views(scene, keypoints)
    pairs = seed_pairs(views, conf.seed_neighbours, conf.max_pair_angle)
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
    distractors = _find_distractors(views, X, conf, rng)
    is_val_view = validation_views(views.n, conf.val_every)
    val_counts = (obs[:, is_val_view] >= 0).sum(axis=1)
    track_val = (val_counts >= 2) & (np.random.default_rng([conf.seed, 1]).random(len(obs)) < conf.val_share)
    hard = _find_hard_negatives(views, X, obs, conf, rng, is_val_view, track_val)
    stats = {
        "seed_pairs": len(pairs),
        "candidates": int(num_candidates),
        "seeded_tracks": int(num_seeded),
        "extension_detections": int(added),
        "unlinked_detections_removed": int(unlinked),
        "detect_seconds": round(t_detect, 2),
        "track_seconds": round(time.perf_counter() - t0 - t_detect, 2),
    }
    kps = [np.asarray(k, np.float32) for k in keypoints]
    return MultiviewSet(scene, conf, kps, X, obs, distractors, hard, track_val, stats, views)


# --------------------------------------------------------------------------------------------------
# split, patches, writing
# --------------------------------------------------------------------------------------------------


def _positive_pairs(starts: np.ndarray, counts: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """``n`` pairs of different patches of one point (unique while possible, then repeated), and the unique count.

    Patches of a point are the consecutive rows ``starts[k] .. starts[k] + counts[k] - 1``.
    """
    pool = [np.stack(np.triu_indices(c, 1), axis=1) + s for s, c in zip(starts.tolist(), counts.tolist()) if c >= 2]
    if not pool:
        return np.zeros((0, 2), np.int64), 0
    allp = np.concatenate(pool)
    unique = len(allp)
    if unique >= n:
        chosen = allp[rng.choice(unique, n, replace=False)]
    else:
        chosen = np.concatenate([allp, allp[rng.choice(unique, n - unique, replace=True)]])
    flip = rng.random(len(chosen)) < 0.5
    chosen[flip] = chosen[flip][:, ::-1]
    return chosen[rng.permutation(len(chosen))], unique


class _Rows:
    """The patches of one split as they are collected: parallel lists and a (view, detection) -> row index."""

    def __init__(self) -> None:
        self.view: list[int] = []
        self.det: list[int] = []
        self.pid: list[int] = []
        self.kind: list[int] = []
        self.track: list[int] = []
        self.index: dict[tuple[int, int], int] = {}
        self.points = 0

    def new_point(self) -> int:
        self.points += 1
        return self.points - 1

    def add(self, v: int, d: int, pid: int, kind: int, track: int) -> int:
        self.index[(v, d)] = len(self.view)
        for lst, value in ((self.view, v), (self.det, d), (self.pid, pid), (self.kind, kind), (self.track, track)):
            lst.append(value)
        return len(self.view) - 1

    def single(self, v: int, d: int, kind: int) -> int:
        """The row of detection d of view v, added as a point of its own when new."""
        if (v, d) in self.index:
            return self.index[(v, d)]
        return self.add(v, d, self.new_point(), kind, -1)


def split_multiview(mv: MultiviewSet) -> dict[str, SplitSet]:
    """The training and validation sets of ``mv`` (module docs, step 6): ``{"train": ..., "val": ...}`` (a split
    without patches is left out)."""
    conf = mv.config
    rng = np.random.default_rng([conf.seed, 2])
    views = mv.views
    is_val_view = validation_views(mv.num_views, conf.val_every)
    obs = mv.observations
    track_val = mv.track_val
    out: dict[str, SplitSet] = {}
    for name, want_val in (("train", False), ("val", True)):
        view_ok = is_val_view == want_val
        rows = _Rows()
        starts, counts = [], []
        for t in np.flatnonzero(track_val == want_val):
            seen = np.flatnonzero((obs[t] >= 0) & view_ok)
            if seen.size < 2:
                continue
            starts.append(len(rows.view))
            counts.append(seen.size)
            pid = rows.new_point()
            for v in seen:
                rows.add(int(v), int(obs[t, v]), pid, 0, int(t))
        num_tracks = rows.points
        for v, d in mv.distractors.tolist():
            if view_ok[v]:
                rows.single(v, d, 1)
        hard_pairs = []
        for t, v, w, c, _ in mv.hard_negatives.tolist():
            if not (view_ok[v] and view_ok[w]) or track_val[t] != want_val:
                continue
            anchor = rows.index.get((v, int(obs[t, v])))
            if anchor is None:
                continue
            if (w, c) in rows.index:
                neg = rows.index[(w, c)]
            elif views.site_owner[w][views.site[w][c]] < 0:
                neg = rows.single(w, c, 2)
            else:
                continue  # a detection of a track not written in this split
            if rows.pid[neg] != rows.pid[anchor]:
                hard_pairs.append((anchor, neg))
        rows_view, rows_det, rows_pid, rows_kind, rows_track = rows.view, rows.det, rows.pid, rows.kind, rows.track
        n = len(rows_view)
        if n == 0:
            continue
        point_ids = np.array(rows_pid, np.int64)
        starts_a, counts_a = np.array(starts, np.int64), np.array(counts, np.int64)
        available = int((counts_a * (counts_a - 1) // 2).sum())
        n_pairs = min(conf.pairs, 2 * available)  # half positive, no positive pair twice
        if n_pairs < 2:
            continue
        half = n_pairs // 2
        pos, unique = _positive_pairs(starts_a, counts_a, half, rng)
        hard = np.array(hard_pairs, np.int64).reshape(-1, 2)
        if len(hard) > half:
            hard = hard[rng.choice(len(hard), half, replace=False)]
        n_random = 2 * half - len(pos) - len(hard)
        rand = np.zeros((0, 2), np.int64)
        if n > 1 and point_ids.max() > 0:
            chunks, have = [], 0
            while have < n_random:
                a, b = rng.integers(0, n, (2, 2 * (n_random - have) + 16))
                ok = point_ids[a] != point_ids[b]
                chunks.append(np.stack([a[ok], b[ok]], axis=1))
                have += int(ok.sum())
            rand = np.concatenate(chunks)[:n_random] if chunks else rand
        table = np.concatenate(
            [
                np.c_[pos, np.zeros(len(pos), np.int64)],
                np.c_[hard, np.ones(len(hard), np.int64)],
                np.c_[rand, np.zeros(len(rand), np.int64)],
            ]
        )
        table = table[rng.permutation(len(table))]
        out[name] = SplitSet(
            name,
            np.array(rows_view, np.int64),
            np.array(rows_det, np.int64),
            point_ids,
            np.array(rows_kind, np.int64),
            np.array(rows_track, np.int64),
            table,
            unique,
            num_tracks,
            len(hard),
        )
    return out


def cut_patches(
    mv: MultiviewSet, split: SplitSet, images: dict[int, np.ndarray] | None = None, progress: bool = True
) -> np.ndarray:
    """(N, 64, 64) uint8 patches of ``split``, cut around the detections with the config's region and blur."""
    conf = mv.config
    patches = np.zeros((len(split.views), DEFAULT_PATCH_SIZE, DEFAULT_PATCH_SIZE), np.uint8)
    for v in tqdm(np.unique(split.views).tolist(), desc=f"patches {split.name}", unit="img", disable=not progress):
        rows = np.flatnonzero(split.views == v)
        gray = images[v] if images is not None and v in images else read_image(mv.scene.image_paths[v], "gray")
        kp = mv.keypoints[v][split.detections[rows]]
        cut, kept = extract_patches(gray, kp, region_scale=conf.region_scale, blur_sigma=conf.blur_sigma, border="drop")
        if len(kept) != len(rows):
            raise RuntimeError(f"view {v}: {len(rows) - len(kept)} patch regions left the image")
        patches[rows] = np.clip(np.rint(cut), 0, 255).astype(np.uint8)
    return patches


def _match_name(n: int) -> str:
    """Brown's match-file name for ``n`` pairs (half positive), e.g. ``m50_100000_100000_0``."""
    return f"m50_{n}_{n}_0"


def _histogram(values: np.ndarray, bins: tuple, integer: bool = False) -> dict[str, int]:
    """Counts per bin ``[lo, hi)``, the last open-ended; integer bins are labelled ``lo-(hi-1)``."""
    edges = list(bins) + [np.inf]
    out = {}
    for lo, hi in zip(edges[:-1], edges[1:]):
        if not np.isfinite(hi):
            label = f"{lo}+"
        elif integer:
            label = f"{lo}" if hi == lo + 1 else f"{lo}-{hi - 1}"
        else:
            label = f"{lo}-{hi}"
        out[label] = int(((values >= lo) & (values < hi)).sum())
    return out


def _track_baselines(mv: MultiviewSet, tracks: np.ndarray, view_ok: np.ndarray) -> np.ndarray:
    """Widest angle (degrees) between the rays of each track's detections in ``view_ok`` views."""
    views = mv.views
    out = np.zeros(len(tracks))
    for k, t in enumerate(tracks.tolist()):
        seen = np.flatnonzero((mv.observations[t] >= 0) & view_ok)
        rays = views.C[seen] - mv.points[t]
        rays /= np.linalg.norm(rays, axis=1, keepdims=True)
        out[k] = np.degrees(np.arccos(np.clip((rays @ rays.T).min(), -1.0, 1.0)))
    return out


def summarize(mv: MultiviewSet, splits: dict[str, SplitSet]) -> dict[str, Any]:
    """Numbers of tracks, track lengths, baselines, patches, distractors and hard negatives (JSON-ready)."""
    conf = mv.config
    views = mv.views
    lengths = mv.track_lengths()
    err = _reprojection_errors(views, mv.points, mv.observations)
    is_val = validation_views(mv.num_views, conf.val_every)
    summary: dict[str, Any] = {
        "scene": mv.scene.name,
        "views": mv.num_views,
        "validation_views": [mv.scene.image_names[v] for v in np.flatnonzero(is_val)],
        "detections_per_view": round(float(np.mean([len(k) for k in mv.keypoints])), 1),
        "tracks": int(len(lengths)),
        "mean_track_length": round(float(lengths.mean()), 2) if len(lengths) else 0.0,
        "track_length_histogram": _histogram(lengths, LENGTH_BINS, integer=True),
        "median_reprojection_px": round(float(np.nanmedian(err)), 3) if len(lengths) else None,
        "distractors": int(len(mv.distractors)),
        "hard_negatives": int(len(mv.hard_negatives)),
        **mv.stats,
        "config": dataclasses.asdict(conf),
        "splits": {},
    }
    if len(lengths):
        base = _track_baselines(mv, np.arange(len(lengths)), np.ones(mv.num_views, bool))
        summary["baseline_deg"] = {
            "median": round(float(np.median(base)), 1),
            "p90": round(float(np.percentile(base, 90)), 1),
            "max": round(float(base.max()), 1),
            "histogram": _histogram(base, ANGLE_BINS),
        }
    for name, s in splits.items():
        view_ok = is_val == (name == "val")
        tracks = np.unique(s.track_of[s.track_of >= 0])
        lens = np.bincount(s.point_ids[s.kinds == 0]) if s.num_tracks else np.zeros(0, np.int64)
        base = _track_baselines(mv, tracks, view_ok) if len(tracks) else np.zeros(0)
        summary["splits"][name] = {
            "views": int(view_ok.sum()),
            "patches": int(len(s.views)),
            "tracks": int(s.num_tracks),
            "track_patches": int((s.kinds == 0).sum()),
            "mean_track_length": round(float(lens.mean()), 2) if len(lens) else 0.0,
            "track_length_histogram": _histogram(lens, LENGTH_BINS, integer=True),
            "baseline_deg_median": round(float(np.median(base)), 1) if len(base) else None,
            "baseline_deg_histogram": _histogram(base, ANGLE_BINS),
            "distractors": int((s.kinds == 1).sum()),
            "hard_negative_patches": int((s.kinds == 2).sum()),
            "hard_negative_pairs": int(s.num_hard_negatives),
            "pairs": int(len(s.pairs)),
            "unique_positive_pairs": int(s.unique_positive_pairs),
            "match_file": _match_name(len(s.pairs)),
        }
    return summary


def summary_markdown(summary: dict[str, Any]) -> str:
    """A short human-readable report of :func:`summarize`'s dict."""
    lines = [
        f"# make-patches: {summary['scene']}",
        "",
        f"- views: {summary['views']} (validation: {', '.join(summary['validation_views']) or 'none'})",
        f"- detections per view (patch region inside the image): {summary['detections_per_view']}",
        f"- tracks: {summary['tracks']}, mean length {summary['mean_track_length']}, "
        f"median reprojection error {summary['median_reprojection_px']} px",
        f"- track lengths: {summary['track_length_histogram']}",
    ]
    if "baseline_deg" in summary:
        b = summary["baseline_deg"]
        lines.append(f"- widest baseline per track (deg): median {b['median']}, p90 {b['p90']}, max {b['max']}")
        lines.append(f"  histogram: {b['histogram']}")
    lines.append(f"- distractors: {summary['distractors']}, hard negatives: {summary['hard_negatives']}")
    if "seconds" in summary:
        lines.append(f"- time: {summary['seconds']} s")
    lines += ["", "| split | views | patches | tracks | mean length | distractors | hard neg. pairs | pairs |"]
    lines.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, s in summary["splits"].items():
        lines.append(
            f"| {name} | {s['views']} | {s['patches']} | {s['tracks']} | {s['mean_track_length']} | "
            f"{s['distractors']} | {s['hard_negative_pairs']} | {s['pairs']} "
            f"({s['unique_positive_pairs']} distinct positives) |"
        )
    return "\n".join(lines) + "\n"


def write_multiview(
    mv: MultiviewSet, splits: dict[str, SplitSet], folder: str | os.PathLike, progress: bool = True
) -> dict[str, Path]:
    """Write ``splits`` into ``folder`` (train) and ``folder/val``; returns the folders written per split."""
    folder = Path(folder)
    written = {}
    for name, s in splits.items():
        target = folder if name == "train" else folder / name
        patches = cut_patches(mv, s, progress=progress)
        kp = mv.keypoints
        interest = np.array(
            [
                (kp[v][d, 0], kp[v][d, 1], math.radians(float(kp[v][d, 3])), kp[v][d, 2])
                for v, d in zip(s.views.tolist(), s.detections.tolist())
            ],
            dtype=np.float64,
        ).reshape(-1, 4)
        write_phototour(target, patches, s.point_ids, s.views, interest, {_match_name(len(s.pairs)): s.pairs})
        written[name] = target
    rows = []
    is_val = validation_views(mv.num_views, mv.config.val_every)
    for v, image in enumerate(mv.scene.image_names):
        rows.append(f"{v} {image} {'val' if is_val[v] else 'train'}\n")
    (folder / "images.txt").write_text("".join(rows))
    return written


def load_scene(scene: str | os.PathLike, colmap: str | os.PathLike | None = None) -> Scene:
    """A Strecha scene folder, or with ``colmap`` (a COLMAP model folder) the image folder of that model."""
    if colmap is not None:
        return load_colmap_scene(colmap, scene)
    return load_strecha_scene(scene)


def make_patches(
    scene: str | os.PathLike | Scene,
    output: str | os.PathLike,
    config: MultiviewConfig | None = None,
    colmap: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Build the training (``output``) and validation (``output/val``) sets of a scene; return the summary.

    ``scene``: a Strecha folder (``images/`` + ``cameras/``), a :class:`~deepdesc.datasets.scenes.Scene`, or with
    ``colmap`` the image folder of that COLMAP model. Everything is written into a temporary folder beside
    ``output`` and renamed to ``output`` at the end (an existing ``output`` raises ``FileExistsError`` unless
    ``overwrite``). ``summary.json`` and ``summary.md`` go into ``output``.
    """
    conf = config or MultiviewConfig()
    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists; pass overwrite=True (--overwrite) to replace it")
    t0 = time.perf_counter()
    sc = scene if isinstance(scene, Scene) else load_scene(scene, colmap)
    if len(sc) < conf.min_views:
        raise ValueError(f"scene {sc.name!r} has {len(sc)} views; tracks need {conf.min_views}")
    mv = build_multiview(sc, conf, progress=progress)
    splits = split_multiview(mv)
    if "train" not in splits:
        raise ValueError(f"scene {sc.name!r}: no training patches found (tracks: {len(mv.points)})")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        write_multiview(mv, splits, tmp, progress=progress)
        summary = summarize(mv, splits)
        summary["seconds"] = round(time.perf_counter() - t0, 1)
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        (tmp / "summary.md").write_text(summary_markdown(summary))
        os.chmod(tmp, 0o777 & ~_umask())
        if output.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{output.name}.old.", dir=output.parent))
            os.replace(output, old / output.name)
            os.replace(tmp, output)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, output)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return summary


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
