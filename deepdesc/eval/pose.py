"""Relative-pose and epipolar metrics for matched keypoints (pure functions on numpy arrays).

Conventions:

- Points are (N, 2) ``(x, y)`` pixel rows, OpenCV pixel centres (top-left pixel at (0, 0)); ``pts0[k]`` in
  image 0 matches ``pts1[k]`` in image 1. K0, K1 are (3, 3) pinhole intrinsics.
- Relative pose: ``x_cam1 = R @ x_cam0 + t`` (as ``deepdesc.datasets.scenes.relative_pose``); F satisfies
  ``x1^T F x0 = 0`` for homogeneous pixels.
- Pose estimation and its errors follow SuperGlue's evaluation (Sarlin et al., CVPR 2020, ``models/utils.py``):
  essential matrix by OpenCV's RANSAC on intrinsics-normalised points with the pixel threshold divided by the
  mean focal length, the candidate E with the most cheirality inliers, the rotation error as the angle of
  ``R^T R_gt``, the translation error as the angle between the directions folded to ``min(e, 180 - e)``
  (E fixes t only up to sign), and the AUC of the recall curve of the errors up to 5/10/20 degrees. SuperGlue
  takes ``max(err_R, err_t)`` per pair as the error whose AUC it reports. (SuperGlue's mean focal length is
  ``mean(fx0, fy1, fx0, fy1)``, a typo; here it is ``mean(fx0, fy0, fx1, fy1)``, equal for square pixels.)
- OpenCV's RANSAC result depends on the order of the matches, which makes a pose AUC noisy;
  :func:`pose_errors_over_orders` estimates on several seeded permutations so that callers can average.
- Epipolar distances are geometric, in pixels: the distance of ``pts1`` to the line ``F x0`` in image 1 and of
  ``pts0`` to the line ``F^T x1`` in image 0. The symmetric distance of a match is the larger of the two, so a
  match is correct at threshold T when both points lie within T px of the other's epipolar line. (This is not
  SuperGlue's "symmetric epipolar distance", a squared error in normalised coordinates.)
- Angles are in degrees, float. A failed estimate has errors ``inf``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

__all__ = [
    "angle_error_rotation",
    "angle_error_translation",
    "epipolar_distances",
    "epipolar_precision",
    "estimate_relative_pose",
    "pose_auc",
    "pose_error",
    "pose_errors_over_orders",
    "symmetric_epipolar_distance",
]

MIN_POINTS = 5  # the five-point solver's minimum


def _points(name: str, pts: Any) -> np.ndarray:
    a = np.asarray(pts, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"{name}: expected points of shape (N, 2), got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: points must be finite")
    return np.ascontiguousarray(a)


def _pair(pts0: Any, pts1: Any) -> tuple[np.ndarray, np.ndarray]:
    p0, p1 = _points("pts0", pts0), _points("pts1", pts1)
    if len(p0) != len(p1):
        raise ValueError(f"pts0 and pts1 differ in length: {len(p0)} != {len(p1)}")
    return p0, p1


def _matrix(name: str, a: Any) -> np.ndarray:
    m = np.asarray(a, dtype=np.float64)
    if m.shape != (3, 3):
        raise ValueError(f"{name}: expected shape (3, 3), got {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError(f"{name}: values must be finite")
    return m


def _normalise(pts: np.ndarray, K: np.ndarray) -> np.ndarray:
    h = np.c_[pts, np.ones(len(pts))] @ np.linalg.inv(K).T
    return np.ascontiguousarray(h[:, :2] / h[:, 2:])


def estimate_relative_pose(
    pts0: Any,
    pts1: Any,
    K0: Any,
    K1: Any,
    threshold_px: float = 1.0,
    confidence: float = 0.99999,
    rng_seed: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Relative pose from matches by essential-matrix RANSAC, SuperGlue's ``estimate_pose``.

    Points (N, 2) pixels are normalised with ``K0^-1`` / ``K1^-1``; ``cv2.findEssentialMat`` (RANSAC, identity
    camera, threshold ``threshold_px / mean(fx0, fy0, fx1, fy1)``, ``confidence``) may return several stacked
    3x3 solutions, and the one with the most ``cv2.recoverPose`` cheirality inliers wins. ``rng_seed`` seeds
    OpenCV's global RNG (``cv2.setRNGSeed``) first. (OpenCV's classic RANSAC also re-seeds its own generator on
    each call, so a given match order gives the same result anyway; permute the matches for other draws.)

    Returns ``(R (3, 3), t (3,) unit vector, inlier_mask (N,) bool of the RANSAC inliers)`` with
    ``x_cam1 = R x_cam0 + t`` up to the scale of t, or ``None`` for fewer than 5 matches or when no pose is found.
    """
    p0, p1 = _pair(pts0, pts1)
    K0, K1 = _matrix("K0", K0), _matrix("K1", K1)
    if threshold_px <= 0 or not 0 < confidence < 1:
        raise ValueError(f"need threshold_px > 0 and 0 < confidence < 1, got {threshold_px}, {confidence}")
    if len(p0) < MIN_POINTS:
        return None
    if rng_seed is not None:
        cv2.setRNGSeed(int(rng_seed))
    n0, n1 = _normalise(p0, K0), _normalise(p1, K1)
    f_mean = float(np.mean([K0[0, 0], K0[1, 1], K1[0, 0], K1[1, 1]]))
    try:
        E, mask = cv2.findEssentialMat(
            n0, n1, np.eye(3), method=cv2.RANSAC, prob=confidence, threshold=threshold_px / f_mean
        )
    except cv2.error:  # degenerate input, e.g. all points equal
        return None
    if E is None or mask is None or E.shape[0] < 3 or E.shape[0] % 3 or E.shape[1] != 3:
        return None
    best_inliers, best = 0, None
    for E_k in np.split(E, E.shape[0] // 3):
        n_inliers, R, t, _ = cv2.recoverPose(E_k, n0, n1, np.eye(3), 1e9, mask=mask.copy())
        if n_inliers > best_inliers:
            best_inliers, best = n_inliers, (np.asarray(R, dtype=np.float64), np.asarray(t, dtype=np.float64)[:, 0])
    if best is None:
        return None
    return best[0], best[1], mask.ravel() > 0


def angle_error_rotation(R: Any, R_gt: Any) -> float:
    """Angle in degrees of the rotation ``R^T R_gt`` (0 to 180), computed stably for small angles."""
    D = _matrix("R", R).T @ _matrix("R_gt", R_gt)
    sin = 0.5 * np.linalg.norm([D[2, 1] - D[1, 2], D[0, 2] - D[2, 0], D[1, 0] - D[0, 1]])
    cos = 0.5 * (np.trace(D) - 1.0)
    return float(np.degrees(np.arctan2(sin, cos)))


def angle_error_translation(t: Any, t_gt: Any) -> float:
    """Angle in degrees between translation directions, folded to ``min(e, 180 - e)`` (0 to 90): E fixes the
    sign of t only up to -1. ``nan`` if either vector is zero (direction undefined, e.g. a pure rotation)."""
    a = np.asarray(t, dtype=np.float64).reshape(3)
    b = np.asarray(t_gt, dtype=np.float64).reshape(3)
    if not (np.linalg.norm(a) > 0 and np.linalg.norm(b) > 0):
        return float("nan")
    err = float(np.degrees(np.arctan2(np.linalg.norm(np.cross(a, b)), np.dot(a, b))))
    return min(err, 180.0 - err)


def pose_error(R: Any | None, t: Any | None, R_gt: Any, t_gt: Any) -> tuple[float, float]:
    """``(err_R, err_t)`` in degrees (see :func:`angle_error_rotation`, :func:`angle_error_translation`);
    ``(inf, inf)`` when the estimate failed (``R`` or ``t`` is None)."""
    if R is None or t is None:
        return float("inf"), float("inf")
    return angle_error_rotation(R, R_gt), angle_error_translation(t, t_gt)


def pose_errors_over_orders(
    pts0: Any,
    pts1: Any,
    K0: Any,
    K1: Any,
    R_gt: Any,
    t_gt: Any,
    n_orders: int = 5,
    seed: int = 0,
    threshold_px: float = 1.0,
    confidence: float = 0.99999,
) -> list[tuple[float, float]]:
    """``(err_R, err_t)`` of :func:`estimate_relative_pose` on ``n_orders`` permutations of the matches.

    Permutation k is drawn from ``np.random.default_rng(seed)`` (and OpenCV's RNG is seeded with ``seed + k``),
    so the list is reproducible; average AUCs over it to damp RANSAC's dependence on the match order. Failed
    estimates give ``(inf, inf)``.
    """
    p0, p1 = _pair(pts0, pts1)
    if n_orders < 1:
        raise ValueError(f"n_orders must be >= 1, got {n_orders}")
    rng = np.random.default_rng(seed)
    errors = []
    for k in range(n_orders):
        order = rng.permutation(len(p0))
        result = estimate_relative_pose(p0[order], p1[order], K0, K1, threshold_px, confidence, rng_seed=seed + k)
        errors.append(pose_error(None, None, R_gt, t_gt) if result is None else pose_error(*result[:2], R_gt, t_gt))
    return errors


def pose_auc(errors: Sequence[float] | np.ndarray, thresholds: Sequence[float] = (5, 10, 20)) -> list[float]:
    """Area under the recall-vs-error curve up to each threshold, divided by it (SuperGlue's ``pose_auc``).

    The errors (degrees; ``inf`` for failures) are sorted into a recall curve starting at (0, 0), with recall
    k/n at the k-th smallest error; the curve is cut at the threshold (an error equal to it does not count),
    held flat up to it and integrated with the trapezoid rule. Returns one value in [0, 1] per threshold. Raises
    ``ValueError`` for no errors, ``nan`` errors or non-positive thresholds.
    """
    e = np.asarray(errors, dtype=np.float64).ravel()
    if e.size == 0:
        raise ValueError("pose_auc: no errors")
    if np.isnan(e).any():
        raise ValueError("pose_auc: nan errors (undefined translation direction?); drop those pairs or use inf")
    e = np.r_[0.0, np.sort(e)]
    recall = np.r_[0.0, np.arange(1, e.size) / (e.size - 1)]
    aucs = []
    for threshold in thresholds:
        threshold = float(threshold)
        if not threshold > 0:
            raise ValueError(f"pose_auc: thresholds must be positive, got {threshold}")
        last = int(np.searchsorted(e, threshold))  # e[:last] < threshold; e[0] = 0 so last >= 1
        r = np.r_[recall[:last], recall[last - 1]]
        x = np.r_[e[:last], threshold]
        aucs.append(float(np.sum(0.5 * (r[1:] + r[:-1]) * np.diff(x)) / threshold))
    return aucs


def epipolar_distances(pts0: Any, pts1: Any, F: Any) -> tuple[np.ndarray, np.ndarray]:
    """Point-to-epipolar-line distances in pixels, ``(d0, d1)``, each (N,) float64.

    ``d1[k]`` is the distance of ``pts1[k]`` to the line ``F x0`` in image 1, ``d0[k]`` that of ``pts0[k]`` to
    ``F^T x1`` in image 0 (x homogeneous pixels). ``nan`` where the line is undefined (the point is the epipole).
    """
    p0, p1 = _pair(pts0, pts1)
    F = _matrix("F", F)
    h0, h1 = np.c_[p0, np.ones(len(p0))], np.c_[p1, np.ones(len(p1))]
    lines1, lines0 = h0 @ F.T, h1 @ F  # rows: F x0, F^T x1
    algebraic = np.abs(np.sum(h1 * lines1, axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        d1 = algebraic / np.hypot(lines1[:, 0], lines1[:, 1])
        d0 = algebraic / np.hypot(lines0[:, 0], lines0[:, 1])
    return d0, d1


def symmetric_epipolar_distance(pts0: Any, pts1: Any, F: Any) -> np.ndarray:
    """Per-match ``max(d0, d1)`` of :func:`epipolar_distances`, (N,) float64 pixels (one undefined side ignored)."""
    d0, d1 = epipolar_distances(pts0, pts1, F)
    return np.fmax(d0, d1)


def epipolar_precision(pts0: Any, pts1: Any, F: Any, threshold: float = 2.0) -> tuple[float, int]:
    """Share of matches whose :func:`symmetric_epipolar_distance` is below ``threshold`` px, and their number.

    Returns ``(precision, num_correct)``; precision is ``nan`` for zero matches.
    """
    d = symmetric_epipolar_distance(pts0, pts1, F)
    correct = int(np.count_nonzero(d < threshold))
    return (correct / d.size if d.size else float("nan")), correct
