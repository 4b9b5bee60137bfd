"""Export features and matches to a COLMAP database through pycolmap 4.x (``pip install deepdesc[colmap]``).

Conventions:

- Keypoints: deepdesc (like OpenCV and hloc) puts the centre of the top-left pixel at (0, 0); COLMAP puts it at
  (0.5, 0.5). Exported keypoints are ``x + 0.5, y + 0.5`` (as hloc's ``import_features`` does), written as
  (N, 2) float32 rows.
- Descriptors: COLMAP stores uint8 descriptor rows of any width, tagged with a feature type. The default
  ``descriptor_format="uint8"`` quantises like COLMAP's SIFT: each row is L2-normalised, then
  ``min(255, round(512 * x))`` for non-negative descriptors (DeepDesc's are: its last layer is an L2 pooling);
  rows with negative entries use ``clip(round(128 + 256 * x), 0, 255)`` instead. Both maps are affine per row, so
  L2 nearest neighbours are kept up to rounding. 128-d descriptors are tagged ``SIFT`` so COLMAP's own SIFT
  matchers accept them (COLMAP compares uint8 rows by L2 distance); other widths are tagged ``UNDEFINED``.
  ``descriptor_format="float32"`` stores the raw float32 bytes, 4 * D uint8 columns tagged ``UNDEFINED``
  (COLMAP's matchers cannot use them; read back with ``data.view(np.float32)``); ``None`` stores none.
- Cameras: one per image (or one shared with ``single_camera``) of ``camera_model`` with COLMAP's default
  initialisation: focal length ``1.2 * max(width, height)``, principal point at the image centre, no
  distortion, no prior focal length. Each camera gets a trivial rig and each image a frame, as COLMAP 4's
  importers write them.
- Matches: ``(K, 2)`` indices (keypoint in image 0, keypoint in image 1), written as raw matches. With
  ``verified=True`` they are also written as the inlier matches of an ``UNCALIBRATED`` two-view geometry, so
  COLMAP's mapper can run without its own geometric verification; ``inlier_masks`` select the inliers per pair.
- Files: a database is built under a temporary name beside its destination, checked (SQLite
  ``integrity_check``, counts of images, keypoints and pairs), switched to SQLite's rollback journal (so no
  ``-wal``/``-shm`` files belong to it) and renamed into place after the destination's own journal files are
  deleted: journals left by a killed COLMAP process are never replayed onto the new file. Temporaries left by a
  killed export are deleted by the next export to the same path.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DeepDescError
from ..features.image import read_image
from ..utils import atomic_path

__all__ = [
    "COLMAP_ORIGIN_SHIFT",
    "DatabaseCheckError",
    "camera_model_id",
    "check_database",
    "check_replaceable",
    "descriptors_to_uint8",
    "export_to_colmap",
    "import_pycolmap",
    "remove_database",
    "run_interruptible",
]

COLMAP_ORIGIN_SHIFT = 0.5  # COLMAP's top-left pixel centre is (0.5, 0.5); OpenCV's is (0, 0)
#: SQLite's side files of a database: write-ahead log, its shared-memory index, rollback journal.
JOURNAL_SUFFIXES = ("-wal", "-shm", "-journal")


class DatabaseCheckError(DeepDescError, RuntimeError):
    """A COLMAP database failed its check after writing (SQLite integrity or the expected counts)."""


def camera_model_id(pycolmap: Any, camera_model: str) -> Any:
    """``pycolmap.CameraModelId`` of a model name, or ``ValueError`` listing the valid names."""
    known = [name for name in pycolmap.CameraModelId.__members__ if name != "INVALID"]
    if camera_model not in known:
        raise ValueError(f"unknown COLMAP camera model {camera_model!r}; expected one of {', '.join(known)}")
    return pycolmap.CameraModelId.__members__[camera_model]


def check_replaceable(path: str | os.PathLike) -> None:
    """Refuse to replace an existing file that is not an SQLite database (``ValueError``): it is not COLMAP's."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; expected the path of a database file")
    if path.is_file() and path.stat().st_size:
        with open(path, "rb") as f:
            if f.read(16) != b"SQLite format 3\x00":
                raise ValueError(f"{path} exists and is not an SQLite database; refusing to replace it")


