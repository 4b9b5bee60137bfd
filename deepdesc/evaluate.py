"""Job: benchmark descriptors on data sets and write ``results.md``, ``results.json`` and plots.

``evaluate.main(datasets, methods, out_dir)`` with datasets ``KIND:PATH``:

- ``oxford:`` / ``hpatches-seq:`` / ``sequences:`` homography sequences (:mod:`deepdesc.eval.homography`);
- ``phototour:`` Brown-layout patches (:mod:`deepdesc.eval.phototour`);
- ``hpatches:`` the HPatches patch release, matching task (:mod:`deepdesc.eval.hpatches`);
- ``strecha:`` a Strecha scene (``images/``, ``cameras/``) or a folder of them, and ``colmap:`` a folder with
  ``images/`` and a COLMAP model in ``sparse/0`` (or ``sparse/``): relative pose (:mod:`deepdesc.eval.scenes`).

Methods: model names/paths, ``sift``, ``rootsift``, ``sift@R``/``rootsift@R``
(:class:`~deepdesc.eval.describers.Method`), each optionally as ``LABEL=SPEC``; model files that share a file name
are labelled by their folders (``runs/a/best.safetensors`` -> ``a/best``). On the patch data sets ``sift`` and
``rootsift`` describe the whole patch and ``@R`` is refused (the patches fix the region).

Options, data sets and labels are checked before any descriptor is computed; a pair whose ground-truth homography
is singular is skipped with a warning naming its file.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .datasets.hpatches import HPatches
from .datasets.scenes import Scene, load_colmap_scene, load_strecha_scenes
from .datasets.sequences import ImageSequence, load_hpatches_sequence
from .errors import DatasetFormatError
from .eval.describers import Method, parse_methods, sift_patch_descriptors
from .eval.homography import evaluate_sequences, format_table, plot_results, usable_pairs
from .eval.hpatches import describe_hpatches, matching_task
from .eval.phototour import evaluate_phototour
from .eval.scenes import MATCHERS, evaluate_scenes, format_scene_table, pair_wins, plot_pose_curves
from .features.describe import describe
from .nn.fast import PRECISIONS
from .utils import atomic_path, logger

__all__ = ["DATASET_KINDS", "main"]

PROTOCOLS = ("patch", "homography")
DATASET_KINDS = ("oxford", "hpatches-seq", "sequences", "phototour", "hpatches", "strecha", "colmap")
SCENE_METRICS = ("precision", "num_correct", "num_matches", "auc@5", "auc@10", "auc@20")
_SEQUENCE_METRICS = ("precision@1", "h_acc@1", "h_acc@3", "h_acc@5", "mma@3", "matching_score", "corner_error_median")


def _sequences(spec: str, root: Path) -> list[ImageSequence]:
    """The homography sequences of a dataset folder: the folder itself when it holds image 1 (``1.ppm`` or
    ``img1.ppm``, ...), else each of its sub-folders; refuses a folder without one, and a sequence of one image."""
    is_sequence = any(p.is_file() and p.stem in ("1", "img1") for p in root.iterdir())
    folders = [root] if is_sequence else sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise DatasetFormatError(
            f"dataset {spec!r}: no homography sequence in {root} (expected a folder with 1.ppm.. and H_1_2.., or "
            "img1.ppm.. and H1to2p.., or a folder of them)"
        )
    sequences = [load_hpatches_sequence(folder, grayscale=True) for folder in folders]
    for seq, folder in zip(sequences, folders):
        if len(seq) < 2:
            raise DatasetFormatError(
                f"dataset {spec!r}: {folder} has one image only; a sequence needs image 1 and at least image 2 "
                "with its homography (H_1_2 or H1to2p)"
            )
    return sequences


def _check_count(option: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"--{option} = {value!r}: expected an integer >= 1")


def _check_protocols(protocols: Sequence[str]) -> list[str]:
    names = [p.strip() for p in protocols]
    bad = [p for p in names if p not in PROTOCOLS] or ([] if names else [""])
    if bad:
        raise ValueError(
            f"--protocol {bad[0]!r}: expected {' or '.join(PROTOCOLS)}, or both comma separated (patch,homography)"
        )
    return names


def _patch_describer(method: Method, spec: str) -> Any:
    """What a patch benchmark (``phototour:``, ``hpatches:``) describes with: SIFT/RootSIFT of whole patches or
    the model. The patches fix the measured region, so ``@R`` is refused."""
    if method.region is not None:
        raise ValueError(
            f"dataset {spec!r}: --model {method.spec!r}: a patch data set fixes the measured region; "
            f"use {_spec_base(method.spec)!r} (NAME@R is for keypoint-based data sets)"
        )
    if method.model is None:
        return functools.partial(sift_patch_descriptors, root=method.spec.startswith("rootsift"))
    if "precision" in method.patch_options:
        return functools.partial(describe, model=method.model, precision=method.patch_options["precision"])
    return method.model


def _spec_base(spec: str) -> str:
    return spec.rpartition("@")[0] or spec


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
    precision: str | None = None,
) -> tuple[dict[str, Any], str]:
    """Run every dataset ``KIND:PATH`` for every method; write the reports into ``out_dir``.

    ``precision``: the networks' arithmetic (``fp32``, ``bf16`` on CPU, ``fp16`` on CUDA; see
    :mod:`deepdesc.nn.fast`); ``None`` is float32 with the cache keys of runs that did not name one.

    Returns (the report dict written as results.json, the markdown text written as results.md).
    """
    protocols = _check_protocols(protocols)
    counts = {"num-keypoints": num_keypoints, "scene-keypoints": scene_keypoints, "max-gap": max_gap, "orders": orders}
    for option, value in counts.items():
        _check_count(option, value)
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    parsed = parse_methods(methods, region_scale=region_scale, blur_sigma=blur_sigma, precision=precision)
    # Every dataset is read and checked before any descriptor is computed.
    sequences: list[ImageSequence] = []
    scenes: list[Scene] = []
    patch_sets: list[tuple[str, Path, list[tuple[str, Any]]]] = []
    for spec in datasets:
        kind, _, location = spec.partition(":")
        root = Path(location)
        if kind not in DATASET_KINDS or not location:
            raise ValueError(f"dataset {spec!r}: expected KIND:PATH with KIND one of {', '.join(DATASET_KINDS)}")
        if not root.exists():
            raise FileNotFoundError(f"dataset {spec!r}: {root} does not exist")
        if kind in ("oxford", "hpatches-seq", "sequences"):
            if not root.is_dir():
                raise DatasetFormatError(f"dataset {spec!r}: {root} is not a folder")
            sequences += _sequences(spec, root)
        elif kind in ("strecha", "colmap"):
            found = load_strecha_scenes(root) if kind == "strecha" else [_colmap_scene(root)]
            for scene in found:
                if len(scene) < 2:
                    raise DatasetFormatError(
                        f"dataset {spec!r}: scene {scene.name!r} has only {len(scene)} image; the relative-pose "
                        "protocol needs at least 2 images with cameras"
                    )
            scenes += found
        else:  # phototour, hpatches
            # reported by the spec as given (a model's path), or by its label where it has one
            keys = [m.spec if Method.parse(m.spec).name == m.name else m.name for m in parsed]
            describers = [(key, _patch_describer(m, spec)) for key, m in zip(keys, parsed)]
            patch_sets.append((kind, root, describers))
    if patch_sets and not (sequences or scenes) and (region_scale is not None or blur_sigma is not None):
        logger.warning(
            "--region-scale/--blur-sigma apply where patches are cut from images; the patch data sets given are "
            "already cut, so they are ignored"
        )
    if sequences and not any(usable_pairs(seq, warn=False) for seq in sequences):
        raise DatasetFormatError(
            f"no pair to evaluate: every homography of {', '.join(s.name for s in sequences)} is singular"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"datasets": list(datasets), "methods": list(methods)}
    lines = [f"# deepdesc evaluate\n\ndatasets: {', '.join(datasets)}\n"]
    for kind, root, describers in patch_sets:
        data = HPatches(root) if kind == "hpatches" and describers else None
        for label, describer in describers:
            if kind == "phototour":
                result = evaluate_phototour(describer, root)
                report.setdefault("phototour", {})[label] = result
                lines.append(
                    f"phototour {root.name} {label}: FPR95 {result['fpr95']:.4f}, PR AUC {result['pr_auc']:.4f}"
                )
            else:
                result = matching_task(describe_hpatches(data, describer))
                report.setdefault("hpatches_matching", {})[label] = result
                scores = ", ".join(f"{k} {result[k]:.4f}" for k in ("easy", "hard", "tough", "mean") if k in result)
                lines.append(f"HPatches matching mAP {label}: {scores}")
    if sequences:
        result = evaluate_sequences(
            sequences, parsed, num_keypoints=num_keypoints, protocols=list(protocols), cache_dir=out / "cache"
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
