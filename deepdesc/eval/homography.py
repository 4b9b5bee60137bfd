"""Image-level evaluation on homography sequences (Oxford affine, HPatches full images).

For every pair 1 -> k of a sequence and every method (a DeepDesc model, ``sift``, ``rootsift``):

* **Patch matching, precision@1**: DoG keypoints of image 1 (upright duplicates removed) are projected
  into image k through the ground-truth homography (position, scale and orientation by the local
  affine map), then perturbed with HPatches-like geometric noise (position +-5% of the size, scale
  x2^+-0.15, orientation +-10 deg). All methods describe the same keypoints; precision@1 is the
  share of image-1 keypoints whose nearest descriptor in image k is their own projection.
* **Homography estimation**: keypoints detected independently in both images (DoG, 2000), mutual
  nearest-neighbour matches, MAGSAC homography (3 px); the mean corner error against the ground
  truth, success within 1, 3 and 5 px, the matches' mean matching accuracy at 1..10 px, and the
  matching score (correct matches at 3 px over the keypoints in the shared view).

Descriptors are cached on disk (keyed by method, patch options, image and keypoints) so re-runs are fast.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..datasets.sequences import ImageSequence, load_hpatches_sequence
from ..features.image import load_image
from ..features.keypoints import detect_keypoints, transform_keypoints
from ..matching.nearest_neighbor import match_descriptors
from ..matching.verify import estimate_homography
from ..utils import logger, optional_import
from .describers import Describer, Method
from .metrics import homography_corner_error, matching_score, mean_matching_accuracy, precision_at_1

__all__ = ["SEQUENCE_GROUPS", "evaluate_sequences", "format_table", "plot_results", "summarize", "usable_pairs"]

SEQUENCE_GROUPS = {
    "graf": "viewpoint",
    "v_churchill": "viewpoint",
    "v_wormhole": "viewpoint",
    "boat": "zoom+rotation",
    "bikes": "blur",
    "leuven": "illumination",
}
MMA_THRESHOLDS = list(range(1, 11))
NOISE = {"position": 0.05, "log2_scale": 0.15, "angle_deg": 10.0}


def _unique_positions(kpts: np.ndarray) -> np.ndarray:
    """Drop keypoints that repeat a position (OpenCV's multi-orientation copies), keeping the first."""
    _, first = np.unique(np.round(kpts[:, :2], 1), axis=0, return_index=True)
    return kpts[np.sort(first)]


def _noisy(kpts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = kpts.copy()
    n = len(out)
    out[:, :2] += rng.uniform(-1, 1, (n, 2)) * out[:, 2:3] * NOISE["position"]
    out[:, 2] *= 2.0 ** rng.uniform(-NOISE["log2_scale"], NOISE["log2_scale"], n)
    out[:, 3] = (out[:, 3] + rng.uniform(-NOISE["angle_deg"], NOISE["angle_deg"], n)) % 360
    return out


def _inside(kpts: np.ndarray, shape: tuple[int, ...], margin: float = 4.0) -> np.ndarray:
    h, w = shape[:2]
    x, y = kpts[:, 0], kpts[:, 1]
    return (x >= margin) & (y >= margin) & (x <= w - 1 - margin) & (y <= h - 1 - margin)


# A ground-truth homography this ill-conditioned maps image 1 onto a line or a point: no pair to evaluate.
MAX_CONDITION = 1e12


def _homography_file(seq: ImageSequence, k: int) -> Path:
    """The file homography ``k`` (image 1 -> image k+1) of a loaded sequence was read from."""
    folder = seq.image_paths[0].parent
    candidates = [folder / f"H_1_{k + 1}", folder / f"H1to{k + 1}p", folder / f"H1to{k + 1}"]
    return next((c for c in candidates if c.is_file()), candidates[0])


def usable_pairs(seq: ImageSequence, warn: bool = True) -> list[int]:
    """Indices ``k`` (>= 1) of the images of ``seq`` whose ground-truth homography is invertible; with ``warn``,
    each other one is logged as a warning naming its file and its condition number."""
    out = []
    for k in range(1, len(seq)):
        H = np.asarray(seq.homographies[k], dtype=np.float64)
        condition = float(np.linalg.cond(H)) if np.isfinite(H).all() else float("inf")
        if np.isfinite(condition) and condition <= MAX_CONDITION:
            out.append(k)
        elif warn:
            logger.warning(
                "%s: the homography is singular (condition number %.3g > %.0e): pair 1-%d of %s is not evaluated",
                _homography_file(seq, k),
                condition,
                MAX_CONDITION,
                k + 1,
                seq.name,
            )
    return out


def evaluate_sequences(
    sequence_dirs: Sequence[str | os.PathLike | ImageSequence],
    methods: Sequence[Method],
    num_keypoints: int = 1000,
    homography_keypoints: int = 2000,
    protocols: Sequence[str] = ("patch", "homography"),
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Run the protocols (module docstring) -> ``{method: {sequence: {metric: value}}}`` plus per-pair rows.

    ``sequence_dirs``: sequence folders or loaded sequences (:class:`~deepdesc.datasets.sequences.ImageSequence`);
    a pair whose ground-truth homography is singular is skipped with a warning (:func:`usable_pairs`).
    """

    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    describers = {m.name: Describer(m, cache) for m in methods}
    rows: list[dict] = []
    sequences = [
        d if isinstance(d, ImageSequence) else load_hpatches_sequence(d, grayscale=True) for d in sequence_dirs
    ]
    pairs = [usable_pairs(seq) for seq in sequences]
    total = sum(len(p) for p in pairs) * len(methods)
    bar = tqdm(total=total, desc="evaluate", unit="pair", disable=not progress)
    for seq, seq_pairs in zip(sequences, pairs):
        images = [load_image(img) for img in seq.images]
        ids = [f"{p.resolve()}:{p.stat().st_mtime_ns}" for p in seq.image_paths]
        base = _unique_positions(detect_keypoints(images[0], max_keypoints=None))[:num_keypoints]
        detected = [detect_keypoints(img, max_keypoints=homography_keypoints) for img in images]
        for k in seq_pairs:
            H = seq.homographies[k]
            rng = np.random.default_rng([seed, k])
            proj = _noisy(transform_keypoints(base, H), rng)
            visible = _inside(proj, images[k].shape)
            for method in methods:
                describe = describers[method.name]
                row = {"method": method.name, "sequence": seq.name, "pair": f"1-{k + 1}"}
                if "patch" in protocols and visible.sum() >= 2:
                    d1 = describe(images[0], ids[0], base[visible])
                    d2 = describe(images[k], ids[k], proj[visible])
                    row["precision@1"] = precision_at_1(d1, d2)
                    row["num_patches"] = int(visible.sum())
                if "homography" in protocols:
                    f1 = describe(images[0], ids[0], detected[0])
                    f2 = describe(images[k], ids[k], detected[k])
                    matches, _ = match_descriptors(f1, f2, mutual=True)
                    p1, p2 = detected[0][matches[:, 0], :2], detected[k][matches[:, 1], :2]
                    H_est, inliers = estimate_homography(p1, p2, threshold_px=3.0)
                    err = homography_corner_error(H_est, H, images[0].shape)
                    row["corner_error"] = float(err)
                    mma = mean_matching_accuracy(detected[0], detected[k], matches, H, MMA_THRESHOLDS)
                    row["mma"] = [float(v) for v in mma]
                    row["mma@3"] = row["mma"][2]
                    row["matching_score"] = float(
                        matching_score(detected[0], detected[k], matches, H, 3.0, (images[0].shape, images[k].shape))
                    )
                    row["num_matches"] = int(len(matches))
                    row["num_inliers"] = int(inliers.sum())
                rows.append(row)
                bar.update(1)
    bar.close()
    return {"rows": rows, "summary": summarize(rows), "noise": NOISE, "num_keypoints": num_keypoints}


def summarize(rows: list[dict]) -> dict:
    """Per method and sequence: mean precision@1, MMA@3, homography accuracy at 3/5 px, mean corner error."""
    out: dict = {}
    for row in rows:
        out.setdefault(row["method"], {}).setdefault(row["sequence"], []).append(row)
    summary: dict = {}
    for method, per_seq in out.items():
        summary[method] = {}
        groups: dict[str, list[dict]] = {"all": []}
        for seq, seq_rows in per_seq.items():
            summary[method][seq] = _aggregate(seq_rows)
            groups["all"] += seq_rows
            groups.setdefault(SEQUENCE_GROUPS.get(seq, "other"), []).extend(seq_rows)
        for name, group_rows in groups.items():
            summary[method][f"[{name}]"] = _aggregate(group_rows)
    return summary


def _aggregate(rows: list[dict]) -> dict:
    agg: dict = {}
    p1 = [r["precision@1"] for r in rows if "precision@1" in r]
    if p1:
        agg["precision@1"] = float(np.mean(p1))
    errors = np.array([r["corner_error"] for r in rows if "corner_error" in r])
    if len(errors):
        agg["h_acc@1"] = float(np.mean(errors <= 1))
        agg["h_acc@3"] = float(np.mean(errors <= 3))
        agg["h_acc@5"] = float(np.mean(errors <= 5))
        finite = errors[np.isfinite(errors)]
        agg["corner_error_median"] = float(np.median(errors)) if len(errors) else float("nan")
        agg["failures"] = int(len(errors) - len(finite))
        agg["mma@3"] = float(np.mean([r["mma@3"] for r in rows if "mma@3" in r]))
        agg["matching_score"] = float(np.mean([r["matching_score"] for r in rows if "matching_score" in r]))
        agg["mma"] = np.mean([r["mma"] for r in rows if "mma" in r], axis=0).tolist()
    agg["pairs"] = len(rows)
    return agg


def plot_results(summary: dict, out_dir: str | os.PathLike) -> list[Path]:
    """PNG plots: precision@1 per sequence (bars) and MMA curves over 1..10 px, one line per method."""
    matplotlib = optional_import("matplotlib", "viz", "evaluation plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    methods = list(summary)
    seqs = [k for k in summary[methods[0]] if not k.startswith("[")]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(seqs) * len(methods) / 3), 4))
    width = 0.8 / len(methods)
    for i, m in enumerate(methods):
        values = [summary[m].get(s, {}).get("precision@1", np.nan) for s in seqs]
        ax.bar(np.arange(len(seqs)) + i * width, values, width, label=m)
    ax.set_xticks(np.arange(len(seqs)) + 0.4 - width / 2, seqs)
    ax.set_ylabel("patch matching precision@1")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    written.append(out_dir / "precision_at_1.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)
    if any("mma" in summary[m].get("[all]", {}) for m in methods):
        fig, ax = plt.subplots(figsize=(6, 4))
        for m in methods:
            mma = summary[m].get("[all]", {}).get("mma")
            if mma:
                ax.plot(MMA_THRESHOLDS, mma, marker="o", label=m)
        ax.set_xlabel("threshold (px)")
        ax.set_ylabel("mean matching accuracy (mutual NN)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(out_dir / "mma.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
    return written


def format_table(summary: dict, metric: str) -> str:
    """A markdown table: one row per sequence/group, one column per method."""
    methods = list(summary)
    keys: list[str] = []
    for m in methods:
        keys += [k for k in summary[m] if k not in keys]
    seqs = [k for k in keys if not k.startswith("[")] + [k for k in keys if k.startswith("[")]
    lines = [f"| {metric} | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for seq in seqs:
        values = [summary[m].get(seq, {}).get(metric) for m in methods]
        best = max((v for v in values if v is not None), default=None)
        cells = []
        for v in values:
            text = "-" if v is None else f"{v:.3f}"
            cells.append(f"**{text}**" if v is not None and v == best and metric != "corner_error_median" else text)
        lines.append(f"| {seq} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
