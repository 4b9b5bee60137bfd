"""Make a scene of every k-th view of another one (symbolic links for the images; nothing is copied).

Usage: ``python bench/subset_scene.py SRC_SCENE DST_SCENE [--every 4] [--offset 0]`` for a Strecha scene,
``python bench/subset_scene.py IMAGES DST --colmap MODEL_DIR`` for a COLMAP model (``DST/images`` and
``DST/sparse/0`` with only the chosen views registered: what ``deepdesc evaluate --dataset colmap:DST`` reads).

The validation views of ``castle-P30`` (training data, never the evaluation scenes) are every fourth
view, the views ``deepdesc make-patches`` holds out::

    python bench/subset_scene.py ../shared/data/train/strecha/castle-P30 runs/castle-val/castle-P30-val

Views of an unordered capture (buddha: file order is not a sequence of neighbouring views) can be renamed
along a chain of covisible views (``--order covisibility``: from the first view, always on to the unvisited
view that shares most of the image at the smallest baseline), so that the scene protocol's pairs of
neighbouring indices are pairs of overlapping views; the names get a ``NNN_`` prefix::

    python bench/subset_scene.py ../shared/data/train/buddha runs/val-scenes/buddha --offset 3 --order covisibility

and of monstree's SIFT reconstruction (``deepdesc reconstruct ... --model sift``), the views ``deepdesc
make-patches --colmap`` holds out (every fourth registered image by name, from the fourth)::

    python bench/subset_scene.py ../shared/data/train/monstree/images runs/monstree-val \
        --colmap runs/monstree-sift/sparse/0 --offset 3
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from deepdesc.datasets.scenes import load_strecha_scene
from deepdesc.io.colmap import import_pycolmap
from deepdesc.train.multiview.geometry import Views
from deepdesc.train.multiview.pairing import axis_depths, frustum_overlap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("--every", type=int, default=4)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--colmap", type=Path, default=None, help="COLMAP model of SRC's images")
    parser.add_argument("--order", choices=("name", "covisibility"), default="name", help="order of the views")
    args = parser.parse_args()
    if args.colmap is not None:
        subset_colmap(args.src, args.dst, args.colmap, args.every, args.offset)
        return
    images = sorted(p for p in (args.src / "images").iterdir() if p.is_file())
    chosen = images[args.offset :: args.every]
    names = [p.name for p in chosen]
    if args.order == "covisibility":
        order = covisibility_chain(args.src, [p.name for p in chosen])
        chosen = [chosen[i] for i in order]
        names = [f"{rank:03d}_{p.name}" for rank, p in enumerate(chosen)]
    for sub in ("images", "cameras"):
        (args.dst / sub).mkdir(parents=True, exist_ok=True)
    for image, name in zip(chosen, names):
        camera = args.src / "cameras" / f"{image.name}.camera"
        for link, target in ((args.dst / "images" / name, image), (args.dst / "cameras" / f"{name}.camera", camera)):
            link.unlink(missing_ok=True)
            link.symlink_to(target.resolve())
    print(f"{args.dst}: {len(chosen)} of {len(images)} views ({', '.join(names)})")


def covisibility_chain(scene_dir: Path, names: list[str]) -> list[int]:
    """Indices of ``names`` (views of a Strecha scene) in chain order: from the first, greedily on to the
    unvisited view with the highest overlap x cos(baseline), as make-patches' covisibility pairing ranks them."""
    scene = load_strecha_scene(scene_dir)
    index = [scene.image_names.index(name) for name in names]
    scene.cameras = [scene.cameras[i] for i in index]
    views = Views(scene, [np.zeros((0, 5))] * len(index))
    depth = axis_depths(views)
    target = views.C + np.nan_to_num(depth)[:, None] * views.R[:, 2, :]
    score = np.full((views.n, views.n), -np.inf)
    for i in range(views.n):
        for j in range(views.n):
            if i != j and np.isfinite(depth[i]) and np.isfinite(depth[j]):
                overlap = min(frustum_overlap(views, i, j, depth[i]), frustum_overlap(views, j, i, depth[j]))
                baseline = 0.5 * float(views.ray_angle(target[i], i, j) + views.ray_angle(target[j], i, j))
                score[i, j] = overlap * np.cos(np.radians(baseline))
    order, left = [0], set(range(1, views.n))
    while left:
        current = order[-1]
        nxt = max(left, key=lambda j: (score[current, j], -np.linalg.norm(views.C[j] - views.C[current])))
        order.append(nxt)
        left.remove(nxt)
    return order


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
