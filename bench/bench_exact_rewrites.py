"""What the exact CPU rewrites of the image pipeline save: each against the code it replaced, in one process.

The rewrites give the same bytes (keypoints, patches, descriptors) and less time:

* detection: a full-size uint8 grayscale array goes to the detector as it is (no float round trip), a float
  image is rounded to uint8 by ``cv2.convertScaleAbs`` instead of ``np.rint``/``np.clip``, and only the
  ``max_keypoints`` strongest OpenCV keypoints are converted to an array;
* patches: the per-patch ``cv2.warpAffine`` calls run on ``cv2.getNumThreads()`` threads;
* describe: the network's 2x2 input pooling is four strided adds instead of ``F.avg_pool2d``, the compact net
  runs in chunks of 128 patches instead of 32 (fewer per worker when a call has fewer patches), and its ReLUs
  are fused into the convolutions (oneDNN post-op) instead of a separate in-place pass.

"before" puts the replaced code back (monkeypatched for the run) and passes the float image, as the extractor
did; "after" is the library. Both run interleaved round by round on one 1536x1024 view of
``../shared/data/eval/strecha/entry-P10`` with 2,000 keypoints, with OpenCV SIFT's ``detectAndCompute`` as the
common yardstick; medians over the rounds.

    python bench/bench_exact_rewrites.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import os
import statistics
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from _common import cpu_model, interleaved_times

import deepdesc
from deepdesc.features import keypoints as keypoint_ops
from deepdesc.features import patches as patch_ops
from deepdesc.features.image import load_image
from deepdesc.nn import fast
from deepdesc.utils import shared_dir

IMAGE = "data/eval/strecha/entry-P10/images/0000.jpg"


def _uint8_by_rint(image: Any, channel_order: str) -> np.ndarray:
    gray = load_image(image, channel_order=channel_order)
    out = np.empty(gray.shape, np.uint8)
    for start in range(0, gray.shape[0], 512):
        out[start : start + 512] = np.clip(np.rint(gray[start : start + 512]), 0, 255)
    return out


def _serial(fn: Any, tasks: list[Any]) -> None:
    for task in tasks:
        fn(task)


BEFORE = {
    (keypoint_ops, "as_uint8_gray"): _uint8_by_rint,
    (keypoint_ops, "_strongest"): lambda kps, n: kps,  # every keypoint converted, then sorted and cut
    (patch_ops, "_run_tasks"): _serial,
    (fast, "_avg_pool_2x2"): lambda x: F.avg_pool2d(x, 2),
    (fast.FastDescriber, "chunk_size"): lambda self, n, workers=1: self.batch_size or 32,
    (fast.PreparedCompactNet, "_conv_relu"): staticmethod(lambda x, w, b, s, p: F.conv2d(x, w, b, s, p).relu_()),
}


@contextlib.contextmanager
def replaced_code() -> Iterator[None]:
    saved = {key: inspect.getattr_static(*key) for key in BEFORE}  # a class's staticmethod as such
    try:
        for (module, name), old in BEFORE.items():
            setattr(module, name, old)
        yield
    finally:
        for (module, name), value in saved.items():
            setattr(module, name, value)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the rounds and prints the table; returns the medians (ms) and whether before and after agreed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds (after one warm-up round)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    path = shared_dir() / IMAGE
    gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if gray is None:
        parser.error(f"cannot read {path} (set DEEPDESC_SHARED to the folder holding data/eval)")
    image = load_image(gray)
    extractor = deepdesc.Extractor(max_keypoints=2000)
    sift = cv2.SIFT_create(nfeatures=2000)
    kpts = extractor.detect_array(gray)
    patches, _ = extractor.cut_patches(image, kpts)

    def before(fn: Any) -> Any:
        def run() -> Any:
            with replaced_code():
                return fn()

        return run

    stages = {
        "detect": (lambda: extractor.detect_array(image), lambda: extractor.detect_array(gray)),
        "patches": (lambda: extractor.cut_patches(image, kpts),) * 2,
        "describe": (lambda: extractor.describe_patches(patches),) * 2,
        "whole image": (lambda: extractor.extract(image), lambda: extractor.extract(gray)),
    }
    timed = {"sift": lambda: sift.detectAndCompute(gray, None)}
    for name, (old, new) in stages.items():
        timed[f"{name} before"] = before(old)
        timed[f"{name} after"] = new
    old_features, new_features = before(stages["whole image"][0])(), stages["whole image"][1]()
    same = all(np.array_equal(v, new_features.as_dict()[k]) for k, v in old_features.as_dict().items())
    for fn in timed.values():
        fn()
    ms = {k: 1e3 * statistics.median(v) for k, v in interleaved_times(timed, args.repeats).items()}
    print(
        f"{IMAGE} ({gray.shape[1]}x{gray.shape[0]}), {len(kpts)} keypoints, default model, {cpu_model()}, "
        f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads, {cv2.getNumThreads()} OpenCV threads; "
        f"medians of {args.repeats} interleaved rounds"
    )
    print(f"{'stage':<12} {'before ms':>10} {'after ms':>10} {'after/before':>13}")
    for name in stages:
        old, new = ms[f"{name} before"], ms[f"{name} after"]
        print(f"{name:<12} {old:10.1f} {new:10.1f} {new / old:12.3f}x")
    whole_old, whole_new = ms["whole image before"], ms["whole image after"]
    print(
        f"SIFT detectAndCompute {ms['sift']:.1f} ms: whole image / SIFT {whole_old / ms['sift']:.2f}x before, "
        f"{whole_new / ms['sift']:.2f}x after"
    )
    print(f"same keypoints and descriptors before and after: {same}")
    return {"ms": ms, "same": same}


if __name__ == "__main__":
    main()
