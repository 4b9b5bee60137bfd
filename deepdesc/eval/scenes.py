"""Relative-pose benchmark on real 3D scenes with known cameras (Strecha layout or a COLMAP model).

For every scene, every image pair (i, j) with 1 <= j - i <= ``max_gap`` (3), every method and both matchers:

* the **same** DoG keypoints (2,000 per image, :func:`~deepdesc.features.keypoints.detect_keypoints`) are
  described by every method (a DeepDesc model, ``sift``, ``rootsift``, ``NAME@R`` for region R);
* matches: mutual nearest neighbours (``mnn``) and mutual nearest neighbours with Lowe's ratio test at 0.8
  (``ratio``);
* **epipolar precision** (the primary, paired metric): the share of matches whose points both lie within 2 px
  of the other's ground-truth epipolar line (:func:`~deepdesc.eval.pose.epipolar_precision`), and the number
  of such correct matches;
* **pose**: essential matrix by RANSAC on normalised coordinates (1 px / mean focal, confidence 0.99999) and
  ``recoverPose``, as SuperGlue's ``estimate_pose``; the pose error of a pair is the larger of the rotation and
  translation-direction errors (degrees), and pose AUC@5/10/20 is SuperGlue's ``pose_auc``. OpenCV's RANSAC
  depends on the match order, so every pair is estimated on ``orders`` seeded permutations and the AUC is the
  mean of the per-order AUCs.

Per-pair rows make paired comparisons possible: :func:`pair_wins` counts the pairs in which a method beats a
reference (SIFT) on a metric.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..datasets.scenes import Scene, fundamental_matrix, relative_pose
from ..features.image import load_image
from ..features.keypoints import detect_keypoints
from ..matching.nearest_neighbor import match_descriptors
from ..utils import optional_import
from .describers import Describer, Method
from .pose import epipolar_precision, pose_auc, pose_errors_over_orders

__all__ = ["MATCHERS", "evaluate_scenes", "format_scene_table", "pair_wins", "plot_pose_curves", "summarize_scenes"]

MATCHERS = {"mnn": None, "ratio": 0.8}
AUC_THRESHOLDS = (5, 10, 20)
EPIPOLAR_THRESHOLD_PX = 2.0


def evaluate_scenes(
    scenes: Sequence[Scene],
    methods: Sequence[Method],
    num_keypoints: int = 2000,
    max_gap: int = 3,
    orders: int = 5,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict:
    """Run the protocol (module docstring) -> ``{"rows": [...], "summary": {...}, ...}``.

    A row per (method, matcher, scene, pair): ``precision``, ``num_correct``, ``num_matches``,
    ``pose_errors`` (one per order, degrees, inf when estimation failed).
    """
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    describers = {m.name: Describer(m, cache) for m in methods}
    rows: list[dict] = []
    total = sum(len(s.pairs(max_gap)) for s in scenes) * len(methods)
    bar = tqdm(total=total, desc="evaluate 3D", unit="pair", disable=not progress)
    for scene in scenes:
        images = [load_image(p) for p in scene.image_paths]
        ids = [f"{p.resolve()}:{p.stat().st_mtime_ns}" for p in scene.image_paths]
        keypoints = [detect_keypoints(img, max_keypoints=num_keypoints) for img in images]
        for method in methods:
            describe = describers[method.name]
            desc = [describe(img, i, k) for img, i, k in zip(images, ids, keypoints)]
            for i, j in scene.pairs(max_gap):
                cam0, cam1 = scene.cameras[i], scene.cameras[j]
                F = fundamental_matrix(cam0, cam1)
                R_gt, t_gt = relative_pose(cam0, cam1)
                for matcher, ratio in MATCHERS.items():
                    matches, _ = match_descriptors(desc[i], desc[j], mutual=True, ratio=ratio)
                    p0, p1 = keypoints[i][matches[:, 0], :2], keypoints[j][matches[:, 1], :2]
                    precision, correct = epipolar_precision(p0, p1, F, EPIPOLAR_THRESHOLD_PX)
                    errors = pose_errors_over_orders(p0, p1, cam0.K, cam1.K, R_gt, t_gt, n_orders=orders, seed=0)
                    rows.append(
                        {
                            "method": method.name,
                            "matcher": matcher,
                            "scene": scene.name,
                            "pair": f"{scene.image_names[i]}-{scene.image_names[j]}",
                            "gap": j - i,
                            "num_matches": int(len(matches)),
                            "num_correct": int(correct),
                            "precision": float(precision),
                            "pose_errors": [float(max(e_r, e_t)) for e_r, e_t in errors],
                        }
                    )
                bar.update(1)
    bar.close()
    return {
        "rows": rows,
        "summary": summarize_scenes(rows),
        "num_keypoints": num_keypoints,
        "max_gap": max_gap,
        "orders": orders,
        "epipolar_threshold_px": EPIPOLAR_THRESHOLD_PX,
    }


def _aggregate(rows: list[dict]) -> dict:
    errors = np.array([r["pose_errors"] for r in rows], dtype=np.float64)  # (pairs, orders)
    aucs = np.array([pose_auc(errors[:, k], AUC_THRESHOLDS) for k in range(errors.shape[1])])
    precision = [r["precision"] for r in rows if np.isfinite(r["precision"])]
    out = {
        "precision": float(np.mean(precision)) if precision else float("nan"),
        "num_correct": float(np.mean([r["num_correct"] for r in rows])),
        "num_matches": float(np.mean([r["num_matches"] for r in rows])),
        "pairs": len(rows),
    }
    for threshold, mean, std in zip(AUC_THRESHOLDS, aucs.mean(0), aucs.std(0)):
        out[f"auc@{threshold}"] = float(mean)
        out[f"auc@{threshold}_std_over_orders"] = float(std)
    return out


def summarize_scenes(rows: list[dict]) -> dict:
    """``{matcher: {method: {scene or "[all]": metrics}}}`` with mean precision, correct matches and pose AUCs."""
    grouped: dict = {}
    for row in rows:
        per_method = grouped.setdefault(row["matcher"], {}).setdefault(row["method"], {})
        per_method.setdefault(row["scene"], []).append(row)
        per_method.setdefault("[all]", []).append(row)
    return {
        matcher: {method: {scene: _aggregate(r) for scene, r in scenes.items()} for method, scenes in methods.items()}
        for matcher, methods in grouped.items()
    }


def pair_wins(rows: list[dict], metric: str, reference: str, matcher: str = "mnn") -> dict[str, tuple[int, int, int]]:
    """Per method: (pairs where it beats ``reference`` on ``metric``, ties, losses), paired by scene and pair."""
    table = {(r["method"], r["scene"], r["pair"]): r[metric] for r in rows if r["matcher"] == matcher}
    methods = sorted({m for m, _, _ in table})
    out = {}
    for method in methods:
        wins = ties = losses = 0
        for (m, scene, pair), value in table.items():
            if m != method or (reference, scene, pair) not in table:
                continue
            ref = table[(reference, scene, pair)]
            wins, ties, losses = wins + (value > ref), ties + (value == ref), losses + (value < ref)
        out[method] = (wins, ties, losses)
    return out


def format_scene_table(summary: dict, matcher: str, metrics: Sequence[str], scene: str = "[all]") -> str:
    """A markdown table for one matcher: one row per metric, one column per method (best in bold)."""
    methods = list(summary[matcher])
    lines = [f"| {matcher} ({scene}) | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for metric in metrics:
        values = [summary[matcher][m].get(scene, {}).get(metric) for m in methods]
        best = max((v for v in values if v is not None and np.isfinite(v)), default=None)
        fmt = "{:.1f}" if metric.startswith("num_") else "{:.3f}"
        cells = ["-" if v is None else (f"**{fmt.format(v)}**" if v == best else fmt.format(v)) for v in values]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_pose_curves(rows: list[dict], out_dir: str | os.PathLike, matcher: str = "mnn") -> Path:
    """PNG: cumulative share of pairs (all orders) with pose error below x degrees, one line per method."""
    matplotlib = optional_import("matplotlib", "viz", "evaluation plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    x = np.linspace(0, 20, 201)
    for method in dict.fromkeys(r["method"] for r in rows):
        errors = np.concatenate([r["pose_errors"] for r in rows if r["method"] == method and r["matcher"] == matcher])
        ax.plot(x, [(errors < v).mean() for v in x], label=method)
    ax.set_xlabel("pose error (max of rotation and translation angle, degrees)")
    ax.set_ylabel("share of pairs")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"relative pose, {matcher} matches")
    fig.tight_layout()
    path = Path(out_dir) / f"pose_curve_{matcher}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
