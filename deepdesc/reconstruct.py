"""Job: images -> features -> matches -> verified COLMAP database -> incremental reconstruction (pycolmap).

``reconstruct.main(image_dir, out_dir)`` writes, in hloc's layout, ``features.h5``, ``pairs.txt``,
``matches.h5`` (hloc's ``reconstruction``/``triangulation`` read them as they are), then ``database.db``
and the COLMAP models ``sparse/0``, ``sparse/1``, ... (the largest in ``sparse/0``; text files with
``--text``). Camera intrinsics come from EXIF where present (``pycolmap.infer_camera_from_image``), else a
focal length of 1.2 x the larger image side; ``single_camera`` shares one camera. ``extract_conf`` may be any
conf of :data:`deepdesc.extract.confs` (``"sift"`` runs the same pipeline with OpenCV SIFT).

The output folder may be an existing COLMAP project (say ``project/`` with the images in ``project/images``).
The job records what it wrote in ``.deepdesc-reconstruct.json`` and replaces, on a rerun, only those files:
the database, the pairs file and its own model folders. A ``database.db``, ``pairs.txt`` or ``sparse/0`` it
did not write is replaced only with ``overwrite``; further models go to numbers no other model holds; other
files are never touched. A run that is killed or interrupted (Ctrl-C, also during COLMAP's mapping) resumes
when run again: features and matches continue where they stopped; the database is rebuilt in a temporary
file and checked before it replaces the old one (with its journal files); models are mapped into a
temporary folder first.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from . import extract, match
from .errors import DeepDescError
from .features.image import IMAGE_EXTENSIONS, list_images, read_image
from .io import h5
from .io.colmap import camera_model_id, check_replaceable, export_to_colmap, import_pycolmap, run_interruptible
from .matching.nearest_neighbor import match_descriptors
from .matching.verify import estimate_fundamental
from .utils import atomic_path, check_output_location, logger

__all__ = ["MANIFEST", "DatabaseSummary", "ReconstructionError", "ReconstructionSummary", "main", "write_database"]

#: What :func:`main` wrote in its output folder (database, pairs file, model folders): it replaces only these.
MANIFEST = ".deepdesc-reconstruct.json"


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
    #: unreadable images left out (name -> reason); ``num_images`` counts the others
    skipped: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return (
            f"registered {self.registered_images}/{self.num_images} images, {self.points3d} 3D points, "
            f"mean track length {self.mean_track_length:.2f}, mean reprojection error "
            f"{self.mean_reprojection_error:.3f} px -> {self.model_path}"
        ) + extract.skipped_text(self.skipped)


@dataclass
class DatabaseSummary:
    """What :func:`write_database` wrote: images, pairs, verified matches, and the images skipped (name -> reason)."""

    images: int
    pairs: int
    verified_matches: int
    skipped: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        text = f"{self.images} images, {self.pairs} pairs, {self.verified_matches} verified matches"
        return text + extract.skipped_text(self.skipped)


@contextlib.contextmanager
def _colmap_log(pycolmap: Any, verbose: bool) -> Iterator[None]:
    """COLMAP's INFO lines (one per step) only when ``verbose``; warnings and errors always."""
    level = pycolmap.logging.minloglevel
    pycolmap.logging.minloglevel = level if verbose else max(level, 1)
    try:
        yield
    finally:
        pycolmap.logging.minloglevel = level


def _check_ratio(ratio: float | None, option: str = "ratio") -> None:
    if ratio is not None and not (isinstance(ratio, (int, float)) and 0.0 < ratio <= 1.0):
        raise ValueError(f"{option} must lie in (0, 1] (Lowe's ratio test, e.g. 0.8), got {ratio!r}")


def _cameras(pycolmap: Any, found: list[tuple[str, Path]], camera_model: str) -> dict[str, Any]:
    """EXIF-based cameras (pycolmap's image reader; its focal prior where EXIF has none), read before any work.

    An image OpenCV decodes but pycolmap cannot (e.g. WebP) is an error: COLMAP's mapper reads the images too.
    One neither decodes is left out here; the extraction skips it with a warning.
    """
    options = pycolmap.ImageReaderOptions()
    options.camera_model = camera_model
    cameras, unsupported = {}, []
    for name, path in found:
        try:
            cameras[name] = pycolmap.infer_camera_from_image(path, options)
        except (ValueError, RuntimeError):
            try:
                read_image(path)
            except (ValueError, OSError):
                continue
            unsupported.append(name)
    if unsupported:
        listed = ", ".join(unsupported[:5]) + (", ..." if len(unsupported) > 5 else "")
        raise ValueError(
            f"COLMAP (pycolmap) cannot read {len(unsupported)} image(s): {listed}; convert them to JPEG, PNG or "
            "TIFF (COLMAP's mapper reads the image files)"
        )
    return cameras


