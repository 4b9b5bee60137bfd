"""Describing a folder with the default model: one image after the other, and pipelined (decoding, detecting and
cutting the next image in a thread while the network describes the current one, as ``deepdesc describe`` does),
against OpenCV SIFT's ``detectAndCompute`` on the same files. Same process, interleaved round by round.

Images: the ten 1536x1024 views of ``../shared/data/eval/strecha/entry-P10`` (each variant reads the files
itself: decoding counts), 2,000 keypoints. Prints images/s (median over the rounds) and each variant's time per
image as a multiple of SIFT's.

    python bench/bench_folder.py [--images 10] [--repeats 5] [--max-keypoints 2000]
"""

from __future__ import annotations

import argparse
import os
import statistics
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import torch
from _common import cpu_model, interleaved_times

from deepdesc.features.extractor import Extractor
from deepdesc.utils import shared_dir

FOLDER = "data/eval/strecha/entry-P10/images"


def sequential(dd: Extractor, paths: list[Path]) -> None:
    for path in paths:
        dd.extract(path)


def pipelined(dd: Extractor, paths: list[Path]) -> None:
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(dd.prepare, paths[0])
        for i in range(len(paths)):
            prepared = pending.result()
            if i + 1 < len(paths):
                pending = pool.submit(dd.prepare, paths[i + 1])
            dd.finish(prepared)


def sift_folder(sift: Any, paths: list[Path]) -> None:
    for path in paths:
        sift.detectAndCompute(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), None)


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Runs the rounds and prints the table; returns seconds per image (medians) by variant."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10, help="the first N views of the folder")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (after one warm-up round)")
    parser.add_argument("--max-keypoints", type=int, default=2000)
    args = parser.parse_args(argv)
    if args.images < 1 or args.repeats < 1:
        parser.error("--images and --repeats must be >= 1")
    paths = sorted((shared_dir() / FOLDER).glob("*.jpg"))[: args.images]
    if not paths:
        parser.error(f"no images in {shared_dir() / FOLDER} (set DEEPDESC_SHARED to the folder holding data/eval)")
    dd = Extractor(max_keypoints=args.max_keypoints)
    sift = cv2.SIFT_create(nfeatures=args.max_keypoints)
    timed = {
        "sift": lambda: sift_folder(sift, paths),
        "sequential": lambda: sequential(dd, paths),
        "pipelined": lambda: pipelined(dd, paths),
    }
    for fn in timed.values():  # warm-up
        fn()
    per_image = {k: statistics.median(v) / len(paths) for k, v in interleaved_times(timed, args.repeats).items()}
    print(
        f"{len(paths)} images of {FOLDER}, {args.max_keypoints} keypoints, default model, {cpu_model()}, "
        f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads; medians of {args.repeats} rounds"
    )
    for name, seconds in per_image.items():
        ratio = seconds / per_image["sift"]
        print(f"{name:<11} {1 / seconds:6.2f} images/s  {1e3 * seconds:7.1f} ms/image  x{ratio:.2f} SIFT")
    print(f"pipelined / sequential throughput: {per_image['sequential'] / per_image['pipelined']:.2f}x")
    return per_image


if __name__ == "__main__":
    main()
