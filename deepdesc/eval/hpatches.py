"""HPatches patch benchmark (Balntas et al., CVPR 2017): the matching, verification and retrieval tasks.

Descriptors for the tasks are nested dicts ``{sequence: {image: (N, D) float array}}``, e.g. from
:func:`describe_hpatches`; distances are L2. What each task computes is documented on
:func:`matching_task`, :func:`verification_task` and :func:`retrieval_task`.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..datasets.hpatches import DIFFICULTIES, HPATCHES_IMAGES, HPatches
from ..errors import DatasetFormatError
from .describers import as_describe_fn
from .metrics import l2_distances, nearest_neighbors, pr_auc, roc_auc

__all__ = [
    "describe_hpatches",
    "load_verification_pairs",
    "make_retrieval_queries",
    "make_verification_pairs",
    "matching_task",
    "retrieval_task",
    "verification_task",
]

RETRIEVAL_POOL_SIZES = (100, 500, 1000, 5000, 10000, 15000, 20000)

Descriptors = dict[str, dict[str, np.ndarray]]
PairRow = tuple[str, int, int, str, int, int]


def describe_hpatches(data: HPatches, describe_fn: Any, batch_size: int = 1024, device: Any = None) -> Descriptors:
    """Descriptors of every image of every sequence: {seq: {image: (N, D) float32}}.

    ``describe_fn``: a network (DescriptorNet), a model name/path, or a function uint8 (B, 64, 64) -> (B, D).
    """
    fn = as_describe_fn(describe_fn, device, batch_size)
    out: Descriptors = {}
    for seq in data.sequences:
        patches = data[seq]
        stacked = np.concatenate([patches[name] for name in HPATCHES_IMAGES])
        parts = []
        for start in range(0, len(stacked), batch_size):
            d = fn(stacked[start : start + batch_size])
            parts.append(d.detach().cpu().numpy() if hasattr(d, "detach") else np.asarray(d))
        descs = np.concatenate(parts).astype(np.float32, copy=False)
        n = len(patches["ref"])
        out[seq] = {name: descs[k * n : (k + 1) * n] for k, name in enumerate(HPATCHES_IMAGES)}
    return out


def _image_name(difficulty: str, index: int) -> str:
    """Official pair files number images 0..5: 0 is ``ref``, k is ``{difficulty}{k}``."""
    return "ref" if index == 0 else f"{difficulty}{index}"


def _check_difficulties(difficulties: Iterable[str]) -> list[str]:
    out = list(difficulties)
    bad = [d for d in out if d not in DIFFICULTIES]
    if bad:
        raise ValueError(f"difficulties must be among 'e', 'h', 't' (easy, hard, tough); got {bad}")
    return out


def matching_task(
    descs: Descriptors,
    sequences: Iterable[str] | None = None,
    difficulties: Iterable[str] = "eht",
    method: str = "step",
) -> dict[str, Any]:
    """HPatches image matching: mAP per difficulty.

    For every sequence and every target image ``{d}1..{d}5`` of difficulty ``d``: each ``ref``
    patch i is matched to its L2 nearest neighbour j(i) among the target image's patches (first
    index on exact ties); the match is correct when j(i) == i. The N matches are ranked by their
    distance and scored by average precision with recall relative to all N reference patches
    (every ref patch has one true match, so AP <= fraction of correct matches); ``method`` is
    :func:`deepdesc.metrics.pr_auc`'s (``"trapezoid"`` integrates as the official Python code).
    mAP averages the AP over sequences and the 5 images.

    Returns ``{"easy": mAP, "hard": .., "tough": .., "mean": mean of those, "per_sequence":
    {seq: {"e": [5 AP], ..}}, "success_rate": {difficulty: mean fraction of correct NN}}``.
    """
    diffs = _check_difficulties(difficulties)
    seqs = list(descs) if sequences is None else list(sequences)
    per_seq: dict[str, dict[str, list[float]]] = {}
    aps: dict[str, list[float]] = {d: [] for d in diffs}
    success: dict[str, list[float]] = {d: [] for d in diffs}
    for seq in seqs:
        ref = descs[seq]["ref"]
        truth = np.arange(len(ref))
        per_seq[seq] = {}
        for d in diffs:
            per_seq[seq][d] = []
            for i in range(1, 6):
                nn, nn_dist = nearest_neighbors(ref, descs[seq][f"{d}{i}"])
                correct = nn == truth
                ap = pr_auc(nn_dist, correct, method=method, num_positives=len(truth))
                per_seq[seq][d].append(ap)
                aps[d].append(ap)
                success[d].append(float(correct.mean()))
    result: dict[str, Any] = {DIFFICULTIES[d]: float(np.mean(aps[d])) if aps[d] else float("nan") for d in diffs}
    result["mean"] = float(np.mean([result[DIFFICULTIES[d]] for d in diffs]))
    result["per_sequence"] = per_seq
    result["success_rate"] = {DIFFICULTIES[d]: float(np.mean(v)) if v else float("nan") for d, v in success.items()}
    return result


def load_verification_pairs(path: str | os.PathLike) -> list[PairRow]:
    """Rows ``(s1, t1, idx1, s2, t2, idx2)`` of an official ``verif_*_split-X.csv`` (header line kept out).

    ``t`` is the image number 0..5 (0 = ``ref``, k = ``{difficulty}k``), ``idx`` the patch index.
    """
    path = Path(path)
    rows: list[PairRow] = []
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != ["s1", "t1", "idx1", "s2", "t2", "idx2"]:
            raise DatasetFormatError(f"{path}, line 1: expected the header s1,t1,idx1,s2,t2,idx2, got {header}")
        for number, row in enumerate(reader, start=2):
            try:
                s1, t1, i1, s2, t2, i2 = (c.strip() for c in row)
                rows.append((s1, int(t1), int(i1), s2, int(t2), int(i2)))
            except ValueError:
                raise DatasetFormatError(f"{path}, line {number}: expected s1,t1,idx1,s2,t2,idx2, got {row}") from None
    return rows


def make_verification_pairs(
    lengths: dict[str, int], n_pairs: int = 100_000, seed: int = 0
) -> tuple[list[PairRow], list[PairRow], list[PairRow]]:
    """Random verification pairs over sequences with ``lengths`` {seq: N}: (positives, intra, inter negatives).

    Follows the structure of the official generator, not its files: a positive is patch i of a
    random sequence in two distinct random images among 0..5 (0 = ref); its intra negative pairs
    the first image's patch i with patch j != i of the second image of the same sequence; its
    inter negative pairs it with a random patch of a random image of *another* sequence (when
    there is one). Results are only comparable across runs with the same ``seed`` and sequences;
    use :func:`load_verification_pairs` with the official CSV files for published numbers.
    """
    rng = np.random.default_rng(seed)
    seqs = sorted(s for s, n in lengths.items() if n >= 2)
    if not seqs:
        raise ValueError("verification pairs need a sequence with at least 2 patches")
    pos: list[PairRow] = []
    intra: list[PairRow] = []
    inter: list[PairRow] = []
    for _ in range(n_pairs):
        s = seqs[rng.integers(len(seqs))]
        n = lengths[s]
        i, j = (int(v) for v in rng.choice(n, 2, replace=False))
        t1, t2 = (int(v) for v in rng.choice(6, 2, replace=False))
        pos.append((s, t1, i, s, t2, i))
        intra.append((s, t1, i, s, t2, j))
        others = [o for o in seqs if o != s] or seqs
        o = others[rng.integers(len(others))]
        inter.append((s, t1, i, o, int(rng.integers(6)), int(rng.integers(lengths[o]))))
    return pos, intra, inter


def _pair_distances(descs: Descriptors, rows: Sequence[PairRow], difficulty: str) -> np.ndarray:
    out = np.empty(len(rows), np.float64)
    for k, (s1, t1, i1, s2, t2, i2) in enumerate(rows):
        a = descs[s1][_image_name(difficulty, t1)][i1]
        b = descs[s2][_image_name(difficulty, t2)][i2]
        out[k] = np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    return out


def verification_task(
    descs: Descriptors,
    pos: Sequence[PairRow] | str | os.PathLike,
    neg_intra: Sequence[PairRow] | str | os.PathLike,
    neg_inter: Sequence[PairRow] | str | os.PathLike,
    difficulties: Iterable[str] = "eht",
    imbalanced_ratio: float = 0.2,
    method: str = "step",
) -> dict[str, Any]:
    """HPatches patch verification: rank pairs by L2 distance, score with AP.

    Pairs (rows or official CSV paths) are evaluated for each difficulty (image k > 0 read as
    ``{d}k``). For each negative type (``intra``: same sequence, ``inter``: other sequences):

    * ``balanced``: all positives + all negatives (same count in the official files); AP
      (``method`` as in :func:`deepdesc.metrics.pr_auc`) and ROC AUC (``auc``; the official Python
      code reports ROC AUC for this protocol).
    * ``imbalanced``: all negatives + the first ``imbalanced_ratio`` x (number of negatives)
      positives (1 : 5 as in the official code); AP.

    Returns ``{difficulty name: {"intra"/"inter": {"balanced_ap", "balanced_auc", "imbalanced_ap"}}}``
    plus ``"balanced"`` / ``"imbalanced"``: the mean AP over difficulties and both negative types.
    """
    diffs = _check_difficulties(difficulties)
    rows = {
        "pos": load_verification_pairs(pos) if isinstance(pos, (str, os.PathLike)) else list(pos),
        "intra": load_verification_pairs(neg_intra) if isinstance(neg_intra, (str, os.PathLike)) else list(neg_intra),
        "inter": load_verification_pairs(neg_inter) if isinstance(neg_inter, (str, os.PathLike)) else list(neg_inter),
    }
    if not rows["pos"]:
        raise ValueError("verification needs at least one positive pair")
    result: dict[str, Any] = {}
    bal, imb = [], []
    for d in diffs:
        d_pos = _pair_distances(descs, rows["pos"], d)
        entry = {}
        for kind in ("intra", "inter"):
            d_neg = _pair_distances(descs, rows[kind], d)
            dist = np.r_[d_pos, d_neg]
            lab = np.r_[np.ones(len(d_pos), bool), np.zeros(len(d_neg), bool)]
            n_imb = max(1, int(imbalanced_ratio * len(d_neg)))
            d_imb = np.r_[d_pos[:n_imb], d_neg]
            l_imb = np.r_[np.ones(min(n_imb, len(d_pos)), bool), np.zeros(len(d_neg), bool)]
            entry[kind] = {
                "balanced_ap": pr_auc(dist, lab, method=method),
                "balanced_auc": roc_auc(dist, lab),
                "imbalanced_ap": pr_auc(d_imb, l_imb, method=method),
            }
            bal.append(entry[kind]["balanced_ap"])
            imb.append(entry[kind]["imbalanced_ap"])
        result[DIFFICULTIES[d]] = entry
    result["balanced"] = float(np.mean(bal))
    result["imbalanced"] = float(np.mean(imb))
    return result


def make_retrieval_queries(
    ref_patches: dict[str, np.ndarray],
    n_queries: int = 10_000,
    n_distractors: int = 20_000,
    min_std: float = 10.0,
    seed: int = 0,
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Random retrieval queries and distractors among the ``ref`` patches {seq: (N, H, W)}.

    Like the official generator: patches with intensity std <= ``min_std`` (flat) are skipped,
    duplicates removed, and no distractor is also a query. Returns (queries, distractors), lists
    of (sequence, patch index), at most the requested sizes.
    """
    rng = np.random.default_rng(seed)
    candidates = [
        (seq, int(i))
        for seq in sorted(ref_patches)
        for i in np.flatnonzero(ref_patches[seq].std(axis=(1, 2)) > min_std)
    ]
    order = rng.permutation(len(candidates))
    queries = [candidates[k] for k in order[:n_queries]]
    distractors = [candidates[k] for k in order[n_queries : n_queries + n_distractors]]
    return queries, distractors


