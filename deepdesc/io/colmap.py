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
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..features.image import read_image
from ..utils import atomic_path

__all__ = ["COLMAP_ORIGIN_SHIFT", "descriptors_to_uint8", "export_to_colmap", "import_pycolmap"]

COLMAP_ORIGIN_SHIFT = 0.5  # COLMAP's top-left pixel centre is (0.5, 0.5); OpenCV's is (0, 0)


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
) -> dict[str, int]:
    """Write a new COLMAP database with cameras, images, keypoints, descriptors and matches -> {name: image_id}.

    ``features``: image name (relative to ``image_dir``) -> ``keypoints`` (N, >=2) x, y in the OpenCV convention,
    ``descriptors`` (N, D) float (optional with ``descriptor_format=None``), optional ``image_size`` (width,
    height); without it the size is read from ``image_dir / name``. ``matches``: (name0, name1) -> (K, 2) int.
    ``verified``: also store the matches as verified two-view geometries; ``inlier_masks``: (name0, name1) ->
    (K,) bool selecting the verified matches of a pair (implies ``verified`` for that pair). The database is
    built in a temporary file and moved to ``database_path`` when complete; an existing one raises
    ``FileExistsError`` unless ``overwrite``. Conventions (+0.5 keypoint shift, descriptor quantisation): see
    the module docstring. ``cameras``: image name -> ``pycolmap.Camera`` (e.g. from EXIF by
    ``pycolmap.infer_camera_from_image``) used instead of ``camera_model`` with a focal prior of 1.2 x the
    larger side; with ``single_camera`` the first image's camera serves all.
    """
    pycolmap = import_pycolmap()
    database_path = Path(database_path)
    if database_path.exists() and not overwrite:
        raise FileExistsError(f"{database_path} exists; pass overwrite=True to replace it")
    if descriptor_format not in ("uint8", "float32", None):
        raise ValueError(f"descriptor_format must be 'uint8', 'float32' or None, got {descriptor_format!r}")
    model_id = getattr(pycolmap.CameraModelId, camera_model, None)
    if model_id is None or camera_model == "INVALID":
        raise ValueError(f"unknown COLMAP camera model {camera_model!r}")
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
    with atomic_path(database_path) as tmp:
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
                        raise ValueError(
                            f"single_camera: image {name!r} is {width}x{height}, not {size0[0]}x{size0[1]}"
                        )
                    image_id = db.write_image(pycolmap.Image(name=name, camera_id=camera_id))
                    frame = pycolmap.Frame()
                    frame.rig_id = rig_id
                    frame.add_data_id(
                        pycolmap.data_t(pycolmap.sensor_t(pycolmap.SensorType.CAMERA, camera_id), image_id)
                    )
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
    return image_ids


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
