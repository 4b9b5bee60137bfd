"""Job: benchmark descriptors on data sets and write ``results.md``, ``results.json`` and plots.

``evaluate.main(datasets, methods, out_dir)`` with datasets ``KIND:PATH``:

- ``oxford:`` / ``hpatches-seq:`` / ``sequences:`` homography sequences (:mod:`deepdesc.eval.homography`);
- ``phototour:`` Brown-layout patches (:mod:`deepdesc.eval.phototour`);
- ``hpatches:`` the HPatches patch release, matching task (:mod:`deepdesc.eval.hpatches`);
- ``strecha:`` a Strecha scene (``images/``, ``cameras/``) or a folder of them, and ``colmap:`` a folder with
  ``images/`` and a COLMAP model in ``sparse/0`` (or ``sparse/``): relative pose (:mod:`deepdesc.eval.scenes`).

Methods: model names/paths, ``sift``, ``rootsift``, ``sift@R``/``rootsift@R``
(:class:`~deepdesc.eval.describers.Method`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .datasets.hpatches import HPatches
from .datasets.scenes import Scene, load_colmap_scene, load_strecha_scenes
from .eval.describers import Method
from .eval.homography import evaluate_sequences, format_table, plot_results
from .eval.hpatches import describe_hpatches, matching_task
from .eval.phototour import evaluate_phototour
from .eval.scenes import MATCHERS, evaluate_scenes, format_scene_table, pair_wins, plot_pose_curves
from .utils import atomic_path

__all__ = ["DATASET_KINDS", "main"]

DATASET_KINDS = ("oxford", "hpatches-seq", "sequences", "phototour", "hpatches", "strecha", "colmap")
SCENE_METRICS = ("precision", "num_correct", "num_matches", "auc@5", "auc@10", "auc@20")
_SEQUENCE_METRICS = ("precision@1", "h_acc@1", "h_acc@3", "h_acc@5", "mma@3", "matching_score", "corner_error_median")


def _sequence_dirs(root: Path) -> list[Path]:
    """A sequence folder (with homography files) or a folder of them."""
    return [root] if any(root.glob("H*")) else sorted(p for p in root.iterdir() if p.is_dir())


def _colmap_scene(root: Path) -> Scene:
    model = next((m for m in (root / "sparse" / "0", root / "sparse", root) if (m / "images.bin").is_file() or
                  (m / "images.txt").is_file()), None)  # fmt: skip
    if model is None or not (root / "images").is_dir():
        raise FileNotFoundError(f"colmap:{root}: expected {root}/images/ and a COLMAP model in {root}/sparse/0")
    return load_colmap_scene(model, root / "images", name=root.name)


def _scene_report(result: dict) -> list[str]:
    """Markdown tables per matcher (per scene when there are several) and pair wins against SIFT."""
    lines = []
    summary = result["summary"]
    scenes = list(next(iter(next(iter(summary.values())).values())))
    scenes = scenes if len(scenes) > 2 else ["[all]"]  # one scene: its table is the overall one
    for matcher in MATCHERS:
        for scene in scenes:
            lines.append(f"\n{format_scene_table(summary, matcher, SCENE_METRICS, scene)}\n")
    reference = next((m for m in ("sift", "rootsift") if m in summary["mnn"]), None)
    if reference is not None:
        for matcher in MATCHERS:
            for metric in ("precision", "num_correct"):
                wins = pair_wins(result["rows"], metric, reference, matcher)
                cells = ", ".join(f"{m} {w}/{t}/{lo}" for m, (w, t, lo) in wins.items() if m != reference)
                lines.append(f"pairs won/tied/lost against {reference} on {metric} ({matcher}): {cells}")
    return lines


def main(
    datasets: Sequence[str],
    methods: Sequence[str],
    out_dir: str | os.PathLike,
    protocols: Sequence[str] = ("patch", "homography"),
    num_keypoints: int = 1000,
    region_scale: float | None = None,
    blur_sigma: float | None = None,
    scene_keypoints: int = 2000,
    max_gap: int = 3,
    orders: int = 5,
) -> tuple[dict[str, Any], str]:
    """Run every dataset ``KIND:PATH`` for every method; write the reports into ``out_dir``.

    Returns (the report dict written as results.json, the markdown text written as results.md).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parsed = [Method.parse(m, region_scale=region_scale, blur_sigma=blur_sigma) for m in methods]
    report: dict[str, Any] = {"datasets": list(datasets), "methods": list(methods)}
    lines = [f"# deepdesc evaluate\n\ndatasets: {', '.join(datasets)}\n"]
    sequence_dirs: list[Path] = []
    scenes: list[Scene] = []
    for spec in datasets:
        kind, _, location = spec.partition(":")
        root = Path(location)
        if kind not in DATASET_KINDS or not location:
            raise ValueError(f"dataset {spec!r}: expected KIND:PATH with KIND one of {', '.join(DATASET_KINDS)}")
        if not root.exists():
            raise FileNotFoundError(f"dataset {spec!r}: {root} does not exist")
        if kind in ("oxford", "hpatches-seq", "sequences"):
            sequence_dirs += _sequence_dirs(root)
        elif kind == "strecha":
            scenes += load_strecha_scenes(root)
        elif kind == "colmap":
            scenes.append(_colmap_scene(root))
        elif kind == "phototour":
            for m in methods:
                result = evaluate_phototour(m, root)
                report.setdefault("phototour", {})[m] = result
                lines.append(f"phototour {root.name} {m}: FPR95 {result['fpr95']:.4f}, PR AUC {result['pr_auc']:.4f}")
        else:  # hpatches
            data = HPatches(root)
            for m in methods:
                result = matching_task(describe_hpatches(data, m))
                report.setdefault("hpatches_matching", {})[m] = result
                scores = ", ".join(f"{k} {result[k]:.4f}" for k in ("easy", "hard", "tough", "mean") if k in result)
                lines.append(f"HPatches matching mAP {m}: {scores}")
    if sequence_dirs:
        result = evaluate_sequences(
            sequence_dirs, parsed, num_keypoints=num_keypoints, protocols=list(protocols), cache_dir=out / "cache"
        )
        report["sequences"] = result
        for metric in _SEQUENCE_METRICS:
            if any(metric in v.get("[all]", {}) for v in result["summary"].values()):
                lines.append(f"\n{format_table(result['summary'], metric)}\n")
        plot_results(result["summary"], out)
    if scenes:
        result = evaluate_scenes(
            scenes, parsed, num_keypoints=scene_keypoints, max_gap=max_gap, orders=orders, cache_dir=out / "cache"
        )
        report["scenes"] = result
        lines += _scene_report(result)
        for matcher in MATCHERS:
            plot_pose_curves(result["rows"], out, matcher)
    table = "\n".join(lines) + "\n"
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(table)
    with atomic_path(out / "results.json") as tmp:
        tmp.write_text(json.dumps(report, indent=1, default=float))
    return report, table
