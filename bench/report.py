"""Rewrite the README's and the model card's tables from the result files in ``docs/results/``.

Every table in ``README.md`` and ``docs/model_card.md`` sits between ``<!-- table:NAME -->`` and
``<!-- /table -->``; this script renders each NAME from the committed results and replaces the text between
the markers. Nothing in those tables is typed by hand.

    python bench/report.py                  # rewrite the tables in place
    python bench/report.py --check          # exit 1, naming each table that differs from the results

A result file is a trimmed ``deepdesc evaluate`` results.json (summaries and pairs won per anchor, not every
row) or a bench script's JSON, with the command, data and machine that produced it:

    python bench/report.py --import-eval runs/eval-3d/results.json docs/results/eval-3d.json \
        --command "deepdesc evaluate --dataset strecha:... -o runs/eval-3d"
    python bench/bench_image.py -o docs/results/bench_image.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deepdesc import __version__
from deepdesc.hub.registry import load_model, model_path
from deepdesc.utils import atomic_path, shared_dir

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
DOCUMENTS = ("README.md", "docs/model_card.md")
SUBJECT = "default"  # the method every table is about; the others are anchors
# methods shown, in this order, with their display names (a result file may hold others)
METHODS = {
    "sift": "SIFT",
    "rootsift": "RootSIFT",
    "rootsift@16": "RootSIFT@16",
    "split1": "split1",
    "split2": "split2",
    "split3": "split3",
    "split4": "split4",
    "tfeat": "TFeat*",
    "v3.1": "v3.1",
    "v4": "v4",
    "v4-seed12": "v4, seed 12",
    "v4.1": "v4.1",
    "v4.2": "v4.2",
    "default-bf16": "default, bf16",
    "default": "default",
}
HEADLINE = ("sift", "rootsift", "rootsift@16", "split4", "tfeat", "default")  # the README's columns
# (matcher, metric, label) of the validation rows: what the default weights' ship rule compares
VALIDATION_ROWS = (
    ("mnn", "precision", "precision, mutual NN"),
    ("ratio", "precision", "precision, ratio test 0.8"),
    ("mnn", "num_correct", "correct matches per pair, mutual NN"),
    ("mnn", "auc@10", "pose AUC@10, mutual NN"),
)
GROUPS = ("viewpoint", "zoom+rotation", "blur", "illumination", "all")
MARKER = re.compile(r"(<!-- table:([\w-]+) -->\n)(.*?)(<!-- /table -->)", re.S)

# (matcher, metric, label) of the 3D-scene rows
SCENE_ROWS = (
    ("mnn", "precision", "precision, mutual NN"),
    ("ratio", "precision", "precision, ratio test 0.8"),
    ("mnn", "num_correct", "correct matches per pair, mutual NN"),
    ("ratio", "num_correct", "correct matches per pair, ratio test"),
    ("mnn", "auc@5", "pose AUC@5, mutual NN"),
    ("mnn", "auc@10", "pose AUC@10, mutual NN"),
    ("mnn", "auc@20", "pose AUC@20, mutual NN"),
    ("ratio", "auc@10", "pose AUC@10, ratio test"),
)
HEADLINE_SCENE_ROWS = (SCENE_ROWS[0], SCENE_ROWS[1], SCENE_ROWS[2], SCENE_ROWS[5])
# (metric, label, digits) of the homography rows
SEQUENCE_ROWS = (
    ("matching_score", "matching score", 3),
    ("mma@3", "MMA@3", 3),
    ("h_acc@3", "homography accuracy @3 px", 2),
    ("h_acc@5", "homography accuracy @5 px", 2),
    ("precision@1", "patch precision@1", 3),
)
WIN_METRICS_SCENES = (("mnn", "precision"), ("mnn", "num_correct"), ("ratio", "precision"), ("ratio", "num_correct"))
WIN_METRICS_SEQUENCES = ("matching_score", "mma@3", "precision@1")


class ReportError(Exception):
    """A result file or a document is missing or malformed."""


# -- result files -----------------------------------------------------------------------------------------


def load_result(name: str, results: Path = RESULTS) -> dict[str, Any]:
    """``docs/results/NAME.json`` as a dict; a clear error when it is missing."""
    path = results / f"{name}.json"
    if not path.is_file():
        raise ReportError(f"{path} is missing: produce it with the command in bench/report.py's docstring")
    return json.loads(path.read_text())


def machine() -> str:
    """The CPU model (as ``lscpu`` names it) and the core count of this machine."""
    name = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _rounded(value: Any, digits: int = 6) -> Any:
    """``value`` with floats rounded to ``digits`` decimals and non-finite floats as None (valid, small JSON)."""
    if isinstance(value, float):
        return round(value, digits) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v, digits) for v in value]
    return value


def _wins(pairs: dict[tuple, dict[str, float]], subject: str, anchor: str) -> dict[str, Any]:
    """Pairs where ``subject`` is above / level with / below ``anchor``, and the mean difference."""
    diffs = [v[subject] - v[anchor] for v in pairs.values() if subject in v and anchor in v]
    diffs = [d for d in diffs if math.isfinite(d)]
    won, lost = sum(d > 1e-9 for d in diffs), sum(d < -1e-9 for d in diffs)
    mean = sum(diffs) / len(diffs) if diffs else None
    return {"won": won, "tied": len(diffs) - won - lost, "lost": lost, "mean_difference": mean}


def trim_evaluate(report: dict[str, Any], subject: str = SUBJECT) -> dict[str, Any]:
    """The summaries of a ``deepdesc evaluate`` results.json, and ``subject``'s pairs won against each method."""
    out: dict[str, Any] = {"datasets": report.get("datasets", []), "methods": report.get("methods", [])}
    if "scenes" in report:
        scenes = report["scenes"]
        wins: dict[str, Any] = {}
        for matcher, metric in WIN_METRICS_SCENES:
            rows = [r for r in scenes["rows"] if r["matcher"] == matcher]
            for scene in sorted({r["scene"] for r in rows}) + ["[all]"]:
                pairs: dict[tuple, dict[str, float]] = {}
                for r in rows:
                    if scene in ("[all]", r["scene"]):
                        pairs.setdefault((r["scene"], r["pair"]), {})[r["method"]] = r[metric]
                anchors = sorted({m for v in pairs.values() for m in v} - {subject})
                per = wins.setdefault(scene, {}).setdefault(f"{matcher}:{metric}", {})
                for anchor in anchors:
                    per[anchor] = _wins(pairs, subject, anchor)
        out["scenes"] = {
            "summary": scenes["summary"],
            "wins": wins,
            **{k: scenes[k] for k in ("num_keypoints", "max_gap", "orders", "epipolar_threshold_px") if k in scenes},
        }
    if "sequences" in report:
        sequences = report["sequences"]
        summary = {
            m: {g: {k: v for k, v in agg.items() if k != "mma"} for g, agg in per.items()}  # drop the MMA curves
            for m, per in sequences["summary"].items()
        }
        wins = {}
        for metric in WIN_METRICS_SEQUENCES:
            pairs = {}
            for r in sequences["rows"]:
                if metric in r:
                    pairs.setdefault((r["sequence"], r["pair"]), {})[r["method"]] = r[metric]
            anchors = sorted({m for v in pairs.values() for m in v} - {subject})
            wins[metric] = {anchor: _wins(pairs, subject, anchor) for anchor in anchors}
        out["sequences"] = {"summary": summary, "wins": wins, "num_keypoints": sequences.get("num_keypoints")}
    return out