def remove_database(path: str | os.PathLike) -> None:
    """Delete a SQLite database and its journal files (``-wal``, ``-shm``, ``-journal``), those that exist."""
    for suffix in ("", *JOURNAL_SUFFIXES):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{os.fspath(path)}{suffix}")


def _remove_stale_temporaries(path: Path) -> None:
    """Delete what a killed :func:`export_to_colmap` to ``path`` left: its temporary database and journals."""
    if path.parent.is_dir():
        for tmp in path.parent.glob(f".{path.name}.*.tmp"):
            remove_database(tmp)
        for journal in path.parent.glob(f".{path.name}.*.tmp-*"):
            if journal.name.endswith((*JOURNAL_SUFFIXES, _CHUNK_SUFFIX)):
                journal.unlink(missing_ok=True)


def check_database(
    path: str | os.PathLike, num_images: int | None = None, num_pairs: int | None = None
) -> dict[str, int]:
    """SQLite ``integrity_check`` and counts of a COLMAP database -> {images, keypoints, pairs, verified_pairs}.

    ``pairs``: rows of the matches table; ``verified_pairs``: two-view geometries with at least one inlier.
    ``num_images`` (also the number of keypoint rows) and ``num_pairs``, when given, must match;
    :class:`DatabaseCheckError` names what does not.
    """
    try:
        con = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=rw", uri=True)  # rw: a WAL is cleaned up
        try:
            result = [row[0] for row in con.execute("PRAGMA integrity_check")]
            counts = {
                "images": con.execute("SELECT count(*) FROM images").fetchone()[0],
                "keypoints": con.execute("SELECT count(*) FROM keypoints").fetchone()[0],
                "pairs": con.execute("SELECT count(*) FROM matches").fetchone()[0],
                "verified_pairs": con.execute("SELECT count(*) FROM two_view_geometries WHERE rows > 0").fetchone()[0],
            }
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise DatabaseCheckError(f"{path}: not a readable COLMAP database ({exc})") from None
    if result != ["ok"]:
        raise DatabaseCheckError(f"{path}: SQLite integrity check failed: {'; '.join(result[:3])}")
    expected = {"images": num_images, "keypoints": num_images, "pairs": num_pairs}
    wrong = [f"{k} {counts[k]} (expected {v})" for k, v in expected.items() if v is not None and counts[k] != v]
    if wrong:
        raise DatabaseCheckError(f"{path}: incomplete database: {', '.join(wrong)}")
    return counts


#: Pairs per ``pycolmap.verify_matches`` call: its cancellation token is only read when a call ends.
VERIFY_CHUNK = 200
_CHUNK_SUFFIX = "-pairs.txt"


