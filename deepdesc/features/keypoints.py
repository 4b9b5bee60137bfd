"""Keypoints as plain arrays, the OpenCV SIFT (DoG) detector, and image loading.

A set of N keypoints is a float32 numpy array of shape ``(N, 5)`` with columns
``x, y, size, angle, response`` (see :data:`KEYPOINT_COLUMNS`). Conventions, all OpenCV's:

- ``x, y``: pixels; the *centre* of the top-left pixel is ``(0, 0)``, so pixel ``(col, row)`` covers
  ``[col - 0.5, col + 0.5] x [row - 0.5, row + 0.5]``. ``x`` grows to the right, ``y`` grows *down*.
- ``size``: ``cv2.KeyPoint.size``, the *diameter* of the keypoint's region in pixels (for SIFT, about
  twice the detection scale: ``size = 2 * sigma``).
- ``angle``: ``cv2.KeyPoint.angle`` in degrees, in ``[0, 360)``. The keypoint's reference direction is the
  unit vector ``(cos(angle), sin(angle))`` in image coordinates (x right, y down). Because y points down,
  a *positive* angle turns *clockwise* as the image is seen on screen: 90 deg points straight down.
  Consequently, rotating an image counter-clockwise on screen by ``phi`` degrees (what
  ``cv2.getRotationMatrix2D(center, phi, 1)`` does for ``phi > 0``) changes SIFT's angles from ``a`` to
  ``a - phi`` (mod 360); tests check this against ``cv2.SIFT``. OpenCV's ``-1`` ("no orientation") and
  upright keypoints are stored as ``0``.
- ``response``: detector strength (larger is stronger); ``0`` when unknown.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

__all__ = [
    "KEYPOINT_COLUMNS",
    "DEFAULT_KEYPOINT_SIZE",
    "DEFAULT_MAX_KEYPOINTS",
    "MIN_IMAGE_SIZE",
    "detect_keypoints",
    "keypoint_directions",
    "load_image",
    "to_cv_keypoints",
    "to_keypoint_array",
    "transform_keypoints",
]

KEYPOINT_COLUMNS = ("x", "y", "size", "angle", "response")
#: Size (diameter, pixels) given to keypoints passed as bare ``(N, 2)`` positions.
DEFAULT_KEYPOINT_SIZE = 10.0
DEFAULT_MAX_KEYPOINTS = 2000
#: Smallest accepted image side in pixels.
MIN_IMAGE_SIZE = 8

_FORMS = (
    "a list of cv2.KeyPoint, or an array of shape (N, 2) = x, y; (N, 4) = x, y, size, angle; "
    "or (N, 5) = x, y, size, angle, response"
)
# ITU-R BT.601 luma, as cv2.cvtColor(..., COLOR_RGB2GRAY).
_LUMA_RGB = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _normalize_angles(angle: np.ndarray) -> np.ndarray:
    """OpenCV's ``-1`` (no orientation) -> 0; other angles wrapped into [0, 360)."""
    angle = np.where(angle == -1.0, 0.0, angle)
    angle = np.mod(angle, 360.0)
    return np.where(angle >= 360.0, 0.0, angle)  # mod of tiny negatives can round to 360


