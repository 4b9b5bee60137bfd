"""Full-image homography sequences: the HPatches-sequences and Oxford (Mikolajczyk) layouts."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DatasetFormatError
from ..features.image import read_image
from .tables import read_table

__all__ = ["ImageSequence", "load_hpatches_sequence"]


@dataclass
class ImageSequence:
    """A homography sequence: ``images[k]`` and ``homographies[k]`` mapping image 1 to image k+1
    (``homographies[0]`` is the identity), in pixels, x right / y down."""

    name: str
    images: list[np.ndarray]
    homographies: list[np.ndarray]
    image_paths: list[Path]

    def __len__(self) -> int:
        return len(self.images)


_IMAGE_EXTS = (".ppm", ".pgm", ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _find_image(folder: Path, k: int) -> Path | None:
    for stem in (str(k), f"img{k}"):
        for ext in _IMAGE_EXTS:
            for candidate in (folder / f"{stem}{ext}", folder / f"{stem}{ext.upper()}"):
                if candidate.is_file():
                    return candidate
    return None


def load_hpatches_sequence(path: str | os.PathLike, grayscale: bool = False) -> ImageSequence:
    """Load a full-image homography sequence in the HPatches-sequences or the Oxford layout.

    HPatches: ``1.ppm .. 6.ppm`` and ``H_1_2 .. H_1_6``. Oxford (Mikolajczyk): ``img1 .. img6``
    (``.ppm``/``.pgm``/...) and ``H1to2p .. H1to6p``. Homography files hold a 3x3 matrix of
    whitespace-separated numbers mapping image 1 to image k. Images are uint8, (H, W) when
    ``grayscale`` or stored as gray, else (H, W, 3) RGB. Missing or malformed files raise
    :class:`DatasetFormatError` naming the file.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"sequence folder not found: {folder}")
    images, homs, paths = [], [np.eye(3)], []
    numbers = sorted(
        int(m.group(2))
        for p in folder.iterdir()
        if (m := re.match(r"^(img)?(\d+)\.[A-Za-z]+$", p.name)) and p.suffix.lower() in _IMAGE_EXTS
    )
    if not numbers or numbers[0] != 1:
        raise DatasetFormatError(f"{folder}: no image 1 found (expected 1.ppm or img1.ppm/.pgm)")
    count = 1
    while count + 1 in numbers:
        count += 1
    for k in range(1, count + 1):
        img_path = _find_image(folder, k)
        assert img_path is not None
        try:
            img = read_image(img_path, "gray" if grayscale else "uint8")
        except ValueError as exc:
            raise DatasetFormatError(f"{img_path}: cannot decode the image ({exc})") from None
        images.append(img)
        paths.append(img_path)
        if k > 1:
            candidates = [folder / f"H_1_{k}", folder / f"H1to{k}p", folder / f"H1to{k}"]
            h_path = next((c for c in candidates if c.is_file()), None)
            if h_path is None:
                raise DatasetFormatError(f"{folder}: homography for image {k} missing (H_1_{k} or H1to{k}p)")
            H = read_table(h_path, 3, np.float64)
            if H.shape != (3, 3) or not np.isfinite(H).all():
                raise DatasetFormatError(f"{h_path}: expected a 3x3 matrix of finite numbers, got shape {H.shape}")
            homs.append(H)
    return ImageSequence(name=folder.name, images=images, homographies=homs, image_paths=paths)
