"""Condense a `deepdesc evaluate` results.json into the README's quality table and the model card's
per-group tables.

    deepdesc evaluate --dataset oxford:../shared/data/eval/oxford --dataset hpatches-seq:../shared/data/eval/hpatches \
        --model sift --model rootsift --model sift@16 --model rootsift@16 --model default \
        --model ../shared/models/deepdesc-release/CNN3_p8_n8_split4_073000.t7 ... -o runs/eval
    python bench/quality_table.py runs/eval/results.json
"""

from __future__ import annotations

import json
import sys


def main(path: str) -> None:
    summary = json.loads(open(path).read())["sequences"]["summary"]
    methods = list(summary)
    short = {m: m.replace("CNN3_p8_n8_", "").rsplit("_", 1)[0] if m.startswith("CNN3") else m for m in methods}
    rows = [k for k in summary[methods[0]] if not k.startswith("[")] + ["[all]"]
    print("| precision@1 | " + " | ".join(short[m] for m in methods) + " |")
    print("|---" * (len(methods) + 1) + "|")
    for row in rows:
        values = [summary[m][row]["precision@1"] for m in methods]
        best = max(values)
        cells = [f"**{v:.3f}**" if v == best else f"{v:.3f}" for v in values]
        print(f"| {row} | " + " | ".join(cells) + " |")
    for metric in ("h_acc@3", "h_acc@5", "mma@3"):
        values = [summary[m]["[all]"][metric] for m in methods]
        best = max(values)
        cells = [f"**{v:.3f}**" if v == best else f"{v:.3f}" for v in values]
        print(f"| {metric} [all] | " + " | ".join(cells) + " |")

    print()
    groups = ["[viewpoint]", "[zoom+rotation]", "[blur]", "[illumination]", "[all]"]
    names = " | ".join(g.strip("[]") for g in groups)
    print(f"| precision@1 | {names} |")
    print("|---" * (len(groups) + 1) + "|")
    for m in methods:
        print(f"| {short[m]} | " + " | ".join(f"{summary[m][g]['precision@1']:.3f}" for g in groups) + " |")
    print()
    print(f"| h_acc@3 / h_acc@5, MMA@3 | {names} |")
    print("|---" * (len(groups) + 1) + "|")
    for m in methods:
        rows_m = [summary[m][g] for g in groups]
        cells = [f"{r['h_acc@3']:.2f} / {r['h_acc@5']:.2f}, {r['mma@3']:.2f}" for r in rows_m]
        print(f"| {short[m]} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/eval/results.json")