def to_keypoint_array(keypoints: Any, default_size: float = DEFAULT_KEYPOINT_SIZE) -> np.ndarray:
    """Keypoints in any accepted form -> float32 ``(N, 5)`` array ``x, y, size, angle, response``.

    Accepts a sequence of ``cv2.KeyPoint``; an ``(N, 2)`` array of ``x, y`` (size ``default_size``
    pixels, angle 0, response 0); ``(N, 4)`` ``x, y, size, angle`` (response 0); or ``(N, 5)``.
    Angles of ``-1`` become 0 and all angles are wrapped into ``[0, 360)``. Raises ``ValueError`` for
    other shapes, non-finite values or negative sizes.
    """
    if isinstance(keypoints, cv2.KeyPoint):
        keypoints = [keypoints]
    if isinstance(keypoints, (list, tuple)) and len(keypoints) > 0 and isinstance(keypoints[0], cv2.KeyPoint):
        if not all(isinstance(k, cv2.KeyPoint) for k in keypoints):
            raise ValueError(f"expected {_FORMS}; got a list mixing cv2.KeyPoint and other objects")
        arr = np.array([(k.pt[0], k.pt[1], k.size, k.angle, k.response) for k in keypoints], dtype=np.float64)
    else:
        if isinstance(keypoints, (list, tuple)) and len(keypoints) == 0:
            return np.zeros((0, 5), dtype=np.float32)
        try:
            arr = np.asarray(keypoints)
        except (TypeError, ValueError) as err:
            raise ValueError(f"expected {_FORMS}; got {type(keypoints).__name__}") from err
        if arr.dtype.kind not in "uif":
            raise ValueError(f"expected {_FORMS}; got an array of dtype {arr.dtype}")
        if arr.ndim != 2 or arr.shape[1] not in (2, 4, 5):
            if arr.size == 0:
                return np.zeros((0, 5), dtype=np.float32)
            raise ValueError(f"expected {_FORMS}; got shape {arr.shape}")
        arr = arr.astype(np.float64)
        n = arr.shape[0]
        if arr.shape[1] == 2:
            if not (np.isfinite(default_size) and default_size > 0):
                raise ValueError(f"default_size must be a positive number of pixels, got {default_size}")
            arr = np.concatenate([arr, np.full((n, 1), float(default_size)), np.zeros((n, 2))], axis=1)
        elif arr.shape[1] == 4:
            arr = np.concatenate([arr, np.zeros((n, 1))], axis=1)
    if arr.shape[0] == 0:
        return np.zeros((0, 5), dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ValueError("keypoints contain NaN or inf values")
    if (arr[:, 2] < 0).any():
        raise ValueError("keypoint sizes (diameters in pixels) must not be negative")
    arr[:, 3] = _normalize_angles(arr[:, 3])
    return np.ascontiguousarray(arr, dtype=np.float32)


def to_cv_keypoints(keypoints: Any) -> list[cv2.KeyPoint]:
    """Keypoints (any form :func:`to_keypoint_array` accepts) -> list of ``cv2.KeyPoint``."""
    arr = to_keypoint_array(keypoints)
    return [
        cv2.KeyPoint(float(x), float(y), float(size), float(angle), float(response))
        for x, y, size, angle, response in arr.tolist()
    ]


def keypoint_directions(keypoints: np.ndarray) -> np.ndarray:
    """Unit reference directions ``(cos(angle), sin(angle))`` in image coordinates (y down). (N, 2) float64."""
    theta = np.deg2rad(np.asarray(keypoints, dtype=np.float64)[:, 3])
    return np.stack([np.cos(theta), np.sin(theta)], axis=1)


def transform_keypoints(keypoints: Any, homography: np.ndarray) -> np.ndarray:
    """Map keypoints through a 3x3 homography (or 2x3 affine), following the local affine map.

    Positions are projected; each keypoint's direction is mapped by the local Jacobian (giving the new
    angle) and its size is scaled by ``sqrt(|det J|)``. Returns a float32 ``(N, 5)`` array.
    """
    kp = to_keypoint_array(keypoints).astype(np.float64)
    h = np.asarray(homography, dtype=np.float64)
    if h.shape == (2, 3):
        h = np.vstack([h, [0.0, 0.0, 1.0]])
    if h.shape != (3, 3):
        raise ValueError(f"expected a 3x3 homography or 2x3 affine matrix, got shape {h.shape}")
    if kp.shape[0] == 0:
        return kp.astype(np.float32)
    x, y = kp[:, 0], kp[:, 1]
    w = h[2, 0] * x + h[2, 1] * y + h[2, 2]
    u = (h[0, 0] * x + h[0, 1] * y + h[0, 2]) / w
    v = (h[1, 0] * x + h[1, 1] * y + h[1, 2]) / w
    # Jacobian of (u, v) w.r.t. (x, y): d(u)/dx = (h00 - u h20) / w, ...
    j00, j01 = (h[0, 0] - u * h[2, 0]) / w, (h[0, 1] - u * h[2, 1]) / w
    j10, j11 = (h[1, 0] - v * h[2, 0]) / w, (h[1, 1] - v * h[2, 1]) / w
    d = keypoint_directions(kp)
    dx, dy = j00 * d[:, 0] + j01 * d[:, 1], j10 * d[:, 0] + j11 * d[:, 1]
    out = kp.copy()
    out[:, 0], out[:, 1] = u, v
    out[:, 2] = kp[:, 2] * np.sqrt(np.abs(j00 * j11 - j01 * j10))
    out[:, 3] = _normalize_angles(np.rad2deg(np.arctan2(dy, dx)))
    return out.astype(np.float32)


def _read_image_file(path: Path) -> np.ndarray:
    if not path.exists():
        raise FileNotFoundError(f"image file not found: {path}")
    if not path.is_file():
        raise ValueError(f"not an image file: {path}")
    data = np.fromfile(str(path), dtype=np.uint8)  # works for non-ASCII paths, unlike cv2.imread
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise ValueError(f"could not decode image file {path} (not an image format OpenCV can read)")
    return image


def load_image(image_or_path: Any, channel_order: str = "rgb") -> np.ndarray:
    """An image file or array -> ``(H, W)`` float32 grayscale with intensities in 0..255.

    ``image_or_path``: a path (``str`` / ``os.PathLike``) read with OpenCV (colour files are BGR(A) and
    converted as such; ``channel_order`` is ignored), or an array of shape ``(H, W)``, ``(H, W, 1)``,
    ``(H, W, 3)`` or ``(H, W, 4)`` (the 4th channel is alpha and dropped). ``channel_order`` (``"rgb"``
    or ``"bgr"``) says how 3/4-channel arrays are ordered; colour is converted with BT.601 luma weights.

    Intensities: ``uint8`` as is; ``uint16`` scaled by 255/65535; other integer types must lie in
    0..255; floats are taken as 0..255, except that float images whose maximum is <= 1.0 are taken as
    0..1 and multiplied by 255. Float values within 1 of the range are clipped to 0..255; NaN/inf,
    bool/complex data, values further out of range, empty images or sides below
    :data:`MIN_IMAGE_SIZE` raise ``ValueError``. A missing file raises ``FileNotFoundError``.
    """
    if channel_order not in ("rgb", "bgr"):
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    if isinstance(image_or_path, (str, os.PathLike)):
        image = _read_image_file(Path(image_or_path))
        channel_order = "bgr"
    elif isinstance(image_or_path, np.ndarray):
        image = image_or_path
    else:
        try:
            image = np.asarray(image_or_path)
        except (TypeError, ValueError) as err:
            raise ValueError(f"expected an image path or array, got {type(image_or_path).__name__}") from err
    expected = "an image array of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)"
    if image.dtype.kind not in "uif":
        raise ValueError(f"expected {expected} of integer or float dtype; got dtype {image.dtype}")
    if image.ndim == 3 and image.shape[2] in (1, 3, 4):
        pass
    elif image.ndim != 2:
        raise ValueError(f"expected {expected}; got shape {image.shape}")
    h, w = image.shape[:2]
    if h < MIN_IMAGE_SIZE or w < MIN_IMAGE_SIZE:
        raise ValueError(f"image of shape {image.shape} is too small: sides of at least {MIN_IMAGE_SIZE} px needed")

    if image.dtype == np.uint8:
        scale = 1.0
    elif image.dtype == np.uint16:
        scale = 255.0 / 65535.0
    elif image.dtype.kind in "ui":
        lo, hi = int(image.min()), int(image.max())
        if lo < 0 or hi > 255:
            raise ValueError(
                f"integer image of dtype {image.dtype} has values in [{lo}, {hi}]; expected 0..255 "
                "(uint16 images are rescaled automatically; convert others to uint8 or float)"
            )
        scale = 1.0
    else:
        if not np.isfinite(image).all():
            raise ValueError("image contains NaN or inf values")
        hi = float(image.max())
        scale = 255.0 if hi <= 1.0 else 1.0

    if image.ndim == 3:
        if image.shape[2] == 1:
            gray = image[:, :, 0].astype(np.float32)
        else:
            weights = _LUMA_RGB if channel_order == "rgb" else _LUMA_RGB[::-1]
            gray = image[:, :, :3].astype(np.float32) @ weights
    else:
        gray = image.astype(np.float32, copy=True)
    if scale != 1.0:
        gray *= np.float32(scale)
    if image.dtype.kind == "f":
        lo, hi = float(gray.min()), float(gray.max())
        if lo < -1.0 or hi > 256.0:
            raise ValueError(
                f"float image values span [{lo:g}, {hi:g}] after scaling; expected 0..255 (or 0..1 floats)"
            )
        np.clip(gray, 0.0, 255.0, out=gray)
    return np.ascontiguousarray(gray, dtype=np.float32)


def _as_uint8(image: Any, channel_order: str) -> np.ndarray:
    if (
        isinstance(image, np.ndarray)
        and image.dtype == np.uint8
        and image.ndim == 2
        and min(image.shape) >= MIN_IMAGE_SIZE
    ):
        return np.ascontiguousarray(image)  # fast path, no float round trip
    gray = load_image(image, channel_order=channel_order)
    return np.clip(np.rint(gray), 0, 255).astype(np.uint8)


def detect_keypoints(
    image: Any,
    max_keypoints: int | None = DEFAULT_MAX_KEYPOINTS,
    upright: bool = False,
    contrast_threshold: float = 0.04,
    edge_threshold: float = 10.0,
    n_octave_layers: int = 3,
    sigma: float = 1.6,
    mask: np.ndarray | None = None,
    channel_order: str = "rgb",
) -> np.ndarray:
    """OpenCV SIFT (difference of Gaussians) keypoints. Image -> float32 ``(N, 5)`` x, y, size, angle, response.

    ``image``: anything :func:`load_image` accepts (converted to uint8 grayscale for the detector).
    ``max_keypoints``: keep the strongest by response (``None``: all). OpenCV reports a location with
    several dominant orientations as several keypoints; each counts separately unless ``upright``,
    where angles are set to 0 and such duplicates are removed (before the ``max_keypoints`` cut).
    ``mask``: optional ``(H, W)`` array, detect only where non-zero. The other arguments are
    ``cv2.SIFT_create``'s. Keypoints are sorted by decreasing response (ties keep OpenCV's order).
    """
    if max_keypoints is not None and max_keypoints < 0:
        raise ValueError(f"max_keypoints must be >= 0 or None, got {max_keypoints}")
    gray = _as_uint8(image, channel_order)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != gray.shape:
            raise ValueError(f"mask of shape {mask.shape} does not match the image's {gray.shape}")
        mask = (mask != 0).astype(np.uint8)
    sift = cv2.SIFT_create(
        nfeatures=0,
        nOctaveLayers=int(n_octave_layers),
        contrastThreshold=float(contrast_threshold),
        edgeThreshold=float(edge_threshold),
        sigma=float(sigma),
    )
    kps = sift.detect(gray, mask)
    arr = to_keypoint_array(list(kps))
    if upright and arr.shape[0]:
        arr[:, 3] = 0.0
        _, first = np.unique(arr[:, [0, 1, 2, 4]], axis=0, return_index=True)
        arr = arr[np.sort(first)]
    order = np.argsort(-arr[:, 4], kind="stable")
    if max_keypoints is not None:
        order = order[:max_keypoints]
    return np.ascontiguousarray(arr[order])
