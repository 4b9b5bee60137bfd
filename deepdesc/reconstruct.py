"""Job: images -> features -> matches -> verified COLMAP database -> incremental reconstruction (pycolmap).

``reconstruct.main(image_dir, out_dir)`` writes, in hloc's layout, ``features.h5``, ``pairs.txt``,
``matches.h5`` (hloc's ``reconstruction``/``triangulation`` read them as they are), then ``database.db``
and the COLMAP model ``sparse/`` (the largest model in ``sparse/0``; text files with ``--text``). Camera
intrinsics come from EXIF where present (``pycolmap.infer_camera_from_image``), else a focal length of
1.2 x the larger image side; ``single_camera`` shares one camera. ``extract_conf`` may be any conf of
:data:`deepdesc.extract.confs` (``"sift"`` runs the same pipeline with OpenCV SIFT).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import extract, match
from .errors import DeepDescError
from .features.image import list_images
from .io import h5
from .io.colmap import export_to_colmap, import_pycolmap
from .matching.nearest_neighbor import match_descriptors
from .matching.verify import estimate_fundamental
from .utils import logger

__all__ = ["ReconstructionError", "ReconstructionSummary", "main", "write_database"]


class ReconstructionError(DeepDescError, RuntimeError):
    """Incremental mapping registered no images (too few verified matches)."""


@dataclass
class ReconstructionSummary:
    """Statistics of the largest reconstructed model."""

    model_path: Path
    num_images: int
    registered_images: int
    points3d: int
    mean_track_length: float
    mean_reprojection_error: float  # pixels

    def __str__(self) -> str:
        return (
            f"registered {self.registered_images}/{self.num_images} images, {self.points3d} 3D points, "
            f"mean track length {self.mean_track_length:.2f}, mean reprojection error "
            f"{self.mean_reprojection_error:.3f} px -> {self.model_path}"
        )


@contextlib.contextmanager
def _colmap_log(pycolmap: Any, verbose: bool) -> Iterator[None]:
    """COLMAP's INFO lines (one per step) only when ``verbose``; warnings and errors always."""
    level = pycolmap.logging.minloglevel
    pycolmap.logging.minloglevel = level if verbose else max(level, 1)
    try:
        yield
    finally:
        pycolmap.logging.minloglevel = level


def _cameras(pycolmap: Any, image_dir: Path, names: list[str], camera_model: str) -> dict[str, Any]:
    """EXIF-based cameras (pycolmap's image reader; its focal prior where EXIF has none)."""
    options = pycolmap.ImageReaderOptions()
    options.camera_model = camera_model
    return {name: pycolmap.infer_camera_from_image(image_dir / name, options) for name in names}


def write_database(
    extract_conf: dict[str, Any] | str,
    image_dir: str | os.PathLike,
    database: str | os.PathLike,
    ratio: float | None = None,
    pairs: str = "exhaustive",
    overwrite: bool = False,
) -> str:
    """Features and fundamental-verified matches of every pair of a folder into a new COLMAP database."""
    image_dir = Path(image_dir)
    extractor = extract.make_extractor(extract_conf)
    names = [n for n, _ in list_images([image_dir])]
    features = {}
    for name in names:
        f = extractor.extract(image_dir / name)
        features[name] = {"keypoints": f.keypoints, "descriptors": f.descriptors, "image_size": f.image_size}
    matches, masks = {}, {}
    for a, b in match.parse_pairs_option(pairs, names):
        m, _ = match_descriptors(features[a]["descriptors"], features[b]["descriptors"], mutual=True, ratio=ratio)
        _, inliers = estimate_fundamental(features[a]["keypoints"][m[:, 0]], features[b]["keypoints"][m[:, 1]])
        matches[(a, b)], masks[(a, b)] = m, inliers
    export_to_colmap(database, image_dir, features, matches, verified=True, inlier_masks=masks, overwrite=overwrite)
    verified = sum(int(v.sum()) for v in masks.values())
    return f"{len(features)} images, {len(matches)} pairs, {verified} verified matches"


