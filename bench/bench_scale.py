"""Describing one folder with the local engine and with the Ray engine (1 and 2 workers), in one run.

    python bench/bench_scale.py [--num-images 200] [--size 480] [--max-keypoints 1000] [--workers 1,2] [-o JSON]

The images are crops of the shared data set's photos (``middlebury/dino-ring``, ``strecha/entry-P10``), written
once into a temporary folder. Reported: images/s of each engine, the fixed costs of a Ray job (cluster start,
actor start + model load, merge, verify) and the scaling efficiency (rate with N workers / (N x rate with 1)).
Each Ray run is a fresh job (its actors start and load the model inside the timed call), as a user's run is;
its workers share the machine's CPUs (``cpus_per_worker`` = CPUs / workers, also their torch threads).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import torch
from _common import cpu_model

from deepdesc import extract
from deepdesc.engine import ray as ray_engine
from deepdesc.engine import shards
from deepdesc.features.image import list_images
from deepdesc.utils import atomic_path, shared_dir


def make_images(folder: Path, count: int, size: int) -> None:
    """``count`` crops of ``size`` x ``size * 3 / 4`` pixels from the shared scenes' photos."""
    root = shared_dir() / "data/eval"
    sources = [p for _, p in list_images([root / "middlebury/dino-ring/images", root / "strecha/entry-P10/images"])]
    if not sources:
        raise SystemExit(f"no photos under {root}: set DEEPDESC_SHARED")
    height = size * 3 // 4
    for i in range(count):
        img = cv2.imread(str(sources[i % len(sources)]), cv2.IMREAD_GRAYSCALE)
        scale = max(size / img.shape[1], height / img.shape[0], 0.25 + 0.05 * (i % 7))
        img = cv2.resize(img, None, fx=min(scale, 1.0), fy=min(scale, 1.0), interpolation=cv2.INTER_AREA)
        y, x = (i * 37) % max(1, img.shape[0] - height), (i * 53) % max(1, img.shape[1] - size)
        cv2.imwrite(str(folder / f"{i:05d}.png"), img[y : y + height, x : x + size])


class Timer:
    """Accumulated wall time of a wrapped function."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, 0.0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=200)
    parser.add_argument("--size", type=int, default=480, help="image width in pixels (height 3/4 of it)")
    parser.add_argument("--max-keypoints", type=int, default=1000)
    parser.add_argument("--model", default="default")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts of the Ray runs")
    parser.add_argument("--unit-size", type=int, default=16)
    parser.add_argument("-o", "--output", type=Path, default=None, help="also write JSON (docs/results/)")
    args = parser.parse_args()
    import ray

    logging.basicConfig(level=logging.WARNING)
    conf = {"extractor": "deepdesc", "model": args.model, "max_keypoints": args.max_keypoints, "device": "cpu"}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as scratch:
        folder, out = Path(scratch) / "images", Path(scratch) / "out"
        folder.mkdir()
        out.mkdir()
        make_images(folder, args.num_images, args.size)
        n = args.num_images

        start = time.perf_counter()
        extract.main(conf, folder, out / "local.h5", progress=False)
        local = time.perf_counter() - start

        start = time.perf_counter()
        ray.init(
            num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
            _temp_dir=str(Path(scratch) / "ray"),  # removed with the scratch folder
        )  # fmt: skip
        cluster = time.perf_counter() - start

        # actor start + model load, alone
        worker = ray.remote(ray_engine.UnitWorker).options(num_cpus=1)
        start = time.perf_counter()
        actor = worker.remote("features", extract.main, extract.make_extractor, conf, {"progress": False}, 1)
        ray.get(actor.ready.remote())
        actor_start = time.perf_counter() - start
        ray.kill(actor)

        merge_timer = Timer(ray_engine.merge)
        verify_timer = Timer(shards.verify_features)
        ray_engine.merge, shards.verify_features = merge_timer, verify_timer
        runs = {}
        for count in [int(w) for w in args.workers.split(",")]:
            merge_timer.seconds = verify_timer.seconds = 0.0
            start = time.perf_counter()
            extract.main(
                conf, folder, out / f"ray{count}.h5", progress=False, engine="ray", workers=count,
                cpus_per_worker=os.cpu_count() / count, unit_size=args.unit_size,
            )  # fmt: skip
            runs[count] = (time.perf_counter() - start, merge_timer.seconds, verify_timer.seconds)
        ray.shutdown()

    print(f"{n} images of {args.size}x{args.size * 3 // 4}, model {args.model}, max {args.max_keypoints} keypoints")
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print()
    print("| engine | wall (s) | images/s | vs local | merge (s) | verify (s) |")
    print("|---|---|---|---|---|---|")
    print(f"| local | {local:.1f} | {n / local:.2f} | 1.00 | - | - |")
    for count, (wall, merge_s, verify_s) in runs.items():
        print(
            f"| ray, {count} worker{'s' if count > 1 else ''} | {wall:.1f} | {n / wall:.2f} | {local / wall:.2f} | "
            f"{merge_s:.2f} | {verify_s:.2f} |"
        )
    print()
    print(f"fixed costs: cluster start {cluster:.1f} s, actor start + model load {actor_start:.1f} s (per actor)")
    if 1 in runs:
        base = n / runs[1][0]
        for count, (wall, _, _) in runs.items():
            if count > 1:
                print(f"scaling efficiency, {count} workers: {(n / wall) / (count * base):.2f}")
    if args.output is not None:
        record = {
            "command": "python bench/bench_scale.py " + " ".join(sys.argv[1:]),
            "data": f"{n} crops of ../shared/data/eval photos, {args.size}x{args.size * 3 // 4}",
            "machine": f"{cpu_model()}, {os.cpu_count()} cores",
            "load_average": round(os.getloadavg()[0], 1),
            "software": f"torch {torch.__version__}, ray {ray.__version__}",
            "model": args.model,
            "max_keypoints": args.max_keypoints,
            "num_images": n,
            "cluster_start_s": cluster,
            "actor_start_s": actor_start,
            "runs": [{"engine": "local", "workers": 0, "wall_s": local}]
            + [
                {"engine": "ray", "workers": c, "wall_s": w, "merge_s": m, "verify_s": v}
                for c, (w, m, v) in runs.items()
            ],
        }
        with atomic_path(args.output) as tmp:
            tmp.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
