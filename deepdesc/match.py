"""Job: image pairs, then descriptor matching (and optional geometric verification) into an hloc matches file.

::

    from deepdesc import match
    pairs = match.exhaustive_pairs(names)                # or sequential_pairs(names, 3), read_pairs(path)
    match.main(match.confs["mutual-nn"], pairs, "features.h5", "matches.h5")

Pairs files are hloc's: one ``name0 name1`` per line (so image names cannot hold spaces). With a ``geometry``
in the conf, only the matches that are inliers of a robust fundamental matrix (or homography) are written.

Everything is checked before the first pair is matched: the conf (:func:`check_conf`), the pairs (unknown
images, a pair listed twice or in both directions: kept once with a warning) and hloc's pair keys (two pairs
that hloc's ``names_to_pair`` gives one group are refused, :class:`~deepdesc.io.h5.PairCollisionError`). Each
pair records the digests of the two features it was matched from; a resumed run matches again the pairs whose
features changed since (an image described again from another file). The per-pair work is
:func:`match_pair`; the writing is :func:`deepdesc.io.h5.write_matches`.
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

from .engine import ray as ray_engine
from .features.types import Features
from .io import h5
from .matching.nearest_neighbor import match_descriptors
from .matching.verify import estimate_fundamental, estimate_homography
from .utils import atomic_path, logger

__all__ = [
    "ImagePairMatches",
    "check_conf",
    "check_pairs",
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
    """``exhaustive``, ``sequential:K`` or the path of a pairs file -> pairs of ``names``, checked
    (:func:`check_pairs`: every name one of ``names``, no name with white space, each pair once)."""
    if option == "exhaustive":
        pairs = exhaustive_pairs(names)
    elif option.startswith("sequential:"):
        try:
            k = int(option.partition(":")[2])
        except ValueError:
            raise ValueError(f"--pairs {option!r}: expected sequential:K with an integer K") from None
        pairs = sequential_pairs(names, k)
    elif Path(option).is_file():
        pairs = read_pairs(option)
    else:
        raise ValueError(f"--pairs {option!r}: expected 'exhaustive', 'sequential:K' or a pairs file")
    return check_pairs(pairs, names, source=option)


def read_pairs(path: str | os.PathLike) -> list[Pair]:
    """hloc pairs file: ``name0 name1`` per line (blank lines and ``#`` comments ignored); a file without any
    pair is an error."""
    pairs = []
    try:
        text = Path(path).read_text()
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text pairs file (expected 'name0 name1' per line)") from None
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 2:
            raise ValueError(f"{path}, line {number}: expected 'name0 name1', got {line!r}")
        pairs.append((fields[0], fields[1]))
    if not pairs:
        raise ValueError(f"{path}: no pairs in the file (expected 'name0 name1' per line)")
    return pairs


def _spaced(names: Iterable[str]) -> list[str]:
    return sorted({n for n in names if any(c.isspace() for c in n)})


def check_pairs(pairs: Sequence[Pair], names: Iterable[str] | None = None, source: str = "pairs") -> list[Pair]:
    """Pairs checked before any matching -> each pair once, in the given order.

    Raises ``ValueError`` for no pairs, a pair of an image with itself, names with white space (a pairs file
    cannot hold them), names not in ``names`` (when given), and :class:`~deepdesc.io.h5.PairCollisionError`
    for two pairs that hloc's pair naming gives one group (``a-0000.jpg`` and ``a/0000.jpg`` with one partner).
    A pair listed again, in either direction, is dropped with a warning.
    """
    pairs = [(str(a), str(b)) for a, b in pairs]
    if not pairs:
        raise ValueError(f"{source}: no image pairs to match")
    used = {n for p in pairs for n in p}
    spaced = _spaced(used)
    if spaced:
        raise ValueError(
            f"{source}: image names with white space cannot be written to an hloc pairs file ('name0 name1' per "
            f"line): {spaced[:5]}; rename these images"
        )
    if names is not None:
        missing = sorted(used - set(names))
        if missing:
            raise ValueError(f"{source}: {len(missing)} image(s) of the pairs are not among the images: {missing[:5]}")
    seen: set[frozenset[str]] = set()
    unique, repeated, keys = [], [], {}
    for a, b in pairs:
        if a == b:
            raise ValueError(f"{source}: the pair {a!r}, {b!r} matches an image with itself")
        if frozenset((a, b)) in seen:
            repeated.append((a, b))
            continue
        seen.add(frozenset((a, b)))
        unique.append((a, b))
        for key in (h5.names_to_pair(a, b), h5.names_to_pair(b, a)):  # the keys hloc's find_pair tries
            other = keys.setdefault(key, (a, b))
            if frozenset(other) != frozenset((a, b)):
                raise h5.PairCollisionError(
                    f"{source}: the pairs ({other[0]!r}, {other[1]!r}) and ({a!r}, {b!r}) get one group {key!r} in "
                    "hloc's matches file ('/' in image names becomes '-'), so one would be read as the other; "
                    "rename one of the images"
                )
    if repeated:
        logger.warning(
            "%s: %d pair(s) listed twice (or in both directions) matched once: %s",
            source, len(repeated), ", ".join(f"{a} {b}" for a, b in repeated[:3]),
        )  # fmt: skip
    return unique


def write_pairs(path: str | os.PathLike, pairs: Iterable[Pair]) -> Path:
    """Write an hloc pairs file atomically (names with white space raise ``ValueError``: it could not hold them)."""
    pairs = list(pairs)
    spaced = _spaced(n for p in pairs for n in p)
    if spaced:
        raise ValueError(f"{path}: image names with white space cannot be written to a pairs file: {spaced[:5]}")
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{a} {b}\n" for a, b in pairs))
    return Path(path)


def check_conf(conf: dict[str, Any] | str) -> dict[str, Any]:
    """A match conf (a dict or a name in :data:`confs`) checked -> a copy. ``ratio``: None or in (0, 1];
    ``geometry``: None, "fundamental" or "homography"; ``threshold_px`` > 0. Raises ``ValueError`` naming the
    option and the expected range."""
    if isinstance(conf, str):
        if conf not in confs:
            raise KeyError(f"unknown match conf {conf!r}; known: {', '.join(confs)}")
        conf = confs[conf]
    conf = copy.deepcopy(dict(conf))
    ratio = conf.get("ratio")
    if ratio is not None and not (isinstance(ratio, (int, float)) and 0 < ratio <= 1):
        raise ValueError(
            f"ratio (--ratio) must be in (0, 1] (Lowe's test: best distance < ratio x second), got {ratio}"
        )
    geometry = conf.get("geometry")
    if geometry not in (None, "fundamental", "homography"):
        raise ValueError(f"conf 'geometry' must be None, 'fundamental' or 'homography', got {geometry!r}")
    threshold = conf.get("threshold_px", 1.0)
    if not (isinstance(threshold, (int, float)) and np.isfinite(threshold) and threshold > 0):
        raise ValueError(f"threshold_px (--threshold) must be a positive number of pixels, got {threshold}")
    return conf


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
    engine: str = "local",
    **engine_options: Any,
) -> Path:
    """Match every pair (a list or an hloc pairs file) of ``features_path`` into ``matches_path``; resumable.

    Pairs already in the matches file are skipped unless ``overwrite`` or their features changed since they
    were matched; the file records the conf and the features file's settings and refuses to resume with other
    ones. The conf, the pairs and the images they name are checked before any matching. ``engine="ray"``: the
    same job on a Ray cluster, same output (:mod:`deepdesc.engine.ray`; ``engine_options`` as for
    :func:`deepdesc.extract.main`).
    """
    on_ray = ray_engine.use_engine(engine, engine_options)
    conf = check_conf(conf)
    pairs = read_pairs(pairs) if isinstance(pairs, (str, os.PathLike)) else list(pairs)
    h5.clean_temp_files(matches_path)
    h5.check_writable(matches_path)
    records = h5.image_records(features_path)
    if not records:
        raise ValueError(f"{features_path}: no features file, or no image in it")
    pairs = check_pairs(pairs, records, source=f"pairs of {features_path}")
    settings = {"match": conf, "features": h5.read_settings(features_path)}
    if on_ray:
        return ray_engine.run_match(
            main, conf, pairs, features_path, matches_path, settings, records, overwrite=overwrite, progress=progress,
            **engine_options,
        )  # fmt: skip
    h5.check_settings(matches_path, settings, overwrite=overwrite)
    cache: dict[str, dict[str, np.ndarray]] = {}

    def features(name: str) -> dict[str, np.ndarray]:
        if name not in cache:
            if len(cache) > 64:  # bounded memory on large sets
                cache.pop(next(iter(cache)))
            cache[name] = h5.read_features(features_path, name)
        return cache[name]

    todo = h5.pairs_to_match(matches_path, pairs, records, overwrite)
    for name0, name1 in tqdm(todo, desc="match", unit="pair", disable=not progress):
        digests = (records[name0]["digest"], records[name1]["digest"])
        matches, scores = match_pair(conf, features(name0), features(name1))
        n0 = len(features(name0)["keypoints"])
        h5.write_matches(
            matches_path, name0, name1, matches, scores, num_keypoints0=n0, overwrite=True, features_digests=digests
        )
    if todo:
        h5.compact(matches_path)
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
    check_conf({"ratio": ratio, "geometry": geometry, "threshold_px": threshold_px})  # before extracting
    f0, f1 = extractor.extract(image0), extractor.extract(image1)
    matches, distances = match_descriptors(f0.descriptors, f1.descriptors, mutual=True, ratio=ratio)
    model, inliers = estimate(f0.keypoints[matches[:, 0]], f1.keypoints[matches[:, 1]], threshold_px=threshold_px)
    return ImagePairMatches(f0, f1, matches, distances, inliers, model, geometry)