def _without(report: dict[str, Any], methods: set[str]) -> dict[str, Any]:
    """``report`` with the rows and summaries of ``methods`` removed."""
    out = json.loads(json.dumps(report))
    out["methods"] = [m for m in out.get("methods", []) if m not in methods]
    for section in ("scenes", "sequences"):
        if section in out:
            out[section]["rows"] = [r for r in out[section]["rows"] if r["method"] not in methods]
            summary = out[section]["summary"]
            for key in list(summary):
                if section == "sequences" and key in methods:
                    del summary[key]
                elif section == "scenes":
                    summary[key] = {m: v for m, v in summary[key].items() if m not in methods}
    return out


def merge_evaluate(reports: list[dict[str, Any]], replace: bool = False) -> dict[str, Any]:
    """One results.json from several ``deepdesc evaluate`` runs on the same data and keypoints (other methods in
    each): their per-pair rows and summaries side by side. Runs on different data are refused, and so are runs
    that repeat a method unless ``replace`` (the later run's measurement of it replaces the earlier's)."""
    merged = json.loads(json.dumps(reports[0]))
    for other in reports[1:]:
        if other.get("datasets") != merged.get("datasets"):
            raise ReportError(f"runs on different data: {merged.get('datasets')} and {other.get('datasets')}")
        clash = set(merged.get("methods", [])) & set(other.get("methods", []))
        if clash and not replace:
            raise ReportError(f"runs to merge share the methods {sorted(clash)} (--replace: the later run's count)")
        merged = _without(merged, clash)
        merged["methods"] = merged.get("methods", []) + other.get("methods", [])
        for section in ("scenes", "sequences"):
            if (section in merged) != (section in other):
                raise ReportError(f"only some of the runs to merge have {section!r} results")
            if section not in merged:
                continue
            for key in set(merged[section]) - {"rows", "summary"}:
                if merged[section][key] != other[section].get(key):
                    raise ReportError(f"runs to merge differ in {section}.{key}")
            merged[section]["rows"] += other[section]["rows"]
            summary, extra = merged[section]["summary"], other[section]["summary"]
            for key, value in extra.items():  # scenes: matcher -> method -> ...; sequences: method -> ...
                if section == "scenes":
                    summary.setdefault(key, {}).update(value)
                else:
                    summary[key] = value
    return merged


