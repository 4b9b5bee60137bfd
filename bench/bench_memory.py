"""Peak memory of describing one large photo, with and without ``resize_max``.

Each case runs in a fresh child process (peak RSS is per process and never goes down): the child loads the
model, notes its RSS, describes a synthetic 6000x4000 colour JPEG (a phone photo's size) and reports its
peak RSS. Prints MB per case, the describe-only part (peak minus the RSS before describing), bytes per
pixel of the original image and the ratio to the full-size case::

    nice -n 10 .venv/bin/python bench/bench_memory.py                    # 6000x4000, full / 3200 / 1600
    nice -n 10 .venv/bin/python bench/bench_memory.py --size 3000 2000 --resize-max 0 1600

``--resize-max 0`` is the full-size case. The model defaults to the original split4 weights from the shared
folder (no download); ``--model sift`` measures the OpenCV SIFT baseline instead.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np


def _synthetic_photo(path: Path, width: int, height: int, seed: int = 0) -> None:
    """Smoothed noise at several scales plus edges: plenty of DoG keypoints at every octave."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width), np.float32)
    for cell in (4, 16, 64):
        small = rng.random((height // cell + 1, width // cell + 1), dtype=np.float32)
        image += cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)[:height, :width]
    image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    colour = np.dstack([image, np.roll(image, 7, axis=1), np.roll(image, 11, axis=0)])
    cv2.imwrite(str(path), colour, [cv2.IMWRITE_JPEG_QUALITY, 92])


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _child(path: str, model: str, resize_max: int, max_keypoints: int) -> None:
    from deepdesc import extract

    conf: dict = {"max_keypoints": max_keypoints, "resize_max": resize_max or None}
    if model == "sift":
        conf["extractor"] = "sift"
    else:
        conf.update(extractor="deepdesc", model=model, device="cpu")
    extractor = extract.make_extractor(conf)
    if model != "sift":
        _ = extractor.model  # load the network before the baseline
    before = _rss_mb()
    start = time.perf_counter()
    features = extractor.extract(path)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"before_mb": before, "peak_mb": peak, "seconds": seconds, "keypoints": len(features)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=2, default=(6000, 4000), metavar=("WIDTH", "HEIGHT"))
    parser.add_argument("--resize-max", type=int, nargs="+", default=[0, 3200, 1600], help="0: full size")
    parser.add_argument("--model", help="model name/path or sift (default: the shared split4 .t7)")
    parser.add_argument("--max-keypoints", type=int, default=2000)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        path, model, resize_max, max_keypoints = args.child
        _child(path, model, int(resize_max), int(max_keypoints))
        return
    model = args.model
    if model is None:
        from deepdesc.utils import shared_dir

        model = str(shared_dir() / "models" / "deepdesc-release" / "CNN3_p8_n8_split4_073000.t7")
    width, height = args.size
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "photo.jpg"
        _synthetic_photo(path, width, height)
        print(f"{width}x{height} ({width * height / 1e6:.0f} MP) synthetic JPEG, model {Path(model).name}")
        print(f"{'resize_max':>10} {'peak MB':>9} {'describe MB':>12} {'B/px':>6} {'ratio':>6} {'s':>6} {'kpts':>5}")
        base = None
        for resize_max in args.resize_max:
            cmd = [sys.executable, __file__, "--child", str(path), model, str(resize_max), str(args.max_keypoints)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{resize_max or 'full':>10} failed: {out.stderr.strip().splitlines()[-1:]}")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            describe_mb = r["peak_mb"] - r["before_mb"]
            base = base or describe_mb
            print(
                f"{resize_max or 'full':>10} {r['peak_mb']:9.0f} {describe_mb:12.0f} "
                f"{describe_mb * 2**20 / (width * height):6.0f} {describe_mb / base:6.2f} {r['seconds']:6.1f} "
                f"{r['keypoints']:5d}"
            )


if __name__ == "__main__":
    main()