def main(
    image_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    extract_conf: dict[str, Any] | str = "deepdesc-default",
    match_conf: dict[str, Any] | str = "mutual-nn",
    pairs: str = "exhaustive",
    single_camera: bool = False,
    camera_model: str = "SIMPLE_RADIAL",
    text: bool = False,
    progress: bool = True,
    verbose: bool = False,
) -> ReconstructionSummary:
    """Reconstruct the images of ``image_dir`` into ``out_dir`` (see the module docstring).

    ``pairs``: ``exhaustive``, ``sequential:K`` or an hloc pairs file. Features and matches resume like
    :func:`deepdesc.extract.main` / :func:`deepdesc.match.main` (and refuse other settings); the database and
    the model are rebuilt each time. Raises :class:`ReconstructionError` when nothing registers. ``verbose``
    shows COLMAP's own log lines.
    """
    pycolmap = import_pycolmap("deepdesc reconstruct")
    image_dir, out = Path(image_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = [n for n, _ in list_images([image_dir])]
    if len(names) < 2:
        raise ValueError(f"{image_dir}: found {len(names)} image(s); a reconstruction needs at least 2")
    features_path, matches_path, pairs_path = out / "features.h5", out / "matches.h5", out / "pairs.txt"
    summary = extract.main(extract_conf, image_dir, features_path, progress=progress)
    if summary.skipped:
        logger.warning("%d unreadable image(s) left out: %s", len(summary.skipped), ", ".join(summary.skipped))
    names = [n for n in names if n not in summary.skipped]
    pair_list = match.parse_pairs_option(pairs, names)
    match.write_pairs(pairs_path, pair_list)
    match.main(match_conf, pair_list, features_path, matches_path, progress=progress)

    features = {n: h5.read_features(features_path, n) for n in names}
    matches = {(a, b): h5.read_matches(matches_path, a, b)[0] for a, b in pair_list}
    cameras = _cameras(pycolmap, image_dir, names, camera_model)
    database = out / "database.db"
    export_to_colmap(
        database, image_dir, features, matches, camera_model=camera_model, single_camera=single_camera,
        descriptor_format=None, overwrite=True, cameras=cameras,
    )  # fmt: skip
    with _colmap_log(pycolmap, verbose):
        pycolmap.verify_matches(database, pairs_path, pycolmap.TwoViewGeometryOptions())
    sparse = out / "sparse"
    if sparse.exists():
        shutil.rmtree(sparse)
    sparse.mkdir()
    options = pycolmap.IncrementalPipelineOptions()
    options.random_seed = 0
    with _colmap_log(pycolmap, verbose):
        models = pycolmap.incremental_mapping(database, image_dir, sparse, options)
    if not models:
        raise ReconstructionError(
            f"no images registered from {len(names)} images ({image_dir}): too few verified matches between "
            "them. Try more keypoints, sequential or exhaustive pairs, or --model sift to compare"
        )
    best_id = max(models, key=lambda k: models[k].num_reg_images())
    best = models[best_id]
    best_path = sparse / str(best_id)
    if best_id != 0:  # the largest model in sparse/0, as hloc and COLMAP's GUI expect
        tmp = sparse / f".tmp{best_id}"
        best_path.rename(tmp)
        if (sparse / "0").exists():
            (sparse / "0").rename(sparse / str(best_id))
        tmp.rename(sparse / "0")
    best_path = sparse / "0"
    if text:
        best.write_text(best_path)
    return ReconstructionSummary(
        model_path=best_path,
        num_images=len(names),
        registered_images=best.num_reg_images(),
        points3d=best.num_points3D(),
        mean_track_length=float(best.compute_mean_track_length()),
        mean_reprojection_error=float(best.compute_mean_reprojection_error()),
    )