def import_evaluate(
    source: Path | list[Path], target: Path, command: str, data: str | None = None, replace: bool = False
) -> dict[str, Any]:
    """Write ``target``: the trimmed ``source`` results.json (or several merged) with its command, data and
    machine."""
    sources = source if isinstance(source, list) else [source]
    report = merge_evaluate([json.loads(Path(s).read_text()) for s in sources], replace=replace)
    if not any(k in report for k in ("scenes", "sequences")):
        raise ReportError(f"{source}: expected a deepdesc evaluate results.json with 'scenes' or 'sequences'")
    info = getattr(load_model(SUBJECT), "info", {}) or {}
    shared = str(shared_dir().resolve())
    report["datasets"] = [d.replace(shared, "../shared") for d in report.get("datasets", [])]
    record = {
        "command": command,
        "data": data or ", ".join(report["datasets"]),
        "machine": machine(),
        "deepdesc": __version__,
        "default_version": str(info.get("version", "")),
        **trim_evaluate(report),
    }
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(_rounded(record), indent=1, allow_nan=False) + "\n")
    return record


# -- tables -----------------------------------------------------------------------------------------------


def _methods(available: list[str]) -> list[str]:
    return [m for m in METHODS if m in available]


def _label(method: str, version: str = "") -> str:
    if method == SUBJECT:
        return f"**default{f' (v{version})' if version else ''}**"
    return METHODS.get(method, method)


def _cells(values: list[float | None], digits: int) -> list[str]:
    """Formatted values, the best (largest, as rounded) in bold; ``-`` where missing."""
    text = [None if v is None else f"{v:.{digits}f}" for v in values]
    best = max((float(t) for t in text if t is not None), default=None)
    return ["-" if t is None else (f"**{t}**" if float(t) == best else t) for t in text]


def _table(header: list[str], rows: list[list[str]], align: str = "---:") -> str:
    lines = ["| " + " | ".join(header) + " |", "|---|" + "|".join([align] * (len(header) - 1)) + "|"]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])


def _source(*records: dict[str, Any]) -> str:
    """A line naming where the table's numbers come from."""
    parts = []
    for r in records:
        parts.append(f"`{r['command']}` on {r['machine']}")
    return "Source: " + "; ".join(parts) + "."


def _scene_names(summary: dict) -> list[str]:
    return sorted(
        {s for per in summary["mnn"].values() for s in per if s != "[all]"}, key=lambda s: (s != "entry-P10", s)
    )


def _scene_value(summary: dict, matcher: str, method: str, scene: str, metric: str) -> float | None:
    return _finite(summary.get(matcher, {}).get(method, {}).get(scene, {}).get(metric))


def _pairs(summary: dict, scene: str) -> int:
    method = next(iter(summary["mnn"].values()))
    return int(method[scene]["pairs"])


def _scene_rows(
    summary: dict, methods: list[str], spec: tuple[tuple[str, str, str], ...], count_digits: int
) -> list[list[str]]:
    """One row per scene and ``(matcher, metric, label)`` of ``spec``, a cell per method; the scene's first row
    names its pair count. ``count_digits``: decimals of ``num_correct`` (other metrics: 3)."""
    rows = []
    for scene in _scene_names(summary):
        for i, (matcher, metric, label) in enumerate(spec):
            values = [_scene_value(summary, matcher, m, scene, metric) for m in methods]
            name = f"{scene} ({_pairs(summary, scene)} pairs)" if i == 0 else scene
            rows.append([f"{name}: {label}", *_cells(values, count_digits if metric == "num_correct" else 3)])
    return rows