def _check_names(names: list[str]) -> None:
    spaced = [n for n in names if any(c.isspace() for c in n)]
    if spaced:
        raise ValueError(
            f"image name(s) with white space, which a pairs file ('name0 name1' per line, hloc's and COLMAP's) "
            f"cannot hold: {', '.join(repr(n) for n in spaced[:5])}; rename the files or their folders"
        )


def _read_manifest(out: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return {"database": False, "pairs": False, "models": []}
    return {"database": bool(manifest.get("database")), "pairs": bool(manifest.get("pairs")),
            "models": [str(m) for m in manifest.get("models", []) if str(m).isdigit()]}  # fmt: skip


def _write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    """Record, before writing them, the files this job owns in ``out``."""
    with atomic_path(out / MANIFEST) as tmp:
        tmp.write_text(json.dumps({"written_by": "deepdesc reconstruct", **manifest}, indent=1) + "\n")


def _model_folders(sparse: Path) -> list[str]:
    """Names of the numbered entries of ``sparse/`` (COLMAP's model folders; the job writes only such)."""
    return sorted((p.name for p in sparse.iterdir() if p.name.isdigit()), key=int) if sparse.is_dir() else []


def _check_ownership(out: Path, manifest: dict[str, Any], pairs_text: str, overwrite: bool) -> None:
    """Refuse, unless ``overwrite``, to replace a database, pairs file or model folder this job did not write."""
    foreign = []
    if (out / "database.db").exists() and not manifest["database"]:
        foreign.append("database.db")
    pairs_path = out / "pairs.txt"
    if pairs_path.exists() and not manifest["pairs"]:
        try:
            same = pairs_path.read_text() == pairs_text  # the very file this run would write
        except (OSError, UnicodeDecodeError):
            same = False
        if not same:
            foreign.append("pairs.txt")
    sparse = out / "sparse"
    if sparse.exists() and not sparse.is_dir():
        raise NotADirectoryError(f"{sparse} is a file; the models go into a folder sparse/ there")
    if "0" in _model_folders(sparse) and "0" not in manifest["models"]:  # other models go to free numbers
        foreign.append("sparse/0")
    if foreign and not overwrite:
        raise FileExistsError(
            f"{out} holds {', '.join(foreign)}, not written by deepdesc reconstruct; pass --overwrite "
            "(overwrite=True) to replace them (other files there are kept), or choose another output folder"
        )


def _remove_stale_temporaries(out: Path) -> None:
    """Delete the temporary model folders, pairs and manifest files of a killed run."""
    for tmp in out.glob(".sparse.*.tmp"):
        shutil.rmtree(tmp, ignore_errors=True)
    for name in ("pairs.txt", MANIFEST):
        for tmp in out.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)


