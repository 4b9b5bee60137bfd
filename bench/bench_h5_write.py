"""Cost of the crash-safe feature writes, one open per image: plain h5py, the same h5py writes through the
rollback journal (:mod:`deepdesc.io.journal`), and ``write_features`` (journal, checks, digest, resume lookup).

Usage: ``.venv/bin/python bench/bench_h5_write.py [--images 50] [--keypoints 2000] [--repeats 5]``

Each round writes ``--images`` images of random keypoints (N, 5) and descriptors (N, 128) float32 into a new
file, once per variant, interleaved round by round; prints the median ms per image and the ratio to plain
h5py. The descriptor cost for the same image (about 0.5 s on a 2-core CPU) puts the ratio in proportion.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

import h5py
import numpy as np
from _common import cpu_model, interleaved_times

from deepdesc.io.h5 import write_features
from deepdesc.io.journal import journaled


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the benchmark; returns the median seconds per image of each variant."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--keypoints", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    images = [
        (
            f"seq{i % 5}/img{i:04d}.jpg",
            rng.random((args.keypoints, 5), dtype=np.float32),
            rng.random((args.keypoints, 128), dtype=np.float32),
        )
        for i in range(args.images)
    ]
    folder = Path(tempfile.mkdtemp(prefix="bench_h5_"))
    runs = {"plain": 0, "journal": 0, "write_features": 0}

    def add(fd: h5py.File, name: str, kpts: np.ndarray, desc: np.ndarray) -> None:
        grp = fd.create_group(name)
        grp.create_dataset("keypoints", data=kpts[:, :2])
        grp.create_dataset("descriptors", data=desc.T)
        for i, key in enumerate(("scales", "angles", "scores")):
            grp.create_dataset(key, data=kpts[:, 2 + i])

    def plain() -> None:
        runs["plain"] += 1
        path = folder / f"plain{runs['plain']}.h5"
        for name, kpts, desc in images:
            with h5py.File(path, "a") as fd:
                add(fd, name, kpts, desc)

    def journal() -> None:
        runs["journal"] += 1
        path = folder / f"journal{runs['journal']}.h5"
        for name, kpts, desc in images:
            with journaled(path) as file, h5py.File(file, "a") as fd:
                add(fd, name, kpts, desc)

    def library() -> None:
        runs["write_features"] += 1
        path = folder / f"library{runs['write_features']}.h5"
        for name, kpts, desc in images:
            write_features(path, name, {"keypoints": kpts, "descriptors": desc})

    times = interleaved_times({"plain": plain, "journal": journal, "write_features": library}, args.repeats)
    base = statistics.median(times["plain"])
    print(f"{cpu_model()}; {args.images} images x {args.keypoints} keypoints, median of {args.repeats} rounds")
    per_image = {}
    for name, values in times.items():
        median = statistics.median(values)
        per_image[name] = median / args.images
        print(f"{name:>14}: {1000 * median / args.images:7.2f} ms/image  x{median / base:.2f}")
    shutil.rmtree(folder)
    return per_image


if __name__ == "__main__":
    main()