def table_headline(results: Path) -> str:
    """The README's one table: the default against the anchors on the 3D scenes and the homographies."""
    e3d, eh = load_result("eval-3d", results), load_result("eval-homography", results)
    s3d, sh = e3d["scenes"]["summary"], eh["sequences"]["summary"]
    methods = [m for m in _methods(list(s3d["mnn"])) if m in sh and m in HEADLINE]
    rows = _scene_rows(s3d, methods, HEADLINE_SCENE_ROWS, count_digits=0)
    pairs = next(iter(sh.values()))["[all]"]["pairs"]
    for i, (metric, label, digits) in enumerate(SEQUENCE_ROWS[:3]):
        values = [_finite(sh[m]["[all]"].get(metric)) for m in methods]
        name = f"homographies ({pairs} pairs)" if i == 0 else "homographies"
        rows.append([f"{name}: {label}", *_cells(values, digits)])
    header = ["", *(_label(m, e3d.get("default_version", "")) for m in methods)]
    files = "`docs/results/eval-3d.json`, `docs/results/eval-homography.json`"
    source = f"Source: {files} ({e3d['machine']}), made by `deepdesc evaluate` (commands inside)."
    return _table(header, rows) + "\n\n" + source


def table_scenes(results: Path) -> str:
    """Model card: every 3D metric, per scene, for every method."""
    e3d = load_result("eval-3d", results)
    summary = e3d["scenes"]["summary"]
    methods = _methods(list(summary["mnn"]))
    rows = _scene_rows(summary, methods, SCENE_ROWS, count_digits=1)
    header = ["", *(_label(m, e3d.get("default_version", "")) for m in methods)]
    return _table(header, rows) + "\n\n" + _source(e3d)


def _validation_table(results: Path, name: str) -> str:
    val = load_result(name, results)
    summary = val["scenes"]["summary"]
    methods = list(summary["mnn"])
    rows = _scene_rows(summary, methods, VALIDATION_ROWS, count_digits=1)
    return _table(["", *methods], rows) + "\n\n" + _source(val)


def table_validation(results: Path) -> str:
    """Model card: the shipped weights and the candidates on the validation views of the training scenes."""
    return _validation_table(results, "validation")


def table_validation_heldout(results: Path) -> str:
    """Model card: the held-out-scene diagnostic (buddha left out of training) on the same validation views."""
    return _validation_table(results, "validation-heldout")


def _win_cell(w: dict[str, Any] | None, digits: int) -> str:
    if not w:
        return "-"
    mean = w["mean_difference"]
    diff = "" if mean is None else f"{mean:+.{digits}f}, "
    return f"{diff}{w['won']}/{w['tied']}/{w['lost']}"


def table_scene_wins(results: Path) -> str:
    """Model card: the default against each anchor, paired per image pair (mean difference, won/tied/lost)."""
    e3d = load_result("eval-3d", results)
    wins, summary = e3d["scenes"]["wins"], e3d["scenes"]["summary"]
    anchors = [m for m in _methods(list(summary["mnn"])) if m != SUBJECT]
    labels = {
        "mnn:precision": "precision, mutual NN",
        "mnn:num_correct": "correct matches, mutual NN",
        "ratio:precision": "precision, ratio test",
        "ratio:num_correct": "correct matches, ratio test",
    }
    rows = []
    for scene in _scene_names(summary):
        for i, (key, label) in enumerate(labels.items()):
            digits = 1 if key.endswith("num_correct") else 3
            cells = [_win_cell(wins.get(scene, {}).get(key, {}).get(a), digits) for a in anchors]
            rows.append([f"{scene if i == 0 else scene}: {label}", *cells])
    header = ["default against", *(METHODS[a] for a in anchors)]
    return _table(header, rows) + "\n\n" + _source(e3d)


def table_homography(results: Path) -> str:
    """Model card: the homography metrics, per sequence group, for every method."""
    eh = load_result("eval-homography", results)
    summary = eh["sequences"]["summary"]
    methods = _methods(list(summary))
    rows = []
    for metric, label, digits in SEQUENCE_ROWS:
        for group in GROUPS:
            per = [summary[m].get(f"[{group}]") for m in methods]
            if not any(per):
                continue
            values = [_finite(p.get(metric)) if p else None for p in per]
            pairs = next(p for p in per if p)["pairs"]
            rows.append([f"{label}, {group} ({pairs} pairs)", *_cells(values, digits)])
    header = ["", *(_label(m, eh.get("default_version", "")) for m in methods)]
    return _table(header, rows) + "\n\n" + _source(eh)


