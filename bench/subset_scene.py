"""Make a scene of every k-th view of another one (symbolic links for the images; nothing is copied).

Usage: ``python bench/subset_scene.py SRC_SCENE DST_SCENE [--every 4] [--offset 0]`` for a Strecha scene,
``python bench/subset_scene.py IMAGES DST --colmap MODEL_DIR`` for a COLMAP model (``DST/images`` and
``DST/sparse/0`` with only the chosen views registered: what ``deepdesc evaluate --dataset colmap:DST`` reads).

The validation views of ``castle-P30`` (training data, never the evaluation scenes) are every fourth
view, the views ``deepdesc make-patches`` holds out::

    python bench/subset_scene.py ../shared/data/train/strecha/castle-P30 runs/castle-val/castle-P30-val

and of monstree's SIFT reconstruction (``deepdesc reconstruct ... --model sift``), the views ``deepdesc
make-patches --colmap`` holds out (every fourth registered image by name, from the fourth)::

    python bench/subset_scene.py ../shared/data/train/monstree/images runs/monstree-val \
        --colmap runs/monstree-sift/sparse/0 --offset 3
"""

from __future__ import annotations

import argparse
from pathlib import Path

from deepdesc.io.colmap import import_pycolmap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("--every", type=int, default=4)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--colmap", type=Path, default=None, help="COLMAP model of SRC's images")
    args = parser.parse_args()
    if args.colmap is not None:
        subset_colmap(args.src, args.dst, args.colmap, args.every, args.offset)
        return
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


def subset_colmap(image_dir: Path, dst: Path, model_dir: Path, every: int, offset: int) -> None:
    pycolmap = import_pycolmap("bench/subset_scene.py --colmap")
    rec = pycolmap.Reconstruction(str(model_dir))
    by_name = sorted((rec.images[i].name, i) for i in rec.reg_image_ids())
    chosen = {name for name, _ in by_name[offset::every]}
    for name, image_id in by_name:
        if name not in chosen:
            rec.deregister_frame(rec.images[image_id].frame_id)
    (dst / "sparse" / "0").mkdir(parents=True, exist_ok=True)
    (dst / "images").mkdir(exist_ok=True)
    for name in chosen:
        link = dst / "images" / name
        link.unlink(missing_ok=True)
        link.symlink_to((image_dir / name).resolve())
    rec.write(str(dst / "sparse" / "0"))
    print(f"{dst}: {len(chosen)} of {len(by_name)} registered views ({', '.join(sorted(chosen))})")


if __name__ == "__main__":
    main()
