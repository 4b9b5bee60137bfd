"""Features and matches in HDF5 files with the layout of hloc (Hierarchical-Localization).

Features file: one group per image, named by the image path relative to the image root (``a/b.jpg``: names
with ``/`` become nested groups), holding

- ``keypoints``   (N, 2) float32: x, y in pixels, OpenCV convention (centre of the top-left pixel at (0, 0)).
  This is what hloc stores; hloc adds 0.5 when it imports keypoints into COLMAP (see :mod:`deepdesc.colmap`).
- ``descriptors`` (D, N) float32, or float16 with ``as_half``: transposed, as hloc stores them.
- ``scores``      (N,) float32: detector response (OpenCV ``response``).
- ``scales``      (N,) float32: keypoint size in pixels (OpenCV ``size``, a diameter).
- ``angles``      (N,) float32: orientation in degrees (OpenCV ``angle``).
- ``image_size``  (2,) int64: (width, height) of the original image.

Unlike hloc, ``as_half`` only halves the descriptors: keypoints stay float32 (float16 keeps just 11 bits, a
2-pixel step beyond x = 2048). Optional fields are written only when given.

Matches file: one group per pair, named ``names_to_pair(name0, name1)`` = ``name0/name1`` with each ``/`` inside
an image name replaced by ``-`` (so ``a-b.jpg/c.jpg``: two nested groups), holding ``matches0`` (N0,) int32,
the index in image 1 matched to each keypoint of image 0 or -1, and ``matching_scores0`` (N0,) float32 (0 where
unmatched). hloc writes int16/float16 but reads any dtype; int32 avoids overflow beyond 32767 keypoints.

Crash safety: every write opens the file, writes one image (or pair) into an anonymous group, links it under
its name once complete and closes (flushes) the file. A process killed mid-write leaves the earlier groups
readable and no trace of the one being written: a reader that lists groups, as hloc does, never sees a
half-written image. (Files from older deepdesc versions may hold groups marked incomplete with the attribute
``deepdesc_complete = False``; they are ignored and replaced. Groups written by other tools count as complete.)
The file's root attribute ``deepdesc_settings`` records what produced it (:func:`check_settings`).

Scales: ``scales`` holds OpenCV's keypoint ``size``, a *diameter* in pixels (about 2 sigma of the DoG scale);
hloc and pycolmap read a field of that name as a sigma-like scale, i.e. about half of it.

Files are opened with HDF5's default (earliest) format, whose superblock has no "open for writing" flag that
a killed writer would leave set.
"""

from __future__ import annotations

import json
import os
from typing import Any

import h5py
import numpy as np

from ..errors import OutputMismatchError

__all__ = [
    "names_to_pair",
    "write_features",
    "read_features",
    "has_image",
    "list_images",
    "write_matches",
    "read_matches",
    "has_matches",
    "check_settings",
    "check_writable",
    "read_settings",
]

COMPLETE_ATTR = "deepdesc_complete"
SETTINGS_ATTR = "deepdesc_settings"  # JSON of what produced the file (model, options): resume checks it
_FEATURE_KEYS = ("keypoints", "descriptors", "scores", "scales", "angles", "image_size")
_PER_KEYPOINT = ("scores", "scales", "angles")


def names_to_pair(name0: str, name1: str, separator: str = "/") -> str:
    """hloc's pair key: ``name0/name1`` with ``/`` inside each image name replaced by ``-``."""
    return separator.join((name0.replace("/", "-"), name1.replace("/", "-")))


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"image name must be a non-empty string, got {name!r}")
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"image name {name!r} must be a relative path without empty, '.' or '..' components")
    return name


def _is_complete(group: h5py.Group) -> bool:
    return bool(group.attrs.get(COMPLETE_ATTR, True))


def _write_group(fd: h5py.File, name: str, arrays: dict[str, np.ndarray], overwrite: bool, exists: bool) -> None:
    """Write ``arrays`` as the group ``name``, replacing an incomplete (or, with ``overwrite``, any) old one.

    The datasets go into an anonymous group that is linked under ``name`` only once complete, so a reader
    that lists groups (hloc's ``list_h5_names``) never sees a half-written image or pair.
    """
    if name in fd:
        old = fd[name]
        if isinstance(old, h5py.Group) and any(isinstance(v, h5py.Group) for v in old.values()):
            raise ValueError(f"{name!r} is a folder of other entries in {fd.filename}, not an image or pair")
        if exists and not overwrite:
            raise FileExistsError(f"{name!r} is already in {fd.filename}; pass overwrite=True to replace it")
        del fd[name]
    grp = h5py.Group(h5py.h5g.create(fd.id, None))  # not linked anywhere yet
    for key, arr in arrays.items():
        grp.create_dataset(key, data=arr)
    grp.attrs[COMPLETE_ATTR] = True
    parent = name.rpartition("/")[0]
    if parent:
        fd.require_group(parent)
    fd[name] = grp


