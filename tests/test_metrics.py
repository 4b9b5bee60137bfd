"""Metric definitions: hand-computed values, ties, degenerate inputs, homography helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepdesc.eval import metrics as M

# d:  0.1  0.2  0.3  0.4
# y:   1    0    1    0
SIMPLE = (np.array([0.1, 0.2, 0.3, 0.4]), np.array([1, 0, 1, 0]))


def test_simple_hand_computed():
    d, y = SIMPLE
    # 95% recall of 2 positives needs both: threshold 0.3 accepts 2 TP and 1 FP (of 2 negatives).
    assert M.threshold_at_recall(d, y) == 0.3
    assert M.fpr95(d, y) == pytest.approx(0.5)
    assert M.fdr95(d, y) == pytest.approx(1 / 3)
    # 50% recall needs 1 positive: threshold 0.1, no false positive.
    assert M.fpr_at_recall(d, y, 0.5) == 0.0
    assert M.fdr_at_recall(d, y, 0.5) == 0.0
    # AP: precision 1 at the first positive, 2/3 at the second.
    assert M.average_precision(d, y) == pytest.approx((1 + 2 / 3) / 2)
    assert M.pr_auc(d, y) == pytest.approx(5 / 6)
    # trapezoid over (0,1) (.5,1) (.5,.5) (1,2/3) (1,.5)
    assert M.pr_auc(d, y, method="trapezoid") == pytest.approx(0.5 + 0.5 * (0.5 + 2 / 3) / 2)
    # ROC: of the 4 (pos, neg) pairs, 3 are ordered correctly
    assert M.roc_auc(d, y) == pytest.approx(0.75)
    res = M.brown_protocol(d, y)
    assert res["fpr95"] == pytest.approx(0.5) and res["fdr95"] == pytest.approx(1 / 3)
    assert res["pr_auc"] == pytest.approx(5 / 6)
    assert res["num_pairs"] == 4 and res["num_positives"] == 2


def test_fpr_and_fdr_differ_with_many_negatives():
    # 20 positives at distance 0..19, 80 negatives: 1 at 5.5 and 79 far away.
    d = np.r_[np.arange(20.0), 5.5, np.full(79, 100.0)]
    y = np.r_[np.ones(20), np.zeros(80)]
    # 95% of 20 = 19 positives -> threshold 18; accepted: 19 TP + 1 FP
    assert M.fpr95(d, y) == pytest.approx(1 / 80)
    assert M.fdr95(d, y) == pytest.approx(1 / 20)


def test_recall_rounding_is_tolerant():
    # 0.7 * 10 = 7.000000000000001 in floating point; 7 of 10 positives must be enough.
    d = np.arange(20.0)
    y = np.r_[np.ones(10), np.zeros(10)]
    assert M.threshold_at_recall(d, y, 0.7) == 6.0
    with pytest.raises(ValueError, match="recall"):
        M.fpr_at_recall(d, y, 0.0)
    with pytest.raises(ValueError, match="recall"):
        M.fpr_at_recall(d, y, 1.5)


def test_ties_form_one_threshold_step():
    # pos and neg tied at 0.1, then a positive at 0.2
    d = np.array([0.1, 0.1, 0.2])
    y = np.array([1, 0, 1])
    for perm in ([0, 1, 2], [1, 0, 2], [2, 1, 0]):
        dp, yp = d[perm], y[perm]
        # groups: {0.1: 1 TP 1 FP} -> P=1/2, {0.2: 2 TP 1 FP} -> P=2/3
        assert M.average_precision(dp, yp) == pytest.approx((1 / 2 + 2 / 3) / 2)
        assert M.fpr_at_recall(dp, yp, 0.5) == 1.0
        assert M.fdr_at_recall(dp, yp, 0.5) == 0.5
        assert M.roc_auc(dp, yp) == pytest.approx(0.25)  # (pos .1, neg .1) tie = 1/2, (pos .2, neg .1) = 0
        fpr, tpr, thr = M.roc_curve(dp, yp)
        np.testing.assert_allclose(fpr, [0, 1, 1])
        np.testing.assert_allclose(tpr, [0, 0.5, 1])
        np.testing.assert_array_equal(thr, [-np.inf, 0.1, 0.2])


def test_all_tied():
    d = np.zeros(6)
    y = np.array([1, 0, 0, 1, 0, 0])
    assert M.average_precision(d, y) == pytest.approx(1 / 3)  # precision of the single step
    assert M.fpr95(d, y) == 1.0
    assert M.fdr95(d, y) == pytest.approx(2 / 3)
    assert M.roc_auc(d, y) == pytest.approx(0.5)


def test_perfect_and_inverted():
    d = np.arange(10.0)
    y = np.r_[np.ones(5), np.zeros(5)]
    assert M.fpr95(d, y) == 0.0 and M.average_precision(d, y) == 1.0 and M.roc_auc(d, y) == 1.0
    assert M.fpr95(d, y[::-1]) == 1.0 and M.roc_auc(d, y[::-1]) == 0.0
    # inverted: positives at ranks 6..10 -> precision k/(5+k)
    assert M.average_precision(d, y[::-1]) == pytest.approx(np.mean([k / (5 + k) for k in range(1, 6)]))


def test_infinite_distances_are_accepted_last():
    d = np.array([0.0, np.inf, 1.0, np.inf])
    y = np.array([1, 1, 0, 0])
    assert M.fpr95(d, y) == 1.0
    assert M.average_precision(d, y) == pytest.approx((1 + 2 / 4) / 2)


def test_degenerate_inputs():
    no_pos = (np.array([0.1, 0.2]), np.array([0, 0]))
    no_neg = (np.array([0.1, 0.2]), np.array([1, 1]))
    empty = (np.zeros(0), np.zeros(0, dtype=bool))
    for fn in (M.fpr95, M.fdr95, M.average_precision, M.pr_auc, M.roc_auc, M.threshold_at_recall):
        assert math.isnan(fn(*no_pos)), fn.__name__
        assert math.isnan(fn(*empty)), fn.__name__
        with pytest.raises(ValueError):
            fn(*no_pos, strict=True)
    assert math.isnan(M.pr_auc(*no_pos, method="trapezoid"))
    # no negatives: FPR undefined, FDR and AP well defined
    assert math.isnan(M.fpr95(*no_neg))
    with pytest.raises(ValueError, match="negative"):
        M.fpr95(*no_neg, strict=True)
    assert math.isnan(M.roc_auc(*no_neg))
    assert M.fdr95(*no_neg) == 0.0
    assert M.average_precision(*no_neg) == 1.0
    res = M.brown_protocol(*no_pos)
    assert math.isnan(res["fpr95"]) and math.isnan(res["pr_auc"]) and res["num_positives"] == 0


def test_invalid_inputs():
    with pytest.raises(ValueError, match="NaN"):
        M.fpr95([0.1, np.nan], [1, 0])
    with pytest.raises(ValueError, match="equal length"):
        M.fpr95([0.1, 0.2], [1])
    with pytest.raises(ValueError, match="0/1"):
        M.fpr95([0.1, 0.2], [1, 2])
    with pytest.raises(ValueError, match="method"):
        M.pr_auc([0.1], [1], method="interp11")
    with pytest.raises(ValueError, match="num_positives"):
        M.average_precision([0.1, 0.2], [1, 1], num_positives=1)


def test_num_positives_counts_missed_matches():
    d = np.array([0.1, 0.2])
    y = np.array([1, 0])
    # 4 true matches exist, only one is in the ranked list
    assert M.average_precision(d, y, num_positives=4) == pytest.approx(1 / 4)
    prec, rec, thr = M.pr_curve(d, y, num_positives=4)
    np.testing.assert_allclose(prec, [1, 0.5])
    np.testing.assert_allclose(rec, [0.25, 0.25])
    np.testing.assert_allclose(thr, [0.1, 0.2])
    # trapezoid from (0, 1): 0.25 * 1
    assert M.pr_auc(d, y, method="trapezoid", num_positives=4) == pytest.approx(0.25)


def _brute_force(d: np.ndarray, y: np.ndarray, recall: float) -> tuple[float, float]:
    """Reference: try each distinct threshold in increasing order."""
    pos, neg = y.sum(), (~y).sum()
    for t in np.unique(d):
        acc = d <= t
        tp, fp = (acc & y).sum(), (acc & ~y).sum()
        if tp >= recall * pos - 1e-9 * pos:
            ap_terms = []
            for tt in np.unique(d):
                a = d <= tt
                new = ((d == tt) & y).sum()
                ap_terms.append(new * (a & y).sum() / a.sum())
            return fp / neg, sum(ap_terms) / pos
    raise AssertionError


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 6), st.booleans()), min_size=2, max_size=30),
    st.sampled_from([0.5, 0.8, 0.95, 1.0]),
    st.randoms(use_true_random=False),
)
def test_matches_brute_force_and_is_order_free(pairs, recall, rnd):
    d = np.array([p[0] for p in pairs], dtype=float) / 2
    y = np.array([p[1] for p in pairs], dtype=bool)
    if y.all() or not y.any():
        return
    fpr, ap = _brute_force(d, y, recall)
    assert M.fpr_at_recall(d, y, recall) == pytest.approx(fpr)
    assert M.average_precision(d, y) == pytest.approx(ap)
    perm = list(range(len(d)))
    rnd.shuffle(perm)
    assert M.fpr_at_recall(d[perm], y[perm], recall) == M.fpr_at_recall(d, y, recall)
    assert M.average_precision(d[perm], y[perm]) == pytest.approx(M.average_precision(d, y), abs=1e-12)
    assert M.roc_auc(d[perm], y[perm]) == pytest.approx(M.roc_auc(d, y), abs=1e-12)


def test_roc_auc_equals_mann_whitney():
    rng = np.random.default_rng(0)
    d = rng.integers(0, 5, 200).astype(float)
    y = rng.random(200) < 0.3
    pos, neg = d[y], d[~y]
    u = (pos[:, None] < neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert M.roc_auc(d, y) == pytest.approx(u / (len(pos) * len(neg)))


# ---------------------------------------------------------------------------------------------- image


def test_mean_matching_accuracy_translation():
    H = np.array([[1, 0, 10], [0, 1, -5], [0, 0, 1]], dtype=float)
    k1 = np.array([[0, 0], [10, 10], [20, 20], [30, 30]], dtype=float)
    # errors 0, 1.5, 3 (3-4-5 triangle: 5), and 20
    k2 = np.array([[10, -5], [21.5, 5], [33, 19], [60, 25]], dtype=float)
    matches = np.array([[0, 0], [1, 1], [2, 2], [3, 3]])
    np.testing.assert_allclose(M.reprojection_errors(k1, k2, matches, H), [0, 1.5, 5, 20])
    mma = M.mean_matching_accuracy(k1, k2, matches, H, thresholds=[1, 1.5, 5, 10, 20])
    np.testing.assert_allclose(mma, [0.25, 0.5, 0.75, 0.75, 1.0])
    assert M.mean_matching_accuracy(k1, k2, matches, H).shape == (10,)
    # extra columns (scale, angle) are ignored; empty matches -> zeros
    k1x = np.c_[k1, np.ones(4)]
    np.testing.assert_allclose(M.mean_matching_accuracy(k1x, k2, matches, H, [1]), [0.25])
    np.testing.assert_array_equal(M.mean_matching_accuracy(k1, k2, np.zeros((0, 2), int), H, [1, 2]), [0, 0])
    with pytest.raises(ValueError, match="outside"):
        M.mean_matching_accuracy(k1, k2, np.array([[0, 9]]), H)


def test_matching_score():
    H = np.eye(3)
    k1 = np.array([[5, 5], [50, 50], [8, 8]], dtype=float)
    k2 = np.array([[5, 5], [9, 9], [8, 8], [11, 11]], dtype=float)
    matches = np.array([[0, 0], [1, 1], [2, 2]])  # correct, wrong, correct
    assert M.matching_score(k1, k2, matches, H) == pytest.approx(2 / 3)
    # only 2 of k1 and 3 of k2 in a 20x20 common view -> 2 / 2
    assert M.matching_score(k1, k2, matches, H, image_shapes=((20, 20), (20, 20))) == pytest.approx(1.0)
    assert M.matching_score(np.zeros((0, 2)), k2, np.zeros((0, 2), int), H) == 0.0


def test_homography_corner_error_and_accuracy():
    H_gt = np.eye(3)
    shift = np.array([[1, 0, 3], [0, 1, 4], [0, 0, 1]], dtype=float)
    assert M.homography_corner_error(shift, H_gt, (480, 640)) == pytest.approx(5.0)
    assert M.homography_corner_error(H_gt * 2.5, H_gt, (480, 640, 3)) == pytest.approx(0.0)  # scale-free
    # scaling about the origin: corners (0,0),(w-1,0),(0,h-1),(w-1,h-1) move by 0, w-1, h-1, diag
    scale = np.diag([2.0, 2.0, 1.0])
    h, w = 11, 21
    expected = np.mean([0, w - 1, h - 1, math.hypot(w - 1, h - 1)])
    assert M.homography_corner_error(scale, H_gt, (h, w)) == pytest.approx(expected)
    assert M.homography_corner_error(None, H_gt, (h, w)) == math.inf
    assert M.homography_corner_error(np.full((3, 3), np.nan), H_gt, (h, w)) == math.inf
    acc = M.homography_accuracy([0.5, 2.0, 4.0, np.inf, np.nan], thresholds=(1, 3, 5))
    np.testing.assert_allclose(acc, [0.2, 0.4, 0.6])
    assert np.isnan(M.homography_accuracy([])).all()


def test_project_points_at_infinity():
    H = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0]], dtype=float)  # w = x
    out = M.project_points(H, np.array([[0.0, 1.0], [2.0, 2.0]]))
    assert np.isinf(out[0]).all()
    np.testing.assert_allclose(out[1], [1.0, 1.0])