def table_homography_wins(results: Path) -> str:
    """Model card: the default against each anchor per image pair on the homography sequences."""
    eh = load_result("eval-homography", results)
    wins, summary = eh["sequences"]["wins"], eh["sequences"]["summary"]
    anchors = [m for m in _methods(list(summary)) if m != SUBJECT]
    labels = {"matching_score": "matching score", "mma@3": "MMA@3", "precision@1": "patch precision@1"}
    rows = [[label, *(_win_cell(wins.get(k, {}).get(a), 3) for a in anchors)] for k, label in labels.items()]
    header = ["default against", *(METHODS[a] for a in anchors)]
    return _table(header, rows) + "\n\n" + _source(eh)


def table_speed(results: Path) -> str:
    """Per-image time of the default against OpenCV SIFT, with deepdesc's stages."""
    b = load_result("bench_image", results)
    ms = b["ms"]
    size = "x".join(str(v) for v in b["image_size"])
    n = b["keypoints"]["deepdesc"]
    rows = [
        ["deepdesc: detect (DoG keypoints)", f"{ms['detect']:.0f}"],
        ["deepdesc: patches (64x64, rotated and scaled)", f"{ms['patches']:.0f}"],
        [f"deepdesc: describe ({n / ms['describe'] * 1e3:,.0f} patches/s)", f"{ms['describe']:.0f}"],
        ["**deepdesc, `Extractor().detectAndCompute`**", f"**{ms['deepdesc']:.0f}**"],
        ["OpenCV SIFT, `detectAndCompute`", f"{ms['sift']:.0f}"],
        ["deepdesc / SIFT", f"{b['ratio_deepdesc_over_sift']:.2f}x"],
    ]
    if "ratio_bf16_over_sift" in b:
        rows.append(
            [
                f'the same with `precision="bf16"` / SIFT (descriptors within {b["bf16_max_abs_difference"]:.1g}; '
                + ("rounds of its own)" if "sift_bf16_rounds" in ms else "same rounds)"),
                f"{ms['deepdesc_bf16']:.0f} ms, {b['ratio_bf16_over_sift']:.2f}x",
            ]
        )
    model = f"{b['model']} v{b['model_version']}" if b.get("model_version") else b["model"]
    header = [f"one {size} image, {n:,} keypoints, {model}, {b['precision']}", "ms"]
    return (
        _table(header, rows)
        + "\n\n"
        + f"Source: `{b['command']}` on {b['machine']} ({b['software']}), 1-minute load average "
        f"{b['load_average']}; medians of {b['repeats']} interleaved rounds."
    )


def table_scale(results: Path) -> str:
    """README/scale docs: the local engine and the Ray engine describing one folder (``bench/bench_scale.py``)."""
    b = load_result("bench_scale", results)
    n = b["num_images"]
    local = next(r["wall_s"] for r in b["runs"] if r["engine"] == "local")
    rows = []
    for r in b["runs"]:
        name = "local" if r["engine"] == "local" else f"Ray, {r['workers']} worker{'s' if r['workers'] > 1 else ''}"
        extra = [f"{r['merge_s']:.1f}", f"{r['verify_s']:.1f}"] if r["engine"] == "ray" else ["-", "-"]
        rows.append([name, f"{r['wall_s']:.1f}", f"{n / r['wall_s']:.2f}", f"{local / r['wall_s']:.2f}", *extra])
    header = ["engine", "wall (s)", "images/s", "vs local", "merge (s)", "verify (s)"]
    return (
        _table(header, rows)
        + "\n\n"
        + f"Fixed costs: cluster start {b['cluster_start_s']:.1f} s, actor start and model load "
        f"{b['actor_start_s']:.1f} s per actor. Source: `{b['command']}` ({b['data']}, model {b['model']}, "
        f"{b['max_keypoints']} keypoints) on {b['machine']} ({b['software']}), 1-minute load average "
        f"{b['load_average']}."
    )


