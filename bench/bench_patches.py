"""Patch extraction throughput: ``extract_patches`` vs. a naive per-keypoint ``cv2.warpAffine`` loop.

Usage: ``.venv/bin/python bench/bench_patches.py [--keypoints 2000] [--repeats 15] [--megapixels 1.0]``

Image: ``oxford/graf/img1.ppm`` from the shared folder (scikit-image's ``astronaut`` if missing), resized to
about ``--megapixels``; keypoints: the strongest SIFT keypoints of that image. Each timing is the whole
call (image conversion, scale-space build, sampling, smoothing); the median over the repeats is printed.
The baseline crops each patch with one ``cv2.warpAffine`` (bilinear, no anti-aliasing, no smoothing).
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
from _common import median_time

from deepdesc.features.image import load_image
from deepdesc.features.keypoints import detect_keypoints
from deepdesc.features.patches import DEFAULT_REGION_SCALE, extract_patches
from deepdesc.utils import shared_dir


def load_test_image(megapixels: float) -> tuple[np.ndarray, str]:
    path = shared_dir() / "data" / "eval" / "oxford" / "graf" / "img1.ppm"
    if path.exists():
        image, name = load_image(path), "oxford/graf/img1.ppm"
    else:
        from skimage import data

        image, name = load_image(data.astronaut()), "skimage astronaut"
    scale = np.sqrt(megapixels * 1e6 / image.size)
    image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    return np.clip(image, 0, 255), name


def naive_patches(image: np.ndarray, keypoints: np.ndarray, region_scale: float, p: int = 64) -> np.ndarray:
    out = np.empty((len(keypoints), p, p), np.float32)
    c = (p - 1) / 2
    for k, (x, y, size, angle, _) in enumerate(keypoints.astype(np.float64)):
        s = region_scale * size / p
        a, b = s * np.cos(np.deg2rad(angle)), s * np.sin(np.deg2rad(angle))
        m = np.array([[a, -b, x - a * c + b * c], [b, a, y - b * c - a * c]])
        out[k] = cv2.warpAffine(
            image, m, (p, p), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keypoints", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--megapixels", type=float, default=1.0)
    args = parser.parse_args()

    image, name = load_test_image(args.megapixels)
    kp = detect_keypoints(image, max_keypoints=args.keypoints)
    n = len(kp)
    print(f"image: {name}, {image.shape[1]}x{image.shape[0]} ({image.size / 1e6:.2f} MPix); {n} SIFT keypoints")
    print(f"keypoint size percentiles 10/50/90: {np.percentile(kp[:, 2], [10, 50, 90]).round(1).tolist()} px")
    print(f"cv2 threads: {cv2.getNumThreads()}")

    t_ours = median_time(lambda: extract_patches(image, kp), args.repeats)
    t_naive = median_time(lambda: naive_patches(image, kp, DEFAULT_REGION_SCALE), args.repeats)
    print(f"extract_patches       : {n / t_ours:10.0f} patches/s  ({t_ours * 1e3:.1f} ms / call)")
    print(f"naive cv2.warpAffine  : {n / t_naive:10.0f} patches/s  ({t_naive * 1e3:.1f} ms / call)")
    print(f"speed-up              : {t_naive / t_ours:.2f}x")


if __name__ == "__main__":
    main()
