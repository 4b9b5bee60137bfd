"""Descriptor evaluation metrics: pair ranking (FPR95, PR AUC, ROC) and homography-based image matching.

Pair metrics take ``distances`` (N,) float, lower = more similar, and ``labels`` (N,) bool/int with
1 = corresponding pair. A pair is *accepted* at threshold ``t`` when ``distance <= t``. Every metric
sweeps ``t`` over the distinct distance values, so pairs at exactly the same distance always enter
together as one threshold step: results never depend on the input order (unlike a plain argsort).

Degenerate inputs: a metric whose denominator is zero (e.g. FPR with no negative pair, anything
recall-based with no positive pair, or empty input) returns ``nan``; pass ``strict=True`` to get a
``ValueError`` instead. NaN distances are always a ``ValueError``; ``+inf`` distances are allowed
(such pairs are accepted only at the last threshold).

Definitions fixed here:

* ``fpr_at_recall`` (FPR95 at 0.95): false positive *rate* FP / (all negatives) at the smallest
  threshold whose true positive rate TP / P reaches ``recall`` (the Brown et al. protocol).
* ``fdr_at_recall``: false *discovery* rate FP / (TP + FP) at that same threshold. Several papers
  and code bases report this quantity (or its complement, 1 - precision) under the name "FPR95";
  it is smaller than the FPR whenever negatives outnumber accepted pairs, so the two are not
  comparable.
* ``average_precision``: step-wise (non-interpolated) area under the precision-recall curve,
  sum over thresholds of (R_k - R_{k-1}) * P_k with R_0 = 0; with ties grouped this equals
  scikit-learn's ``average_precision_score(labels, -distances)``.
* ``pr_auc``: ``method="step"`` (default) is :func:`average_precision`; ``method="trapezoid"``
  integrates the PR curve linearly from the point (recall 0, precision 1), as the HPatches
  benchmark code does. Trapezoidal PR areas are optimistic; report which one you use.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "average_precision",
    "brown_protocol",
    "fdr95",
    "fdr_at_recall",
    "fpr95",
    "fpr_at_recall",
    "homography_accuracy",
    "homography_corner_error",
    "mean_matching_accuracy",
    "matching_score",
    "pr_auc",
    "pr_curve",
    "project_points",
    "reprojection_errors",
    "roc_auc",
    "roc_curve",
    "threshold_at_recall",
]

# Tolerance when comparing a reached recall k / P with the requested one (0.7 * 10 = 7.000000000000001).
_RECALL_EPS = 1e-9


# --------------------------------------------------------------------------------------------------
# pair ranking
# --------------------------------------------------------------------------------------------------


def _validate(distances: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    d = np.asarray(distances, dtype=np.float64)
    y = np.asarray(labels)
    if d.ndim != 1 or y.ndim != 1 or d.shape != y.shape:
        raise ValueError(f"distances and labels must be 1-D of equal length; got {d.shape} and {y.shape}")
    if np.isnan(d).any():
        raise ValueError("distances contain NaN; they cannot be ranked")
    if y.dtype != bool:
        if y.size and not np.isin(y, (0, 1)).all():
            raise ValueError("labels must be boolean or 0/1 (1 = corresponding pair)")
        y = y.astype(bool)
    return d, y


def _cumulative_counts(distances: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Tie-grouped sweep. Returns (thresholds (K,) ascending unique, tp (K,), fp (K,), P, N).

    ``tp[k]`` / ``fp[k]`` count positives / negatives with distance <= ``thresholds[k]``.
    """
    d, y = _validate(distances, labels)
    order = np.argsort(d, kind="stable")
    d, y = d[order], y[order]
    tp_all = np.cumsum(y, dtype=np.int64)
    fp_all = np.arange(1, d.size + 1, dtype=np.int64) - tp_all
    # last index of each run of equal distances
    if d.size:
        last = np.flatnonzero(np.r_[d[1:] != d[:-1], True])
    else:
        last = np.zeros(0, dtype=np.int64)
    n_pos = int(y.sum())
    return d[last], tp_all[last], fp_all[last], n_pos, int(d.size) - n_pos


