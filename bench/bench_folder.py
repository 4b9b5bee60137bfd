"""Describing a folder: one image after the other vs decoding/detecting/cutting the next image in a thread
while the network describes the current one (what `deepdesc describe` does). Same process, same images.

    python bench/bench_folder.py [--max-keypoints 2000]
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

from deepdesc.features.extractor import Extractor
from deepdesc.nn.cnn3 import DeepDescNet
from deepdesc.utils import shared_dir


def sequential(dd: Extractor, paths: list) -> None:
    for path in paths:
        dd.extract(path)


def pipelined(dd: Extractor, paths: list) -> None:
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(dd.prepare, paths[0])
        for i in range(len(paths)):
            prepared = pending.result()
            if i + 1 < len(paths):
                pending = pool.submit(dd.prepare, paths[i + 1])
            dd.finish(prepared)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-keypoints", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    root = shared_dir() / "data/eval/oxford"
    paths = sorted((root / "graf").glob("img*.ppm")) + sorted((root / "bikes").glob("img*.ppm"))
    dd = Extractor(model=DeepDescNet().eval(), max_keypoints=args.max_keypoints)  # weights do not change the cost
    dd.extract(paths[0])  # warm-up
    results = {}
    for name, fn in (("sequential", sequential), ("pipelined", pipelined)):
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn(dd, paths)
            times.append(time.perf_counter() - start)
        results[name] = min(times)
        print(f"{name:<11} {len(paths) / results[name]:6.2f} images/s ({results[name]:.1f} s for {len(paths)} images)")
    print(f"pipelined / sequential throughput: {results['sequential'] / results['pipelined']:.2f}x")


if __name__ == "__main__":
    main()
