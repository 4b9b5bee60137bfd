"""How well the 3D-point groups of a Brown-layout set are recovered without its info.txt.

Usage: ``.venv/bin/python bench/phototour_groups.py LABELLED_DIR [--method rootsift --method deepdesc]
[--thresholds 0.3,0.35,...] [--json OUT.json]``

``LABELLED_DIR`` is a PhotoTour-layout folder with info.txt, e.g. a ``deepdesc make-patches`` output. Its labels
only score the detector: the detector sees the patches alone (``infer_groups`` takes no labels). Brown's sets
hold no single-patch points and store each point's patches consecutively, so the patches are reduced to the
points with at least two patches (``--keep-singletons`` keeps the rest) in the order of their points' first
patches (make-patches already writes them so).

Split: the patches on the first half of the sheets (cut at the next group start) choose the method, ``bridge``
and threshold (the best boundary F1 over the grid); the rest is scored with that choice only, and with the
library's defaults. Printed: boundary precision / recall, the share of wrongly merged patches (in a predicted
group with another point's patches), of wrongly split groups and of exactly recovered groups.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from deepdesc.datasets.phototour import PATCHES_PER_SHEET, PhotoTour
from deepdesc.datasets.phototour_groups import (
    DEFAULT_REGION,
    DEFAULT_THRESHOLDS,
    grouping_metrics,
    ids_from_boundaries,
    link_distances,
    patch_descriptors,
    segment,
)

COLUMNS = ("boundary_precision", "boundary_recall", "wrongly_merged", "wrongly_split", "exact")


def labelled_sequence(folder: Path, keep_singletons: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patches (N, 64, 64), point ids (N,) and original indices (N,), points consecutive in first-seen order."""
    data = PhotoTour(folder)
    if data.point_ids is None:
        raise SystemExit(f"{folder}: no info.txt; the benchmark needs a labelled set")
    ids = data.point_ids
    _, first, counts = np.unique(ids, return_index=True, return_counts=True)
    keep = np.ones(len(ids), bool) if keep_singletons else counts[np.searchsorted(np.unique(ids), ids)] >= 2
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    point_rank = rank[np.searchsorted(np.unique(ids), ids)]
    order = np.flatnonzero(keep)
    order = order[np.argsort(point_rank[order], kind="stable")]
    return np.asarray(data.patches[order]), ids[order], order


def f1(m: dict) -> float:
    p, r = m["boundary_precision"], m["boundary_recall"]
    return 2 * p * r / (p + r) if p + r else 0.0


def row(name: str, m: dict) -> str:
    return (
        f"{name:44s}" + "".join(f"{m[c]:>10.3f}" for c in COLUMNS) + f"{m['predicted_groups']:>8d}/{m['true_groups']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--method", action="append", help="rootsift and/or deepdesc (default: both)")
    parser.add_argument("--thresholds", default=",".join(f"{t:.2f}" for t in np.arange(0.30, 1.21, 0.05)))
    parser.add_argument("--region", type=float, default=DEFAULT_REGION, help="RootSIFT region (px)")
    parser.add_argument("--keep-singletons", action="store_true", help="also keep points with one patch")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    args = parser.parse_args()
    methods = args.method or ["rootsift", "deepdesc"]
    thresholds = [float(t) for t in args.thresholds.split(",")]

    patches, ids, original = labelled_sequence(args.folder, args.keep_singletons)
    sheets = int(original.max()) // PATCHES_PER_SHEET + 1
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    cut = int(starts[np.searchsorted(starts, np.searchsorted(original, (sheets // 2) * PATCHES_PER_SHEET))])
    parts = {"choose": slice(0, cut), "report": slice(cut, len(ids))}
    print(
        f"{args.folder}: {len(ids)} patches of {len(starts)} points (>= 2 patches: {not args.keep_singletons}); "
        f"choose on patches 0..{cut - 1} (sheets 0..{sheets // 2 - 1}), report on {cut}..{len(ids) - 1}"
    )
    header = f"{'':44s}" + "".join(f"{c.split('_')[-1][:9]:>10s}" for c in COLUMNS) + "  groups pred/true"
    results: dict = {"folder": str(args.folder), "cut": cut, "patches": len(ids), "choose": [], "report": {}}
    best = None
    desc = {m: patch_descriptors(patches, m, region=args.region, progress=True) for m in methods}
    print("\nchoosing (first half):\n" + header)
    for method in methods:
        for bridge in (False, True):
            link = link_distances(desc[method][parts["choose"]], bridge)
            truth = ids[parts["choose"]]
            for t in thresholds:
                m = grouping_metrics(truth, ids_from_boundaries(segment(link, t, 2)))
                name = f"{method} bridge={int(bridge)} t={t:.2f}"
                results["choose"].append({"method": method, "bridge": bridge, "threshold": t, **m})
                print(row(name, m))
                if best is None or f1(m) > best[0]:
                    best = (f1(m), method, bridge, t)
    assert best is not None
    _, method, bridge, t = best
    print(f"\nchosen on the first half: {method}, bridge={bridge}, threshold {t:.2f}")
    print("\nreport (second half):\n" + header)
    truth = ids[parts["report"]]
    settings = [(f"chosen: {method} bridge={int(bridge)} t={t:.2f}", method, bridge, t)]
    settings += [
        (f"default: {m} bridge=1 t={DEFAULT_THRESHOLDS[m]:.2f}", m, True, DEFAULT_THRESHOLDS[m]) for m in methods
    ]
    settings += [(f"no size prior: {method} bridge={int(bridge)} t={t:.2f}", method, bridge, t)]
    for k, (name, m_, b_, t_) in enumerate(settings):
        link = link_distances(desc[m_][parts["report"]], b_)
        m = grouping_metrics(truth, ids_from_boundaries(segment(link, t_, 1 if k == len(settings) - 1 else 2)))
        results["report"][name] = m
        print(row(name, m))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