def _degenerate(strict: bool, message: str) -> float:
    if strict:
        raise ValueError(message)
    return float("nan")


def _check_recall(recall: float) -> None:
    if not 0.0 < recall <= 1.0:
        raise ValueError(f"recall must be in (0, 1], got {recall}")


def _index_at_recall(tp: np.ndarray, n_pos: int, recall: float) -> int:
    need = math.ceil(recall * n_pos - _RECALL_EPS * n_pos)
    return int(np.searchsorted(tp, max(need, 1), side="left"))


def threshold_at_recall(distances: Any, labels: Any, recall: float = 0.95, strict: bool = False) -> float:
    """Smallest distance threshold ``t`` with TP(d <= t) / P >= ``recall``; nan without positives."""
    _check_recall(recall)
    thr, tp, _, n_pos, _ = _cumulative_counts(distances, labels)
    if n_pos == 0:
        return _degenerate(strict, "threshold_at_recall needs at least one positive pair")
    return float(thr[_index_at_recall(tp, n_pos, recall)])


def fpr_at_recall(distances: Any, labels: Any, recall: float = 0.95, strict: bool = False) -> float:
    """False positive rate FP / (all negatives) at the smallest threshold reaching ``recall`` TPR.

    ``distances`` (N,) float, lower = more similar; ``labels`` (N,) bool/0-1. Returns a value in
    [0, 1]; ``nan`` (or ``ValueError`` with ``strict``) when there is no positive or no negative pair.
    """
    _check_recall(recall)
    _, tp, fp, n_pos, n_neg = _cumulative_counts(distances, labels)
    if n_pos == 0 or n_neg == 0:
        return _degenerate(strict, f"FPR needs positive and negative pairs; got {n_pos} and {n_neg}")
    return float(fp[_index_at_recall(tp, n_pos, recall)] / n_neg)


def fpr95(distances: Any, labels: Any, strict: bool = False) -> float:
    """:func:`fpr_at_recall` at 95% recall: the standard Brown et al. PhotoTour error."""
    return fpr_at_recall(distances, labels, 0.95, strict=strict)


def fdr_at_recall(distances: Any, labels: Any, recall: float = 0.95, strict: bool = False) -> float:
    """False discovery rate FP / (TP + FP) at the threshold of :func:`fpr_at_recall`.

    Not the FPR: its denominator is the number of *accepted* pairs, not of negatives. Some of the
    literature reports it as "FPR95"; values are not comparable. With no negatives it is 0.0;
    ``nan`` (or ``ValueError`` with ``strict``) when there is no positive pair.
    """
    _check_recall(recall)
    _, tp, fp, n_pos, _ = _cumulative_counts(distances, labels)
    if n_pos == 0:
        return _degenerate(strict, "FDR at a recall needs at least one positive pair")
    k = _index_at_recall(tp, n_pos, recall)
    return float(fp[k] / (tp[k] + fp[k]))


def fdr95(distances: Any, labels: Any, strict: bool = False) -> float:
    """:func:`fdr_at_recall` at 95% recall."""
    return fdr_at_recall(distances, labels, 0.95, strict=strict)


