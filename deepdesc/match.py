"""Job: image pairs, then descriptor matching (and optional geometric verification) into an hloc matches file.

::

    from deepdesc import match
    pairs = match.exhaustive_pairs(names)                # or sequential_pairs(names, 3), read_pairs(path)
    match.main(match.confs["mutual-nn"], pairs, "features.h5", "matches.h5")

Pairs files are hloc's: one ``name0 name1`` per line. With a ``geometry`` in the conf, only the matches
that are inliers of a robust fundamental matrix (or homography) are written.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .features.types import Features
from .io import h5
from .matching.nearest_neighbor import match_descriptors
from .matching.verify import estimate_fundamental, estimate_homography
from .utils import atomic_path

__all__ = [
    "ImagePairMatches",
    "confs",
    "exhaustive_pairs",
    "main",
    "match_images",
    "match_pair",
    "parse_pairs_option",
    "read_pairs",
    "sequential_pairs",
    "write_pairs",
]

#: Named matching confs. ``ratio``: Lowe's ratio test on top of mutual nearest neighbours (None: off);
#: ``geometry``: None, "fundamental" or "homography" (MAGSAC, ``threshold_px``).
confs: dict[str, dict[str, Any]] = {
    "mutual-nn": {"mutual": True, "ratio": None, "geometry": None, "threshold_px": 1.0},
    "ratio": {"mutual": True, "ratio": 0.8, "geometry": None, "threshold_px": 1.0},
    "mutual-nn-verified": {"mutual": True, "ratio": None, "geometry": "fundamental", "threshold_px": 1.0},
}

Pair = tuple[str, str]


def exhaustive_pairs(names: Sequence[str]) -> list[Pair]:
    """Every unordered pair of ``names`` once, in the order of ``names``."""
    return list(combinations(names, 2))


def sequential_pairs(names: Sequence[str], overlap: int) -> list[Pair]:
    """Pairs of images at most ``overlap`` apart in ``names`` (a video or a walk around a scene)."""
    if overlap < 1:
        raise ValueError(f"sequential overlap must be at least 1, got {overlap}")
    return [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, min(i + 1 + overlap, len(names)))]


def parse_pairs_option(option: str, names: Sequence[str]) -> list[Pair]:
    """``exhaustive``, ``sequential:K`` or the path of a pairs file -> pairs of ``names``."""
    if option == "exhaustive":
        return exhaustive_pairs(names)
    if option.startswith("sequential:"):
        try:
            k = int(option.partition(":")[2])
        except ValueError:
            raise ValueError(f"--pairs {option!r}: expected sequential:K with an integer K") from None
        return sequential_pairs(names, k)
    if Path(option).is_file():
        return read_pairs(option)
    raise ValueError(f"--pairs {option!r}: expected 'exhaustive', 'sequential:K' or a pairs file")


def read_pairs(path: str | os.PathLike) -> list[Pair]:
    """hloc pairs file: ``name0 name1`` per line (blank lines and ``#`` comments ignored)."""
    pairs = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 2:
            raise ValueError(f"{path}, line {number}: expected 'name0 name1', got {line!r}")
        pairs.append((fields[0], fields[1]))
    return pairs


def write_pairs(path: str | os.PathLike, pairs: Iterable[Pair]) -> Path:
    """Write an hloc pairs file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{a} {b}\n" for a, b in pairs))
    return Path(path)


def match_pair(
    conf: dict[str, Any], feats0: dict[str, np.ndarray], feats1: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Match two feature dicts (``keypoints`` (N, 2), ``descriptors`` (N, D)) -> matches (K, 2), scores (K,).

    Scores are ``1 / (1 + L2 distance)`` (in (0, 1], larger is better, as hloc expects).
    """
    matches, distances = match_descriptors(
        feats0["descriptors"], feats1["descriptors"], mutual=conf.get("mutual", True), ratio=conf.get("ratio")
    )
    geometry = conf.get("geometry")
    if geometry is not None and len(matches):
        estimate = {"fundamental": estimate_fundamental, "homography": estimate_homography}.get(geometry)
        if estimate is None:
            raise ValueError(f"conf 'geometry' must be None, 'fundamental' or 'homography', got {geometry!r}")
        p0, p1 = feats0["keypoints"][matches[:, 0]], feats1["keypoints"][matches[:, 1]]
        _, inliers = estimate(p0, p1, threshold_px=conf.get("threshold_px", 1.0))
        matches, distances = matches[inliers], distances[inliers]
    return matches, (1.0 / (1.0 + distances)).astype(np.float32)


def main(
    conf: dict[str, Any] | str,
    pairs: Sequence[Pair] | str | os.PathLike,
    features_path: str | os.PathLike,
    matches_path: str | os.PathLike,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Match every pair (a list or an hloc pairs file) of ``features_path`` into ``matches_path``; resumable.

    Pairs already in the matches file are skipped unless ``overwrite``; the file records the conf and the
    features file's settings and refuses to resume with other ones.
    """
    conf = copy.deepcopy(confs[conf]) if isinstance(conf, str) else dict(conf)
    pairs = read_pairs(pairs) if isinstance(pairs, (str, os.PathLike)) else list(pairs)
    settings = {"match": conf, "features": h5.read_settings(features_path)}
    h5.check_settings(matches_path, settings, overwrite=overwrite)
    cache: dict[str, dict[str, np.ndarray]] = {}

    def features(name: str) -> dict[str, np.ndarray]:
        if name not in cache:
            if len(cache) > 64:  # bounded memory on large sets
                cache.pop(next(iter(cache)))
            cache[name] = h5.read_features(features_path, name)
        return cache[name]

    for name0, name1 in tqdm(pairs, desc="match", unit="pair", disable=not progress):
        if not overwrite and h5.has_matches(matches_path, name0, name1):
            continue
        matches, scores = match_pair(conf, features(name0), features(name1))
        n0 = len(features(name0)["keypoints"])
        h5.write_matches(matches_path, name0, name1, matches, scores, num_keypoints0=n0, overwrite=overwrite)
    return Path(matches_path)


#: Below these a verified model is reported as unreliable (two unrelated images give a few chance inliers).
MIN_INLIERS = 15
MIN_INLIER_RATIO = 0.05


@dataclass
class ImagePairMatches:
    """Matches between two images: features, matches (K, 2), L2 distances (K,), inlier mask (K,), model (3, 3)."""

    features0: Features
    features1: Features
    matches: np.ndarray
    distances: np.ndarray
    inliers: np.ndarray
    model: np.ndarray | None
    geometry: str

    @property
    def num_inliers(self) -> int:
        return int(self.inliers.sum())

    @property
    def reliable(self) -> bool:
        """Whether the verified model is supported by enough inliers (:data:`MIN_INLIERS`, :data:`MIN_INLIER_RATIO`)."""
        n = len(self.matches)
        return self.model is not None and self.num_inliers >= MIN_INLIERS and self.num_inliers >= MIN_INLIER_RATIO * n

    def save_npz(self, path: str | os.PathLike) -> Path:
        """keypoints1/2 (N, 2), matches, distances, inliers and the model (NaN when none), atomically."""
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(
                f,
                keypoints1=self.features0.keypoints,
                keypoints2=self.features1.keypoints,
                matches=self.matches,
                distances=self.distances,
                inliers=self.inliers,
                model=self.model if self.model is not None else np.full((3, 3), np.nan),
            )
        return Path(path)


def match_images(
    extractor: Any,
    image0: Any,
    image1: Any,
    ratio: float | None = None,
    geometry: str = "homography",
    threshold_px: float = 3.0,
) -> ImagePairMatches:
    """Extract, match (mutual nearest neighbours, optional ratio test) and verify two images (paths or arrays)."""
    estimate = {"fundamental": estimate_fundamental, "homography": estimate_homography}.get(geometry)
    if estimate is None:
        raise ValueError(f"geometry must be 'fundamental' or 'homography', got {geometry!r}")
    f0, f1 = extractor.extract(image0), extractor.extract(image1)
    matches, distances = match_descriptors(f0.descriptors, f1.descriptors, mutual=True, ratio=ratio)
    model, inliers = estimate(f0.keypoints[matches[:, 0]], f1.keypoints[matches[:, 1]], threshold_px=threshold_px)
    return ImagePairMatches(f0, f1, matches, distances, inliers, model, geometry)
