"""Patches cut from the images and written in the PhotoTour layout; the make-patches entry point."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ...datasets.phototour import write_phototour
from ...datasets.scenes import Scene, load_colmap_scene, load_strecha_scene
from ...features.image import read_image
from ...features.patches import DEFAULT_PATCH_SIZE, extract_patches
from ...utils import check_output_location
from .config import MultiviewConfig, MultiviewSet, SplitSet, validation_views
from .split import split_multiview
from .summary import match_name, summarize, summary_markdown
from .tracks import build_multiview

__all__ = ["OUTPUT_FILES", "cut_patches", "load_scene", "make_patches", "no_validation_reason", "write_multiview"]


def cut_patches(
    mv: MultiviewSet, split: SplitSet, images: dict[int, np.ndarray] | None = None, progress: bool = True
) -> np.ndarray:
    """(N, 64, 64) uint8 patches of ``split``, cut around the detections with the config's region and blur."""
    conf = mv.config
    patches = np.zeros((len(split.views), DEFAULT_PATCH_SIZE, DEFAULT_PATCH_SIZE), np.uint8)
    for v in tqdm(np.unique(split.views).tolist(), desc=f"patches {split.name}", unit="img", disable=not progress):
        rows = np.flatnonzero(split.views == v)
        gray = images[v] if images is not None and v in images else read_image(mv.scene.image_paths[v], "gray")
        kp = mv.keypoints[v][split.detections[rows]]
        cut, kept = extract_patches(gray, kp, region_scale=conf.region_scale, blur_sigma=conf.blur_sigma, border="drop")
        if len(kept) != len(rows):
            raise RuntimeError(f"view {v}: {len(rows) - len(kept)} patch regions left the image")
        patches[rows] = np.clip(np.rint(cut), 0, 255).astype(np.uint8)
    return patches


def write_multiview(
    mv: MultiviewSet, splits: dict[str, SplitSet], folder: str | os.PathLike, progress: bool = True
) -> dict[str, Path]:
    """Write ``splits`` into ``folder`` (train) and ``folder/val``; returns the folders written per split."""
    folder = Path(folder)
    written = {}
    for name, s in splits.items():
        target = folder if name == "train" else folder / name
        patches = cut_patches(mv, s, progress=progress)
        kp = mv.keypoints
        interest = np.array(
            [
                (kp[v][d, 0], kp[v][d, 1], math.radians(float(kp[v][d, 3])), kp[v][d, 2])
                for v, d in zip(s.views.tolist(), s.detections.tolist())
            ],
            dtype=np.float64,
        ).reshape(-1, 4)
        write_phototour(target, patches, s.point_ids, s.views, interest, {match_name(len(s.pairs)): s.pairs})
        written[name] = target
    rows = []
    is_val = validation_views(mv.num_views, mv.config.val_every)
    for v, image in enumerate(mv.scene.image_names):
        rows.append(f"{v} {image} {'val' if is_val[v] else 'train'}\n")
    (folder / "images.txt").write_text("".join(rows))
    return written


def load_scene(scene: str | os.PathLike, colmap: str | os.PathLike | None = None) -> Scene:
    """A Strecha scene folder, or with ``colmap`` (a COLMAP model folder) the image folder of that model."""
    if colmap is not None:
        return load_colmap_scene(colmap, scene)
    return load_strecha_scene(scene)


#: The files make-patches writes into its output folder and into ``val/`` there: an existing output is updated by
#: replacing these and nothing else. The patterns are the sheets and match files a PhotoTour reader would take as
#: part of the set (a stale one would corrupt it).
OUTPUT_FILES = ("info.txt", "interest.txt", "images.txt", "summary.json", "summary.md")
OUTPUT_PATTERN = re.compile(r"(?i:patches\d+\.bmp)|m50_[\w.-]+\.txt")


def _own_files(folder: Path) -> list[Path]:
    """The files of ``folder`` that make-patches writes (:data:`OUTPUT_FILES`, sheets and match files)."""
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir() if p.is_file() and (p.name in OUTPUT_FILES or OUTPUT_PATTERN.fullmatch(p.name))
    )