def _verify_in_chunks(pycolmap: Any, database: Path, pairs_path: Path, options: Any) -> None:
    """COLMAP's geometric verification of an hloc pairs file, :data:`VERIFY_CHUNK` pairs at a time (Ctrl-C
    stops it after the current chunk). Each pair is verified on its own, so chunks do not change the result."""
    lines = [line for line in pairs_path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    chunk_path = Path(f"{database}{_CHUNK_SUFFIX}")
    try:
        for start in range(0, len(lines), VERIFY_CHUNK):
            chunk_path.write_text("".join(f"{line}\n" for line in lines[start : start + VERIFY_CHUNK]))
            run_interruptible(pycolmap.verify_matches, database, chunk_path, options)
    finally:
        chunk_path.unlink(missing_ok=True)


def _to_rollback_journal(path: Path) -> None:
    """Checkpoint and switch a database out of WAL mode, so that it is one self-contained file."""
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA journal_mode=DELETE").fetchall()
    finally:
        con.close()


def run_interruptible(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a long pycolmap function that takes ``cancellation_token`` so that Ctrl-C stops it.

    pycolmap's C++ loops do not see SIGINT. The call runs in a worker thread while this (main) thread waits,
    so that Python's signal handler runs here; on ``KeyboardInterrupt`` the token is cancelled, the worker's
    COLMAP call returns and ``KeyboardInterrupt`` is raised again. Incremental mapping stops within
    milliseconds; ``verify_matches`` (pycolmap 4.x) only looks at the token when all its pairs are done
    (:func:`export_to_colmap` therefore verifies in chunks).
    """
    pycolmap = import_pycolmap()
    token = pycolmap.CancellationToken()
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        try:
            outcome["value"] = func(*args, cancellation_token=token, **kwargs)
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc
        finally:
            done.set()

    worker = threading.Thread(target=work, name=getattr(func, "__name__", "pycolmap"), daemon=True)
    worker.start()
    # An Event, not Thread.join: a join interrupted by the signal is not waited on again (Python 3.11 can leave
    # the thread's state lock held when the interrupt lands as the thread ends).
    try:
        while not done.wait(0.1):
            pass
    except KeyboardInterrupt:
        token.cancel()
        while not done.wait(0.1):
            pass
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def import_pycolmap(purpose: str = "COLMAP export") -> Any:
    """pycolmap >= 4 (the optional ``[colmap]`` extra), or an ``ImportError`` saying how to install it."""
    try:
        import pycolmap
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"{purpose} needs pycolmap >= 4: pip install 'deepdesc[colmap]'") from exc
    if not hasattr(pycolmap, "FeatureDescriptors") or not hasattr(pycolmap, "Frame"):
        raise ImportError(
            f"{purpose} needs pycolmap >= 4 (rigs, frames, typed descriptors); got {pycolmap.__version__}"
        )
    return pycolmap


def descriptors_to_uint8(descriptors: Any) -> np.ndarray:
    """Quantise float descriptors like COLMAP's SIFT: (N, D) float -> (N, D) uint8 (see the module docstring)."""
    x = np.asarray(descriptors, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"descriptors: expected shape (N, D), got {x.shape}")
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norm > 0, norm, 1.0)
    signed = (x < 0).any(axis=1, keepdims=True)
    q = np.where(signed, 128.0 + 256.0 * x, 512.0 * x)
    return np.clip(np.round(q), 0, 255).astype(np.uint8)


def _image_size(name: str, feats: dict[str, Any], image_dir: str | os.PathLike | None) -> tuple[int, int]:
    """(width, height) from ``feats['image_size']``, else from the image file under ``image_dir``."""
    if feats.get("image_size") is not None:
        w, h = (int(v) for v in np.asarray(feats["image_size"]).reshape(-1)[:2])
        return w, h
    if image_dir is None:
        raise ValueError(f"image {name!r}: no 'image_size' in its features and no image_dir to read it from")
    image = read_image(Path(image_dir) / name)
    return int(image.shape[1]), int(image.shape[0])


def export_to_colmap(
    database_path: str | os.PathLike,
    image_dir: str | os.PathLike | None,
    features: dict[str, dict[str, Any]],
    matches: dict[tuple[str, str], Any],
    verified: bool = False,
    camera_model: str = "SIMPLE_RADIAL",
    single_camera: bool = False,
    descriptor_format: str | None = "uint8",
    inlier_masks: dict[tuple[str, str], Any] | None = None,
    overwrite: bool = False,
    cameras: dict[str, Any] | None = None,
    verify_pairs: str | os.PathLike | None = None,
    verify_options: Any = None,
) -> dict[str, int]:
    """Write a new COLMAP database with cameras, images, keypoints, descriptors and matches -> {name: image_id}.

    ``features``: image name (relative to ``image_dir``) -> ``keypoints`` (N, >=2) x, y in the OpenCV convention,
    ``descriptors`` (N, D) float (optional with ``descriptor_format=None``), optional ``image_size`` (width,
    height); without it the size is read from ``image_dir / name``. ``matches``: (name0, name1) -> (K, 2) int.
    ``verified``: also store the matches as verified two-view geometries; ``inlier_masks``: (name0, name1) ->
    (K,) bool selecting the verified matches of a pair (implies ``verified`` for that pair). The database is
    built in a temporary file, checked and moved to ``database_path`` when complete (see "Files" in the module
    docstring); an existing one raises ``FileExistsError`` unless ``overwrite``. ``verify_pairs``: an hloc
    pairs file whose pairs COLMAP's own geometric verification (``pycolmap.verify_matches`` with
    ``verify_options``, a ``TwoViewGeometryOptions``) verifies in the temporary database before it is moved;
    Ctrl-C stops it. Conventions (+0.5 keypoint shift, descriptor quantisation): see
    the module docstring. ``cameras``: image name -> ``pycolmap.Camera`` (e.g. from EXIF by
    ``pycolmap.infer_camera_from_image``) used instead of ``camera_model`` with a focal prior of 1.2 x the
    larger side; with ``single_camera`` the first image's camera serves all.
    """
    pycolmap = import_pycolmap()
    database_path = Path(database_path)
    if database_path.exists() and not overwrite:
        raise FileExistsError(f"{database_path} exists; pass --overwrite (overwrite=True) to replace it")
    check_replaceable(database_path)
    if descriptor_format not in ("uint8", "float32", None):
        raise ValueError(f"descriptor_format must be 'uint8', 'float32' or None, got {descriptor_format!r}")
    model_id = camera_model_id(pycolmap, camera_model)
    inlier_masks = inlier_masks or {}

    names = sorted(features)
    keypoints: dict[str, np.ndarray] = {}
    for name in names:
        kpts = np.asarray(features[name]["keypoints"], dtype=np.float64)
        if kpts.ndim != 2 or kpts.shape[1] < 2:
            raise ValueError(f"image {name!r}: keypoints must have shape (N, 2) or (N, 5), got {kpts.shape}")
        keypoints[name] = (kpts[:, :2] + COLMAP_ORIGIN_SHIFT).astype(np.float32)
    checked: list[tuple[str, str, np.ndarray, np.ndarray | None]] = []
    for (name0, name1), m in matches.items():
        if name0 not in features or name1 not in features:
            raise ValueError(f"matches for ({name0!r}, {name1!r}) name an image without features")
        if name0 == name1:
            raise ValueError(f"matches of image {name0!r} with itself")
        m = np.asarray(m).reshape(-1, 2)
        if m.size and (m.dtype.kind not in "ui" or m.min() < 0):
            raise ValueError(f"matches for ({name0!r}, {name1!r}) must be non-negative integers")
        m = m.astype(np.int64)
        if len(m) and (m[:, 0].max() >= len(keypoints[name0]) or m[:, 1].max() >= len(keypoints[name1])):
            raise ValueError(f"matches for ({name0!r}, {name1!r}) index keypoints out of range")
        mask = inlier_masks.get((name0, name1))
        if mask is not None:
            mask = np.asarray(mask, dtype=bool).reshape(-1)
            if mask.shape != (len(m),):
                raise ValueError(f"inlier mask for ({name0!r}, {name1!r}) has shape {mask.shape}, need ({len(m)},)")
        elif verified:
            mask = np.ones(len(m), dtype=bool)
        checked.append((name0, name1, m, mask))

    image_ids: dict[str, int] = {}
    _remove_stale_temporaries(database_path)
    with atomic_path(database_path) as tmp:
        try:
            _write_database(pycolmap, tmp, features, names, keypoints, checked, image_dir, image_ids, cameras,
                            model_id, single_camera, descriptor_format)  # fmt: skip
            if verify_pairs is not None:
                options = verify_options if verify_options is not None else pycolmap.TwoViewGeometryOptions()
                _verify_in_chunks(pycolmap, tmp, Path(verify_pairs), options)
            _to_rollback_journal(tmp)
            check_database(tmp, num_images=len(names), num_pairs=len({frozenset(p[:2]) for p in checked}))
            for suffix in JOURNAL_SUFFIXES:  # a killed COLMAP's journal would be replayed onto the new file
                Path(f"{database_path}{suffix}").unlink(missing_ok=True)
        except BaseException:
            remove_database(tmp)
            raise
    return image_ids


def _write_database(
    pycolmap: Any,
    tmp: Path,
    features: dict[str, dict[str, Any]],
    names: list[str],
    keypoints: dict[str, np.ndarray],
    checked: list[tuple[str, str, np.ndarray, np.ndarray | None]],
    image_dir: str | os.PathLike | None,
    image_ids: dict[str, int],
    cameras: dict[str, Any] | None,
    model_id: Any,
    single_camera: bool,
    descriptor_format: str | None,
) -> None:
    """Cameras, rigs, frames, images, keypoints, descriptors, matches and geometries into the new file ``tmp``."""
    db = pycolmap.Database.open(tmp)
    try:
        with pycolmap.DatabaseTransaction(db):
            camera_id = None
            for name in names:
                feats = features[name]
                width, height = _image_size(name, feats, image_dir)
                if camera_id is None or not single_camera:
                    camera = (cameras or {}).get(name) or pycolmap.Camera.create_from_model_id(
                        1, model_id, 1.2 * max(width, height), width, height
                    )
                    camera_id = db.write_camera(camera)
                    rig = pycolmap.Rig()
                    rig.add_ref_sensor(pycolmap.sensor_t(pycolmap.SensorType.CAMERA, camera_id))
                    rig_id = db.write_rig(rig)
                    size0 = (width, height)
                elif (width, height) != size0:
                    raise ValueError(f"single_camera: image {name!r} is {width}x{height}, not {size0[0]}x{size0[1]}")
                image_id = db.write_image(pycolmap.Image(name=name, camera_id=camera_id))
                frame = pycolmap.Frame()
                frame.rig_id = rig_id
                frame.add_data_id(pycolmap.data_t(pycolmap.sensor_t(pycolmap.SensorType.CAMERA, camera_id), image_id))
                db.write_frame(frame)
                image_ids[name] = image_id
                db.write_keypoints(image_id, keypoints[name])
                if descriptor_format is not None:
                    db.write_descriptors(image_id, _colmap_descriptors(pycolmap, name, feats, descriptor_format))
            for name0, name1, m, mask in checked:
                id0, id1 = image_ids[name0], image_ids[name1]
                db.write_matches(id0, id1, m.astype(np.uint32))
                if mask is not None:
                    geometry = pycolmap.TwoViewGeometry(
                        config=pycolmap.TwoViewGeometryConfiguration.UNCALIBRATED,
                        inlier_matches=m[mask].astype(np.uint32),
                    )
                    db.write_two_view_geometry(id0, id1, geometry)
    finally:
        db.close()


def _colmap_descriptors(pycolmap: Any, name: str, feats: dict[str, Any], descriptor_format: str) -> Any:
    if feats.get("descriptors") is None:
        raise ValueError(f"image {name!r} has no descriptors; pass descriptor_format=None to export none")
    desc = np.asarray(feats["descriptors"])
    n = len(feats["keypoints"])
    if desc.ndim != 2 or desc.shape[0] != n:
        raise ValueError(f"image {name!r}: descriptors must have shape ({n}, D), got {desc.shape}")
    kind = pycolmap.FeatureExtractorType
    if descriptor_format == "uint8":
        data = desc if desc.dtype == np.uint8 else descriptors_to_uint8(desc)
        return pycolmap.FeatureDescriptors(kind.SIFT if data.shape[1] == 128 else kind.UNDEFINED, data)
    data = np.ascontiguousarray(desc, dtype=np.float32).view(np.uint8).reshape(n, -1)
    return pycolmap.FeatureDescriptors(kind.UNDEFINED, data)
