"""HPatches (Balntas et al., CVPR 2017): patch release loader, splits, the three benchmark tasks,
and full-image homography sequences (HPatches-sequences and Oxford/Mikolajczyk layouts).

Patch release layout: ``root/<sequence>/{ref,e1..e5,h1..h5,t1..t5}.png``; each image is a
vertical stripe of N 65x65 grayscale patches (height 65 N, width 65); patch ``i`` of every image
of a sequence shows the same scene point. ``e``/``h``/``t`` are the easy/hard/tough geometric
noise levels. Sequences ``i_*`` change illumination, ``v_*`` viewpoint.

65 -> 64 px: by default each patch is resampled with ``cv2.resize(..., (64, 64), INTER_AREA)``
(area averaging, keeps the patch centre and extent; ``resize="linear"`` uses INTER_LINEAR,
``resize="crop"`` drops the last row and column, ``resize=None`` keeps 65x65).

Descriptors for the tasks are nested dicts ``{sequence: {image: (N, D) float array}}``, e.g. from
:meth:`HPatches.describe`; distances are L2. What each task computes is documented on
:func:`matching_task`, :func:`verification_task` and :func:`retrieval_task`.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..eval.metrics import pr_auc, roc_auc
from .phototour import DatasetFormatError, _read_table

__all__ = [
    "DIFFICULTIES",
    "HPATCHES_IMAGES",
    "HPatches",
    "ImageSequence",
    "load_hpatches_patches",
    "load_hpatches_sequence",
    "load_verification_pairs",
    "make_retrieval_queries",
    "make_verification_pairs",
    "matching_task",
    "retrieval_task",
    "select_sequences",
    "verification_task",
]

HP_PATCH = 65
HPATCHES_IMAGES = ("ref", *(f"{t}{i}" for t in "eht" for i in range(1, 6)))
DIFFICULTIES = {"e": "easy", "h": "hard", "t": "tough"}
SPLITS = ("a", "b", "c", "illum", "view", "full")
RETRIEVAL_POOL_SIZES = (100, 500, 1000, 5000, 10000, 15000, 20000)

Descriptors = dict[str, dict[str, np.ndarray]]
PairRow = tuple[str, int, int, str, int, int]


# --------------------------------------------------------------------------------------------------
# patches
# --------------------------------------------------------------------------------------------------


def _resize_patches(stack: np.ndarray, resize: str | None) -> np.ndarray:
    import cv2

    if resize is None:
        return stack
    if resize == "crop":
        return np.ascontiguousarray(stack[:, :64, :64])
    interp = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR}.get(resize)
    if interp is None:
        raise ValueError(f"resize must be 'area', 'linear', 'crop' or None, got {resize!r}")
    out = np.empty((len(stack), 64, 64), np.uint8)
    for k, patch in enumerate(stack):
        out[k] = cv2.resize(patch, (64, 64), interpolation=interp)
    return out


def load_hpatches_patches(
    seq_dir: str | os.PathLike, resize: str | None = "area", images: Iterable[str] = HPATCHES_IMAGES
) -> dict[str, np.ndarray]:
    """Patches of one HPatches sequence folder. Returns {image: (N, 64, 64) uint8} (65x65 with ``resize=None``).

    Raises :class:`DatasetFormatError` naming the file when a stripe is missing, not 65 px wide, not a
    multiple of 65 px high, or has another patch count than ``ref``.
    """
    import cv2

    seq_dir = Path(seq_dir)
    out: dict[str, np.ndarray] = {}
    count = None
    for name in images:
        path = seq_dir / f"{name}.png"
        if not path.is_file():
            raise DatasetFormatError(f"{path}: missing (HPatches sequences hold {', '.join(HPATCHES_IMAGES)})")
        img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise DatasetFormatError(f"{path}: cannot decode the image")
        h, w = img.shape
        if w != HP_PATCH or h % HP_PATCH or h == 0:
            raise DatasetFormatError(f"{path}: stripe is {w}x{h} px; expected width 65 and height a multiple of 65")
        n = h // HP_PATCH
        if count is not None and n != count:
            raise DatasetFormatError(f"{path}: {n} patches, but {seq_dir.name} has {count} in its other images")
        count = n
        out[name] = _resize_patches(img.reshape(n, HP_PATCH, HP_PATCH), resize)
    return out


def select_sequences(
    names: Iterable[str], split: str = "full", splits_file: str | os.PathLike | None = None, subset: str = "test"
) -> list[str]:
    """Sequences of ``split`` among ``names`` (sorted).

    ``illum`` / ``view`` / ``full``: by name prefix (``i_`` / ``v_`` / both), unless ``splits_file`` is
    given. ``a`` / ``b`` / ``c``: the official assignment, read from ``splits_file`` (the benchmark's
    ``splits.json``: ``{"a": {"test": [...], "train": [...]}, ...}``); ``subset`` picks ``test`` or
    ``train``. Sequences the file names but ``names`` lacks raise ``ValueError``.
    """
    names = sorted(names)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if splits_file is None:
        if split in ("a", "b", "c"):
            raise ValueError(
                f"split {split!r} is the official HPatches assignment of sequences: pass splits_file= "
                "(splits.json of the HPatches benchmark); 'illum', 'view' and 'full' work without it"
            )
        prefixes = {"illum": ("i_",), "view": ("v_",), "full": ("i_", "v_")}[split]
        return [n for n in names if n.startswith(prefixes)]
    with open(splits_file) as f:
        splits = json.load(f)
    try:
        wanted = splits[split][subset]
    except KeyError:
        raise ValueError(f"{splits_file}: no {split!r} / {subset!r} entry") from None
    missing = sorted(set(wanted) - set(names))
    if missing:
        raise ValueError(f"split {split!r} ({splits_file}) needs sequences missing here: {', '.join(missing[:10])}")
    return sorted(wanted)


class HPatches:
    """The HPatches patch release under ``root``. ``hp[name]`` -> {image: (N, 64, 64) uint8}.

    ``split``/``splits_file``/``subset`` select sequences (see :func:`select_sequences`);
    ``resize`` the 65 -> 64 px conversion (see the module docstring). Sequences load on access
    and are not kept in memory.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "full",
        splits_file: str | os.PathLike | None = None,
        subset: str = "test",
        resize: str | None = "area",
    ):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"HPatches folder not found: {self.root}")
        present = [p.name for p in self.root.iterdir() if p.is_dir() and (p / "ref.png").is_file()]
        if not present:
            raise DatasetFormatError(f"{self.root}: no sequence folders with ref.png (HPatches release layout)")
        self.split = split
        self.resize = resize
        self.sequences = select_sequences(present, split, splits_file, subset)

    def __len__(self) -> int:
        return len(self.sequences)

    def __iter__(self):
        return iter(self.sequences)

    def __getitem__(self, key: str | int) -> dict[str, np.ndarray]:
        name = self.sequences[key] if isinstance(key, int) else key
        if name not in self.sequences:
            raise KeyError(f"sequence {name!r} is not in split {self.split!r} of {self.root}")
        return load_hpatches_patches(self.root / name, resize=self.resize)

    def describe(self, describe_fn: Any, batch_size: int = 1024, device: Any = None) -> Descriptors:
        """Descriptors of every image of every sequence: {seq: {image: (N, D) float32}}.

        ``describe_fn``: a DeepDescNet, a model name/path, or a function uint8 (B, 64, 64) -> (B, D).
        """
        from .phototour import _describe_fn

        fn = _describe_fn(describe_fn, device, batch_size)
        out: Descriptors = {}
        for seq in self.sequences:
            patches = self[seq]
            stacked = np.concatenate([patches[name] for name in HPATCHES_IMAGES])
            parts = []
            for start in range(0, len(stacked), batch_size):
                d = fn(stacked[start : start + batch_size])
                parts.append(d.detach().cpu().numpy() if hasattr(d, "detach") else np.asarray(d))
            descs = np.concatenate(parts).astype(np.float32, copy=False)
            n = len(patches["ref"])
            out[seq] = {name: descs[k * n : (k + 1) * n] for k, name in enumerate(HPATCHES_IMAGES)}
        return out


