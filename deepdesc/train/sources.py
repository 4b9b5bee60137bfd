"""Training data sources: the pair sources a config's ``data.sources`` names, and the fixed validation pairs.

* ``sheets``: the PhotoTour Notre Dame patch sheets in the shared ``data/train`` folder (every 10th sheet,
  from the 2nd, is validation);
* ``photos``, ``skimage``: the photos in ``data/train/photos`` and scikit-image's bundled photos (every 5th
  image, from the 2nd, is validation);
* ``phototour:PATH``: a labelled PhotoTour set (every 10th 3D point is validation);
  ``phototour-split1:ROOT`` .. ``phototour-split4:ROOT``: the original release's training sets;
* ``synthetic-noise``: smoothed random textures, a tiny self-contained source for tests.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import cv2
import numpy as np
import torch

from ..datasets.phototour import PhotoTour, decode_sheet
from ..features.image import read_image
from ..utils import logger, shared_dir
from .synthetic import Augment, ImagePairs, PairBatches, PhotoTourPairs, SheetPairs, ViewPairPairs

__all__ = ["PHOTOTOUR_SPLITS", "build_sources", "make_augment", "validation_pairs"]

# The original release's training sets (../shared/README.md); the subset of split4 is not published, so
# phototour-split4 uses all of the three sets.
PHOTOTOUR_SPLITS = {
    "split1": ("liberty", "yosemite"),
    "split2": ("liberty", "notredame"),
    "split3": ("yosemite", "notredame"),
    "split4": ("liberty", "notredame", "yosemite"),
}


# Train and validation sources read the same folders: decode each once per process (read-only results).
@functools.cache
def _sheet_patches(folder: Path) -> list[np.ndarray]:
    """One (256, 64, 64) uint8 array per PhotoTour sheet in ``folder`` (sorted by name)."""
    return [decode_sheet(path) for path in sorted(folder.glob("patches*.bmp"))]


@functools.cache
def _photos(folder: Path) -> list[np.ndarray]:
    """The decodable images of ``folder`` as (H, W) uint8 grayscale (sorted by name; other files skipped)."""
    out = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            out.append(read_image(path, "gray"))
        except ValueError:
            continue
    return out


@functools.cache
def _skimage_photos() -> list[np.ndarray]:
    """The natural photographs that ship with scikit-image (grayscale uint8)."""
    try:
        from skimage import color, data, util  # optional: deepdesc[train]
    except ImportError:
        raise ValueError(
            "data source 'skimage' needs scikit-image (pip install scikit-image, or deepdesc[train])"
        ) from None

    names = ["astronaut", "camera", "coffee", "chelsea", "rocket", "motorcycle_left", "brick", "grass", "gravel"]
    names += ["immunohistochemistry", "moon", "page", "text", "coins", "retina", "colorwheel", "hubble_deep_field"]
    out = []
    for name in names:
        try:
            img = getattr(data, name)()
        except Exception:  # some need an optional download (pooch); skip those
            continue
        if img.ndim == 3:
            img = color.rgb2gray(img[..., :3])
        out.append(util.img_as_ubyte(img))
    return out


def _split(items: list, every: int = 5) -> tuple[list, list]:
    """Deterministic split by source: every ``every``-th item (from the 2nd) is validation."""
    val = [x for i, x in enumerate(items) if i % every == 1]
    train = [x for i, x in enumerate(items) if i % every != 1]
    return train, val


def _pick(parts: tuple[list, list], split: str, name: str) -> list:
    chosen = parts[0] if split == "train" else parts[1]
    if not chosen:
        raise ValueError(f"data source {name!r} has no {split} images (is DEEPDESC_SHARED set?)")
    return chosen


def _expand_splits(names: list[str], weights: list[float]) -> list[tuple[str, float]]:
    """``phototour-splitK:ROOT`` -> one ``phototour:ROOT/<set>`` source per set of split K (weight shared)."""
    out = []
    for name, weight in zip(names, weights):
        kind, _, root = name.partition(":")
        if kind.startswith("phototour-"):
            sets = PHOTOTOUR_SPLITS.get(kind.removeprefix("phototour-"))
            if sets is None or not root:
                raise ValueError(f"unknown data source {name!r}; PhotoTour splits: phototour-split1..4:ROOT")
            out += [(f"phototour:{Path(root) / s}", float(weight) / len(sets)) for s in sets]
        else:
            out.append((name, weight))
    return out


def _phototour_source(root: str, split: str) -> PhotoTourPairs:
    """Labelled PhotoTour set at ``root`` (Brown layout with info.txt); every 10th 3D point is validation."""
    data = PhotoTour(root)
    if data.point_ids is None:
        raise ValueError(f"{root}: PhotoTour training needs info.txt (3D point id per patch)")
    points = np.unique(data.point_ids)
    chosen = points[(points % 10 == 1) == (split == "val")]
    return PhotoTourPairs(data.patches, data.point_ids, chosen)


def _multiview_source(
    root: str, split: str, distractor_fraction: float, batching: str = "random"
) -> PhotoTourPairs | ViewPairPairs:
    """``deepdesc make-patches`` output: ``ROOT`` (training views) or ``ROOT/val`` (validation views), with its
    single-view detections as distractor rows (``data.distractor_fraction`` of each batch from this source).
    ``batching = "view_pair"`` draws each training batch's rows from one pair of views (:class:`ViewPairPairs`);
    validation pairs are always drawn at random, so validation scores stay comparable across settings."""
    folder = Path(root) if split == "train" else Path(root) / "val"
    data = PhotoTour(folder)
    if data.point_ids is None:
        raise ValueError(f"{folder}: a multiview source needs info.txt (deepdesc make-patches writes it)")
    if batching == "view_pair" and split == "train":
        return ViewPairPairs(data.patches, data.point_ids, data.image_ids, distractor_fraction=distractor_fraction)
    return PhotoTourPairs(data.patches, data.point_ids, distractor_fraction=distractor_fraction)


def _noise_patches(n: int, seed: int) -> np.ndarray:
    """Smoothed random textures: a tiny self-contained source for tests."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, 64, 64), np.uint8)
    for i in range(n):
        x = cv2.GaussianBlur(rng.uniform(0, 255, (64, 64)).astype(np.float32), (0, 0), rng.uniform(1.0, 3.0))
        x = (x - x.mean()) / (x.std() + 1e-6) * 50 + 128
        out[i] = np.clip(x, 0, 255).astype(np.uint8)
    return out


