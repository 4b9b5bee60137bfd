"""Multi-view scenes with known cameras: Strecha ``.camera`` files and COLMAP models.

Conventions (used by everything here and by :mod:`deepdesc.eval.pose`):

- Pixels: OpenCV's, the centre of the top-left pixel is (0, 0), x to the right, y down. Points are (N, 2)
  float64 ``(x, y)`` rows.
- Cameras: pinhole, no distortion. A :class:`Camera` holds the intrinsics ``K`` (3, 3) and the world-to-camera
  pose ``R`` (3, 3), ``t`` (3,): ``x_cam = R @ X + t``, pixels ``x ~ K @ x_cam``; the camera looks along +z.
- Relative pose of an ordered pair (0, 1): ``x_cam1 = R @ x_cam0 + t`` (:func:`relative_pose`), so the essential
  matrix is ``E = [t]_x R`` and ``x1^T F x0 = 0`` for pixel coordinates with ``F = K1^-T E K0^-1``. ``t`` keeps
  the scene's units (not normalised).
- Strecha ``.camera`` files store R as the camera-to-world rotation and the camera centre C in world
  coordinates, ``x ~ K R^T (X - C)``; :func:`read_strecha_camera` converts them to ``R_wc = R^T``,
  ``t = -R^T C``. Checked on ``entry-P10``: SIFT matches between neighbouring views lie a median 0.1-0.4 px from
  their epipolar lines under :func:`fundamental_matrix` (30-150 px with the rotation read the other way).
- Scenes list their images sorted by file name; :meth:`Scene.pairs` pairs images by position in that list.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetFormatError
from ..io.colmap import COLMAP_ORIGIN_SHIFT, import_pycolmap
from ..utils import logger

__all__ = [
    "Camera",
    "Scene",
    "essential_matrix",
    "fundamental_matrix",
    "load_colmap_scene",
    "load_strecha_scene",
    "load_strecha_scenes",
    "read_strecha_camera",
    "relative_pose",
]


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff")
ROTATION_TOLERANCE = 1e-4  # max |R^T R - I| accepted in files; Strecha's 6-digit rotations are off by ~1e-6
STRECHA_NUMBERS = 26
# COLMAP models whose K plus (possibly zero) distortion is a pinhole camera; fisheye and spherical ones are not
COLMAP_PINHOLE_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "FULL_OPENCV")


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64, copy=True)
    a.setflags(write=False)
    return a


def _check_rotation(R: np.ndarray, tolerance: float = ROTATION_TOLERANCE) -> None:
    deviation = float(np.abs(R.T @ R - np.eye(3)).max())
    if not deviation <= tolerance:
        raise ValueError(f"R is not orthonormal (max |R^T R - I| = {deviation:.3g} > {tolerance:g})")
    det = float(np.linalg.det(R))
    if det <= 0:
        raise ValueError(f"R is a reflection, not a rotation (det = {det:.6g})")


def _nearest_rotation(R: np.ndarray) -> np.ndarray:
    """The rotation closest to ``R`` in the Frobenius norm (removes rounding in files)."""
    u, _, vt = np.linalg.svd(R)
    return u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt


@dataclass(frozen=True, eq=False)
class Camera:
    """A pinhole camera: ``x_cam = R @ X + t``, pixels ``x ~ K @ x_cam`` (OpenCV pixel centres).

    ``K`` (3, 3), ``R`` (3, 3) world-to-camera rotation, ``t`` (3,), all stored as read-only float64 copies;
    ``width``, ``height`` in pixels. The constructor raises ``ValueError`` for wrong shapes, non-finite values, a
    ``K`` whose last row is not (0, 0, 1) or whose focal lengths are not positive, an ``R`` that is not a rotation
    (tolerance ``ROTATION_TOLERANCE``) or non-positive sizes. Equality compares all values exactly.
    """

    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    width: int
    height: int

    def __post_init__(self) -> None:
        K, R, t = (np.asarray(a, dtype=np.float64) for a in (self.K, self.R, self.t))
        for name, a, shape in (("K", K, (3, 3)), ("R", R, (3, 3)), ("t", t, (3,))):
            if a.shape != shape:
                raise ValueError(f"Camera.{name}: expected shape {shape}, got {a.shape}")
            if not np.isfinite(a).all():
                raise ValueError(f"Camera.{name} has non-finite values: {a.tolist()}")
        if not np.allclose(K[2], [0.0, 0.0, 1.0], rtol=0, atol=1e-9) or K[1, 0] != 0:
            raise ValueError(f"Camera.K must be upper triangular with last row (0, 0, 1), got {K.tolist()}")
        if not (K[0, 0] > 0 and K[1, 1] > 0):
            raise ValueError(f"Camera.K: focal lengths must be positive, got fx={K[0, 0]}, fy={K[1, 1]}")
        _check_rotation(R)
        for name in ("width", "height"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or int(value) <= 0:
                raise ValueError(f"Camera.{name} must be a positive integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        object.__setattr__(self, "K", _readonly(K))
        object.__setattr__(self, "R", _readonly(R))
        object.__setattr__(self, "t", _readonly(t))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Camera):
            return NotImplemented
        return (
            self.width == other.width
            and self.height == other.height
            and all(np.array_equal(getattr(self, n), getattr(other, n)) for n in ("K", "R", "t"))
        )

    __hash__ = None  # type: ignore[assignment]  # mutable-looking array fields: not hashable

    @classmethod
    def from_center(cls, K: Any, R: Any, center: Any, width: int, height: int) -> Camera:
        """Camera from intrinsics, world-to-camera rotation ``R`` and the camera centre (3,) in world coordinates."""
        R = np.asarray(R, dtype=np.float64)
        return cls(K, R, -R @ np.asarray(center, dtype=np.float64), width, height)

    @property
    def center(self) -> np.ndarray:
        """Camera centre in world coordinates, (3,) float64: ``-R^T t``."""
        return -self.R.T @ self.t

    @property
    def P(self) -> np.ndarray:
        """Projection matrix ``K [R | t]``, (3, 4) float64."""
        return self.K @ np.hstack([self.R, self.t[:, None]])

    def project(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """Project world points (N, 3) to pixels (N, 2) float64 and depths (N,) float64 (z in the camera frame).

        Points with depth <= 0 are behind the camera: their pixels are meaningless (inf/nan at depth 0); check
        ``depth > 0`` before use.
        """
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != 3:
            raise ValueError(f"project: expected points of shape (N, 3), got {X.shape}")
        x = (X @ self.R.T + self.t) @ self.K.T
        depth = x[:, 2].copy()
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = x[:, :2] / depth[:, None]
        return uv, depth

    def contains(self, uv: Any) -> np.ndarray:
        """Boolean mask (N,) of pixels (N, 2) inside the image, ``-0.5 <= x < width - 0.5`` (likewise y)."""
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        return (uv[:, 0] >= -0.5) & (uv[:, 0] < self.width - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] < self.height - 0.5)


def _skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def relative_pose(cam0: Camera, cam1: Camera) -> tuple[np.ndarray, np.ndarray]:
    """Pose of camera 1 relative to camera 0: ``x_cam1 = R @ x_cam0 + t``; R (3, 3), t (3,) in scene units."""
    R = cam1.R @ cam0.R.T
    t = cam1.t - R @ cam0.t
    return R, t


def essential_matrix(R: Any, t: Any) -> np.ndarray:
    """``E = [t]_x R`` (3, 3) float64, so that ``y1^T E y0 = 0`` for normalised coordinates y = K^-1 x."""
    R = np.asarray(R, dtype=np.float64).reshape(3, 3)
    t = np.asarray(t, dtype=np.float64).reshape(3)
    return _skew(t) @ R


def fundamental_matrix(cam0: Camera, cam1: Camera) -> np.ndarray:
    """F (3, 3) float64 with ``x1^T F x0 = 0`` for pixels (x, y, 1) of the same point in image 0 and image 1.

    ``F = K1^-T [t]_x R K0^-1`` from :func:`relative_pose`, not rescaled (F is defined up to scale; distances to
    epipolar lines do not depend on it).
    """
    R, t = relative_pose(cam0, cam1)
    return np.linalg.inv(cam1.K).T @ essential_matrix(R, t) @ np.linalg.inv(cam0.K)


def read_strecha_camera(path: str | os.PathLike) -> Camera:
    """Read a Strecha ``.camera`` file (26 numbers: K, distortion, camera-to-world R, centre C, width height).

    Returns ``Camera(K, R^T, -R^T C, width, height)`` with R rounded to the nearest rotation. Non-zero
    distortion is ignored with a warning on the ``deepdesc`` logger. Raises :class:`DatasetFormatError` naming
    the file for a wrong count of numbers, text that is not a number, a non-orthonormal R, a bad K or size.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetFormatError(f"{path}: cannot read camera file: {exc}") from exc
    values: list[float] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        for token in line.split():
            try:
                value = float(token)
            except ValueError:
                raise DatasetFormatError(f"{path}, line {line_no}: not a number: {token!r}") from None
            if not math.isfinite(value):
                raise DatasetFormatError(f"{path}, line {line_no}: not a finite number: {token!r}")
            values.append(value)
    if len(values) != STRECHA_NUMBERS:
        raise DatasetFormatError(
            f"{path}: expected {STRECHA_NUMBERS} numbers (K 3x3, distortion 3, R 3x3, centre 3, width height), "
            f"got {len(values)}"
        )
    v = np.array(values)
    K, distortion, R_cw, C, (width, height) = v[:9].reshape(3, 3), v[9:12], v[12:21].reshape(3, 3), v[21:24], v[24:]
    try:
        _check_rotation(R_cw)
    except ValueError as exc:
        raise DatasetFormatError(f"{path}: rotation (lines 5-7): {exc}") from None
    if np.any(distortion != 0):
        logger.warning("%s: lens distortion %s ignored (pinhole camera assumed)", path, distortion.tolist())
    R = _nearest_rotation(R_cw).T
    try:
        return Camera(K, R, -R @ C, width, height)
    except ValueError as exc:
        raise DatasetFormatError(f"{path}: {exc}") from None


