"""The numbers make-patches reports: tracks, lengths, baselines, patches per split (summary.json / .md)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .config import MultiviewSet, SplitSet, validation_views
from .geometry import reprojection_errors

__all__ = ["ANGLE_BINS", "LENGTH_BINS", "match_name", "summarize", "summary_markdown"]

#: Track length histogram bins (the last one is open-ended) and baseline angle bins (degrees) of the summary.
LENGTH_BINS = (2, 3, 4, 5, 6, 8, 10, 15, 20)
ANGLE_BINS = (0, 5, 10, 20, 30, 45, 60, 90, 180)


def match_name(n: int) -> str:
    """Brown's match-file name for ``n`` pairs (half positive), e.g. ``m50_100000_100000_0``."""
    return f"m50_{n}_{n}_0"


def _histogram(values: np.ndarray, bins: tuple, integer: bool = False) -> dict[str, int]:
    """Counts per bin ``[lo, hi)``, the last open-ended; integer bins are labelled ``lo-(hi-1)``."""
    edges = list(bins) + [np.inf]
    out = {}
    for lo, hi in zip(edges[:-1], edges[1:]):
        if not np.isfinite(hi):
            label = f"{lo}+"
        elif integer:
            label = f"{lo}" if hi == lo + 1 else f"{lo}-{hi - 1}"
        else:
            label = f"{lo}-{hi}"
        out[label] = int(((values >= lo) & (values < hi)).sum())
    return out


def _track_baselines(mv: MultiviewSet, tracks: np.ndarray, view_ok: np.ndarray) -> np.ndarray:
    """Widest angle (degrees) between the rays of each track's detections in ``view_ok`` views."""
    views = mv.views
    out = np.zeros(len(tracks))
    for k, t in enumerate(tracks.tolist()):
        seen = np.flatnonzero((mv.observations[t] >= 0) & view_ok)
        rays = views.C[seen] - mv.points[t]
        rays /= np.linalg.norm(rays, axis=1, keepdims=True)
        out[k] = np.degrees(np.arccos(np.clip((rays @ rays.T).min(), -1.0, 1.0)))
    return out


def summarize(mv: MultiviewSet, splits: dict[str, SplitSet]) -> dict[str, Any]:
    """Numbers of tracks, track lengths, baselines, patches, distractors and hard negatives (JSON-ready)."""
    conf = mv.config
    views = mv.views
    lengths = mv.track_lengths()
    err = reprojection_errors(views, mv.points, mv.observations)
    is_val = validation_views(mv.num_views, conf.val_every)
    summary: dict[str, Any] = {
        "scene": mv.scene.name,
        "views": mv.num_views,
        "validation_views": [mv.scene.image_names[v] for v in np.flatnonzero(is_val)],
        "detections_per_view": round(float(np.mean([len(k) for k in mv.keypoints])), 1),
        "tracks": int(len(lengths)),
        "mean_track_length": round(float(lengths.mean()), 2) if len(lengths) else 0.0,
        "track_length_histogram": _histogram(lengths, LENGTH_BINS, integer=True),
        "median_reprojection_px": round(float(np.nanmedian(err)), 3) if len(lengths) else None,
        "distractors": int(len(mv.distractors)),
        "hard_negatives": int(len(mv.hard_negatives)),
        **mv.stats,
        "config": dataclasses.asdict(conf),
        "splits": {},
    }
    if len(lengths):
        base = _track_baselines(mv, np.arange(len(lengths)), np.ones(mv.num_views, bool))
        summary["baseline_deg"] = {
            "median": round(float(np.median(base)), 1),
            "p90": round(float(np.percentile(base, 90)), 1),
            "max": round(float(base.max()), 1),
            "histogram": _histogram(base, ANGLE_BINS),
        }
    for name, s in splits.items():
        view_ok = is_val == (name == "val")
        tracks = np.unique(s.track_of[s.track_of >= 0])
        lens = np.bincount(s.point_ids[s.kinds == 0]) if s.num_tracks else np.zeros(0, np.int64)
        base = _track_baselines(mv, tracks, view_ok) if len(tracks) else np.zeros(0)
        summary["splits"][name] = {
            "views": int(view_ok.sum()),
            "patches": int(len(s.views)),
            "tracks": int(s.num_tracks),
            "track_patches": int((s.kinds == 0).sum()),
            "mean_track_length": round(float(lens.mean()), 2) if len(lens) else 0.0,
            "track_length_histogram": _histogram(lens, LENGTH_BINS, integer=True),
            "baseline_deg_median": round(float(np.median(base)), 1) if len(base) else None,
            "baseline_deg_histogram": _histogram(base, ANGLE_BINS),
            "distractors": int((s.kinds == 1).sum()),
            "hard_negative_patches": int((s.kinds == 2).sum()),
            "hard_negative_pairs": int(s.num_hard_negatives),
            "pairs": int(len(s.pairs)),
            "unique_positive_pairs": int(s.unique_positive_pairs),
            "match_file": match_name(len(s.pairs)),
        }
    return summary


def summary_markdown(summary: dict[str, Any]) -> str:
    """A short human-readable report of :func:`summarize`'s dict."""
    lines = [
        f"# make-patches: {summary['scene']}",
        "",
        f"- views: {summary['views']} (validation: {', '.join(summary['validation_views']) or 'none'})",
        f"- detections per view (patch region inside the image): {summary['detections_per_view']}",
        f"- tracks: {summary['tracks']}, mean length {summary['mean_track_length']}, "
        f"median reprojection error {summary['median_reprojection_px']} px",
        f"- track lengths: {summary['track_length_histogram']}",
    ]
    if "no_validation" in summary:
        lines.append(f"- no validation set written: {summary['no_validation']}")
    if "pairing" in summary:
        line = f"- seed pairs: {summary['seed_pairs']} ({summary['pairing']}"
        if "seed_baseline_deg_median" in summary:
            line += f"; median baseline {summary['seed_baseline_deg_median']} deg"
            line += f", median overlap {summary['seed_overlap_median']}"
        lines.append(line + f"; views without a seed pair: {summary['views_without_seed_pair']})")
    if "baseline_deg" in summary:
        b = summary["baseline_deg"]
        lines.append(f"- widest baseline per track (deg): median {b['median']}, p90 {b['p90']}, max {b['max']}")
        lines.append(f"  histogram: {b['histogram']}")
    lines.append(f"- distractors: {summary['distractors']}, hard negatives: {summary['hard_negatives']}")
    if "seconds" in summary:
        lines.append(f"- time: {summary['seconds']} s")
    lines += ["", "| split | views | patches | tracks | mean length | distractors | hard neg. pairs | pairs |"]
    lines.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, s in summary["splits"].items():
        lines.append(
            f"| {name} | {s['views']} | {s['patches']} | {s['tracks']} | {s['mean_track_length']} | "
            f"{s['distractors']} | {s['hard_negative_pairs']} | {s['pairs']} "
            f"({s['unique_positive_pairs']} distinct positives) |"
        )
    return "\n".join(lines) + "\n"
