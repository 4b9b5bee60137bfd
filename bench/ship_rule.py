"""Apply the default weights' ship rule to validation results (``bench/validation_scenes.sh``).

The rule (``configs/v4/default.toml``): a candidate replaces the reference only if (a) its mutual-NN precision
and its ratio-test precision, each averaged over the validation scenes, are higher than the reference's, and
(b) on no scene is either precision lower than the reference's by more than ``--precision-slack`` (0.01), nor
its mutual-NN correct matches lower by more than ``--matches-slack`` (5 %).

    python bench/ship_rule.py runs/val-v31/results.json runs/val-v4/results.json --reference v3.1 --candidate v4

Several ``deepdesc evaluate`` results.json files may be given; their scene summaries are merged by method label.
Prints a table and PASS or FAIL; exits 0 either way (1 for unusable input).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def merged_summary(paths: list[Path]) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """matcher -> method -> scene -> metrics, from the ``scenes.summary`` of each results.json."""
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for path in paths:
        summary = json.loads(path.read_text())["scenes"]["summary"]
        for matcher, methods in summary.items():
            out.setdefault(matcher, {}).update(methods)
    return out


def apply_rule(
    summary: dict[str, Any], reference: str, candidate: str, precision_slack: float = 0.01, matches_slack: float = 0.05
) -> tuple[bool, list[str]]:
    """(passes, report lines) of the rule for ``candidate`` against ``reference``."""
    for matcher in ("mnn", "ratio"):
        for method in (reference, candidate):
            if method not in summary.get(matcher, {}):
                raise KeyError(f"no {matcher} results for {method!r}; have {sorted(summary.get(matcher, {}))}")
    scenes = sorted(s for s in summary["mnn"][reference] if s != "[all]")
    lines = [f"| scene | metric | {reference} | {candidate} | difference |", "|---|---|---:|---:|---:|"]
    ok_b = True
    means = {}
    for matcher in ("mnn", "ratio"):
        ref = [summary[matcher][reference][s]["precision"] for s in scenes]
        cand = [summary[matcher][candidate][s]["precision"] for s in scenes]
        means[matcher] = (sum(ref) / len(ref), sum(cand) / len(cand))
        for scene, r, c in zip(scenes, ref, cand):
            worse = c < r - precision_slack
            ok_b &= not worse
            lines.append(
                f"| {scene} | {matcher} precision | {r:.4f} | {c:.4f} | {c - r:+.4f}{' (b fails)' if worse else ''} |"
            )
    for scene in scenes:
        r = summary["mnn"][reference][scene]["num_correct"]
        c = summary["mnn"][candidate][scene]["num_correct"]
        worse = c < (1 - matches_slack) * r
        ok_b &= not worse
        lines.append(
            f"| {scene} | mnn correct matches | {r:.1f} | {c:.1f} | {c / r - 1:+.1%}{' (b fails)' if worse else ''} |"
        )
    ok_a = all(c > r for r, c in means.values())
    for matcher, (r, c) in means.items():
        lines.append(f"| mean of {len(scenes)} scenes | {matcher} precision | {r:.4f} | {c:.4f} | {c - r:+.4f} |")
    lines.append(f"(a) mean precisions higher: {'yes' if ok_a else 'no'}; (b) no scene worse beyond the slack: "
                 f"{'yes' if ok_b else 'no'} -> {'PASS' if ok_a and ok_b else 'FAIL'}")  # fmt: skip
    return ok_a and ok_b, lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="deepdesc evaluate results.json files")
    parser.add_argument("--reference", required=True, help="method label of the shipped weights")
    parser.add_argument("--candidate", required=True, help="method label of the candidate")
    parser.add_argument("--precision-slack", type=float, default=0.01)
    parser.add_argument("--matches-slack", type=float, default=0.05)
    args = parser.parse_args(argv)
    try:
        summary = merged_summary(args.results)
        _, lines = apply_rule(summary, args.reference, args.candidate, args.precision_slack, args.matches_slack)
    except (OSError, KeyError, ValueError) as exc:
        print(f"ship_rule.py: error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
