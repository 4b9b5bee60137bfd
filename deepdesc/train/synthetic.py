"""Self-supervised training pairs with exact ground truth, made from real images.

Two sources, both split by source image so validation never shares an image with training:

* :class:`SheetPairs` — real PhotoTour patches (64x64, from the patch sheets). Two views of the same
  patch under random similarity warps about its centre (keypoint-like jitter in position, scale and
  orientation) and photometric changes.
* :class:`ImagePairs` — natural photographs. A random homography (rotation, scale, shear,
  perspective) warps the photo; DoG keypoints of the original are projected through it with
  HPatches-like noise, and both views are cut with the same patch extractor used at inference.

Every batch is a pure function of ``(seed, index)``: a run restarted at step ``s`` sees exactly the
batches an uninterrupted run would have seen (resume needs no data-loader state).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ..features.keypoints import detect_keypoints, transform_keypoints
from ..features.patches import extract_patches

__all__ = ["Augment", "SheetPairs", "ImagePairs", "PhotoTourPairs", "ViewPairPairs", "PairBatches", "photometric"]


@dataclass
class Augment:
    """Ranges of the random changes between the two views of a pair."""

    rotation_deg: float = 15.0  # orientation error of a detector, +-
    log2_scale: float = 0.25  # scale error, +- in octaves
    shift_px: float = 2.0  # position error in 64x64 patch pixels, +-
    blur_sigma: tuple[float, float] = (0.0, 1.5)
    noise_std: tuple[float, float] = (0.0, 6.0)
    gamma: tuple[float, float] = (0.6, 1.6)
    contrast: tuple[float, float] = (0.6, 1.4)
    brightness: float = 30.0  # +- intensity offset
    jpeg_probability: float = 0.3
    jpeg_quality: tuple[int, int] = (30, 90)
    # Image pairs: the homography between the two photos.
    view_rotation_deg: float = 60.0
    view_log2_scale: float = 0.7
    view_shear: float = 0.2
    view_perspective: float = 0.0006
    view_aspect: float = 0.2  # +- octaves of anisotropic scale
    # Image pairs: detector-like noise on the second view's keypoints (HPatches-style; the evaluation's).
    kp_position: float = 0.05  # +- fraction of the keypoint size
    kp_log2_scale: float = 0.15  # +- octaves
    kp_angle_deg: float = 10.0  # +- degrees


def photometric(img: np.ndarray, rng: np.random.Generator, aug: Augment) -> np.ndarray:
    """Random gamma, contrast, brightness, blur, noise and JPEG on a uint8 or float 0..255 image."""
    x = np.clip(img.astype(np.float32), 0, 255) / 255.0
    x = x ** rng.uniform(*aug.gamma)
    x = (x - 0.5) * rng.uniform(*aug.contrast) + 0.5 + rng.uniform(-aug.brightness, aug.brightness) / 255.0
    x = np.clip(x * 255.0, 0, 255)
    sigma = rng.uniform(*aug.blur_sigma)
    if sigma > 0.3:
        x = cv2.GaussianBlur(x, (0, 0), sigma)
    x = x + rng.normal(0.0, rng.uniform(*aug.noise_std), x.shape).astype(np.float32)
    x = np.clip(x, 0, 255).astype(np.uint8)
    if rng.random() < aug.jpeg_probability:
        ok, buf = cv2.imencode(".jpg", x, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(*aug.jpeg_quality))])
        if ok:
            x = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    return x


def _jitter_warp(patch: np.ndarray, rng: np.random.Generator, aug: Augment) -> np.ndarray:
    """Warp a 64x64 patch about its centre by a random similarity; zooms in at least a little so the
    rotated view stays inside the original (no invented border)."""
    size = patch.shape[0]
    c = (size - 1) / 2.0
    angle = rng.uniform(-aug.rotation_deg, aug.rotation_deg)
    rad = np.deg2rad(abs(angle))
    min_zoom = np.cos(rad) + np.sin(rad)  # the rotated square then fits inside the source
    zoom = min_zoom * 2.0 ** rng.uniform(0.0, aug.log2_scale)
    A = cv2.getRotationMatrix2D((c, c), angle, zoom)
    A[:, 2] += rng.uniform(-aug.shift_px, aug.shift_px, 2)
    return cv2.warpAffine(patch, A, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


class SheetPairs:
    """Pairs of views of real PhotoTour patches. ``patches``: (N, 64, 64) uint8 (e.g. a memmap)."""

    def __init__(self, patches: np.ndarray, indices: Sequence[int] | None = None, augment: Augment | None = None):
        self.patches = patches
        self.indices = np.arange(len(patches)) if indices is None else np.asarray(indices)
        self.augment = augment or Augment()
        if len(self.indices) < 2:
            raise ValueError("SheetPairs needs at least 2 patches")

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n pairs -> two (n, 64, 64) uint8 arrays; row i of both shows the same scene point."""
        chosen = rng.choice(self.indices, size=n, replace=len(self.indices) < n)
        a = np.empty((n, 64, 64), np.uint8)
        p = np.empty((n, 64, 64), np.uint8)
        for k, idx in enumerate(chosen):
            src = np.asarray(self.patches[idx])
            a[k] = photometric(_jitter_warp(src, rng, self.augment), rng, self.augment)
            p[k] = photometric(_jitter_warp(src, rng, self.augment), rng, self.augment)
        return a, p


