"""Seed replicates against anchors, paired per image pair, from ``deepdesc evaluate --dataset strecha:...``
(or ``colmap:...``) results.

Usage: ``python bench/seed_table.py RUN_DIR/results.json --replicates default,v3-seed1,v3-seed2
--anchors sift,rootsift@16,split4``

For each per-pair metric (mutual-NN and ratio-test epipolar precision and correct matches): every
replicate's mean over pairs, the replicates' mean and standard deviation, and per anchor the paired
difference (replicate minus anchor, mean over pairs, averaged over replicates, with its range over
replicates) and the pairs won / tied / lost, summed over replicates. Pose AUC@10 (a statistic of all
pairs, not per pair) is listed per replicate.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

METRICS = [
    ("mnn", "precision", "precision, mutual NN", "{:.3f}"),
    ("mnn", "num_correct", "correct matches, mutual NN", "{:.1f}"),
    ("ratio", "precision", "precision, ratio test", "{:.3f}"),
    ("ratio", "num_correct", "correct matches, ratio test", "{:.1f}"),
]


def per_pair(rows: list[dict], matcher: str, metric: str) -> dict[str, dict[tuple[str, str], float]]:
    """method -> (scene, pair) -> value, for one matcher."""
    out: dict[str, dict[tuple[str, str], float]] = {}
    for r in rows:
        if r["matcher"] == matcher:
            out.setdefault(r["method"], {})[(r["scene"], r["pair"])] = float(r[metric])
    return out


def _spread(values: list[float], fmt: str) -> str:
    """Sample standard deviation, or "-" for a single replicate."""
    return fmt.format(statistics.stdev(values)) if len(values) > 1 else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--replicates", required=True, help="comma-separated method names (one per seed)")
    parser.add_argument("--anchors", default="sift,rootsift@16,split4", help="comma-separated method names")
    args = parser.parse_args()
    scenes = json.loads(args.results.read_text())["scenes"]
    reps, anchors = args.replicates.split(","), args.anchors.split(",")
    known = set(scenes["summary"]["mnn"])
    missing = [m for m in reps + anchors if m not in known]
    if missing:
        raise SystemExit(f"{args.results}: no results for {missing}; it has {sorted(known)}")
    header = ["metric", *reps, "mean ± sd", *(f"Δ vs {a} (range), won/tied/lost" for a in anchors)]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for matcher, metric, label, fmt in METRICS:
        table = per_pair(scenes["rows"], matcher, metric)
        means = [statistics.fmean(table[m].values()) for m in reps]
        cells = [label, *(fmt.format(v) for v in means)]
        cells.append(f"{fmt.format(statistics.fmean(means))} ± {_spread(means, fmt)}")
        for anchor in anchors:
            diffs, won, tied, lost = [], 0, 0, 0
            for rep in reps:
                pairs = table[rep].keys() & table[anchor].keys()
                d = [table[rep][p] - table[anchor][p] for p in pairs]
                diffs.append(statistics.fmean(d))
                won, tied, lost = (
                    won + sum(x > 0 for x in d),
                    tied + sum(x == 0 for x in d),
                    lost + sum(x < 0 for x in d),
                )
            span = f"{fmt.format(min(diffs))}..{fmt.format(max(diffs))}"
            cells.append(f"{statistics.fmean(diffs):+.3f} ({span}), {won}/{tied}/{lost}")
        lines.append("| " + " | ".join(cells) + " |")
    auc = [scenes["summary"]["mnn"][m]["[all]"]["auc@10"] for m in reps + anchors]
    lines.append(
        "| pose AUC@10, mutual NN | "
        + " | ".join(f"{v:.3f}" for v in auc[: len(reps)])
        + " | "
        + f"{statistics.fmean(auc[: len(reps)]):.3f} ± {_spread(auc[: len(reps)], '{:.3f}')} | "
        + " | ".join(f"{a}: {v:.3f}" for a, v in zip(anchors, auc[len(reps) :]))
        + " |"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
