"""Relative-pose and epipolar metrics on synthetic two-view scenes and hand-computed cases."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from deepdesc.eval.pose import (
    angle_error_rotation,
    angle_error_translation,
    epipolar_distances,
    epipolar_precision,
    estimate_relative_pose,
    pose_auc,
    pose_error,
    pose_errors_over_orders,
    symmetric_epipolar_distance,
)

K0 = np.array([[800.0, 0.0, 320.0], [0.0, 800.0, 240.0], [0.0, 0.0, 1.0]])
K1 = np.array([[750.0, 0.0, 300.0], [0.0, 760.0, 250.0], [0.0, 0.0, 1.0]])


def rot(axis, degrees: float) -> np.ndarray:
    axis = np.asarray(axis, dtype=np.float64)
    return cv2.Rodrigues(axis / np.linalg.norm(axis) * np.radians(degrees))[0]


def skew(v) -> np.ndarray:
    return np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]], dtype=np.float64)


def two_view(n: int = 300, noise_px: float = 0.2, outliers: float = 0.0, seed: int = 0):
    """Matches of random 3D points seen by two cameras: (pts0, pts1, R_gt, t_gt, is_outlier)."""
    rng = np.random.default_rng(seed)
    R = rot([0.2, 1.0, 0.1], 12.0)
    t = np.array([-2.0, 0.2, 0.4])
    X = np.c_[rng.uniform(-3, 3, n), rng.uniform(-2, 2, n), rng.uniform(4, 12, n)]  # camera 0 frame
    Y = X @ R.T + t
    assert (Y[:, 2] > 0).all()
    h0, h1 = X @ K0.T, Y @ K1.T
    pts0 = h0[:, :2] / h0[:, 2:] + rng.normal(scale=noise_px, size=(n, 2))
    pts1 = h1[:, :2] / h1[:, 2:] + rng.normal(scale=noise_px, size=(n, 2))
    is_outlier = np.zeros(n, dtype=bool)
    is_outlier[rng.permutation(n)[: int(round(outliers * n))]] = True
    pts1[is_outlier] = rng.uniform([0, 0], [640, 480], size=(is_outlier.sum(), 2))
    return pts0, pts1, R, t, is_outlier


# --- pose estimation ---------------------------------------------------------------------------------------------


def test_estimate_relative_pose_clean():
    pts0, pts1, R_gt, t_gt, _ = two_view()
    result = estimate_relative_pose(pts0, pts1, K0, K1, rng_seed=0)
    assert result is not None
    R, t, mask = result
    assert R.shape == (3, 3) and t.shape == (3,) and mask.shape == (len(pts0),) and mask.dtype == bool
    assert abs(np.linalg.norm(t) - 1) < 1e-9
    err_R, err_t = pose_error(R, t, R_gt, t_gt)
    assert err_R < 1.0 and err_t < 1.0
    assert np.dot(t, t_gt) > 0  # cheirality picks the right sign on clean data
    assert mask.mean() > 0.8


def test_estimate_relative_pose_with_outliers():
    pts0, pts1, R_gt, t_gt, is_outlier = two_view(outliers=0.3, seed=1)
    R, t, mask = estimate_relative_pose(pts0, pts1, K0, K1, threshold_px=1.0, rng_seed=0)
    err_R, err_t = pose_error(R, t, R_gt, t_gt)
    assert err_R < 2.0 and err_t < 2.0
    assert mask[is_outlier].mean() < 0.1  # outliers rejected
    assert mask[~is_outlier].mean() > 0.7  # most inliers kept at 1 px with 0.3 px noise


def test_estimate_relative_pose_is_reproducible():
    pts0, pts1, *_ = two_view(outliers=0.3, seed=2)
    a = estimate_relative_pose(pts0, pts1, K0, K1, rng_seed=7)
    b = estimate_relative_pose(pts0, pts1, K0, K1, rng_seed=7)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_estimate_relative_pose_too_few_points():
    pts0, pts1, *_ = two_view(n=10)
    assert estimate_relative_pose(pts0[:4], pts1[:4], K0, K1) is None
    assert estimate_relative_pose(np.zeros((0, 2)), np.zeros((0, 2)), K0, K1) is None
    degenerate = estimate_relative_pose(np.zeros((8, 2)), np.zeros((8, 2)), K0, K1)  # OpenCV may return garbage
    assert degenerate is None or len(degenerate) == 3


def test_estimate_relative_pose_checks_inputs():
    pts0, pts1, *_ = two_view(n=10)
    with pytest.raises(ValueError, match="differ in length"):
        estimate_relative_pose(pts0, pts1[:9], K0, K1)
    with pytest.raises(ValueError, match=r"pts0: expected points of shape \(N, 2\)"):
        estimate_relative_pose(pts0[:, :1], pts1, K0, K1)
    with pytest.raises(ValueError, match="K1"):
        estimate_relative_pose(pts0, pts1, K0, np.eye(2))


def test_pose_errors_over_orders():
    pts0, pts1, R_gt, t_gt, _ = two_view(outliers=0.3, seed=3)
    errors = pose_errors_over_orders(pts0, pts1, K0, K1, R_gt, t_gt, n_orders=4, seed=5)
    assert len(errors) == 4
    assert all(e_R < 2.0 and e_t < 2.0 for e_R, e_t in errors)
    assert errors == pose_errors_over_orders(pts0, pts1, K0, K1, R_gt, t_gt, n_orders=4, seed=5)
    failed = pose_errors_over_orders(pts0[:4], pts1[:4], K0, K1, R_gt, t_gt, n_orders=2)
    assert failed == [(math.inf, math.inf)] * 2


# --- angle errors ------------------------------------------------------------------------------------------------


def test_angle_error_rotation_hand_cases():
    assert angle_error_rotation(rot([0, 0, 1], 10.0), np.eye(3)) == pytest.approx(10.0, abs=1e-9)
    assert angle_error_rotation(np.eye(3), rot([1, 2, 3], 37.0)) == pytest.approx(37.0, abs=1e-9)
    assert angle_error_rotation(np.diag([1.0, -1.0, -1.0]), np.eye(3)) == pytest.approx(180.0, abs=1e-9)
    R = rot([0.3, -1, 2], 25.0)
    assert angle_error_rotation(R, R) == pytest.approx(0.0, abs=1e-12)
    # the relative rotation matters, not the absolute ones; small angles are exact (no arccos near 1)
    assert angle_error_rotation(R @ rot([1, 0, 0], 1e-4), R) == pytest.approx(1e-4, rel=1e-6)


def test_angle_error_translation_hand_cases():
    assert angle_error_translation([1, 0, 0], [0, 1, 0]) == pytest.approx(90.0)
    assert angle_error_translation([1, 0, 0], [-2, 0, 0]) == pytest.approx(0.0, abs=1e-12)  # sign flip: 0
    assert angle_error_translation([1, 0, 0], [5, 0, 0]) == pytest.approx(0.0, abs=1e-12)  # scale-free
    assert angle_error_translation([1, 1, 0], [1, 0, 0]) == pytest.approx(45.0)
    assert angle_error_translation([-1, 1, 0], [1, 0, 0]) == pytest.approx(45.0)  # 135 folded to 45
    assert math.isnan(angle_error_translation([0, 0, 0], [1, 0, 0]))


def test_pose_error_failure_is_inf():
    assert pose_error(None, None, np.eye(3), [1, 0, 0]) == (math.inf, math.inf)
    err_R, err_t = pose_error(rot([0, 0, 1], 10.0), [0, 1, 0], np.eye(3), [0, -3, 0])
    assert err_R == pytest.approx(10.0) and err_t == pytest.approx(0.0, abs=1e-12)


# --- pose AUC ----------------------------------------------------------------------------------------------------


def test_pose_auc_hand_computed():
    # errors [0, 5, 10] -> curve points (error, recall): (0, 0), (0, 1/3), (5, 2/3), (10, 1); an error equal to the
    # threshold is cut off (SuperGlue's searchsorted), the last recall is held flat up to the threshold.
    #  t=5:  (0,0)-(0,1/3), flat 1/3 to 5            -> 5/3 / 5                       = 1/3
    #  t=10: 5/3 + trapezoid (1/3+2/3)/2*5 = 5/2 on 0..5, then 2/3*5 on 5..10 -> (5/2 + 10/3) / 10 = 7/12
    #  t=20: 5/2 + trapezoid (2/3+1)/2*5 = 25/6 on 5..10, then 1*10 on 10..20  -> (5/2 + 25/6 + 10) / 20 = 5/6
    assert pose_auc([10, 0, 5], (5, 10, 20)) == pytest.approx([1 / 3, 7 / 12, 5 / 6])
    # one perfect and one failed pair: recall 1/2 from error 0 on -> 1/2 at every threshold
    assert pose_auc([0.0, math.inf]) == pytest.approx([0.5, 0.5, 0.5])
    # errors [1, inf], t=5: triangle 0..1 up to 1/2 = 1/4, then 1/2*4 = 2 -> 2.25 / 5 = 0.45
    assert pose_auc([1.0, math.inf], (5,)) == pytest.approx([0.45])
    # a single error of 2: curve (0,0)-(2,1) then flat -> (1 + (t-2)) / t
    assert pose_auc(np.array([2.0]), (4, 10)) == pytest.approx([3 / 4, 9 / 10])
    assert pose_auc([math.inf] * 3) == [0.0, 0.0, 0.0]
    assert pose_auc([30.0, 40.0], (5,)) == [0.0]


def reference_pose_auc(errors, thresholds):
    """SuperGlue's formulation, written with numpy's trapezoid rule, as a cross-check on random data."""
    trapezoid = getattr(np, "trapezoid", None) or np.trapz
    errors = np.r_[0.0, np.sort(errors)]
    recall = np.r_[0.0, (np.arange(len(errors) - 1) + 1) / (len(errors) - 1)]
    aucs = []
    for t in thresholds:
        last = np.searchsorted(errors, t)
        aucs.append(trapezoid(np.r_[recall[:last], recall[last - 1]], x=np.r_[errors[:last], t]) / t)
    return aucs


@pytest.mark.parametrize("seed", range(5))
def test_pose_auc_matches_reference(seed):
    rng = np.random.default_rng(seed)
    errors = np.round(rng.exponential(8.0, size=rng.integers(1, 60)), 1)  # rounding makes ties, some at 5/10/20
    errors[rng.random(errors.size) < 0.1] = math.inf
    thresholds = (1, 5, 10, 20, 45)
    assert pose_auc(errors, thresholds) == pytest.approx(reference_pose_auc(errors, thresholds), abs=1e-12)


def test_pose_auc_rejects_bad_input():
    with pytest.raises(ValueError, match="no errors"):
        pose_auc([])
    with pytest.raises(ValueError, match="nan"):
        pose_auc([1.0, math.nan])
    with pytest.raises(ValueError, match="positive"):
        pose_auc([1.0], (0,))


# --- epipolar distances ------------------------------------------------------------------------------------------


def test_epipolar_distance_pure_x_translation():
    # identity K, R = I, t = (1, 0, 0): F = [t]_x, epipolar lines are horizontal, distance = |y1 - y0|
    F = skew([1.0, 0.0, 0.0])
    pts0 = np.array([[0.0, 0.0], [10.0, 5.0], [-3.0, 2.0]])
    pts1 = np.array([[7.0, 0.5], [100.0, 2.0], [4.0, 2.0]])
    d0, d1 = epipolar_distances(pts0, pts1, F)
    np.testing.assert_allclose(d0, [0.5, 3.0, 0.0])
    np.testing.assert_allclose(d1, [0.5, 3.0, 0.0])
    np.testing.assert_allclose(symmetric_epipolar_distance(pts0, pts1, F), [0.5, 3.0, 0.0])
    np.testing.assert_allclose(symmetric_epipolar_distance(pts0, pts1, 42.0 * F), [0.5, 3.0, 0.0])  # scale-free
    precision, correct = epipolar_precision(pts0, pts1, F, threshold=2.0)
    assert correct == 2 and precision == pytest.approx(2 / 3)


def test_symmetric_epipolar_distance_properties():
    pts0, pts1, R, t, _ = two_view(n=50, noise_px=0.0)
    F = np.linalg.inv(K1).T @ skew(t) @ R @ np.linalg.inv(K0)
    assert symmetric_epipolar_distance(pts0, pts1, F).max() < 1e-8
    rng = np.random.default_rng(1)
    q0, q1 = pts0 + rng.normal(scale=2.0, size=pts0.shape), pts1 + rng.normal(scale=2.0, size=pts1.shape)
    d0, d1 = epipolar_distances(q0, q1, F)
    d = symmetric_epipolar_distance(q0, q1, F)
    np.testing.assert_allclose(d, np.maximum(d0, d1))
    # swapping the images (and transposing F) swaps the two one-sided distances and keeps the symmetric one
    e0, e1 = epipolar_distances(q1, q0, F.T)
    np.testing.assert_allclose(e0, d1)
    np.testing.assert_allclose(e1, d0)
    np.testing.assert_allclose(symmetric_epipolar_distance(q1, q0, F.T), d)
    # a one-sided distance is the distance of a point to a line: check d1 against the explicit formula
    line = F @ np.r_[q0[0], 1.0]
    assert d1[0] == pytest.approx(abs(line @ np.r_[q1[0], 1.0]) / np.hypot(line[0], line[1]))


def test_epipolar_precision_empty_and_all_correct():
    F = skew([1.0, 0.0, 0.0])
    precision, correct = epipolar_precision(np.zeros((0, 2)), np.zeros((0, 2)), F)
    assert math.isnan(precision) and correct == 0
    pts = np.array([[1.0, 1.0], [2.0, 3.0]])
    assert epipolar_precision(pts, pts + [5.0, 1.99], F) == (1.0, 2)
    assert epipolar_precision(pts, pts + [5.0, 2.0], F) == (0.0, 0)  # strictly below the threshold