def _as_array(value: Any, key: str) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.dtype.kind not in "uif":
        raise ValueError(f"features[{key!r}]: expected a real-valued array, got dtype {arr.dtype}")
    return arr


def _feature_arrays(features: dict[str, Any], as_half: bool) -> dict[str, np.ndarray]:
    """Validate a features dict and return the datasets to write, in the file's layout."""
    unknown = set(features) - set(_FEATURE_KEYS)
    if unknown:
        raise ValueError(f"unknown feature keys {sorted(unknown)}; expected some of {list(_FEATURE_KEYS)}")
    if "keypoints" not in features or "descriptors" not in features:
        raise ValueError("features need 'keypoints' (N, 2) or (N, 5) and 'descriptors' (N, D)")
    kpts = _as_array(features["keypoints"], "keypoints")
    if kpts.ndim != 2 or kpts.shape[1] not in (2, 5):
        raise ValueError(f"features['keypoints']: expected shape (N, 2) or (N, 5), got {kpts.shape}")
    n = kpts.shape[0]
    desc = _as_array(features["descriptors"], "descriptors")
    if desc.ndim != 2 or desc.shape[0] != n:
        raise ValueError(f"features['descriptors']: expected shape ({n}, D) for {n} keypoints, got {desc.shape}")
    out = {
        "keypoints": np.ascontiguousarray(kpts[:, :2], dtype=np.float32),
        "descriptors": np.ascontiguousarray(desc.T, dtype=np.float16 if as_half else np.float32),
    }
    # (N, 5) keypoints = x, y, size, angle, response fill the optional fields that are not given.
    from_columns = {"scales": 2, "angles": 3, "scores": 4} if kpts.shape[1] == 5 else {}
    for key in _PER_KEYPOINT:
        if key in features and features[key] is not None:
            arr = _as_array(features[key], key).reshape(-1)
        elif key in from_columns:
            arr = kpts[:, from_columns[key]]
        else:
            continue
        if arr.shape != (n,):
            raise ValueError(f"features[{key!r}]: expected {n} values, got shape {arr.shape}")
        out[key] = np.asarray(arr, dtype=np.float32)
    if features.get("image_size") is not None:
        size = _as_array(features["image_size"], "image_size").reshape(-1)
        if size.shape != (2,):
            raise ValueError(f"features['image_size']: expected (width, height), got shape {size.shape}")
        out["image_size"] = size.astype(np.int64)
    return out


def has_image(path: str | os.PathLike, name: str) -> bool:
    """Whether the features file at ``path`` exists and holds a complete group for image ``name``."""
    if not os.path.exists(path):
        return False
    with h5py.File(path, "r") as fd:
        obj = fd.get(_check_name(name))
        return isinstance(obj, h5py.Group) and "keypoints" in obj and _is_complete(obj)


def write_features(
    path: str | os.PathLike,
    name: str,
    features: dict[str, Any],
    overwrite: bool = False,
    as_half: bool = False,
) -> None:
    """Write the features of image ``name`` into the HDF5 file at ``path`` (created if needed), then flush.

    ``features``: ``keypoints`` (N, 2) x, y or (N, 5) x, y, size, angle, response (OpenCV convention);
    ``descriptors`` (N, D); optional ``scores``, ``scales``, ``angles`` (N,) and ``image_size`` (width, height).
    Numpy arrays or torch tensors. ``as_half`` stores descriptors as float16. An image already complete in the
    file raises ``FileExistsError`` unless ``overwrite``; an incomplete one (interrupted write) is replaced.
    """
    _check_name(name)
    arrays = _feature_arrays(features, as_half)
    exists = has_image(path, name)
    with h5py.File(path, "a") as fd:
        _write_group(fd, name, arrays, overwrite, exists)