def retrieval_task(
    descs: Descriptors,
    queries: Sequence[tuple[str, int]],
    distractors: Sequence[tuple[str, int]],
    pool_sizes: Iterable[int] = RETRIEVAL_POOL_SIZES,
    difficulties: Iterable[str] = "eht",
) -> dict[str, Any]:
    """HPatches patch retrieval: mAP of finding a ref patch's 5 views among distractors.

    For query (s, i) and difficulty d the database holds the 5 positives ``{d}1..{d}5`` patch i of
    sequence s, then the ``ref`` descriptors of ``distractors`` from sequences other than s, in
    the given order. For each pool size k the first k items (5 positives + k - 5 distractors)
    are ranked by L2 distance to ``ref`` patch i and scored by step-wise AP (ties grouped); pool
    sizes larger than a query's distractors + 5 are skipped for that query.

    Returns ``{difficulty name: {k: mAP over queries}, "mAP": mean over difficulties and pool sizes}``.
    """
    diffs = _check_difficulties(difficulties)
    sizes = sorted({int(k) for k in pool_sizes})
    if not queries or not sizes or sizes[0] <= 5:
        raise ValueError("retrieval needs queries and pool sizes > 5")
    dist_seq = np.array([s for s, _ in distractors])
    dist_desc = np.stack([descs[s]["ref"][i] for s, i in distractors]) if distractors else np.zeros((0, 1))
    per_k: dict[str, dict[int, list[float]]] = {d: {k: [] for k in sizes} for d in diffs}
    for s, i in queries:
        q = descs[s]["ref"][i][None, :]
        valid = dist_seq != s
        neg = l2_distances(q, dist_desc[valid])[0] if valid.any() else np.zeros(0)
        for d in diffs:
            pos = l2_distances(q, np.stack([descs[s][f"{d}{k}"][i] for k in range(1, 6)]))[0]
            for k in sizes:
                if k - 5 <= len(neg):
                    per_k[d][k].append(_ap_few_positives(pos, neg[: k - 5]))
    result: dict[str, Any] = {}
    all_maps = []
    for d in diffs:
        result[DIFFICULTIES[d]] = {k: float(np.mean(v)) for k, v in per_k[d].items() if v}
        all_maps.extend(result[DIFFICULTIES[d]].values())
    result["mAP"] = float(np.mean(all_maps)) if all_maps else float("nan")
    return result


def _ap_few_positives(pos: np.ndarray, neg: np.ndarray) -> float:
    """Step-wise AP (ties grouped) of a ranking with few positives, without sorting the negatives."""
    neg_sorted = np.sort(neg)
    tp = (pos[None, :] <= pos[:, None]).sum(axis=1)  # positives accepted at each positive's distance
    fp = np.searchsorted(neg_sorted, pos, side="right")
    return float(np.mean(tp / (tp + fp)))
