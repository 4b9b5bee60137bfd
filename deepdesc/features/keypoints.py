"""Keypoints as plain arrays and the OpenCV SIFT (DoG) detector.

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

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from .image import as_uint8_gray

__all__ = [
    "KEYPOINT_COLUMNS",
    "DEFAULT_KEYPOINT_SIZE",
    "DEFAULT_MAX_KEYPOINTS",
    "detect_keypoints",
    "keypoint_directions",
    "to_cv_keypoints",
    "to_keypoint_array",
    "transform_keypoints",
]

KEYPOINT_COLUMNS = ("x", "y", "size", "angle", "response")
#: Size (diameter, pixels) given to keypoints passed as bare ``(N, 2)`` positions.
DEFAULT_KEYPOINT_SIZE = 10.0
DEFAULT_MAX_KEYPOINTS = 2000

_FORMS = (
    "a list of cv2.KeyPoint, or an array of shape (N, 2) = x, y; (N, 4) = x, y, size, angle; "
    "or (N, 5) = x, y, size, angle, response"
)


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


def _strongest(kps: Sequence[cv2.KeyPoint], n: int) -> Sequence[cv2.KeyPoint]:
    """The ``n`` keypoints of largest response, strongest first (ties in input order): what sorting the converted
    array keeps, without converting the thousands it drops."""
    if len(kps) <= n:
        return kps
    response = np.fromiter((k.response for k in kps), np.float32, len(kps))
    return [kps[i] for i in np.argsort(-response, kind="stable")[:n].tolist()]


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

    ``image``: anything :func:`~deepdesc.features.image.load_image` accepts (converted to uint8 grayscale).
    ``max_keypoints``: keep the strongest by response (``None``: all). OpenCV reports a location with
    several dominant orientations as several keypoints; each counts separately unless ``upright``,
    where angles are set to 0 and such duplicates are removed (before the ``max_keypoints`` cut).
    ``mask``: optional ``(H, W)`` array, detect only where non-zero. The other arguments are
    ``cv2.SIFT_create``'s. Keypoints are sorted by decreasing response (ties keep OpenCV's order).
    """
    if max_keypoints is not None and (
        isinstance(max_keypoints, bool) or not isinstance(max_keypoints, (int, np.integer)) or max_keypoints < 0
    ):
        raise ValueError(f"max_keypoints must be a whole number >= 0 or None, got {max_keypoints!r}")
    gray = as_uint8_gray(image, channel_order)
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
    if not upright and max_keypoints is not None:
        kps = _strongest(kps, max_keypoints)
    arr = to_keypoint_array(list(kps))
    if upright and arr.shape[0]:
        arr[:, 3] = 0.0
        _, first = np.unique(arr[:, [0, 1, 2, 4]], axis=0, return_index=True)
        arr = arr[np.sort(first)]
    order = np.argsort(-arr[:, 4], kind="stable")
    if max_keypoints is not None:
        order = order[:max_keypoints]
    return np.ascontiguousarray(arr[order])
