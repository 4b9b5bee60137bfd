"""Make a Strecha-layout scene of every k-th view of another one (symbolic links; nothing is copied).

Usage: ``python bench/subset_scene.py SRC_SCENE DST_SCENE [--every 4] [--offset 0]``

The validation views of ``castle-P30`` (training data, never the evaluation scenes) are every fourth
view, the views ``deepdesc make-patches`` holds out::

    python bench/subset_scene.py ../shared/data/train/strecha/castle-P30 runs/castle-val/castle-P30-val
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("--every", type=int, default=4)
    parser.add_argument("--offset", type=int, default=0)
    args = parser.parse_args()
    images = sorted(p for p in (args.src / "images").iterdir() if p.is_file())
    chosen = images[args.offset :: args.every]
    for sub in ("images", "cameras"):
        (args.dst / sub).mkdir(parents=True, exist_ok=True)
    for image in chosen:
        camera = args.src / "cameras" / f"{image.name}.camera"
        for link, target in ((args.dst / "images" / image.name, image), (args.dst / "cameras" / camera.name, camera)):
            link.unlink(missing_ok=True)
            link.symlink_to(target.resolve())
    print(f"{args.dst}: {len(chosen)} of {len(images)} views ({', '.join(p.name for p in chosen)})")


if __name__ == "__main__":
    main()