def make_augment(overrides: dict) -> Augment:
    """:class:`~deepdesc.train.synthetic.Augment` with the config's ``data.augment`` overrides (lists -> tuples)."""
    known = {f.name for f in dataclasses.fields(Augment)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown data.augment keys {unknown}; known: {sorted(known)}")
    return Augment(**{k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()})


def build_sources(conf: dict, split: str) -> tuple[list, list[float]]:
    """The pair sources named in ``conf['data']['sources']`` for ``split`` ('train' or 'val'), and their weights."""
    data = conf["data"]
    options = {k: data[k] for k in ("region_scale", "blur_sigma") if data.get(k) is not None}
    aug = make_augment(data.get("augment", {}))
    root = shared_dir() / "data" / "train"
    sources, weights = [], []
    if len(data["sources"]) != len(data["weights"]):
        counts = f"{len(data['sources'])} vs {len(data['weights'])}"
        raise ValueError(f"data.sources and data.weights must have the same length ({counts})")
    for name, weight in _expand_splits(data["sources"], data["weights"]):
        if name == "sheets":
            sheets = _pick(_split(_sheet_patches(root / "notredame"), every=10), split, name)
            sources.append(SheetPairs(np.concatenate(sheets), augment=aug))
        elif name == "photos":
            photos = _pick(_split(_photos(root / "photos")), split, name)
            sources.append(ImagePairs(photos, augment=aug, patch_options=options))
        elif name == "skimage":
            photos = _pick(_split(_skimage_photos()), split, name)
            sources.append(ImagePairs(photos, augment=aug, patch_options=options))
        elif name.startswith("phototour:"):
            sources.append(_phototour_source(name.partition(":")[2], split))
        elif name.startswith("multiview:"):
            fraction, batching = data.get("distractor_fraction", 0.0), data.get("multiview_batching", "random")
            sources.append(_multiview_source(name.partition(":")[2], split, fraction, batching))
        elif name.startswith("synthetic-noise"):
            sources.append(SheetPairs(_noise_patches(64, seed=0 if split == "train" else 1)))
        else:
            raise ValueError(
                f"unknown data source {name!r}; known: sheets, photos, skimage, phototour:PATH, "
                "phototour-split1..4:ROOT, synthetic-noise"
            )
        weights.append(float(weight))
    return sources, weights


class _DistinctPairs:
    """A validation source drawing at most ``limit`` pairs per call: one per 3D point, so no pair repeats (a
    repeated point is a false negative of itself). Records the largest count asked for."""

    def __init__(self, source: PhotoTourPairs, limit: int):
        self.source, self.limit, self.asked = source, limit, 0

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
        self.asked = max(self.asked, n)
        return self.source.sample(rng, min(n, self.limit))


def validation_pairs(conf: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed validation set of corresponding pairs, (V, 1, 64, 64) twice.

    ``data.val_pairs`` pairs, except that a labelled source (``phototour:``, ``multiview:``) gives at most one pair
    per 3D point with two or more validation patches: asked for more, it gives that many and a warning names both
    numbers (repeated pairs would make FPR95 and precision@1 noise, and ``best.safetensors`` a choice on noise).
    """
    sources, weights = build_sources(conf, "val")
    names = [name for name, _ in _expand_splits(conf["data"]["sources"], conf["data"]["weights"])]
    capped = [_DistinctPairs(s, len(s.starts)) if isinstance(s, PhotoTourPairs) else s for s in sources]
    requested = conf["data"]["val_pairs"]
    batches = PairBatches(capped, requested, seed=conf["run"]["seed"] + 7919, weights=weights)
    a, p, valid = batches[0]
    for name, source in zip(names, capped):
        if isinstance(source, _DistinctPairs) and source.asked > source.limit:
            logger.warning(
                "data.val_pairs = %d: source %r has only %d distinct validation pairs (one per 3D point with two or "
                "more validation patches) but was asked for %d; validating on %d pairs in all, none repeated",
                requested,
                name,
                source.limit,
                source.asked,
                int(valid.sum()),
            )
    return a[valid], p[valid]