# --------------------------------------------------------------------------------------------------
# tasks
# --------------------------------------------------------------------------------------------------


def _l2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise L2 distances (A, D), (B, D) -> (A, B) float64."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.sqrt(np.maximum(d2, 0.0))


def _nearest(a: np.ndarray, b: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """L2 nearest neighbour in ``b`` of each row of ``a``: (index (A,), distance (A,)), rows in chunks."""
    index = np.empty(len(a), np.int64)
    dist = np.empty(len(a), np.float64)
    for start in range(0, len(a), chunk):
        d = _l2(a[start : start + chunk], b)
        index[start : start + chunk] = np.argmin(d, axis=1)
        dist[start : start + chunk] = d[np.arange(len(d)), index[start : start + chunk]]
    return index, dist


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
                nn, nn_dist = _nearest(ref, descs[seq][f"{d}{i}"])
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
        neg = _l2(q, dist_desc[valid])[0] if valid.any() else np.zeros(0)
        for d in diffs:
            pos = _l2(q, np.stack([descs[s][f"{d}{k}"][i] for k in range(1, 6)]))[0]
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


# --------------------------------------------------------------------------------------------------
# full-image sequences
# --------------------------------------------------------------------------------------------------


@dataclass
class ImageSequence:
    """A homography sequence: ``images[k]`` and ``homographies[k]`` mapping image 1 to image k+1
    (``homographies[0]`` is the identity), in pixels, x right / y down."""

    name: str
    images: list[np.ndarray]
    homographies: list[np.ndarray]
    image_paths: list[Path]

    def __len__(self) -> int:
        return len(self.images)


_IMAGE_EXTS = (".ppm", ".pgm", ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _find_image(folder: Path, k: int) -> Path | None:
    for stem in (str(k), f"img{k}"):
        for ext in _IMAGE_EXTS:
            for candidate in (folder / f"{stem}{ext}", folder / f"{stem}{ext.upper()}"):
                if candidate.is_file():
                    return candidate
    return None


def load_hpatches_sequence(path: str | os.PathLike, grayscale: bool = False) -> ImageSequence:
    """Load a full-image homography sequence in the HPatches-sequences or the Oxford layout.

    HPatches: ``1.ppm .. 6.ppm`` and ``H_1_2 .. H_1_6``. Oxford (Mikolajczyk): ``img1 .. img6``
    (``.ppm``/``.pgm``/...) and ``H1to2p .. H1to6p``. Homography files hold a 3x3 matrix of
    whitespace-separated numbers mapping image 1 to image k. Images are uint8, (H, W) when
    ``grayscale`` or stored as gray, else (H, W, 3) RGB. Missing or malformed files raise
    :class:`DatasetFormatError` naming the file.
    """
    import cv2

    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"sequence folder not found: {folder}")
    images, homs, paths = [], [np.eye(3)], []
    numbers = sorted(
        int(m.group(2))
        for p in folder.iterdir()
        if (m := re.match(r"^(img)?(\d+)\.[A-Za-z]+$", p.name)) and p.suffix.lower() in _IMAGE_EXTS
    )
    if not numbers or numbers[0] != 1:
        raise DatasetFormatError(f"{folder}: no image 1 found (expected 1.ppm or img1.ppm/.pgm)")
    count = 1
    while count + 1 in numbers:
        count += 1
    for k in range(1, count + 1):
        img_path = _find_image(folder, k)
        assert img_path is not None
        flag = cv2.IMREAD_GRAYSCALE if grayscale else cv2.IMREAD_UNCHANGED
        img = cv2.imread(str(img_path), flag)
        if img is None:
            raise DatasetFormatError(f"{img_path}: cannot decode the image")
        if img.ndim == 3 and img.shape[2] == 4:
            img = img[:, :, :3]
        if img.ndim == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        if img.dtype != np.uint8:
            img = (img / (np.iinfo(img.dtype).max / 255.0)).round().astype(np.uint8)
        images.append(img)
        paths.append(img_path)
        if k > 1:
            candidates = [folder / f"H_1_{k}", folder / f"H1to{k}p", folder / f"H1to{k}"]
            h_path = next((c for c in candidates if c.is_file()), None)
            if h_path is None:
                raise DatasetFormatError(f"{folder}: homography for image {k} missing (H_1_{k} or H1to{k}p)")
            H = _read_table(h_path, 3, np.float64)
            if H.shape != (3, 3) or not np.isfinite(H).all():
                raise DatasetFormatError(f"{h_path}: expected a 3x3 matrix of finite numbers, got shape {H.shape}")
            homs.append(H)
    return ImageSequence(name=folder.name, images=images, homographies=homs, image_paths=paths)
