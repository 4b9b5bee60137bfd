"""Reading images: one decoder for every file deepdesc reads, and the array conventions.

Files are decoded by OpenCV with ``IMREAD_UNCHANGED``, which **ignores EXIF orientation**: keypoints
are in the frame of the stored pixels, as in COLMAP and hloc, so features, databases and match
pictures of one image always agree. (Rotate such photos on disk first if you want them upright.)
Colour files are BGR(A) as decoded and converted as such; 16-bit files keep their depth until
:func:`load_image` scales them.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import DeepDescError

__all__ = [
    "DETECT_BYTES_PER_PIXEL",
    "IMAGE_EXTENSIONS",
    "LOAD_BYTES_PER_PIXEL",
    "MIN_IMAGE_SIZE",
    "ImageTooLargeError",
    "as_uint8_gray",
    "available_memory",
    "check_image_fits",
    "decode_image",
    "image_file_size",
    "keypoints_to_original",
    "keypoints_to_resized",
    "list_images",
    "load_image",
    "load_resized",
    "read_image",
    "resize_max_side",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp")
#: Smallest accepted image side in pixels.
MIN_IMAGE_SIZE = 8
# ITU-R BT.601 luma, as cv2.cvtColor(..., COLOR_RGB2GRAY).
_LUMA_RGB = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_READ_MODES = ("raw", "uint8", "rgb", "gray")
#: Peak memory of detecting and describing, in bytes per pixel of the image the detector sees. Most of it is
#: OpenCV's DoG pyramid, whose first octave is the image upsampled 2x (6 Gaussian + 5 DoG float32 levels per
#: octave); measured with bench/bench_memory.py.
DETECT_BYTES_PER_PIXEL = 240
#: Peak memory of decoding a file and converting it to float32 grayscale, in bytes per pixel of the file
#: (8-bit BGR decode, the float32 gray image and one float32 channel being added to it).
LOAD_BYTES_PER_PIXEL = 12


class ImageTooLargeError(DeepDescError, ValueError):
    """An image would need more memory to describe than the machine has (the message says what to pass)."""


def read_image(path: str | os.PathLike, mode: str = "raw") -> np.ndarray:
    """Decode an image file, EXIF orientation ignored (see the module docstring).

    ``mode``: ``"raw"``, the stored array: (H, W) or (H, W, 3|4) in BGR(A) order, uint8 or uint16;
    ``"uint8"``: (H, W) as stored gray or (H, W, 3) RGB, uint8 (16-bit scaled down, alpha dropped);
    ``"rgb"``: always (H, W, 3) uint8 RGB; ``"gray"``: (H, W) uint8 BT.601 luma.
    Missing file: ``FileNotFoundError``; a file OpenCV cannot decode: ``ValueError`` naming it.
    """
    if mode not in _READ_MODES:
        raise ValueError(f"mode must be one of {_READ_MODES}, got {mode!r}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image file not found: {path}")
    if not path.is_file():
        raise ValueError(f"not an image file: {path}")
    image = decode_image(np.fromfile(str(path), dtype=np.uint8), path)  # np.fromfile: non-ASCII paths work
    if mode == "raw":
        return image
    if mode == "gray":
        return as_uint8_gray(image, channel_order="bgr")
    if image.dtype.kind == "f":  # float TIFF/EXR: 0..1 when its maximum is at most 1, else 0..255
        finite = np.nan_to_num(image, nan=0.0, posinf=0.0, neginf=0.0)
        scale = 255.0 if finite.size and float(finite.max()) <= 1.0 else 1.0
        image = np.clip(np.rint(finite * scale), 0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(np.rint(image / (np.iinfo(image.dtype).max / 255.0)), 0, 255).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if mode == "rgb" else image
    return cv2.cvtColor(image[:, :, :3], cv2.COLOR_BGR2RGB)


@contextlib.contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """Collect what C libraries (libpng, libjpeg) write to file descriptor 2 meanwhile, instead of showing it."""
    captured: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable descriptor 2 (embedded interpreters): leave it alone
        yield captured
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            captured.append(tmp.read().decode(errors="replace").strip())


def decode_image(data: Any, name: str | os.PathLike = "<bytes>") -> np.ndarray:
    """Encoded image bytes (uint8 array or ``bytes``) -> the stored array (``read_image``'s ``"raw"`` mode).

    The one decoder of the library: OpenCV's ``IMREAD_UNCHANGED`` (EXIF orientation ignored). What the codec
    libraries print (libpng's warnings and errors) goes into the error message instead of before it.
    """
    buf = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else np.asarray(data)
    with _captured_stderr() as printed:
        image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    codec = " ".join(line for line in printed if line)
    if image is None:
        detail = f": {codec}" if codec else ""
        raise ValueError(f"could not decode image file {name} (not an image format OpenCV can read{detail})")
    return image


def list_images(inputs: Sequence[str | os.PathLike]) -> list[tuple[str, Path]]:
    """(name, path) for image files and the images found recursively in folders.

    A name is the path relative to the folder it was found in (the file name for a file argument),
    with ``/`` separators, as hloc and COLMAP name images. Duplicate names are an error.
    """
    found: list[tuple[str, Path]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
            found += [(p.relative_to(path).as_posix(), p) for p in files]
        elif path.is_file():
            found.append((path.name, path))
        else:
            raise FileNotFoundError(f"{path}: no such image or folder")
    names = [n for n, _ in found]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"several inputs give the image name(s) {duplicates[:5]}; pass their common folder instead")
    return found


def load_image(image_or_path: Any, channel_order: str = "rgb") -> np.ndarray:
    """An image file or array -> ``(H, W)`` float32 grayscale with intensities in 0..255.

    ``image_or_path``: a path (``str`` / ``os.PathLike``) read with OpenCV (colour files are BGR(A) and
    converted as such; ``channel_order`` is ignored), or an array of shape ``(H, W)``, ``(H, W, 1)``,
    ``(H, W, 3)`` or ``(H, W, 4)`` (the 4th channel is alpha and dropped). ``channel_order`` (``"rgb"``
    or ``"bgr"``) says how 3/4-channel arrays are ordered; colour is converted with BT.601 luma weights.

    Intensities: ``uint8`` as is; ``uint16`` scaled by 255/65535, except that a 16-bit image whose maximum
    is below 4096 is taken as 10- or 12-bit data (scaled by 255/1023 or 255/4095, with a warning); other
    integer types must lie in 0..255; floats are taken as 0..255, except that float images whose maximum
    is <= 1.0 are taken as 0..1 and multiplied by 255. Float values within 1 of the range are clipped to
    0..255; NaN/inf, bool/complex data, values further out of range, empty images or sides below
    :data:`MIN_IMAGE_SIZE` raise ``ValueError``. A missing file raises ``FileNotFoundError``.
    """
    if channel_order not in ("rgb", "bgr"):
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    if isinstance(image_or_path, (str, os.PathLike)):
        image = read_image(image_or_path)
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
        hi = int(image.max())
        if 0 < hi < 4096:  # 10/12-bit sensor data stored in 16 bits would come out nearly black
            bits = 10 if hi < 1024 else 12
            scale = 255.0 / (2**bits - 1)
            warnings.warn(
                f"16-bit image with maximum {hi}: taken as {bits}-bit data (scaled by 255/{2**bits - 1}, not "
                "255/65535); pass a rescaled array to choose another range",
                UserWarning,
                stacklevel=2,
            )
        else:
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
        hi = float(image.max())  # NaN and inf show in the extremes: no (H, W) mask needed
        if not (np.isfinite(hi) and np.isfinite(float(image.min()))):
            raise ValueError("image contains NaN or inf values")
        scale = 255.0 if hi <= 1.0 else 1.0

    if image.ndim == 3:
        if image.shape[2] == 1:
            gray = image[:, :, 0].astype(np.float32)
        else:  # channel by channel: one float32 plane at a time, not an (H, W, 3) float copy
            weights = _LUMA_RGB if channel_order == "rgb" else _LUMA_RGB[::-1]
            gray = np.multiply(image[:, :, 0], weights[0], dtype=np.float32)
            for c in (1, 2):
                gray += np.multiply(image[:, :, c], weights[c], dtype=np.float32)
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


def as_uint8_gray(image: Any, channel_order: str) -> np.ndarray:
    if (
        isinstance(image, np.ndarray)
        and image.dtype == np.uint8
        and image.ndim == 2
        and min(image.shape) >= MIN_IMAGE_SIZE
    ):
        return np.ascontiguousarray(image)  # fast path, no float round trip
    gray = load_image(image, channel_order=channel_order)
    # load_image's values lie in 0..255, where |x| rounded half to even is np.clip(np.rint(x), 0, 255)
    return cv2.convertScaleAbs(gray)


def image_file_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(width, height) of an image file read from its header, without decoding the pixels; None when the
    header cannot be read (Pillow missing or a format it does not know)."""
    try:
        from PIL import Image  # optional (comes with matplotlib); only the header is read
    except ImportError:
        return None
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # no decompression-bomb check: sizes are ours
    try:
        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except Exception:  # noqa: BLE001 - any failure just means "unknown"; decoding reports real errors
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``), or None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _resized_shape(width: int, height: int, resize_max: int | None) -> tuple[int, int]:
    scale = 1.0 if resize_max is None or max(width, height) <= resize_max else resize_max / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def check_image_fits(
    size: tuple[int, int], resize_max: int | None = None, name: str = "image", available: int | None = None
) -> int:
    """Estimated peak bytes of describing an image of ``size`` (width, height) with ``resize_max``; raises
    :class:`ImageTooLargeError` when that exceeds ``available`` bytes (default: :func:`available_memory`),
    with the largest ``resize_max`` that would fit."""
    width, height = size
    w, h = _resized_shape(width, height, resize_max)
    need = LOAD_BYTES_PER_PIXEL * width * height + DETECT_BYTES_PER_PIXEL * w * h
    available = available_memory() if available is None else available
    if available is None or need <= available:
        return need
    budget = available - LOAD_BYTES_PER_PIXEL * width * height
    fit = int(max(width, height) * math.sqrt(max(budget, 0) / (DETECT_BYTES_PER_PIXEL * width * height)))
    fit = fit // 100 * 100
    advice = (
        f"pass resize_max (--resize-max) {fit} or less to describe it downscaled (keypoints stay in the original's "
        "pixel coordinates)"
        if fit >= 100
        else "even decoding it does not fit: downscale the file first"
    )
    raise ImageTooLargeError(
        f"{name} is {width}x{height} ({width * height / 1e6:.0f} MP"
        + (f", {w}x{h} after resize_max={resize_max}" if (w, h) != (width, height) else "")
        + f"): describing it needs about {need / 2**30:.1f} GiB of memory, {available / 2**30:.1f} GiB are available; "
        + advice
    )


def resize_max_side(image: np.ndarray, resize_max: int | None) -> tuple[np.ndarray, tuple[float, float]]:
    """Downscale ``image`` (area averaging) so that its longer side is at most ``resize_max`` pixels.

    Returns the image (the input itself when small enough or ``resize_max`` is None) and the scale factors
    (new width / width, new height / height), (1, 1) when not resized.
    """
    if resize_max is None:
        return image, (1.0, 1.0)
    height, width = image.shape[:2]
    w, h = _resized_shape(width, height, resize_max)
    if (w, h) == (width, height):
        return image, (1.0, 1.0)
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA), (w / width, h / height)


