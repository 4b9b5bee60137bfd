"""Geometric verification of matches with OpenCV's robust estimators (RANSAC, LMedS, RHO, USAC/MAGSAC++)."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

__all__ = ["estimate_homography", "estimate_fundamental", "matched_points", "HOMOGRAPHY_METHODS", "FUNDAMENTAL_METHODS"]

_USAC = {
    "usac_default": cv2.USAC_DEFAULT,
    "usac_magsac": cv2.USAC_MAGSAC,
    "usac_accurate": cv2.USAC_ACCURATE,
    "usac_fast": cv2.USAC_FAST,
    "usac_prosac": cv2.USAC_PROSAC,  # expects matches sorted by quality, best first
    "usac_parallel": cv2.USAC_PARALLEL,
}
HOMOGRAPHY_METHODS: dict[str, int] = {"ransac": cv2.RANSAC, "lmeds": cv2.LMEDS, "rho": cv2.RHO, **_USAC}
FUNDAMENTAL_METHODS: dict[str, int] = {"ransac": cv2.FM_RANSAC, "lmeds": cv2.FM_LMEDS, **_USAC}


def matched_points(kpts1: Any, kpts2: Any, matches: Any) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates of matched keypoints: (N1, >=2), (N2, >=2), (K, 2) int -> pts1 (K, 2), pts2 (K, 2) float64."""
    k1, k2 = np.asarray(kpts1), np.asarray(kpts2)
    m = np.asarray(matches).reshape(-1, 2).astype(np.int64)
    return k1[m[:, 0], :2].astype(np.float64), k2[m[:, 1], :2].astype(np.float64)


def _points(pts1: Any, pts2: Any) -> tuple[np.ndarray, np.ndarray]:
    p1 = np.asarray(pts1, dtype=np.float64)
    p2 = np.asarray(pts2, dtype=np.float64)
    if p1.ndim != 2 or p1.shape[1] != 2 or p2.shape != p1.shape:
        raise ValueError(f"expected two point arrays of the same shape (K, 2); got {p1.shape} and {p2.shape}")
    return p1, p2


def _method(method: str, table: dict[str, int]) -> int:
    try:
        return table[method.lower()]
    except KeyError:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(table)}") from None


def _robust(estimate: Any, p1: np.ndarray, p2: np.ndarray, min_points: int) -> tuple[np.ndarray | None, np.ndarray]:
    """Run one OpenCV estimator; too few points, degenerate data or an OpenCV error -> (None, all False)."""
    none = (None, np.zeros(len(p1), dtype=bool))
    if len(p1) < min_points:
        return none
    if not (np.isfinite(p1).all() and np.isfinite(p2).all()):
        raise ValueError("points contain NaN or inf values")
    try:
        model, mask = estimate(p1, p2)
    except cv2.error:
        return none
    if model is None or mask is None or np.asarray(model).shape != (3, 3) or not np.isfinite(model).all():
        return none
    inliers = np.asarray(mask).reshape(-1).astype(bool)
    if inliers.shape != (len(p1),) or not inliers.any():
        return none
    return np.asarray(model, dtype=np.float64), inliers


def estimate_homography(
    pts1: Any,
    pts2: Any,
    method: str = "usac_magsac",
    threshold_px: float = 3.0,
    confidence: float = 0.9999,
    max_iters: int = 10000,
) -> tuple[np.ndarray | None, np.ndarray]:
    """Robust homography with ``pts2 ~ H @ pts1``: (K, 2), (K, 2) px -> (H (3, 3) float64 or None, mask (K,) bool).

    ``method``: one of :data:`HOMOGRAPHY_METHODS` (``usac_magsac`` = MAGSAC++, ``ransac``, ``lmeds``, ``rho``,
    other ``usac_*`` variants). ``threshold_px``: maximum reprojection error in image 2, in pixels (for MAGSAC++
    the noise upper bound). Fewer than 4 matches, or no model found, gives ``(None, all-False mask)``; this
    never raises for degenerate data. ``H`` is normalised to ``H[2, 2] = 1`` by OpenCV.
    """
    p1, p2 = _points(pts1, pts2)
    flag = _method(method, HOMOGRAPHY_METHODS)

    def run(a: np.ndarray, b: np.ndarray) -> tuple[Any, Any]:
        threshold = float(threshold_px)
        return cv2.findHomography(a, b, flag, threshold, maxIters=int(max_iters), confidence=float(confidence))

    return _robust(run, p1, p2, 4)


def estimate_fundamental(
    pts1: Any,
    pts2: Any,
    method: str = "usac_magsac",
    threshold_px: float = 1.0,
    confidence: float = 0.9999,
    max_iters: int = 10000,
) -> tuple[np.ndarray | None, np.ndarray]:
    """Robust fundamental matrix with ``[p2, 1] F [p1, 1]^T = 0``: (K, 2), (K, 2) px -> (F (3, 3) or None, (K,) bool).

    ``method``: one of :data:`FUNDAMENTAL_METHODS` (``usac_magsac``, ``ransac``, ``lmeds``, other ``usac_*``).
    ``threshold_px``: maximum distance to the epipolar line, in pixels. Fewer than 8 matches, or no model
    found, gives ``(None, all-False mask)``; this never raises for degenerate data. ``F`` is defined up to scale.
    """
    p1, p2 = _points(pts1, pts2)
    flag = _method(method, FUNDAMENTAL_METHODS)

    def run(a: np.ndarray, b: np.ndarray) -> tuple[Any, Any]:
        return cv2.findFundamentalMat(a, b, flag, float(threshold_px), float(confidence), int(max_iters))

    return _robust(run, p1, p2, 8)