def write_database(
    extract_conf: dict[str, Any] | str,
    image_dir: str | os.PathLike,
    database: str | os.PathLike,
    ratio: float | None = None,
    pairs: str = "exhaustive",
    overwrite: bool = False,
    progress: bool = True,
) -> DatabaseSummary:
    """Features and fundamental-verified matches of every pair of a folder into a new COLMAP database.

    Unreadable images are skipped with a warning (as :func:`deepdesc.extract.main` does) and listed in the
    returned summary. ``database`` may lie inside ``image_dir`` but must not be, or contain, it or an image.
    """
    _check_ratio(ratio)
    image_dir, database = Path(image_dir), Path(database)
    found = list_images([image_dir])
    if not found:
        raise ValueError(f"{image_dir}: no images found (searched recursively for {', '.join(IMAGE_EXTENSIONS)})")
    target = database.resolve()
    if not target.is_relative_to(image_dir.resolve()) or target == image_dir.resolve():
        check_output_location(database, image_dir, what="database")
    if target in {path.resolve() for _, path in found}:
        raise ValueError(f"database {str(database)!r} is one of the input images; choose another file name")
    if database.exists() and not overwrite:
        raise FileExistsError(f"{database} exists; pass --overwrite (overwrite=True) to replace it")
    check_replaceable(database)
    pair_option_names = [n for n, _ in found]
    match.parse_pairs_option(pairs, pair_option_names)  # a bad --pairs fails before any image is described
    extractor = extract.make_extractor(extract_conf)
    features, skipped = {}, {}
    for name, path in tqdm(found, desc="extract", unit="img", disable=not progress):
        try:
            f = extractor.extract(path)
        except (ValueError, OSError) as exc:
            skipped[name] = str(exc)
            logger.warning("skipped %s: %s", name, exc)
            continue
        features[name] = {"keypoints": f.keypoints, "descriptors": f.descriptors, "image_size": f.image_size}
    names = [n for n, _ in found if n in features]
    matches, masks = {}, {}
    for a, b in tqdm(match.parse_pairs_option(pairs, names), desc="match", unit="pair", disable=not progress):
        m, _ = match_descriptors(features[a]["descriptors"], features[b]["descriptors"], mutual=True, ratio=ratio)
        _, inliers = estimate_fundamental(features[a]["keypoints"][m[:, 0]], features[b]["keypoints"][m[:, 1]])
        matches[(a, b)], masks[(a, b)] = m, inliers
    export_to_colmap(database, image_dir, features, matches, verified=True, inlier_masks=masks, overwrite=overwrite)
    verified = sum(int(v.sum()) for v in masks.values())
    return DatabaseSummary(len(features), len(matches), verified, skipped)


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
    overwrite: bool = False,
    mapper_threads: int | None = None,
    engine: str = "local",
    **engine_options: Any,
) -> ReconstructionSummary:
    """Reconstruct the images of ``image_dir`` into ``out_dir`` (see the module docstring).

    ``pairs``: ``exhaustive``, ``sequential:K`` or an hloc pairs file. Features and matches resume like
    :func:`deepdesc.extract.main` / :func:`deepdesc.match.main` (and refuse other settings unless ``overwrite``,
    which starts them again); the database and the model are rebuilt each time. Options, image names and
    formats are checked before any image is described. Raises :class:`ReconstructionError` when nothing
    registers, ``KeyboardInterrupt`` on Ctrl-C (also during COLMAP's steps; the output stays resumable).
    ``verbose`` shows COLMAP's own log lines. ``mapper_threads``: threads of incremental mapping (default: all
    cores); with 1 (and the fixed seed used here) a rerun gives the same model. ``engine="ray"`` describes and
    matches on a Ray cluster (``engine_options`` as for :func:`deepdesc.extract.main`).
    """
    pycolmap = import_pycolmap("deepdesc reconstruct")
    image_dir, out = Path(image_dir), Path(out_dir)
    if mapper_threads is not None and not (type(mapper_threads) is int and mapper_threads >= 1):
        raise ValueError(f"mapper_threads must be a positive integer, got {mapper_threads!r}")
    camera_model_id(pycolmap, camera_model)
    match_options = match.confs[match_conf] if isinstance(match_conf, str) else match_conf
    _check_ratio(match_options.get("ratio"))
    found = list_images([image_dir])
    if len(found) < 2:
        raise ValueError(f"{image_dir}: found {len(found)} image(s); a reconstruction needs at least 2")
    names = [n for n, _ in found]
    _check_names(names)
    features_path, matches_path, pairs_path = out / "features.h5", out / "matches.h5", out / "pairs.txt"
    database, sparse = out / "database.db", out / "sparse"
    # the COLMAP layout project/images with project as the output is fine: only the job's own files are replaced
    if not (image_dir.resolve().is_relative_to(out.resolve()) and image_dir.resolve() != out.resolve()):
        check_output_location(out, image_dir)
    pairs_file = pairs != "exhaustive" and not pairs.startswith("sequential:") and Path(pairs).is_file()
    inputs = [image_dir] + ([Path(pairs)] if pairs_file else [])
    for own in (features_path, matches_path, pairs_path, database, sparse, out / MANIFEST):
        check_output_location(own, *inputs)
    pair_list = match.parse_pairs_option(pairs, names)
    manifest = _read_manifest(out)
    _check_ownership(out, manifest, "".join(f"{a} {b}\n" for a, b in pair_list), overwrite)
    check_replaceable(database)
    cameras = _cameras(pycolmap, found, camera_model)

    out.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(out)
    summary = extract.main(
        extract_conf, image_dir, features_path, overwrite=overwrite, progress=progress, engine=engine, **engine_options
    )
    if summary.skipped:
        logger.warning("%d unreadable image(s) left out: %s", len(summary.skipped), ", ".join(summary.skipped))
    names = [n for n in names if n not in summary.skipped]
    pair_list = [(a, b) for a, b in pair_list if a not in summary.skipped and b not in summary.skipped]
    manifest["pairs"] = True
    _write_manifest(out, manifest)
    match.write_pairs(pairs_path, pair_list)
    match.main(
        match_conf, pair_list, features_path, matches_path, overwrite=overwrite, progress=progress, engine=engine,
        **engine_options,
    )  # fmt: skip

    features = {n: h5.read_features(features_path, n) for n in names}
    matches = {(a, b): h5.read_matches(matches_path, a, b)[0] for a, b in pair_list}
    manifest["database"] = True
    _write_manifest(out, manifest)
    verify_options = pycolmap.TwoViewGeometryOptions()
    verify_options.ransac.random_seed = 0  # the same database on every run
    with _colmap_log(pycolmap, verbose):
        export_to_colmap(
            database, image_dir, features, matches, camera_model=camera_model, single_camera=single_camera,
            descriptor_format=None, overwrite=True, cameras=cameras, verify_pairs=pairs_path,
            verify_options=verify_options,
        )  # fmt: skip
    best_id, best = _map(pycolmap, database, image_dir, out, manifest, len(names), text, verbose, mapper_threads)
    best_path = sparse / "0"
    return ReconstructionSummary(
        model_path=best_path,
        num_images=len(names),
        registered_images=best.num_reg_images(),
        points3d=best.num_points3D(),
        mean_track_length=float(best.compute_mean_track_length()),
        mean_reprojection_error=float(best.compute_mean_reprojection_error()),
        skipped=dict(summary.skipped),
    )