@dataclass
class Scene:
    """Images of one scene with their cameras; ``image_names``, ``image_paths``, ``cameras`` are parallel lists.

    ``root`` is the scene folder (Strecha) or the image folder (COLMAP). The loaders sort images by name.
    """

    name: str
    root: Path
    image_names: list[str]
    image_paths: list[Path]
    cameras: list[Camera] = field(repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.image_paths = [Path(p) for p in self.image_paths]
        n = len(self.image_names)
        if len(self.image_paths) != n or len(self.cameras) != n:
            raise ValueError(
                f"Scene {self.name!r}: {n} names, {len(self.image_paths)} paths, {len(self.cameras)} cameras"
            )
        if len(set(self.image_names)) != n:
            raise ValueError(f"Scene {self.name!r}: duplicate image names")

    def __len__(self) -> int:
        return len(self.image_names)

    def pairs(self, max_gap: int = 3) -> list[tuple[int, int]]:
        """All index pairs (i, j) with ``1 <= j - i <= max_gap``, sorted by i then j (list order = name order)."""
        if max_gap < 1:
            raise ValueError(f"max_gap must be >= 1, got {max_gap}")
        n = len(self)
        return [(i, j) for i in range(n) for j in range(i + 1, min(n, i + max_gap + 1))]


def _is_strecha_scene(path: Path) -> bool:
    return (path / "images").is_dir() and (path / "cameras").is_dir()


def load_strecha_scene(path: str | os.PathLike) -> Scene:
    """Load a Strecha scene folder: ``images/NAME`` with ``cameras/NAME.camera`` for every image.

    Images are the files in ``images/`` with an extension in ``IMAGE_EXTENSIONS``, sorted by name. Raises
    :class:`DatasetFormatError` if the folder is not a scene, has no images, or an image lacks its camera file
    (the message lists the missing files).
    """
    root = Path(path)
    if not _is_strecha_scene(root):
        raise DatasetFormatError(f"{root}: not a Strecha scene (needs the folders images/ and cameras/)")
    image_dir, camera_dir = root / "images", root / "cameras"
    names = sorted(p.name for p in image_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not names:
        raise DatasetFormatError(f"{image_dir}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    missing = [name + ".camera" for name in names if not (camera_dir / (name + ".camera")).is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DatasetFormatError(f"{camera_dir}: missing camera files for {len(missing)} images: {shown}")
    cameras = [read_strecha_camera(camera_dir / (name + ".camera")) for name in names]
    return Scene(root.name, root, names, [image_dir / name for name in names], cameras)


def load_strecha_scenes(path: str | os.PathLike) -> list[Scene]:
    """``[scene]`` if ``path`` is a scene folder, else every sub-folder that is one, sorted by name.

    Raises :class:`DatasetFormatError` if ``path`` is not a folder or holds no scene.
    """
    root = Path(path)
    if not root.is_dir():
        raise DatasetFormatError(f"{root}: no such folder")
    if _is_strecha_scene(root):
        return [load_strecha_scene(root)]
    scenes = [load_strecha_scene(p) for p in sorted(root.iterdir()) if p.is_dir() and _is_strecha_scene(p)]
    if not scenes:
        raise DatasetFormatError(f"{root}: no Strecha scenes (folders with images/ and cameras/) in it")
    return scenes


def _colmap_pose(image: Any) -> tuple[np.ndarray, np.ndarray]:
    pose = image.cam_from_world
    if callable(pose):  # a method in pycolmap >= 3.12, a property before
        pose = pose()
    return np.asarray(pose.rotation.matrix(), dtype=np.float64), np.asarray(pose.translation, dtype=np.float64)


def _colmap_registered_ids(reconstruction: Any) -> list[int]:
    ids = getattr(reconstruction, "reg_image_ids", None)
    if ids is not None:
        return list(ids() if callable(ids) else ids)
    return [i for i, im in reconstruction.images.items() if getattr(im, "registered", True)]


def load_colmap_scene(model_dir: str | os.PathLike, image_dir: str | os.PathLike, name: str | None = None) -> Scene:
    """Load the registered images of a COLMAP model (text or binary) as a scene, sorted by image name.

    ``model_dir`` holds ``cameras``/``images``/``points3D`` (``.txt`` or ``.bin``), read with
    ``pycolmap.Reconstruction``; image names are relative to ``image_dir``; ``name`` defaults to the name of the
    folder above ``image_dir``. K is the camera's calibration matrix with the principal point moved by -0.5 px:
    COLMAP puts the centre of the top-left pixel at (0.5, 0.5), deepdesc/OpenCV at (0, 0). The pose is
    ``image.cam_from_world``, world to camera like :class:`Camera`.

    Only pinhole-type models (``COLMAP_PINHOLE_MODELS``) are accepted (:class:`DatasetFormatError` otherwise);
    their distortion is ignored, with a warning on the ``deepdesc`` logger for non-zero distortion parameters
    (undistort first, e.g. with COLMAP's ``image_undistorter``, for exact geometry). Raises
    :class:`DatasetFormatError` for an unreadable model, no registered images, or image files that do not exist;
    ``ImportError`` without pycolmap.
    """
    pycolmap = import_pycolmap("reading COLMAP models")
    model_dir, image_dir = Path(model_dir), Path(image_dir)
    if not model_dir.is_dir():
        raise DatasetFormatError(f"{model_dir}: no such COLMAP model folder")
    try:
        reconstruction = pycolmap.Reconstruction(str(model_dir))
    except Exception as exc:  # pycolmap raises plain RuntimeError/ValueError for bad files
        raise DatasetFormatError(f"{model_dir}: cannot read COLMAP model: {exc}") from exc
    entries: list[tuple[str, Camera]] = []
    warned: set[int] = set()
    for image_id in _colmap_registered_ids(reconstruction):
        image = reconstruction.images[image_id]
        camera = reconstruction.cameras[image.camera_id]
        model = str(camera.model_name)
        if model not in COLMAP_PINHOLE_MODELS:
            raise DatasetFormatError(
                f"{model_dir}: camera {image.camera_id} ({image.name}) has model {model}, not a pinhole model "
                f"({', '.join(COLMAP_PINHOLE_MODELS)}); undistort the model first"
            )
        params = np.asarray(camera.params, dtype=np.float64)
        extra = params[list(camera.extra_params_idxs())]
        if np.any(extra != 0) and image.camera_id not in warned:
            warned.add(image.camera_id)
            logger.warning(
                "%s: camera %d (%s) distortion %s ignored (pinhole camera assumed)",
                model_dir,
                image.camera_id,
                model,
                extra.tolist(),
            )
        K = np.array(camera.calibration_matrix(), dtype=np.float64)
        K[:2, 2] -= COLMAP_ORIGIN_SHIFT
        R, t = _colmap_pose(image)
        try:
            cam = Camera(K, _nearest_rotation(R), t, int(camera.width), int(camera.height))
        except ValueError as exc:
            raise DatasetFormatError(f"{model_dir}: image {image.name}: {exc}") from None
        entries.append((str(image.name), cam))
    if not entries:
        raise DatasetFormatError(f"{model_dir}: COLMAP model has no registered images")
    entries.sort(key=lambda e: e[0])
    names = [e[0] for e in entries]
    missing = [n for n in names if not (image_dir / n).is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DatasetFormatError(f"{image_dir}: {len(missing)} images of the COLMAP model are missing: {shown}")
    if name is None:
        name = image_dir.resolve().parent.name
    return Scene(name, image_dir, names, [image_dir / n for n in names], [e[1] for e in entries])
