"""Extract scale- and orientation-normalised 64x64 patches around keypoints.

Geometry (keypoint conventions in :mod:`deepdesc.keypoints`): a keypoint ``(x, y, size, angle)`` gives a
square region of side ``region_scale * size`` image pixels centred on ``(x, y)``, resampled to
``patch_size x patch_size`` pixels, so one patch pixel spans ``step = region_scale * size / patch_size``
image pixels. The patch centre ``((P - 1) / 2, (P - 1) / 2)`` (between the four central pixels of an
even-sized patch) lies exactly on ``(x, y)``. Patch columns run along the keypoint direction
``(cos(angle), sin(angle))`` and rows along ``(-sin(angle), cos(angle))``: patch pixel
``(row i, col j)`` samples the image at::

    (x, y) + step * (u * (cos a, sin a) + v * (-sin a, cos a)),   u = j - (P - 1) / 2,  v = i - (P - 1) / 2

So with angle 0 a patch is an upright crop, and the same scene point gives the same patch pixel in a
rotated or rescaled image when the keypoints follow the image (angle ``a - phi`` after a
counter-clockwise on-screen rotation by ``phi``; ``size / 2`` after halving the image).

Smoothing: the image is assumed to carry a blur of 0.5 pixel (sigma). A patch sampled with step ``s``
should look like the scene imaged at ``s`` pixels per patch pixel, then smoothed by ``blur_sigma``
patch pixels, i.e. the image needs an extra blur of ``sqrt(0.25 * max(s^2 - 1, 0) + (blur_sigma * s)^2)``
image pixels. It is taken from a Gaussian scale space built once per image (``LEVELS_PER_OCTAVE`` blur
levels per octave, each stored at the coarsest resolution at which it is still well sampled), choosing
the nearest level, and sampled bilinearly; patches that need less blur than the first level (strongly
upsampled, small keypoints) are sampled from the raw image and blurred by ``blur_sigma`` in patch
space instead. There is no aliasing however large the region is.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from ..utils import thread_pool
from .image import load_image
from .keypoints import to_keypoint_array

__all__ = [
    "BORDER_MODES",
    "DEFAULT_BLUR_SIGMA",
    "DEFAULT_PATCH_SIZE",
    "DEFAULT_REGION_SCALE",
    "ScaleSpace",
    "extract_patches",
    "patch_sampling_grid",
]

DEFAULT_PATCH_SIZE = 64
#: Patch side as a multiple of the keypoint size (diameter) and extra Gaussian smoothing of the output in
#: patch pixels, chosen for the original models by bench/sweep_patch_params.py (docs/patch_sweep.md).
DEFAULT_REGION_SCALE = 16.0
DEFAULT_BLUR_SIGMA = 2.0
BORDER_MODES = ("replicate", "reflect", "drop")

#: Blur levels per octave of the scale space; the chosen level's blur is within 2^(+-1/(2n)) of the target.
LEVELS_PER_OCTAVE = 3
#: Blur (sigma, image pixels) of the first blurred level; level j >= 1 has SIGMA_MIN * 2^((j-1)/n).
SIGMA_MIN = 0.5
#: Blur assumed present in the input image (sigma, pixels).
SIGMA_IMAGE = 0.5
#: A level is stored at half the previous resolution once its total blur reaches this many of its pixels.
_MIN_LEVEL_SIGMA = 0.8
#: Coarser levels are not built below this side length (pixels); larger blurs use the coarsest level.
_MIN_LEVEL_SIDE = 16
#: Patch-space blurs below this (patch pixels) are skipped.
_MIN_POST_SIGMA = 0.25
#: Patches blurred per cv2.GaussianBlur call (small enough to stay in cache).
_CHUNK = 128

_CV_BORDER = {"replicate": cv2.BORDER_REPLICATE, "drop": cv2.BORDER_REPLICATE, "reflect": cv2.BORDER_REFLECT_101}


class ScaleSpace:
    """Gaussian scale space of a float32 image, levels built lazily on demand.

    Level 0 is the image. Level ``j >= 1`` is the image blurred by ``sigma(j)`` image pixels, stored with
    pixel pitch ``pitch(j)`` (a power of 2; 2x2 block means), so image point ``x`` is at level coordinate
    ``(x + 0.5) / pitch - 0.5``. ``border`` is the OpenCV border mode used by the blurs.
    """

    def __init__(self, image: np.ndarray, border: int = cv2.BORDER_REPLICATE):
        self.border = border
        self.images: list[np.ndarray] = [np.ascontiguousarray(image, dtype=np.float32)]
        self.pitches: list[int] = [1]
        self.sigmas: list[float] = [0.0]
        self._top = False  # True once the coarsest useful level is built

    @staticmethod
    def level_sigma(level: int) -> float:
        """Extra blur of ``level`` in image pixels (0 for level 0)."""
        return 0.0 if level == 0 else SIGMA_MIN * 2.0 ** ((level - 1) / LEVELS_PER_OCTAVE)

    @staticmethod
    def nearest_level(sigma: np.ndarray) -> np.ndarray:
        """Level whose blur is nearest ``sigma`` (image pixels) on a log scale; 0 below the first level."""
        sigma = np.asarray(sigma, dtype=np.float64)
        n = LEVELS_PER_OCTAVE
        with np.errstate(divide="ignore"):
            level = 1 + np.rint(n * np.log2(np.maximum(sigma, 1e-12) / SIGMA_MIN))
        level = np.where(sigma < SIGMA_MIN * 2.0 ** (-0.5 / n), 0, np.maximum(level, 1))
        return level.astype(np.int64)

    def build(self, max_level: int) -> int:
        """Build levels up to ``max_level`` (fewer if the image gets too small); return the top level."""
        while len(self.images) <= max_level and not self._top:
            j = len(self.images)
            prev, pitch, prev_sigma = self.images[-1], self.pitches[-1], self.sigmas[-1]
            sigma = self.level_sigma(j)
            total = math.sqrt(SIGMA_IMAGE**2 + sigma**2)
            halve = total / (2 * pitch) >= _MIN_LEVEL_SIGMA
            if halve and min(prev.shape) < 2 * _MIN_LEVEL_SIDE:
                self._top = True
                break
            # The 2x2 block mean adds a variance of 0.25 (fine-level pixels^2).
            var = sigma**2 - prev_sigma**2 - (0.25 * pitch**2 if halve else 0.0)
            img = prev
            if var > 0:
                img = cv2.GaussianBlur(prev, (0, 0), math.sqrt(var) / pitch, borderType=self.border)
            if halve:
                h, w = img.shape
                if h % 2 or w % 2:
                    img = cv2.copyMakeBorder(img, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)
                img = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
                pitch *= 2
            self.images.append(img)
            self.pitches.append(pitch)
            self.sigmas.append(sigma)
        return len(self.images) - 1


def patch_sampling_grid(
    keypoints: np.ndarray, patch_size: int = DEFAULT_PATCH_SIZE, region_scale: float = DEFAULT_REGION_SCALE
) -> tuple[np.ndarray, np.ndarray]:
    """Image coordinates sampled by each patch pixel. ``(N, 5)`` keypoints -> ``map_x, map_y`` (N, P, P) float32.

    Pixel ``[k, i, j]`` (row ``i``, column ``j`` of patch ``k``) samples the image at ``(map_x, map_y)``.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    step = region_scale * kp[:, 2] / patch_size
    theta = np.deg2rad(kp[:, 3])
    return _grid(kp[:, 0], kp[:, 1], step * np.cos(theta), step * np.sin(theta), patch_size)


