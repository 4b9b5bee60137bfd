"""Condense a `deepdesc evaluate` results.json into the README's quality table and the model card's
per-group tables.

    deepdesc evaluate --dataset oxford:../shared/data/eval/oxford --dataset hpatches-seq:../shared/data/eval/hpatches \
        --model sift --model rootsift --model sift@16 --model rootsift@16 --model default \
        --model ../shared/models/deepdesc-release/CNN3_p8_n8_split4_073000.t7 ... -o runs/eval
    python bench/quality_table.py runs/eval/results.json [--reference rootsift@16]

Besides the precision@1 / homography tables, prints the matching score per group (correct matches end to end
over the keypoints) and, per image pair, how many pairs each method wins, ties or loses against
``--reference`` (default ``sift``) on matching score, MMA@3 and precision@1.
"""

from __future__ import annotations

import argparse
import json


def main(path: str, reference: str = "sift") -> None:
    sequences = json.loads(open(path).read())["sequences"]
    summary = sequences["summary"]
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
    print()
    print(f"| matching score | {names} |")
    print("|---" * (len(groups) + 1) + "|")
    for m in methods:
        print(f"| {short[m]} | " + " | ".join(f"{summary[m][g]['matching_score']:.3f}" for g in groups) + " |")
    print_pair_wins(sequences["rows"], methods, short, reference)


def print_pair_wins(rows: list[dict], methods: list[str], short: dict[str, str], reference: str) -> None:
    """Won/tied/lost image pairs against ``reference`` per metric (ties: equal to 1e-9)."""
    if reference not in methods:
        raise SystemExit(f"--reference {reference!r} is not among the methods: {', '.join(methods)}")
    value = {(r["method"], r["sequence"], r["pair"]): r for r in rows}
    pairs = sorted({(r["sequence"], r["pair"]) for r in rows})
    print()
    print(
        f"| pairs won/tied/lost vs {short[reference]} ({len(pairs)} pairs) | "
        + " | ".join(short[m] for m in methods if m != reference)
        + " |"
    )
    print("|---" * len(methods) + "|")
    for metric in ("matching_score", "mma@3", "precision@1"):
        cells = []
        for m in methods:
            if m == reference:
                continue
            d = [value[(m, *k)][metric] - value[(reference, *k)][metric] for k in pairs]
            won, lost = sum(x > 1e-9 for x in d), sum(x < -1e-9 for x in d)
            cells.append(f"{won}/{len(d) - won - lost}/{lost}")
        print(f"| {metric} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", default="runs/eval/results.json")
    parser.add_argument("--reference", default="sift", help="method the pair-win counts compare against")
    args = parser.parse_args()
    main(args.results, args.reference)