def read_features(path: str | os.PathLike, name: str) -> dict[str, np.ndarray]:
    """Read the features of image ``name``: ``keypoints`` (N, 2) float32, ``descriptors`` (N, D) float32, and the
    optional ``scores``, ``scales``, ``angles`` (N,) float32 and ``image_size`` (2,) int64 that were written."""
    with h5py.File(path, "r") as fd:
        grp = fd.get(_check_name(name))
        if not isinstance(grp, h5py.Group) or "keypoints" not in grp or not _is_complete(grp):
            raise KeyError(f"no complete features for image {name!r} in {path}")
        out: dict[str, np.ndarray] = {}
        for key in _FEATURE_KEYS:
            if key in grp:
                out[key] = grp[key][()]
    out["keypoints"] = out["keypoints"].astype(np.float32, copy=False)
    if "descriptors" in out:
        out["descriptors"] = np.ascontiguousarray(out["descriptors"].T, dtype=np.float32)
    for key in _PER_KEYPOINT:
        if key in out:
            out[key] = out[key].astype(np.float32, copy=False)
    if "image_size" in out:
        out["image_size"] = out["image_size"].astype(np.int64, copy=False)
    return out


def list_images(path: str | os.PathLike) -> list[str]:
    """Sorted names of the images with complete features (a ``keypoints`` dataset) in the file at ``path``."""
    names: list[str] = []

    def visit(key: str, obj: Any) -> None:
        if isinstance(obj, h5py.Group) and isinstance(obj.get("keypoints"), h5py.Dataset) and _is_complete(obj):
            names.append(key)

    with h5py.File(path, "r") as fd:
        fd.visititems(visit)
    return sorted(names)


def _find_pair(fd: h5py.File, name0: str, name1: str) -> tuple[str, bool] | None:
    """Key of the pair group and whether it is stored reversed (name1, name0); hloc's lookup order."""
    for sep in ("/", "_"):  # "_": hloc's older format
        for key, reverse in ((names_to_pair(name0, name1, sep), False), (names_to_pair(name1, name0, sep), True)):
            obj = fd.get(key)
            if isinstance(obj, h5py.Group) and "matches0" in obj and _is_complete(obj):
                return key, reverse
    return None


def has_matches(path: str | os.PathLike, name0: str, name1: str) -> bool:
    """Whether the matches file at ``path`` holds complete matches for the pair, in either order."""
    if not os.path.exists(path):
        return False
    with h5py.File(path, "r") as fd:
        return _find_pair(fd, name0, name1) is not None


def write_matches(
    path: str | os.PathLike,
    name0: str,
    name1: str,
    matches: Any,
    scores: Any = None,
    num_keypoints0: int | None = None,
    overwrite: bool = False,
) -> None:
    """Write matches (K, 2) int (index in image 0, index in image 1) and ``scores`` (K,) for a pair, then flush.

    Stored as hloc's ``matches0`` (N0,) with -1 where unmatched; ``N0`` is ``num_keypoints0``, by default one
    more than the largest index in image 0. Each keypoint of image 0 may appear in at most one match.
    ``scores`` default to 1. The pair already complete in the file raises ``FileExistsError`` unless
    ``overwrite``.
    """
    _check_name(name0)
    _check_name(name1)
    m = np.asarray(matches)
    if m.size == 0:
        m = m.reshape(0, 2)
    if m.ndim != 2 or m.shape[1] != 2 or (m.size and m.dtype.kind not in "ui"):
        raise ValueError(f"matches: expected integer array of shape (K, 2), got {m.shape} {m.dtype}")
    m = m.astype(np.int64)
    s = np.ones(len(m), np.float32) if scores is None else np.asarray(scores, dtype=np.float32).reshape(-1)
    if s.shape != (len(m),):
        raise ValueError(f"scores: expected {len(m)} values, got shape {s.shape}")
    if len(m) and m.min() < 0:
        raise ValueError("matches contain negative indices")
    if len(np.unique(m[:, 0])) != len(m):
        raise ValueError("a keypoint of image 0 appears in several matches; hloc's matches0 allows one each")
    n0 = int(m[:, 0].max()) + 1 if len(m) else 0
    if num_keypoints0 is not None:
        if num_keypoints0 < n0:
            raise ValueError(f"num_keypoints0={num_keypoints0} but matches index keypoint {n0 - 1} of image 0")
        n0 = int(num_keypoints0)
    if len(m) and m[:, 1].max() > np.iinfo(np.int32).max:
        raise ValueError("match indices exceed int32")
    matches0 = np.full(n0, -1, np.int32)
    matches0[m[:, 0]] = m[:, 1]
    scores0 = np.zeros(n0, np.float32)
    scores0[m[:, 0]] = s
    key = names_to_pair(name0, name1)
    exists = has_matches(path, name0, name1)
    with h5py.File(path, "a") as fd:
        if exists:
            old = _find_pair(fd, name0, name1)
            if old is not None and old[0] != key:
                if not overwrite:
                    raise FileExistsError(f"pair {name0!r}, {name1!r} is already in {path} as {old[0]!r}")
                del fd[old[0]]
                exists = False
        _write_group(fd, key, {"matches0": matches0, "matching_scores0": scores0}, overwrite, exists)