def load_resized(
    image: Any, resize_max: int | None, channel_order: str = "rgb"
) -> tuple[np.ndarray, tuple[float, float], tuple[int, int]]:
    """:func:`load_image`, refused (:class:`ImageTooLargeError`) when describing it would not fit in memory (from
    a file's header before decoding, where it can be read), then :func:`resize_max_side`. Returns the (H', W')
    float32 image, the scale (sx, sy) from the original to it, and the original (width, height)."""
    name = str(image) if isinstance(image, (str, os.PathLike)) else "image"
    if isinstance(image, (str, os.PathLike)) and (header := image_file_size(image)) is not None:
        check_image_fits(header, resize_max, name=name)
    img = load_image(image, channel_order=channel_order)
    size = (img.shape[1], img.shape[0])
    check_image_fits(size, resize_max, name=name)
    img, scale = resize_max_side(img, resize_max)
    return img, scale, size


def keypoints_to_original(keypoints: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """(N, 5) keypoints x, y, size, angle, response found in an image resized by ``scale`` (sx, sy) -> the same
    keypoints in the original image's pixels (pixel centres at integers: x = (x' + 0.5) / sx - 0.5; sizes
    divided by the mean scale). A new float32 array."""
    out = np.array(keypoints, dtype=np.float32, copy=True)
    sx, sy = scale
    if (sx, sy) == (1.0, 1.0):
        return out
    out[:, 0] = (out[:, 0] + 0.5) / sx - 0.5
    out[:, 1] = (out[:, 1] + 0.5) / sy - 0.5
    if out.shape[1] > 2:
        out[:, 2] /= 0.5 * (sx + sy)
    return out


def keypoints_to_resized(keypoints: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """The inverse of :func:`keypoints_to_original`: (N, 5) keypoints in the original's pixels -> the same in the
    image resized by ``scale`` (sx, sy). The input itself when ``scale`` is (1, 1), else a new array."""
    sx, sy = scale
    if (sx, sy) == (1.0, 1.0):
        return keypoints
    out = np.array(keypoints, copy=True)
    out[:, 0] = (out[:, 0] + 0.5) * sx - 0.5
    out[:, 1] = (out[:, 1] + 0.5) * sy - 0.5
    out[:, 2] *= 0.5 * (sx + sy)
    return out