def _scene_inputs(scene: str | os.PathLike | Scene, colmap: str | os.PathLike | None) -> list[Path]:
    """The folders make-patches reads: the scene folder (of a loaded scene: its image folders) and the model."""
    if isinstance(scene, Scene):
        inputs = sorted({p.parent for p in scene.image_paths})
    else:
        inputs = [Path(scene)]
    return inputs + ([Path(colmap)] if colmap is not None else [])


def no_validation_reason(num_views: int, val_every: int, val_views: int) -> str:
    """Why a run wrote no validation set (``val_views`` validation views of ``num_views``)."""
    if val_every == 0:
        return "val_every is 0 (--val-every 0): no view is a validation view"
    if val_views < 2:
        return (
            f"{val_views} of {num_views} views is a validation view (i % {val_every} == {val_every - 1}) and a "
            "validation track needs detections in two; lower --val-every or add views"
        )
    return f"no track has detections in two of the {val_views} validation views"


def _install(tmp: Path, output: Path) -> None:
    """Move the set written in ``tmp`` into the existing folder ``output``, replacing only make-patches' own files
    there and in ``output/val`` (a previous run's, stale sheets included); anything else in them stays."""
    (output / "summary.json").unlink(missing_ok=True)  # first: a half-replaced folder does not look complete
    for sub in (output / "val", output):
        for path in _own_files(sub):
            path.unlink()
    val = output / "val"
    if val.is_dir() and not any(val.iterdir()):
        val.rmdir()
    for sub in ("val", "."):
        if (tmp / sub).is_dir():
            (output / sub).mkdir(exist_ok=True)
            for path in sorted((tmp / sub).iterdir(), key=lambda p: p.name == "summary.json"):
                if path.is_file():
                    os.replace(path, output / sub / path.name)


def make_patches(
    scene: str | os.PathLike | Scene,
    output: str | os.PathLike,
    config: MultiviewConfig | None = None,
    colmap: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Build the training (``output``) and validation (``output/val``) sets of a scene; return the summary.

    ``scene``: a Strecha folder (``images/`` + ``cameras/``), a :class:`~deepdesc.datasets.scenes.Scene`, or with
    ``colmap`` the image folder of that COLMAP model. ``output`` must not be, contain or lie inside what is read
    (``ValueError``). Everything is written into a temporary folder beside ``output`` first. A new ``output`` is
    that folder renamed; an existing one raises ``FileExistsError`` unless ``overwrite``, which replaces only the
    files make-patches writes (:data:`OUTPUT_FILES`, ``patchesNNNN.bmp``, ``m50_*.txt``, in ``output`` and
    ``output/val``), never other files. ``summary.json`` and ``summary.md`` go into ``output``; without a
    validation split, ``summary["no_validation"]`` says why.
    """
    conf = config or MultiviewConfig()
    output = Path(output)
    check_output_location(output, *_scene_inputs(scene, colmap))
    if output.exists() and not output.is_dir():
        raise FileExistsError(f"{output} exists and is not a folder; make-patches writes a folder")
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists; pass overwrite=True (--overwrite) to replace its patch sets")
    t0 = time.perf_counter()
    sc = scene if isinstance(scene, Scene) else load_scene(scene, colmap)
    if len(sc) < conf.min_views:
        raise ValueError(f"scene {sc.name!r} has {len(sc)} views; tracks need {conf.min_views}")
    mv = build_multiview(sc, conf, progress=progress)
    splits = split_multiview(mv)
    if "train" not in splits:
        raise ValueError(f"scene {sc.name!r}: no training patches found (tracks: {len(mv.points)})")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        write_multiview(mv, splits, tmp, progress=progress)
        summary = summarize(mv, splits)
        if "val" not in splits:
            n_val = int(validation_views(mv.num_views, conf.val_every).sum())
            summary["no_validation"] = no_validation_reason(mv.num_views, conf.val_every, n_val)
        summary["seconds"] = round(time.perf_counter() - t0, 1)
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        (tmp / "summary.md").write_text(summary_markdown(summary))
        os.chmod(tmp, 0o777 & ~_umask())
        if output.exists():
            _install(tmp, output)
        else:
            os.replace(tmp, output)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return summary


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