def random_homography(rng: np.random.Generator, width: int, height: int, aug: Augment) -> np.ndarray:
    """A random viewpoint change about the image centre, scaled to keep most of the image in view."""
    cx, cy = width / 2.0, height / 2.0
    angle = np.deg2rad(rng.uniform(-aug.view_rotation_deg, aug.view_rotation_deg))
    scale = 2.0 ** rng.uniform(-aug.view_log2_scale, aug.view_log2_scale * 0.5)
    shear = rng.uniform(-aug.view_shear, aug.view_shear)
    R = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    S = np.diag([scale, scale * 2.0 ** rng.uniform(-aug.view_aspect, aug.view_aspect), 1.0])
    K = np.array([[1, shear, 0], [0, 1, 0], [0, 0, 1.0]])
    P = np.eye(3)
    P[2, :2] = rng.uniform(-aug.view_perspective, aug.view_perspective, 2)
    T = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1.0]])
    Ti = np.array([[1, 0, cx], [0, 1, cy], [0, 0, 1.0]])
    return Ti @ P @ R @ S @ K @ T


class ImagePairs:
    """Pairs of patches cut from photographs and their random homographic warps.

    ``images``: list of (H, W) uint8 grayscale photos. ``patch_options`` are passed to
    :func:`deepdesc.patches.extract_patches` so training sees exactly the inference patches.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        augment: Augment | None = None,
        max_side: int = 640,
        keypoints_per_image: int = 1500,
        patch_options: dict | None = None,
    ):
        self.augment = augment or Augment()
        self.patch_options = patch_options or {}
        self.images = []
        self.keypoints = []
        for img in images:
            scale = min(1.0, max_side / max(img.shape))
            if scale < 1.0:
                img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            kpts = detect_keypoints(img, max_keypoints=keypoints_per_image)
            if len(kpts) >= 8:
                self.images.append(img)
                self.keypoints.append(kpts)
        if not self.images:
            raise ValueError("ImagePairs needs at least one image with 8 or more keypoints")

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        out_a, out_p, total, attempts = [], [], 0, 0
        while total < n:
            attempts += 1
            if attempts > 20 + 4 * n:
                raise RuntimeError("ImagePairs: could not cut enough patch pairs; images too small for the region")
            k = int(rng.integers(len(self.images)))
            img, kpts = self.images[k], self.keypoints[k]
            h, w = img.shape
            H = random_homography(rng, w, h, self.augment)
            warped = cv2.warpPerspective(img, H, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
            warped = photometric(warped, rng, self.augment)
            proj = transform_keypoints(kpts, H)
            inside = (proj[:, 0] > 8) & (proj[:, 0] < w - 9) & (proj[:, 1] > 8) & (proj[:, 1] < h - 9)
            idx = np.flatnonzero(inside)
            if len(idx) < 2:
                continue
            idx = rng.permutation(idx)[: n - total]
            src, dst = kpts[idx].copy(), proj[idx].copy()
            # detector-like noise on the second view (HPatches-style geometric noise)
            m = len(idx)
            aug = self.augment
            dst[:, :2] += rng.uniform(-1, 1, (m, 2)) * dst[:, 2:3] * aug.kp_position
            dst[:, 2] *= 2.0 ** rng.uniform(-aug.kp_log2_scale, aug.kp_log2_scale, m)
            dst[:, 3] = (dst[:, 3] + rng.uniform(-aug.kp_angle_deg, aug.kp_angle_deg, m)) % 360
            options = {**self.patch_options, "border": "drop"}  # no invented border content
            pa, kept_a = extract_patches(img, src, **options)
            pp, kept_p = extract_patches(warped, dst, **options)
            both, ia, ip = np.intersect1d(kept_a, kept_p, return_indices=True)
            if len(both) == 0:
                continue
            out_a.append(pa[ia])
            out_p.append(pp[ip])
            m = len(both)
            total += m
        a = np.concatenate(out_a)[:n]
        p = np.concatenate(out_p)[:n]
        return np.clip(a, 0, 255).astype(np.uint8), np.clip(p, 0, 255).astype(np.uint8)


def _runs(sorted_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start index and length of each run of equal values in ``sorted_ids`` (N,)."""
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    return starts, np.diff(np.r_[starts, len(sorted_ids)])


