"""HPatches (Balntas et al., CVPR 2017) patch release: loader and splits.

Layout: ``root/<sequence>/{ref,e1..e5,h1..h5,t1..t5}.png``; each image is a vertical stripe of N
65x65 grayscale patches (height 65 N, width 65); patch ``i`` of every image of a sequence shows the
same scene point. ``e``/``h``/``t`` are the easy/hard/tough geometric noise levels. Sequences ``i_*``
change illumination, ``v_*`` viewpoint. The benchmark tasks are in :mod:`deepdesc.eval.hpatches`;
full-image sequences in :mod:`deepdesc.datasets.sequences`.

65 -> 64 px: by default each patch is resampled with ``cv2.resize(..., (64, 64), INTER_AREA)``
(area averaging, keeps the patch centre and extent; ``resize="linear"`` uses INTER_LINEAR,
``resize="crop"`` drops the last row and column, ``resize=None`` keeps 65x65).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from ..errors import DatasetFormatError
from ..features.image import read_image

__all__ = ["DIFFICULTIES", "HPATCHES_IMAGES", "HPatches", "load_hpatches_patches", "select_sequences"]

HP_PATCH = 65
HPATCHES_IMAGES = ("ref", *(f"{t}{i}" for t in "eht" for i in range(1, 6)))
DIFFICULTIES = {"e": "easy", "h": "hard", "t": "tough"}
SPLITS = ("a", "b", "c", "illum", "view", "full")


def _resize_patches(stack: np.ndarray, resize: str | None) -> np.ndarray:
    if resize is None:
        return stack
    if resize == "crop":
        return np.ascontiguousarray(stack[:, :64, :64])
    interp = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR}.get(resize)
    if interp is None:
        raise ValueError(f"resize must be 'area', 'linear', 'crop' or None, got {resize!r}")
    out = np.empty((len(stack), 64, 64), np.uint8)
    for k, patch in enumerate(stack):
        out[k] = cv2.resize(patch, (64, 64), interpolation=interp)
    return out


def load_hpatches_patches(
    seq_dir: str | os.PathLike, resize: str | None = "area", images: Iterable[str] = HPATCHES_IMAGES
) -> dict[str, np.ndarray]:
    """Patches of one HPatches sequence folder. Returns {image: (N, 64, 64) uint8} (65x65 with ``resize=None``).

    Raises :class:`DatasetFormatError` naming the file when a stripe is missing, not 65 px wide, not a
    multiple of 65 px high, or has another patch count than ``ref``.
    """
    seq_dir = Path(seq_dir)
    out: dict[str, np.ndarray] = {}
    count = None
    for name in images:
        path = seq_dir / f"{name}.png"
        if not path.is_file():
            raise DatasetFormatError(f"{path}: missing (HPatches sequences hold {', '.join(HPATCHES_IMAGES)})")
        try:
            img = read_image(path, "gray")
        except ValueError as exc:
            raise DatasetFormatError(f"{path}: cannot decode the image ({exc})") from None
        h, w = img.shape
        if w != HP_PATCH or h % HP_PATCH or h == 0:
            raise DatasetFormatError(f"{path}: stripe is {w}x{h} px; expected width 65 and height a multiple of 65")
        n = h // HP_PATCH
        if count is not None and n != count:
            raise DatasetFormatError(f"{path}: {n} patches, but {seq_dir.name} has {count} in its other images")
        count = n
        out[name] = _resize_patches(img.reshape(n, HP_PATCH, HP_PATCH), resize)
    return out


def select_sequences(
    names: Iterable[str], split: str = "full", splits_file: str | os.PathLike | None = None, subset: str = "test"
) -> list[str]:
    """Sequences of ``split`` among ``names`` (sorted).

    ``illum`` / ``view`` / ``full``: by name prefix (``i_`` / ``v_`` / both), unless ``splits_file`` is
    given. ``a`` / ``b`` / ``c``: the official assignment, read from ``splits_file`` (the benchmark's
    ``splits.json``: ``{"a": {"test": [...], "train": [...]}, ...}``); ``subset`` picks ``test`` or
    ``train``. Sequences the file names but ``names`` lacks raise ``ValueError``.
    """
    names = sorted(names)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if splits_file is None:
        if split in ("a", "b", "c"):
            raise ValueError(
                f"split {split!r} is the official HPatches assignment of sequences: pass splits_file= "
                "(splits.json of the HPatches benchmark); 'illum', 'view' and 'full' work without it"
            )
        prefixes = {"illum": ("i_",), "view": ("v_",), "full": ("i_", "v_")}[split]
        return [n for n in names if n.startswith(prefixes)]
    with open(splits_file) as f:
        splits = json.load(f)
    try:
        wanted = splits[split][subset]
    except KeyError:
        raise ValueError(f"{splits_file}: no {split!r} / {subset!r} entry") from None
    missing = sorted(set(wanted) - set(names))
    if missing:
        raise ValueError(f"split {split!r} ({splits_file}) needs sequences missing here: {', '.join(missing[:10])}")
    return sorted(wanted)


class HPatches:
    """The HPatches patch release under ``root``. ``hp[name]`` -> {image: (N, 64, 64) uint8}.

    ``split``/``splits_file``/``subset`` select sequences (see :func:`select_sequences`);
    ``resize`` the 65 -> 64 px conversion (see the module docstring). Sequences load on access
    and are not kept in memory.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "full",
        splits_file: str | os.PathLike | None = None,
        subset: str = "test",
        resize: str | None = "area",
    ):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"HPatches folder not found: {self.root}")
        present = [p.name for p in self.root.iterdir() if p.is_dir() and (p / "ref.png").is_file()]
        if not present:
            raise DatasetFormatError(f"{self.root}: no sequence folders with ref.png (HPatches release layout)")
        self.split = split
        self.resize = resize
        self.sequences = select_sequences(present, split, splits_file, subset)

    def __len__(self) -> int:
        return len(self.sequences)

    def __iter__(self):
        return iter(self.sequences)

    def __getitem__(self, key: str | int) -> dict[str, np.ndarray]:
        name = self.sequences[key] if isinstance(key, int) else key
        if name not in self.sequences:
            raise KeyError(f"sequence {name!r} is not in split {self.split!r} of {self.root}")
        return load_hpatches_patches(self.root / name, resize=self.resize)