def roc_curve(distances: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve. Returns (fpr (K+1,), tpr (K+1,), thresholds (K+1,)), thresholds ascending.

    Point 0 is (0, 0) at threshold ``-inf``; point k > 0 accepts all pairs with distance <=
    ``thresholds[k]`` (one point per distinct distance). Rates are ``nan`` when their class is empty.
    """
    thr, tp, fp, n_pos, n_neg = _cumulative_counts(distances, labels)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.r_[0, tp] / n_pos if n_pos else np.full(thr.size + 1, np.nan)
        fpr = np.r_[0, fp] / n_neg if n_neg else np.full(thr.size + 1, np.nan)
    return fpr.astype(np.float64), tpr.astype(np.float64), np.r_[-np.inf, thr]


def roc_auc(distances: Any, labels: Any, strict: bool = False) -> float:
    """Area under the ROC curve (trapezoidal; ties count one half, as the Mann-Whitney U). nan if a class is empty."""
    fpr, tpr, _ = roc_curve(distances, labels)
    if np.isnan(fpr).any() or np.isnan(tpr).any():
        return _degenerate(strict, "ROC AUC needs positive and negative pairs")
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def pr_curve(
    distances: Any, labels: Any, num_positives: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision-recall curve. Returns (precision (K,), recall (K,), thresholds (K,)), thresholds ascending.

    One point per distinct distance ``t``: precision = TP / (TP + FP), recall = TP / P over pairs with
    distance <= ``t``. ``num_positives`` (>= positives in ``labels``) sets P, for ranked lists that
    miss some true matches (their recall never reaches 1). No artificial (0, 1) point is added.
    """
    thr, tp, fp, n_pos, _ = _cumulative_counts(distances, labels)
    total = _total_positives(n_pos, num_positives)
    precision = tp / np.maximum(tp + fp, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = tp / total if total else np.full(tp.size, np.nan)
    return precision.astype(np.float64), recall.astype(np.float64), thr


def _total_positives(n_pos: int, num_positives: int | None) -> int:
    if num_positives is None:
        return n_pos
    if num_positives < n_pos:
        raise ValueError(f"num_positives={num_positives} is below the {n_pos} positive labels")
    return int(num_positives)


def average_precision(distances: Any, labels: Any, num_positives: int | None = None, strict: bool = False) -> float:
    """Step-wise average precision: sum_k (R_k - R_{k-1}) * P_k over distinct thresholds, R_0 = 0.

    Equivalently the mean, over the P positives, of the precision at the threshold that accepts
    each positive (positives never accepted, counted via ``num_positives``, contribute 0). Tied
    pairs share one threshold. 1.0 when there are no negatives; ``nan`` (or ``ValueError`` with
    ``strict``) when there are no positives.
    """
    _, tp, fp, n_pos, _ = _cumulative_counts(distances, labels)
    total = _total_positives(n_pos, num_positives)
    if total == 0:
        return _degenerate(strict, "average precision needs at least one positive pair")
    new_tp = np.diff(np.r_[0, tp])
    precision = tp / np.maximum(tp + fp, 1)
    return float(np.sum(new_tp * precision) / total)


def pr_auc(
    distances: Any, labels: Any, method: str = "step", num_positives: int | None = None, strict: bool = False
) -> float:
    """Area under the precision-recall curve (the DeepDesc paper's metric).

    ``method="step"``: :func:`average_precision` (default; no interpolation).
    ``method="trapezoid"``: linear interpolation between the curve points of :func:`pr_curve`,
    starting from (recall 0, precision 1), as the HPatches benchmark code integrates it.
    """
    if method == "step":
        return average_precision(distances, labels, num_positives=num_positives, strict=strict)
    if method != "trapezoid":
        raise ValueError(f"method must be 'step' or 'trapezoid', got {method!r}")
    precision, recall, _ = pr_curve(distances, labels, num_positives=num_positives)
    if recall.size == 0 or np.isnan(recall).any():
        return _degenerate(strict, "PR AUC needs at least one positive pair")
    p = np.r_[1.0, precision]
    r = np.r_[0.0, recall]
    return float(np.sum(np.diff(r) * (p[1:] + p[:-1]) / 2))


def brown_protocol(distances: Any, labels: Any) -> dict[str, float]:
    """Brown et al. PhotoTour evaluation of the (usually 100k) pairs of an ``m50_*`` file.

    Returns ``fpr95`` (false positive rate at 95% recall, the standard number), ``fdr95`` (false
    discovery rate there, see :func:`fdr_at_recall`), ``pr_auc`` (step-wise AP, DeepDesc's metric),
    ``roc_auc``, ``num_pairs`` and ``num_positives``.
    """
    _, y = _validate(distances, labels)
    return {
        "fpr95": fpr95(distances, labels),
        "fdr95": fdr95(distances, labels),
        "pr_auc": pr_auc(distances, labels),
        "roc_auc": roc_auc(distances, labels),
        "num_pairs": int(y.size),
        "num_positives": int(y.sum()),
    }


# --------------------------------------------------------------------------------------------------
# image level: homographies
# --------------------------------------------------------------------------------------------------


def _as_homography(H: Any, name: str = "H") -> np.ndarray:
    H = np.asarray(H, dtype=np.float64)
    if H.shape != (3, 3):
        raise ValueError(f"{name} must be a 3x3 homography, got shape {H.shape}")
    return H


def _as_points(kpts: Any, name: str) -> np.ndarray:
    k = np.asarray(kpts, dtype=np.float64)
    if k.ndim != 2 or k.shape[1] < 2:
        raise ValueError(f"{name} must be (N, 2+) with x, y in pixels first; got shape {k.shape}")
    return k[:, :2]


def project_points(H: Any, points: Any) -> np.ndarray:
    """Map (N, 2+) x, y pixel points through a 3x3 homography. Returns (N, 2) float64.

    Points mapped to (or behind) the plane at infinity (w <= 1e-12 in magnitude) become ``inf``.
    """
    H = _as_homography(H)
    p = _as_points(points, "points")
    ph = np.c_[p, np.ones(len(p))] @ H.T
    w = ph[:, 2:3]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = ph[:, :2] / w
    out[np.abs(w[:, 0]) <= 1e-12] = np.inf
    return out


def _as_matches(matches: Any, n1: int, n2: int) -> np.ndarray:
    m = np.asarray(matches)
    if m.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if m.ndim != 2 or m.shape[1] != 2 or m.dtype.kind not in "iu":
        raise ValueError(f"matches must be an (M, 2) integer array of (index1, index2); got {m.shape} {m.dtype}")
    if (m < 0).any() or (m[:, 0] >= n1).any() or (m[:, 1] >= n2).any():
        raise ValueError(f"matches index outside the keypoints ({n1} in image 1, {n2} in image 2)")
    return m.astype(np.int64)


def reprojection_errors(kpts1: Any, kpts2: Any, matches: Any, H: Any) -> np.ndarray:
    """Distance in px between ``H @ kpts1[i]`` and ``kpts2[j]`` for each match (i, j). Returns (M,)."""
    k1, k2 = _as_points(kpts1, "kpts1"), _as_points(kpts2, "kpts2")
    m = _as_matches(matches, len(k1), len(k2))
    proj = project_points(H, k1[m[:, 0]])
    err = np.linalg.norm(proj - k2[m[:, 1]], axis=1)
    return np.where(np.isfinite(err), err, np.inf)


def mean_matching_accuracy(
    kpts1: Any, kpts2: Any, matches: Any, H: Any, thresholds: Iterable[float] = range(1, 11)
) -> np.ndarray:
    """Fraction of matches whose reprojection error (kpts1 through ``H`` to kpts2) is <= each threshold.

    ``kpts1`` (N1, 2+), ``kpts2`` (N2, 2+) x, y in px; ``matches`` (M, 2) int indices; ``H`` 3x3 maps
    image 1 to image 2. Returns (T,) float64. With no match every accuracy is 0 (a method that
    matches nothing is not rewarded), as averaged over image pairs in D2-Net style evaluations.
    """
    thr = np.asarray(list(thresholds), dtype=np.float64)
    err = reprojection_errors(kpts1, kpts2, matches, H)
    if err.size == 0:
        return np.zeros(thr.shape, dtype=np.float64)
    return (err[None, :] <= thr[:, None]).mean(axis=1)


def _inside(points: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    h, w = int(shape[0]), int(shape[1])
    x, y = points[:, 0], points[:, 1]
    return (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)


def matching_score(
    kpts1: Any,
    kpts2: Any,
    matches: Any,
    H: Any,
    threshold: float = 3.0,
    image_shapes: tuple[Sequence[int], Sequence[int]] | None = None,
) -> float:
    """Correct matches (reprojection error <= ``threshold`` px) / number of keypoints (Mikolajczyk style).

    The denominator is ``min(n1, n2)``: keypoints of each image, restricted to the part both images
    see when ``image_shapes=((h1, w1), (h2, w2))`` is given (kpts1 mapped by ``H`` inside image 2,
    kpts2 mapped by ``H^-1`` inside image 1). Returns 0.0 when that denominator is 0.
    """
    k1, k2 = _as_points(kpts1, "kpts1"), _as_points(kpts2, "kpts2")
    err = reprojection_errors(k1, k2, matches, H)
    n1, n2 = len(k1), len(k2)
    if image_shapes is not None:
        H = _as_homography(H)
        n1 = int(_inside(project_points(H, k1), image_shapes[1]).sum())
        n2 = int(_inside(project_points(np.linalg.inv(H), k2), image_shapes[0]).sum())
    denom = min(n1, n2)
    if denom == 0:
        return 0.0
    return float(min(int((err <= threshold).sum()), denom) / denom)


def homography_corner_error(H_est: Any, H_gt: Any, image_shape: Sequence[int]) -> float:
    """Mean distance in px between the 4 image corners mapped by ``H_est`` and by ``H_gt``.

    ``image_shape`` (h, w[, c]) of the source image; corners are the pixel centres (0, 0),
    (w-1, 0), (0, h-1), (w-1, h-1) as in SuperPoint's evaluation. A missing (``None``) or
    non-finite estimate gives ``inf`` (a failure for :func:`homography_accuracy`).
    """
    H_gt = _as_homography(H_gt, "H_gt")
    if H_est is None:
        return float("inf")
    H_est = _as_homography(H_est, "H_est")
    if not np.isfinite(H_est).all():
        return float("inf")
    h, w = int(image_shape[0]), int(image_shape[1])
    corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], dtype=np.float64)
    err = np.linalg.norm(project_points(H_est, corners) - project_points(H_gt, corners), axis=1)
    err = np.where(np.isfinite(err), err, np.inf)
    return float(err.mean())


def homography_accuracy(errors: Any, thresholds: Iterable[float] = (1, 3, 5)) -> np.ndarray:
    """Fraction of homography corner errors <= each threshold (px). (E,) -> (T,) float64.

    NaN errors count as failures. ``nan`` for every threshold when ``errors`` is empty.
    """
    e = np.asarray(errors, dtype=np.float64).ravel()
    thr = np.asarray(list(thresholds), dtype=np.float64)
    if e.size == 0:
        return np.full(thr.shape, np.nan)
    e = np.where(np.isnan(e), np.inf, e)
    return (e[None, :] <= thr[:, None]).mean(axis=1)


# --------------------------------------------------------------------------------------------------
# descriptor distances
# --------------------------------------------------------------------------------------------------


def l2_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise L2 distances (A, D), (B, D) -> (A, B) float64."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.sqrt(np.maximum(d2, 0.0))


def nearest_neighbors(a: np.ndarray, b: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """L2 nearest neighbour in ``b`` of each row of ``a``: (index (A,), distance (A,)), rows in chunks."""
    index = np.empty(len(a), np.int64)
    dist = np.empty(len(a), np.float64)
    for start in range(0, len(a), chunk):
        d = l2_distances(a[start : start + chunk], b)
        index[start : start + chunk] = np.argmin(d, axis=1)
        dist[start : start + chunk] = d[np.arange(len(d)), index[start : start + chunk]]
    return index, dist


def precision_at_1(desc1: Any, desc2: Any) -> float:
    """Share of rows ``i`` of ``desc1`` (N, D) whose L2 nearest neighbour in ``desc2`` (N, D) is row ``i``."""
    desc1, desc2 = np.asarray(desc1), np.asarray(desc2)
    if len(desc1) == 0:
        return float("nan")
    index, _ = nearest_neighbors(desc1, desc2)
    return float((index == np.arange(len(desc1))).mean())