def _distractor_mask(rng: np.random.Generator, n: int, fraction: float) -> np.ndarray:
    """(n,) bool, False for about ``fraction`` of the rows (distractor rows), with at least 2 rows True: the
    triplet loss needs two real pairs."""
    valid = rng.random(n) >= fraction
    if valid.sum() < 2:
        valid[:2] = True
    return valid


class PhotoTourPairs:
    """Corresponding patches of the same 3D point from labelled PhotoTour data (the paper's training data).

    ``patches`` (N, 64, 64) uint8 and ``point_ids`` (N,); ``points`` restricts sampling to a subset of
    3D point ids (train/validation split). Each sampled pair is two different patches of one point.
    """

    def __init__(
        self,
        patches: np.ndarray,
        point_ids: np.ndarray,
        points: Sequence[int] | None = None,
        distractor_fraction: float = 0.0,
    ):
        self.patches = patches
        order = np.argsort(point_ids, kind="stable")
        ids = point_ids[order]
        starts, counts = _runs(ids)
        keep = counts >= 2
        selected = np.isin(ids[starts], np.asarray(points)) if points is not None else np.ones(len(starts), bool)
        keep &= selected
        self.order, self.starts, self.counts = order, starts[keep], counts[keep]
        # single-patch points: detections without a counterpart (deepdesc make-patches records them)
        self.distractors = order[starts[(counts == 1) & selected]]
        self.distractor_fraction = float(distractor_fraction) if len(self.distractors) else 0.0
        if len(self.starts) < 2:
            raise ValueError("PhotoTourPairs needs at least 2 3D points with 2 or more patches each")

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
        """``n`` pairs of two patches of one point; with ``distractor_fraction``, that share of the rows are
        distractor rows (a single-view patch and a patch of another point, ``valid = False``)."""
        chosen = rng.choice(len(self.starts), size=n, replace=len(self.starts) < n)
        first = rng.integers(0, self.counts[chosen])
        second = (first + rng.integers(1, self.counts[chosen])) % self.counts[chosen]
        a = self.order[self.starts[chosen] + first]
        p = self.order[self.starts[chosen] + second]
        if not self.distractor_fraction:
            return np.asarray(self.patches[a]), np.asarray(self.patches[p])
        valid = _distractor_mask(rng, n, self.distractor_fraction)
        invalid = np.flatnonzero(~valid)
        a[invalid] = self.distractors[rng.integers(0, len(self.distractors), len(invalid))]
        return np.asarray(self.patches[a]), np.asarray(self.patches[p]), valid