def table_model(results: Path) -> str:
    """Model card: what the packaged default file is, read from the file itself."""
    path = model_path(SUBJECT)
    net = load_model(SUBJECT)
    info = getattr(net, "info", {}) or {}
    conf = net.conf
    params = sum(p.numel() for p in net.parameters())
    arch = conf.get("arch", "")
    if arch == "compact":
        arch = f"compact, width {conf.get('width')} (`deepdesc/nn/compact.py`)"
    rows = [
        ["version", str(info.get("version", ""))],
        ["file", f"`deepdesc/hub/pretrained/{path.name}`, {path.stat().st_size / 1e6:.1f} MB"],
        ["architecture", arch],
        ["parameters", f"{params / 1e6:.2f} M"],
        ["patch region", f"{conf.get('region_scale'):g} x the keypoint size, {conf.get('blur_sigma'):g} px extra blur"],
        ["output", f"{net.descriptor_size} float32, L2-normalised" if conf.get("l2_normalize") else "float32"],
        ["training data", str(info.get("training_data", ""))],
        ["recipe", str(info.get("provenance", ""))],
    ]
    if "validation_precision_at_1" in info:  # weights straight from a training run (not, e.g., averaged ones)
        scores = f"precision@1 {info['validation_precision_at_1']}, FPR95 {info.get('validation_fpr95', '-')}"
        rows.append(["validation (held-out training-split pairs)", scores])
    rows.append(["licence", str(info.get("license", ""))])
    return (
        _table(["", "read from the packaged file"], rows, align="---") + "\n\nSource: the file's metadata and weights."
    )


TABLES: dict[str, Callable[[Path], str]] = {
    "headline": table_headline,
    "scenes": table_scenes,
    "scene-wins": table_scene_wins,
    "homography": table_homography,
    "homography-wins": table_homography_wins,
    "speed": table_speed,
    "validation": table_validation,
    "validation-heldout": table_validation_heldout,
    "scale": table_scale,
    "model": table_model,
}


# -- documents --------------------------------------------------------------------------------------------


def render(text: str, results: Path = RESULTS, cache: dict[str, str] | None = None) -> tuple[str, list[str]]:
    """``text`` with every marked table rendered; and the names of the tables that changed."""
    cache = {} if cache is None else cache
    changed: list[str] = []

    def replace(match: re.Match) -> str:
        name = match.group(2)
        if name not in TABLES:
            raise ReportError(f"unknown table {name!r} in a marker; known: {', '.join(TABLES)}")
        if name not in cache:
            cache[name] = TABLES[name](results)
        new = cache[name].rstrip("\n") + "\n"
        if new != match.group(3):
            changed.append(name)
        return match.group(1) + new + match.group(4)

    return MARKER.sub(replace, text), changed


def update(root: Path = ROOT, results: Path = RESULTS, check: bool = False) -> dict[str, list[str]]:
    """Render the tables of every document; write them unless ``check``. Returns {document: changed tables}."""
    cache: dict[str, str] = {}
    out = {}
    for doc in DOCUMENTS:
        path = root / doc
        text = path.read_text()
        if "<!-- table:" in text and not MARKER.search(text):
            raise ReportError(f"{path}: a '<!-- table:NAME -->' marker without its '<!-- /table -->'")
        new, changed = render(text, results, cache)
        out[doc] = changed
        if changed and not check:
            with atomic_path(path) as tmp:
                tmp.write_text(new)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if a table differs")
    parser.add_argument(
        "--import-eval", nargs="+", type=Path, metavar="JSON",
        help="RESULTS_JSON [RESULTS_JSON ...] TARGET_JSON: runs on the same data (other methods) merged into one",
    )  # fmt: skip
    parser.add_argument("--command", help="with --import-eval: the commands that produced the results")
    parser.add_argument("--data", help="with --import-eval: the data it ran on (default: its --dataset list)")
    parser.add_argument("--replace", action="store_true", help="with --import-eval: a later run's method replaces")
    args = parser.parse_args(argv)
    try:
        if args.import_eval:
            if not args.command:
                parser.error("--import-eval needs --command (the command that produced the results)")
            if len(args.import_eval) < 2:
                parser.error("--import-eval needs one or more results.json files and the target")
            *sources, target = args.import_eval
            import_evaluate(sources, target, command=args.command, data=args.data, replace=args.replace)
            print(f"wrote {target}")
            return 0
        changed = update(root=ROOT, results=RESULTS, check=args.check)
    except (ReportError, OSError, KeyError, json.JSONDecodeError) as exc:
        print(f"report: error: {exc}", file=sys.stderr)
        return 2
    for doc, names in changed.items():
        if names:
            verb = "differs from the results" if args.check else "rewritten"
            print(f"{doc}: {', '.join(names)} {verb}")
    if args.check and any(changed.values()):
        print("run `python bench/report.py` to regenerate them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