def _grid(
    cx: np.ndarray,
    cy: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    p: int,
    out: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Sampling maps (N, P, P) float32 for centres (cx, cy) and step vectors a = s cos, b = s sin.

    ``x = cx + a u - b v``, ``y = cy + b u + a v`` with ``u`` the column and ``v`` the row offset from the
    patch centre: a row term plus a column term, one broadcast add per map (into ``out`` if given).
    """
    n = cx.shape[0]
    u = (np.arange(p, dtype=np.float64) - (p - 1) / 2.0)[None, :]
    map_x, map_y = out if out is not None else (np.empty((n, p, p), np.float32), np.empty((n, p, p), np.float32))
    row_x = (cx[:, None] + a[:, None] * u).astype(np.float32)
    row_y = (cy[:, None] + b[:, None] * u).astype(np.float32)
    np.subtract(row_x[:, None, :], (b[:, None] * u).astype(np.float32)[:, :, None], out=map_x)
    np.add(row_y[:, None, :], (a[:, None] * u).astype(np.float32)[:, :, None], out=map_y)
    return map_x, map_y


def _affine_matrices(x: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray, pitch: int, q: int) -> np.ndarray:
    """(N, 2, 3) float64 maps from (q, q) patch pixels to level coordinates (pitch ``pitch``), for cv2's
    ``WARP_INVERSE_MAP``: the same geometry as :func:`patch_sampling_grid`."""
    c = (q - 1) / 2.0
    cx, cy = (x + 0.5) / pitch - 0.5, (y + 0.5) / pitch - 0.5
    a, b = a / pitch, b / pitch
    m = np.empty((x.shape[0], 2, 3), np.float64)
    m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = a, -b, cx - c * (a - b)
    m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = b, a, cy - c * (a + b)
    return m


def _warn_implausible(kp: np.ndarray, width: int, height: int) -> None:
    """Warn about keypoints centred outside the image or larger than it: described, but rarely intended."""
    outside = (kp[:, 0] < -0.5) | (kp[:, 0] > width - 0.5) | (kp[:, 1] < -0.5) | (kp[:, 1] > height - 0.5)
    huge = kp[:, 2] > 2.0 * max(width, height)
    if outside.any() or huge.any():
        warnings.warn(
            f"{int(outside.sum())} keypoint(s) centred outside the {width}x{height} image and {int(huge.sum())} "
            f"larger than twice its side: their patches are mostly border fill (border='drop' removes those "
            "whose region leaves the image)",
            UserWarning,
            stacklevel=3,
        )


def extract_patches(
    image: Any,
    keypoints: Any,
    patch_size: int = DEFAULT_PATCH_SIZE,
    region_scale: float = DEFAULT_REGION_SCALE,
    blur_sigma: float = DEFAULT_BLUR_SIGMA,
    border: str = "replicate",
    upright: bool = False,
    channel_order: str = "rgb",
) -> tuple[np.ndarray, np.ndarray]:
    """Oriented, scale-normalised patches. Image + N keypoints -> ``(M, P, P)`` float32 0..255, ``(M,)`` int64.

    ``image``: anything :func:`deepdesc.features.image.load_image` accepts. ``keypoints``: anything
    :func:`deepdesc.features.keypoints.to_keypoint_array` accepts (sizes must be positive; keypoints
    centred outside the image or larger than twice its side are described, with a warning). Each patch covers a
    square of side ``region_scale * size`` image pixels centred on the keypoint and rotated by its angle
    (ignored when ``upright``), anti-aliased and smoothed by ``blur_sigma`` patch pixels (module docs).

    ``border``: ``"replicate"`` repeats edge pixels and ``"reflect"`` mirrors about them
    (OpenCV ``BORDER_REFLECT_101``) where a region leaves the image; ``"drop"`` removes keypoints whose
    sampling grid leaves ``[0, W-1] x [0, H-1]``. Returns the patches and ``kept_index``, the indices
    of the input keypoints they belong to (``arange(N)`` unless dropped).
    """
    if border not in BORDER_MODES:
        raise ValueError(f"border must be one of {BORDER_MODES}, got {border!r}")
    if int(patch_size) != patch_size or patch_size < 1:
        raise ValueError(f"patch_size must be a positive integer, got {patch_size}")
    if not (np.isfinite(region_scale) and region_scale > 0):
        raise ValueError(f"region_scale must be positive, got {region_scale}")
    if not (np.isfinite(blur_sigma) and blur_sigma >= 0):
        raise ValueError(f"blur_sigma must be >= 0 (patch pixels), got {blur_sigma}")
    p = int(patch_size)
    img = load_image(image, channel_order=channel_order)
    kp = to_keypoint_array(keypoints).astype(np.float64)
    if kp.shape[0] and not (kp[:, 2] > 0).all():
        raise ValueError("keypoint sizes (diameters in pixels) must be positive to extract patches")
    h, w = img.shape
    n = kp.shape[0]
    _warn_implausible(kp, w, h)
    theta = np.zeros(n) if upright else np.deg2rad(kp[:, 3])
    step = region_scale * kp[:, 2] / p
    a, b = step * np.cos(theta), step * np.sin(theta)

    kept = np.arange(n, dtype=np.int64)
    if border == "drop" and n:
        half = (p - 1) / 2.0
        corners = np.array([[-1, -1], [-1, 1], [1, -1], [1, 1]], dtype=np.float64) * half
        cx = kp[:, 0, None] + a[:, None] * corners[:, 0] - b[:, None] * corners[:, 1]
        cy = kp[:, 1, None] + b[:, None] * corners[:, 0] + a[:, None] * corners[:, 1]
        eps = 1e-6
        inside = (cx >= -eps) & (cx <= w - 1 + eps) & (cy >= -eps) & (cy <= h - 1 + eps)
        kept = np.flatnonzero(inside.all(axis=1)).astype(np.int64)
    patches = np.empty((kept.size, p, p), dtype=np.float32)
    if kept.size == 0:
        return patches, kept
    kp, step, a, b = kp[kept], step[kept], a[kept], b[kept]

    # Extra blur needed (image pixels) and the scale-space level that provides it.
    need = np.sqrt(0.25 * np.maximum(step**2 - 1.0, 0.0) + (blur_sigma * step) ** 2)
    space = ScaleSpace(img, border=_CV_BORDER[border])
    levels = ScaleSpace.nearest_level(need)
    top = space.build(int(levels.max()))
    levels = np.minimum(levels, top)

    # Blur still missing at level 0 (upsampled small keypoints) is applied in patch space: such patches are
    # sampled with a margin of 3 sigma of real image content, blurred together in one call, then cropped.
    post = np.where(levels == 0, need / step, 0.0)
    post = np.round(post / 0.05) * 0.05
    post[(post < _MIN_POST_SIGMA) | (blur_sigma == 0)] = 0.0
    cv_border = _CV_BORDER[border]
    group = levels * 100_000 + np.rint(post / 0.05).astype(np.int64)  # (level, blur) pairs
    tasks = []
    for key in np.unique(group):
        idx = np.flatnonzero(group == key)
        level, sigma = int(levels[idx[0]]), float(post[idx[0]])
        margin = int(math.ceil(3.0 * sigma)) if sigma > 0 else 0
        matrices = _affine_matrices(kp[idx, 0], kp[idx, 1], a[idx], b[idx], space.pitches[level], p + 2 * margin)
        src = space.images[level]
        for start in range(0, idx.size, _CHUNK):
            part = slice(start, start + _CHUNK)
            tasks.append((src, idx[part], matrices[part], sigma, margin))
    _run_tasks(lambda task: _cut_chunk(patches, *task, border=cv_border), tasks)
    return patches, kept


def _cut_chunk(
    patches: np.ndarray, src: np.ndarray, sel: np.ndarray, matrices: np.ndarray, sigma: float, margin: int, border: int
) -> None:
    """Writes ``patches[sel]``: one cv2.warpAffine per patch from level image ``src`` (it computes the sampling grid
    on the fly, faster than cv2.remap with precomputed maps), then the patch-space blur ``sigma`` (patch pixels) if
    any, applied to the stacked patches sampled with a ``margin`` of real image content and cropped."""
    p = patches.shape[1]
    q = p + 2 * margin
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    if margin == 0:
        for k, m in zip(sel.tolist(), matrices):
            cv2.warpAffine(src, m, (q, q), dst=patches[k], flags=flags, borderMode=border)
        return
    buf = np.empty((sel.size, q, q), np.float32)
    for k, m in enumerate(matrices):
        cv2.warpAffine(src, m, (q, q), dst=buf[k], flags=flags, borderMode=border)
    # Stacked patches only mix within their margins, which are cropped away.
    ksize = (2 * margin + 1, 2 * margin + 1)
    buf = cv2.GaussianBlur(buf.reshape(-1, q), ksize, sigma, sigmaY=sigma, borderType=cv2.BORDER_REPLICATE)
    patches[sel] = buf.reshape(-1, q, q)[:, margin : margin + p, margin : margin + p]


def _run_tasks(fn: Callable[[Any], None], tasks: list[Any]) -> None:
    """``fn(task)`` for every task, on up to ``cv2.getNumThreads()`` threads (OpenCV releases the GIL; the tasks
    write disjoint patches, so the result does not depend on the threads)."""
    workers = min(cv2.getNumThreads(), len(tasks))
    if workers < 2:
        for task in tasks:
            fn(task)
        return
    for future in [thread_pool("deepdesc-patches", workers).submit(fn, task) for task in tasks]:
        future.result()
