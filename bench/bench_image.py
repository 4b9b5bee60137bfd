"""Time per image: DeepDesc detect + patches + describe vs OpenCV SIFT detectAndCompute, same image.

graf img1 from ../shared/data/eval (resized to ~1 MPix), 2,000 keypoints. Medians over repeats, run in
one process, with the breakdown of the DeepDesc stages.

    python bench/bench_image.py [--repeats 5] [--precision fp32|bf16]
"""

from __future__ import annotations

import argparse

import cv2
import torch
from _common import median_time

from deepdesc.features.describe import describe
from deepdesc.features.image import load_image
from deepdesc.features.keypoints import detect_keypoints
from deepdesc.features.patches import extract_patches
from deepdesc.nn.cnn3 import DeepDescNet
from deepdesc.utils import shared_dir


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--precision", default="fp32")
    args = parser.parse_args()
    path = shared_dir() / "data/eval/oxford/graf/img1.ppm"
    gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    scale = (1e6 / gray.size) ** 0.5
    gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    image = load_image(gray)
    model = DeepDescNet().eval()  # timing only: the weights do not change the cost
    sift = cv2.SIFT_create(nfeatures=2000)

    def sift_job():
        return sift.detectAndCompute(gray, None)

    kpts = detect_keypoints(image, max_keypoints=2000)
    patches, _ = extract_patches(image, kpts)
    stages = {
        "detect (DoG)": lambda: detect_keypoints(image, max_keypoints=2000),
        "patches": lambda: extract_patches(image, kpts),
        "describe": lambda: describe(patches, model=model, precision=args.precision),
    }

    def deepdesc_job():
        k = detect_keypoints(image, max_keypoints=2000)
        p, _ = extract_patches(image, k)
        return describe(p, model=model, precision=args.precision)

    t_sift = median_time(sift_job, args.repeats)
    t_dd = median_time(deepdesc_job, args.repeats)
    print(
        f"image {gray.shape[1]}x{gray.shape[0]} ({gray.size / 1e6:.2f} MPix), {len(kpts)} keypoints, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, precision {args.precision}"
    )
    for name, fn in stages.items():
        print(f"  {name:<14} {1e3 * median_time(fn, args.repeats):8.1f} ms")
    print(f"DeepDesc total   {1e3 * t_dd:8.1f} ms/image")
    print(f"OpenCV SIFT      {1e3 * t_sift:8.1f} ms/image (detectAndCompute)")
    print(f"ratio DeepDesc / SIFT: {t_dd / t_sift:.2f}x")


if __name__ == "__main__":
    main()