class ViewPairPairs:
    """Multi-view pairs whose rows, per call, all come from **one pair of views**, as keypoints do at matching.

    ``patches`` (N, 64, 64) uint8, ``point_ids`` (N,) and ``view_ids`` (N,): the 3D point and view of each patch
    (``info.txt`` of ``deepdesc make-patches``). Each call picks a view pair ``(v, w)`` with probability
    proportional to the points the two views share (among pairs sharing at least the rows asked for) and
    returns patches of shared points in ``v`` (anchors) and ``w`` (positives), so every negative of a row is
    another keypoint of the same two images. With ``distractor_fraction``, that share of the rows have a
    single-view detection of ``v`` as anchor (``valid = False``): a keypoint of image ``v`` without a counterpart
    in ``w``, which must stay farther from each positive than its true anchor.
    """

    def __init__(
        self,
        patches: np.ndarray,
        point_ids: np.ndarray,
        view_ids: np.ndarray,
        distractor_fraction: float = 0.0,
    ):
        point_ids, view_ids = np.asarray(point_ids), np.asarray(view_ids)
        if point_ids.shape != view_ids.shape or point_ids.ndim != 1:
            raise ValueError(f"point_ids and view_ids must be (N,) arrays, got {point_ids.shape} and {view_ids.shape}")
        self.patches = patches
        order = np.lexsort((view_ids, point_ids))  # by point, then view: each key below has v < w
        starts, counts = _runs(point_ids[order])
        shared: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for start, count in zip(starts[counts >= 2], counts[counts >= 2]):
            members = order[start : start + count]
            for i in range(count):
                for j in range(i + 1, count):
                    key = (int(view_ids[members[i]]), int(view_ids[members[j]]))
                    if key[0] != key[1]:
                        shared.setdefault(key, []).append((int(members[i]), int(members[j])))
        kept = sorted(k for k, v in shared.items() if len(v) >= 2)
        if not kept:
            raise ValueError("ViewPairPairs needs a pair of views sharing at least 2 points")
        self.view_pairs = kept
        self.rows = [np.asarray(shared[k], dtype=np.int64) for k in kept]
        self.sizes = np.array([len(r) for r in self.rows], dtype=np.float64)
        single = order[starts[counts == 1]]
        self.distractors = {int(v): single[view_ids[single] == v] for v in np.unique(view_ids[single])}
        self.distractor_fraction = float(distractor_fraction) if len(single) else 0.0

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
        """``n`` rows from one view pair (its direction random): anchors, positives and ``valid`` (n,) bool."""
        weights = np.where(self.sizes >= n, self.sizes, 0.0)
        if not weights.any():
            raise ValueError(
                f"ViewPairPairs: no pair of views shares {n} points (at most {int(self.sizes.max())}); "
                "use a smaller data.batch_size or a smaller weight for this source"
            )
        k = int(rng.choice(len(self.rows), p=weights / weights.sum()))
        rows = self.rows[k]
        chosen = rows[rng.choice(len(rows), size=n, replace=False)]  # distinct points: no false negatives
        flip = bool(rng.integers(0, 2))
        a, p = (chosen[:, 1], chosen[:, 0]) if flip else (chosen[:, 0], chosen[:, 1])
        valid = np.ones(n, bool)
        pool = self.distractors.get(self.view_pairs[k][1 if flip else 0], np.empty(0, np.int64))
        if self.distractor_fraction and len(pool):
            valid = _distractor_mask(rng, n, self.distractor_fraction)
            invalid = np.flatnonzero(~valid)
            a[invalid] = pool[rng.choice(len(pool), size=len(invalid), replace=len(pool) < len(invalid))]
        return np.asarray(self.patches[a]), np.asarray(self.patches[p]), valid


class PairBatches(torch.utils.data.Dataset):
    """Map-style dataset whose item ``i`` is the whole batch ``i``: two (B, 1, 64, 64) float tensors.

    ``sources`` are sampled with probabilities ``weights``; batch ``i`` depends only on ``(seed, i)``.
    Use with ``DataLoader(dataset, batch_size=None, sampler=range(start, stop), num_workers=...)``.
    """

    def __init__(self, sources: Sequence, batch_size: int, seed: int, weights: Sequence[float] | None = None):
        self.sources = list(sources)
        self.batch_size = batch_size
        self.seed = seed
        w = np.ones(len(self.sources)) if weights is None else np.asarray(weights, dtype=np.float64)
        self.weights = w / w.sum()

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batch ``index``: anchors and positives (B, 1, 64, 64) float, and ``valid`` (B,) bool (False: a
        distractor row, see :func:`~deepdesc.train.losses.hardest_in_batch_triplet_loss`)."""
        rng = np.random.default_rng([self.seed, int(index)])
        counts = rng.multinomial(self.batch_size, self.weights)
        parts = [src.sample(rng, int(c)) for src, c in zip(self.sources, counts) if c > 0]
        a = np.concatenate([x[0] for x in parts])
        p = np.concatenate([x[1] for x in parts])
        valid = np.concatenate([x[2] if len(x) > 2 else np.ones(len(x[0]), bool) for x in parts])
        order = rng.permutation(len(a))
        a = torch.from_numpy(a[order]).float()[:, None]
        p = torch.from_numpy(p[order]).float()[:, None]
        return a, p, torch.from_numpy(valid[order])