def read_matches(path: str | os.PathLike, name0: str, name1: str) -> tuple[np.ndarray, np.ndarray]:
    """Matches of a pair: (K, 2) int64 (index in image 0, index in image 1) sorted by the first column, and
    scores (K,) float32 (1 when the file has none). A pair stored as (name1, name0) is swapped back."""
    with h5py.File(path, "r") as fd:
        found = _find_pair(fd, name0, name1)
        if found is None:
            raise KeyError(f"no matches for pair {name0!r}, {name1!r} in {path}")
        key, reverse = found
        matches0 = fd[key]["matches0"][()].astype(np.int64)
        scores0 = fd[key]["matching_scores0"][()] if "matching_scores0" in fd[key] else None
    idx = np.nonzero(matches0 != -1)[0]
    matches = np.stack([idx, matches0[idx]], axis=1)
    scores = np.ones(len(idx), np.float32) if scores0 is None else scores0[idx].astype(np.float32)
    if reverse:
        matches = matches[:, ::-1]
        order = np.argsort(matches[:, 0], kind="stable")
        matches, scores = np.ascontiguousarray(matches[order]), scores[order]
    return matches, scores


def read_settings(path: str | os.PathLike) -> dict[str, Any] | None:
    """The settings recorded in the file at ``path`` (a JSON dict), or None when it has none or does not exist."""
    if not os.path.exists(path):
        return None
    with h5py.File(path, "r") as fd:
        text = fd.attrs.get(SETTINGS_ATTR)
    return None if text is None else json.loads(text)


def _differences(old: Any, new: Any, where: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _differences(old.get(key), new.get(key), f"{where}.{key}" if where else str(key))
        return out
    return [] if old == new else [f"{where or 'settings'}: {old!r} in the file, {new!r} now"]


def check_writable(path: str | os.PathLike) -> None:
    """Raise ``OSError`` naming ``path`` unless it is (or can be created as) an HDF5 file open for writing."""
    existed = os.path.exists(path)
    try:
        with h5py.File(path, "a"):
            pass
    except OSError as exc:
        kind = "an existing file that is not HDF5 or not writable" if existed else "a file that cannot be created"
        raise OSError(f"output {path}: {kind} ({exc.__class__.__name__}: {exc})") from None
    if not existed:
        os.unlink(path)


def check_settings(path: str | os.PathLike, settings: dict[str, Any], overwrite: bool = False) -> None:
    """Record ``settings`` in the file at ``path`` (created if needed), or check them against the recorded ones.

    A file written with other settings (another model, patch or detector options, descriptor dtype) raises
    :class:`~deepdesc.errors.OutputMismatchError` saying what differs, so that one file never mixes two
    descriptor spaces; with ``overwrite`` every image in it is then deleted and the new settings recorded. A
    file with image groups but no settings (written by another tool or an older deepdesc) counts as different.
    Raises ``OSError`` naming the file when it cannot be created or is not HDF5.
    """
    settings = json.loads(json.dumps(settings, default=str))  # as it will read back
    try:
        fd = h5py.File(path, "a")
    except OSError as exc:
        raise OSError(f"{path}: cannot open as an HDF5 file for writing ({exc})") from None
    with fd:
        text = fd.attrs.get(SETTINGS_ATTR)
        diff = _differences(json.loads(text), settings) if text is not None else []
        if text is None and len(fd):
            diff = ["no settings recorded (written by another tool or an older deepdesc)"]
        if diff and not overwrite:
            raise OutputMismatchError(
                f"{path} was written with other settings ({'; '.join(diff[:6])}); resuming would mix two "
                "descriptor spaces in one file. Pass --overwrite to start it again, or write to another file"
            )
        if diff:  # overwrite with other settings: nothing of the old file may stay
            for key in list(fd.keys()):
                del fd[key]
        fd.attrs[SETTINGS_ATTR] = json.dumps(settings, sort_keys=True)