def _map(
    pycolmap: Any, database: Path, image_dir: Path, out: Path, manifest: dict[str, Any], num_images: int,
    text: bool, verbose: bool, threads: int | None = None,
) -> tuple[int, Any]:  # fmt: skip
    """Incremental mapping into a temporary folder, then the models into ``sparse/`` (the largest as ``0``)."""
    sparse = out / "sparse"
    tmp = Path(tempfile.mkdtemp(prefix=".sparse.", suffix=".tmp", dir=out))
    try:
        options = pycolmap.IncrementalPipelineOptions()
        options.random_seed = 0
        if threads is not None:
            options.num_threads = int(threads)
        with _colmap_log(pycolmap, verbose):
            models = run_interruptible(pycolmap.incremental_mapping, database, image_dir, tmp, options)
        if not models:
            raise ReconstructionError(
                f"no images registered from {num_images} images ({image_dir}): too few verified matches between "
                "them. Try more keypoints, sequential or exhaustive pairs, or --model sift to compare"
            )
        best_id = max(models, key=lambda k: models[k].num_reg_images())
        # the largest model in sparse/0, as hloc and COLMAP's GUI expect; the others in the next numbers that
        # hold no model of someone else's
        taken = {m for m in _model_folders(sparse) if m not in manifest["models"]} - {"0"}
        free = (str(i) for i in itertools.count(1) if str(i) not in taken)
        names = {best_id: "0", **{k: next(free) for k in sorted(models) if k != best_id}}
        if text:
            models[best_id].write_text(tmp / str(best_id))
        old = set(manifest["models"])
        manifest["models"] = sorted(old | set(names.values()), key=int)
        _write_manifest(out, manifest)  # before anything in sparse/ changes, so that a rerun may replace them
        sparse.mkdir(exist_ok=True)
        for name in old | set(names.values()):
            if (sparse / name).exists():
                shutil.rmtree(sparse / name)
        for k, name in names.items():
            (tmp / str(k)).rename(sparse / name)
        manifest["models"] = sorted(names.values(), key=int)
        _write_manifest(out, manifest)
        return best_id, models[best_id]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
