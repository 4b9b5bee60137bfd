"""The README's relative-pose table from ``deepdesc evaluate --dataset strecha:...`` results.

Usage: ``python bench/scene_table.py RUN_DIR/results.json [--reference sift]``: one row per metric
(mutual-NN and ratio-test epipolar precision and correct matches, pose AUC@5/10/20 averaged over match
orders), one column per method, and the pairs each method wins / ties / loses against the reference.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from deepdesc.eval.scenes import pair_wins

ROWS = [
    ("mnn", "precision", "precision, mutual NN"),
    ("mnn", "num_correct", "correct matches, mutual NN"),
    ("ratio", "precision", "precision, ratio test 0.8"),
    ("ratio", "num_correct", "correct matches, ratio test"),
    ("mnn", "auc@5", "pose AUC@5, mutual NN"),
    ("mnn", "auc@10", "pose AUC@10, mutual NN"),
    ("mnn", "auc@20", "pose AUC@20, mutual NN"),
    ("ratio", "auc@10", "pose AUC@10, ratio test"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--reference", default="sift")
    args = parser.parse_args()
    result = json.loads(args.results.read_text())["scenes"]
    summary, rows = result["summary"], result["rows"]
    methods = list(summary["mnn"])
    lines = ["| metric | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for matcher, metric, label in ROWS:
        values = [summary[matcher][m]["[all]"][metric] for m in methods]
        best = max(values)
        fmt = "{:.0f}" if metric == "num_correct" else "{:.3f}"
        cells = [f"**{fmt.format(v)}**" if v == best else fmt.format(v) for v in values]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for matcher, metric, label in (
        ("mnn", "precision", "mutual NN precision"),
        ("ratio", "num_correct", "ratio-test correct"),
    ):
        wins = pair_wins(rows, metric, args.reference, matcher)
        cells = ["-" if m == args.reference else "{}/{}/{}".format(*wins[m]) for m in methods]
        lines.append(f"| pairs won/tied/lost vs {args.reference}: {label} | " + " | ".join(cells) + " |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
