"""Sweep the patch measurement region and smoothing for an original model on ../shared/data/eval.

Patch-matching precision@1 (deepdesc.evaluate protocol: DoG keypoints of image 1 projected through the
ground-truth homography with HPatches-like noise) for every pair 1->k of every sequence. Prints a
markdown table (rows: region_scale, columns: blur_sigma) per sequence group and overall.

    python bench/sweep_patch_params.py [--model split4-path] [--keypoints 500]
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np

from deepdesc.eval.homography import Method, evaluate_sequences
from deepdesc.utils import shared_dir


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(shared_dir() / "models/deepdesc-release/CNN3_p8_n8_split4_073000.t7"))
    parser.add_argument("--keypoints", type=int, default=500)
    parser.add_argument("--region-scales", default="3,4,6,8,10,12,16")
    parser.add_argument("--blur-sigmas", default="0,1,2,3")
    args = parser.parse_args()
    eval_dir = shared_dir() / "data" / "eval"
    sequences = sorted(p for p in (eval_dir / "oxford").iterdir()) + sorted(
        p for p in (eval_dir / "hpatches").iterdir()
    )
    scales = [float(v) for v in args.region_scales.split(",")]
    blurs = [float(v) for v in args.blur_sigmas.split(",")]
    results: dict[tuple[float, float], dict] = {}
    start = time.perf_counter()
    for scale, blur in itertools.product(scales, blurs):
        method = Method.parse(args.model, region_scale=scale, blur_sigma=blur)
        out = evaluate_sequences(
            sequences, [method], num_keypoints=args.keypoints, protocols=("patch",), progress=False
        )
        results[scale, blur] = out["summary"][method.name]
        print(
            f"region {scale:g} blur {blur:g}: precision@1 {results[scale, blur]['[all]']['precision@1']:.3f}",
            flush=True,
        )
    groups = [k for k in results[scales[0], blurs[0]] if k.startswith("[")]
    print(f"\nmodel {args.model}, {args.keypoints} keypoints per sequence, {time.perf_counter() - start:.0f} s")
    for group in groups:
        print(f"\nprecision@1 {group}\n\n| region \\ blur | " + " | ".join(f"{b:g}" for b in blurs) + " |")
        print("|---" * (len(blurs) + 1) + "|")
        for scale in scales:
            values = [results[scale, b][group]["precision@1"] for b in blurs]
            print(f"| {scale:g} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
    best = max(results, key=lambda k: results[k]["[all]"]["precision@1"])
    print(
        f"\nbest overall: region_scale={best[0]:g}, blur_sigma={best[1]:g} "
        f"({results[best]['[all]']['precision@1']:.3f}); mean over groups "
        f"{np.mean([results[best][g]['precision@1'] for g in groups if g != '[all]']):.3f}"
    )


if __name__ == "__main__":
    main()
