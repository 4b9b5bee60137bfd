"""Time per image of the model users get: ``Extractor().detectAndCompute`` against OpenCV SIFT, same image.

One 1536x1024 view of ``../shared/data/eval/strecha/entry-P10`` (grayscale), 2,000 keypoints. Both run in one
process, interleaved round by round so that machine load hits them alike; medians over the rounds, with the
breakdown of deepdesc's stages (detect, patches, describe). Writes a JSON record (command, data, machine,
numbers) for ``bench/report.py``.

    python bench/bench_image.py [--model default] [--repeats 7] [--precision fp32|bf16] [--compare-bf16] \
        [-o docs/results/bench_image.json]

``--compare-bf16`` also times the same extractor with ``precision="bf16"``, in rounds of its own with SIFT (in
the same rounds as float32 it slowed the float32 extractor relative to SIFT: 2.11-2.20x against 2.06-2.07x on
the Xeon of the README), and reports its largest descriptor difference from float32 on this image's patches.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
from pathlib import Path

import cv2
import torch
from _common import cpu_model, interleaved_times

import deepdesc
from deepdesc.features.image import load_image
from deepdesc.utils import atomic_path, shared_dir

IMAGE = "data/eval/strecha/entry-P10/images/0000.jpg"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="registry name or weights path (default: the default)")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (after one warm-up round)")
    parser.add_argument("--keypoints", type=int, default=2000)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument(
        "--compare-bf16", action="store_true", help="also time the extractor in bfloat16 (CPU) in the same rounds"
    )
    parser.add_argument("-o", "--output", type=Path, default=None, help="JSON record to write (default: none)")
    args = parser.parse_args()
    if args.repeats < 1 or args.keypoints < 1:
        parser.error("--repeats and --keypoints must be >= 1")
    path = shared_dir() / IMAGE
    gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if gray is None:
        parser.error(f"cannot read {path} (set DEEPDESC_SHARED to the folder holding data/eval)")

    extractor = deepdesc.Extractor(model=args.model, max_keypoints=args.keypoints, precision=args.precision)
    sift = cv2.SIFT_create(nfeatures=args.keypoints)
    image = load_image(gray)
    kpts = extractor.detect_array(image)
    patches, _ = extractor.cut_patches(image, kpts)
    _, sift_desc = sift.detectAndCompute(gray, None)
    timed = {
        "sift": lambda: sift.detectAndCompute(gray, None),
        "deepdesc": lambda: extractor.detectAndCompute(gray),
        "detect": lambda: extractor.detect_array(image),
        "patches": lambda: extractor.cut_patches(image, kpts),
        "describe": lambda: extractor.describe_patches(patches),
    }
    for fn in timed.values():  # warm-up: model load, allocations
        fn()
    load_before = os.getloadavg()[0]
    times = {k: 1e3 * statistics.median(v) for k, v in interleaved_times(timed, args.repeats).items()}
    bf16 = None
    if args.compare_bf16:
        bf16 = deepdesc.Extractor(model=args.model, max_keypoints=args.keypoints, precision="bf16")
        rounds = {"sift_bf16_rounds": timed["sift"], "deepdesc_bf16": lambda: bf16.detectAndCompute(gray)}
        for fn in rounds.values():
            fn()
        times.update({k: 1e3 * statistics.median(v) for k, v in interleaved_times(rounds, args.repeats).items()})
    load = max(load_before, os.getloadavg()[0])  # other processes' share of the CPU inflates every time alike

    info = getattr(extractor.model, "info", {}) or {}
    record = {
        "command": "python bench/bench_image.py " + shlex.join(sys.argv[1:]),
        "data": f"../shared/{IMAGE} ({gray.shape[1]}x{gray.shape[0]}, grayscale)",
        "machine": f"{cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads",
        "load_average": round(load, 1),
        "software": f"torch {torch.__version__}, OpenCV {cv2.__version__}, Python {platform.python_version()}",
        "model": args.model,
        "model_version": str(info.get("version", "")),
        "precision": args.precision,
        "repeats": args.repeats,
        "image_size": [int(gray.shape[1]), int(gray.shape[0])],
        "keypoints": {"deepdesc": len(kpts), "sift": len(sift_desc)},
        "ms": {k: round(v, 1) for k, v in times.items()},
        "ratio_deepdesc_over_sift": round(times["deepdesc"] / times["sift"], 2),
    }
    if bf16 is not None:
        exact, low = extractor.describe_patches(patches), bf16.describe_patches(patches)
        record["ratio_bf16_over_sift"] = round(times["deepdesc_bf16"] / times["sift_bf16_rounds"], 2)
        record["bf16_max_abs_difference"] = float(f"{float(abs(exact - low).max()):.2g}")
    print(
        f"image {gray.shape[1]}x{gray.shape[0]}, {len(kpts)} keypoints (SIFT {len(sift_desc)}), model {args.model}, "
        f"{record['machine']}, precision {args.precision}"
    )
    for name in ("detect", "patches", "describe"):
        print(f"  {name:<10} {times[name]:8.1f} ms")
    print(f"deepdesc   {times['deepdesc']:8.1f} ms/image (Extractor.detectAndCompute)")
    print(f"SIFT       {times['sift']:8.1f} ms/image (cv2.SIFT detectAndCompute)")
    print(f"ratio deepdesc / SIFT: {record['ratio_deepdesc_over_sift']:.2f}x")
    if bf16 is not None:
        print(
            f"bf16: {times['deepdesc_bf16']:.1f} ms/image, {record['ratio_bf16_over_sift']:.2f}x SIFT; descriptors "
            f"differ from fp32 by at most {record['bf16_max_abs_difference']:.2g} (unit-length vectors)"
        )
    if args.output is not None:
        with atomic_path(args.output) as tmp:
            tmp.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
