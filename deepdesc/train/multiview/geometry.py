"""Camera geometry of make-patches: projection, epipolar lines, keypoint transfer and snapping, triangulation."""

from __future__ import annotations

import numpy as np

from ...datasets.scenes import Scene
from .config import MultiviewConfig

__all__ = [
    "Grid",
    "Views",
    "angle_diff",
    "epipolar_lines",
    "homogeneous",
    "region_fits",
    "reprojection_errors",
    "symmetric_epipolar_error",
    "triangulate",
]


def angle_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Absolute difference of angles in degrees, in [0, 180]."""
    return np.abs((np.asarray(a) - np.asarray(b) + 180.0) % 360.0 - 180.0)


def region_fits(kp: np.ndarray, width: int, height: int, region_scale: float, patch_size: int) -> np.ndarray:
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


class Grid:
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


def homogeneous(xy: np.ndarray) -> np.ndarray:
    return np.concatenate([np.asarray(xy, dtype=np.float64), np.ones((len(xy), 1))], axis=1)


def epipolar_lines(F: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Lines ``F x`` (N, 3) in the other image, normalised so that ``l . (x, y, 1)`` is a distance in pixels."""
    lines = homogeneous(xy) @ F.T
    return lines / np.maximum(np.hypot(lines[:, 0], lines[:, 1]), 1e-12)[:, None]


def symmetric_epipolar_error(F: np.ndarray, x0: np.ndarray, x1: np.ndarray) -> np.ndarray:
    """Mean of the distances of ``x1`` to ``F x0`` and of ``x0`` to ``F^T x1`` (pixels), (N,) for (N, 2) points."""
    x0, x1 = np.asarray(x0, np.float64).reshape(-1, 2), np.asarray(x1, np.float64).reshape(-1, 2)
    d1 = np.abs((epipolar_lines(F, x0) * homogeneous(x1)).sum(axis=1))
    d0 = np.abs((epipolar_lines(F.T, x1) * homogeneous(x0)).sum(axis=1))
    return 0.5 * (d0 + d1)


class Views:
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
        self.grids: dict[float, list[Grid]] = {}
        # sites: detections at one location with one size (OpenCV's several orientations) share a site
        self.site: list[np.ndarray] = []
        for k in self.kp:
            if len(k):
                _, inverse = np.unique(np.round(k[:, :3], 3), axis=0, return_inverse=True)
                self.site.append(inverse.reshape(-1).astype(np.int64))
            else:
                self.site.append(np.zeros(0, np.int64))
        self.site_owner = [np.full(int(s.max()) + 1 if len(s) else 0, -1, np.int64) for s in self.site]

    def grid(self, v: int, radius: float) -> Grid:
        if radius not in self.grids:
            self.grids[radius] = [Grid(k[:, :2], radius) for k in self.kp]
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
        return ok & (angle_diff(kp[..., 3], angle) <= conf.max_angle_deg)

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


def triangulate(views: Views, obs: np.ndarray) -> np.ndarray:
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
            y = homogeneous(views.kp[v][obs[sel, v], :2]) @ views.Kinv[v].T
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


def reprojection_errors(views: Views, X: np.ndarray, obs: np.ndarray) -> np.ndarray:
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
