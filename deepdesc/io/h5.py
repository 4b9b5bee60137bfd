"""Features and matches in HDF5 files with the layout of hloc (Hierarchical-Localization).

Features file (``features.h5``): one group per image, named by the image path relative to the image root
(``a/b.jpg``: names with ``/`` become nested groups), holding the datasets

- ``keypoints``   (N, 2) float32: x, y in pixels of the ORIGINAL image, OpenCV convention (centre of the
  top-left pixel at (0, 0)). This is what hloc stores; hloc adds 0.5 when it imports keypoints into COLMAP.
- ``descriptors`` (D, N) float32, or float16 with ``as_half``: transposed, as hloc stores them.
- ``scores``      (N,) float32: detector response (OpenCV ``response``).
- ``scales``      (N,) float32: keypoint size in pixels of the original image (OpenCV ``size``, a diameter).
- ``angles``      (N,) float32: orientation in degrees (OpenCV ``angle``).
- ``image_size``  (2,) int64: (width, height) of the original image.

and the attributes (hloc ignores attributes)

- ``deepdesc_complete`` (bool): written True; groups of older deepdesc versions marked False are ignored.
- ``deepdesc_source`` (str): absolute path of the image file the features were computed from.
- ``deepdesc_fingerprint`` (str): ``"SIZE:MTIME_NS"`` of that file (:func:`file_fingerprint`) when described.
- ``deepdesc_digest`` (str): hex digest of the group's datasets (:func:`features_digest`); matches record it.

Matches file (``matches.h5``): one group per pair, named ``names_to_pair(name0, name1)`` = ``name0/name1`` with
each ``/`` inside an image name replaced by ``-`` (hloc's naming, so ``a-b.jpg/c.jpg``: two nested groups),
holding ``matches0`` (N0,) int32, the index in image 1 matched to each keypoint of image 0 or -1, and
``matching_scores0`` (N0,) float32 (0 where unmatched). hloc writes int16/float16 but reads any dtype; int32
avoids overflow beyond 32767 keypoints. Attributes: ``deepdesc_complete``; ``deepdesc_name0`` and
``deepdesc_name1`` (str), the original image names; ``deepdesc_features0`` and ``deepdesc_features1`` (str), the
``deepdesc_digest`` of the two features the pair was matched from (a job recomputes a pair whose features
changed since). hloc's pair naming is not one-to-one (``a-0000.jpg`` and ``a/0000.jpg`` give one key) and hloc's
``find_pair`` knows no other naming, so two pairs that share a key are refused (:class:`PairCollisionError`),
never stored one over the other.

Both files carry the root attribute ``deepdesc_settings``: JSON of what produced the file (extractor, model,
weights digest, options, ``resize_max``; for matches, the match conf and the features file's settings), checked
on resume by :func:`check_settings`.

Crash safety: every write opens the file, writes one image (or pair) into an anonymous group, links it under
its name once complete and closes the file. HDF5 rewrites its metadata in place when it closes, so the file is
written through a rollback journal (:mod:`deepdesc.io.journal`): a process killed at any point, even while
HDF5 flushes, leaves the file as it was before that write, and the next open rolls it back (an HDF5 reader
that is not deepdesc, such as hloc, must not open a file with a ``.NAME.journal`` beside it before deepdesc
has). Earlier groups stay readable and there is no trace of the one being written: a reader that lists
groups, as hloc does, never sees a half-written image. Groups written by other tools count as complete.
Replacing groups leaves unused space that HDF5 never reuses; :func:`compact` (called by the jobs when the file
holds much of it) copies the live groups into a temporary file ``.NAME.*.tmp`` beside it and renames it over
the file; temporary files left by killed runs are removed by :func:`clean_temp_files`.

Concurrency: HDF5 locks files (one writer or several readers); a file another process holds open raises
:class:`FileInUseError` naming it. Files are opened with HDF5's default (earliest) format, whose superblock has
no "open for writing" flag that a killed writer would leave set.

Scales: ``scales`` holds OpenCV's keypoint ``size``, a *diameter* in pixels (about 2 sigma of the DoG scale);
hloc and pycolmap read a field of that name as a sigma-like scale, i.e. about half of it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import DeepDescError, OutputMismatchError
from ..utils import atomic_path, logger
from .journal import journal_path, journaled, recover

__all__ = [
    "FileInUseError",
    "PairCollisionError",
    "check_settings",
    "check_writable",
    "clean_temp_files",
    "compact",
    "complete_groups",
    "features_digest",
    "file_fingerprint",
    "has_image",
    "has_matches",
    "image_records",
    "list_images",
    "names_to_pair",
    "open_h5",
    "pair_record",
    "pair_records",
    "pairs_to_match",
    "read_features",
    "read_matches",
    "read_settings",
    "remove_images",
    "wasted_bytes",
    "write_features",
    "write_matches",
]

COMPLETE_ATTR = "deepdesc_complete"
SETTINGS_ATTR = "deepdesc_settings"  # JSON of what produced the file (model, options): resume checks it
SOURCE_ATTR = "deepdesc_source"
FINGERPRINT_ATTR = "deepdesc_fingerprint"
DIGEST_ATTR = "deepdesc_digest"
NAME_ATTRS = ("deepdesc_name0", "deepdesc_name1")
FEATURES_ATTRS = ("deepdesc_features0", "deepdesc_features1")
_FEATURE_KEYS = ("keypoints", "descriptors", "scores", "scales", "angles", "image_size")
_PER_KEYPOINT = ("scores", "scales", "angles")


class FileInUseError(DeepDescError, OSError):
    """Another process holds the HDF5 file open (HDF5's file lock); the message names the file."""


class PairCollisionError(DeepDescError, ValueError):
    """Two image pairs get one group under hloc's pair naming; the message names the images."""


def _is_lock_error(exc: OSError) -> bool:
    text = str(exc).lower()
    return exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK) or "unable to lock file" in text or "errno = 11" in text


@contextlib.contextmanager
def open_h5(path: str | os.PathLike, mode: str = "r") -> Iterator[h5py.File]:
    """``h5py.File(path, mode)``; a file locked by another process raises :class:`FileInUseError` naming it.

    Modes ``"a"`` and ``"r+"`` write through a rollback journal (:mod:`deepdesc.io.journal`): a process killed
    while the file is open leaves it as it was before, and the next open (any mode) rolls such a file back.
    ``"w"`` is for new files (pair it with :func:`~deepdesc.utils.atomic_path`).
    """
    access = "read" if mode == "r" else "write"
    in_use = FileInUseError(
        f"{path} is open in another process (HDF5 file lock), so it cannot be opened to {access}: wait for "
        "that process to finish (or close the file there), or write to another file"
    )
    if mode in ("a", "r+"):
        with contextlib.ExitStack() as stack:
            try:
                file = stack.enter_context(journaled(path, create=mode == "a"))
            except BlockingIOError:
                raise in_use from None
            yield stack.enter_context(h5py.File(file, mode))
        return
    try:
        if mode == "r":
            recover(path)
        fd = h5py.File(path, mode)
    except BlockingIOError:
        raise in_use from None
    except OSError as exc:
        if _is_lock_error(exc):
            raise in_use from None
        raise
    with fd:
        yield fd


def names_to_pair(name0: str, name1: str, separator: str = "/") -> str:
    """hloc's pair key: ``name0/name1`` with ``/`` inside each image name replaced by ``-``."""
    return separator.join((name0.replace("/", "-"), name1.replace("/", "-")))


def file_fingerprint(path: str | os.PathLike) -> str:
    """``"SIZE:MTIME_NS"`` of a file: changes when the file is replaced or edited, at the cost of one ``stat``.

    A content hash would also catch a same-size rewrite that restores the modification time, but it reads
    every image on every resume (gigabytes on large sets); size plus nanosecond mtime is what ``make`` and
    rsync rely on, and the recorded source path catches another folder with the same file names.
    """
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}"


def features_digest(arrays: dict[str, np.ndarray]) -> str:
    """Hex SHA-256 (first 32 digits) of a features group's datasets as stored (names, dtypes, shapes, bytes)."""
    digest = hashlib.sha256()
    for key in sorted(arrays):
        arr = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}:{arr.dtype.str}:{arr.shape};".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()[:32]


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"image name must be a non-empty string, got {name!r}")
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"image name {name!r} must be a relative path without empty, '.' or '..' components")
    return name


def _is_complete(group: h5py.Group) -> bool:
    return bool(group.attrs.get(COMPLETE_ATTR, True))


def _write_group(
    fd: h5py.File,
    name: str,
    arrays: dict[str, np.ndarray],
    overwrite: bool,
    exists: bool,
    attrs: dict[str, str] | None = None,
) -> None:
    """Write ``arrays`` (and string ``attrs``) as the group ``name``, replacing an incomplete (or, with
    ``overwrite``, any) old one.

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
    for key, value in (attrs or {}).items():
        grp.attrs[key] = value
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
    with open_h5(path, "r") as fd:
        obj = fd.get(_check_name(name))
        return isinstance(obj, h5py.Group) and "keypoints" in obj and _is_complete(obj)


def write_features(
    path: str | os.PathLike,
    name: str,
    features: dict[str, Any],
    overwrite: bool = False,
    as_half: bool = False,
    source: str | os.PathLike | None = None,
) -> None:
    """Write the features of image ``name`` into the HDF5 file at ``path`` (created if needed), then flush.

    ``features``: ``keypoints`` (N, 2) x, y or (N, 5) x, y, size, angle, response (OpenCV convention);
    ``descriptors`` (N, D); optional ``scores``, ``scales``, ``angles`` (N,) and ``image_size`` (width, height).
    Numpy arrays or torch tensors. ``as_half`` stores descriptors as float16. ``source``: the image file they
    were computed from; its absolute path and :func:`file_fingerprint` are recorded (a resumed job recomputes
    images whose file differs). An image already complete in the file raises ``FileExistsError`` unless
    ``overwrite``; an incomplete one (interrupted write) is replaced.
    """
    _check_name(name)
    arrays = _feature_arrays(features, as_half)
    attrs = {DIGEST_ATTR: features_digest(arrays)}
    if source is not None:
        attrs[SOURCE_ATTR] = str(Path(source).resolve())
        attrs[FINGERPRINT_ATTR] = file_fingerprint(source)
    exists = has_image(path, name)
    with open_h5(path, "a") as fd:
        _write_group(fd, name, arrays, overwrite, exists, attrs)


def read_features(path: str | os.PathLike, name: str) -> dict[str, np.ndarray]:
    """Read the features of image ``name``: ``keypoints`` (N, 2) float32, ``descriptors`` (N, D) float32, and the
    optional ``scores``, ``scales``, ``angles`` (N,) float32 and ``image_size`` (2,) int64 that were written."""
    with open_h5(path, "r") as fd:
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


def complete_groups(fd: h5py.File, leaf: str = "keypoints") -> dict[str, h5py.Group]:
    """The complete groups of an open file holding a ``leaf`` dataset: images (``keypoints``) or pairs
    (``matches0``), by name."""
    groups: dict[str, h5py.Group] = {}

    def visit(key: str, obj: Any) -> None:
        if isinstance(obj, h5py.Group) and isinstance(obj.get(leaf), h5py.Dataset) and _is_complete(obj):
            groups[key] = obj

    fd.visititems(visit)
    return groups


def remove_images(path: str | os.PathLike, names: list[str]) -> list[str]:
    """Delete the groups of ``names`` from the features file at ``path`` (those present); returns the removed."""
    if not names or not os.path.exists(path):
        return []
    removed = []
    with open_h5(path, "a") as fd:
        for name in names:
            obj = fd.get(_check_name(name))
            if isinstance(obj, h5py.Group) and "keypoints" in obj:
                del fd[name]
                removed.append(name)
    return removed


def list_images(path: str | os.PathLike) -> list[str]:
    """Sorted names of the images with complete features (a ``keypoints`` dataset) in the file at ``path``."""
    with open_h5(path, "r") as fd:
        return sorted(complete_groups(fd))


def _group_digest(grp: h5py.Group) -> str:
    recorded = grp.attrs.get(DIGEST_ATTR)
    if recorded is not None:
        return str(recorded)
    return features_digest({k: v[()] for k, v in grp.items() if isinstance(v, h5py.Dataset)})  # other tools' files


def image_records(path: str | os.PathLike) -> dict[str, dict[str, str | None]]:
    """Per complete image of a features file: ``source``, ``fingerprint`` (None where not recorded: other tools,
    older deepdesc) and ``digest`` (:func:`features_digest`, computed when not recorded). {} when no file."""
    if not os.path.exists(path):
        return {}
    with open_h5(path, "r") as fd:
        return {
            name: {
                "source": grp.attrs.get(SOURCE_ATTR),
                "fingerprint": grp.attrs.get(FINGERPRINT_ATTR),
                "digest": _group_digest(grp),
            }
            for name, grp in complete_groups(fd).items()
        }


def _attr_str(value: Any) -> str | None:
    return None if value is None else (value.decode() if isinstance(value, bytes) else str(value))


def _find_pair(fd: h5py.File, name0: str, name1: str) -> tuple[str, bool] | None:
    """Key of the pair group and whether it is stored reversed (name1, name0); hloc's lookup order.

    A group whose recorded image names are another pair's raises :class:`PairCollisionError`.
    """
    for sep in ("/", "_"):  # "_": hloc's older format
        for key, reverse in ((names_to_pair(name0, name1, sep), False), (names_to_pair(name1, name0, sep), True)):
            obj = fd.get(key)
            if isinstance(obj, h5py.Group) and "matches0" in obj and _is_complete(obj):
                recorded = tuple(_attr_str(obj.attrs.get(a)) for a in NAME_ATTRS)
                expected = (name1, name0) if reverse else (name0, name1)
                if recorded[0] is not None and recorded != expected:
                    raise PairCollisionError(
                        f"{fd.filename}: the group {key!r} holds the matches of {recorded[0]!r} and {recorded[1]!r}, "
                        f"which hloc's pair naming ('/' in image names becomes '-') cannot tell from the pair "
                        f"{name0!r}, {name1!r}; rename one of the images (or use another matches file)"
                    )
                return key, reverse
    return None


def has_matches(path: str | os.PathLike, name0: str, name1: str) -> bool:
    """Whether the matches file at ``path`` holds complete matches for the pair, in either order."""
    if not os.path.exists(path):
        return False
    with open_h5(path, "r") as fd:
        return _find_pair(fd, name0, name1) is not None


def pair_record(path: str | os.PathLike, name0: str, name1: str) -> tuple[str | None, str | None] | None:
    """The features digests a stored pair was matched from, in the order (name0, name1) asked for (None where
    not recorded); None when the pair is not in the file."""
    return pair_records(path, [(name0, name1)])[(name0, name1)]


def pair_records(
    path: str | os.PathLike, pairs: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], tuple[str | None, str | None] | None]:
    """:func:`pair_record` of each pair, reading the file once."""
    pairs = list(pairs)
    out: dict[tuple[str, str], tuple[str | None, str | None] | None] = dict.fromkeys(pairs)
    if not os.path.exists(path):
        return out
    with open_h5(path, "r") as fd:
        for name0, name1 in pairs:
            found = _find_pair(fd, name0, name1)
            if found is not None:
                key, reverse = found
                d0, d1 = (_attr_str(fd[key].attrs.get(a)) for a in FEATURES_ATTRS)
                out[(name0, name1)] = (d1, d0) if reverse else (d0, d1)
    return out


def pairs_to_match(
    matches_path: str | os.PathLike, pairs: list[tuple[str, str]], records: dict[str, dict[str, Any]], overwrite: bool
) -> list[tuple[str, str]]:
    """The pairs a matching job must do: all with ``overwrite``, else those not in the matches file and those matched
    from other features than the ones ``records`` (:func:`image_records` of the features file) hold now (with a
    warning)."""
    if overwrite:
        return list(pairs)
    recorded = pair_records(matches_path, pairs)
    todo = [(a, b) for a, b in pairs if recorded[(a, b)] != (records[a]["digest"], records[b]["digest"])]
    stale = sum(recorded[pair] is not None for pair in todo)  # matched from other (or unrecorded) features
    if stale:
        logger.warning(
            "%s: matched %d pair(s) again whose features changed since they were matched", matches_path, stale
        )
    return todo


def write_matches(
    path: str | os.PathLike,
    name0: str,
    name1: str,
    matches: Any,
    scores: Any = None,
    num_keypoints0: int | None = None,
    overwrite: bool = False,
    features_digests: tuple[str, str] | None = None,
) -> None:
    """Write matches (K, 2) int (index in image 0, index in image 1) and ``scores`` (K,) for a pair, then flush.

    Stored as hloc's ``matches0`` (N0,) with -1 where unmatched; ``N0`` is ``num_keypoints0``, by default one
    more than the largest index in image 0. Each keypoint of image 0 may appear in at most one match.
    ``scores`` default to 1. ``features_digests``: the ``deepdesc_digest`` of the two images' features, recorded
    with the image names. The pair already complete in the file raises ``FileExistsError`` unless ``overwrite``;
    a group of another pair under the same hloc key raises :class:`PairCollisionError`.
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
    attrs = dict(zip(NAME_ATTRS, (name0, name1)))
    if features_digests is not None:
        attrs.update(zip(FEATURES_ATTRS, features_digests))
    with open_h5(path, "a") as fd:
        old = _find_pair(fd, name0, name1)
        exists = old is not None
        if old is not None and old[0] != key:
            if not overwrite:
                raise FileExistsError(f"pair {name0!r}, {name1!r} is already in {path} as {old[0]!r}")
            del fd[old[0]]
            exists = False
        _write_group(fd, key, {"matches0": matches0, "matching_scores0": scores0}, overwrite, exists, attrs)


def read_matches(path: str | os.PathLike, name0: str, name1: str) -> tuple[np.ndarray, np.ndarray]:
    """Matches of a pair: (K, 2) int64 (index in image 0, index in image 1) sorted by the first column, and
    scores (K,) float32 (1 when the file has none). A pair stored as (name1, name0) is swapped back."""
    with open_h5(path, "r") as fd:
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
    with open_h5(path, "r") as fd:
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
    """Raise ``OSError`` naming ``path`` unless it is (or can be created as) an HDF5 file open for writing.

    A file another process holds open raises :class:`FileInUseError`.
    """
    existed = os.path.exists(path)
    try:
        with open_h5(path, "a"):
            pass
    except FileInUseError:
        raise
    except OSError as exc:
        kind = "an existing file that is not HDF5 or not writable" if existed else "a file that cannot be created"
        raise OSError(f"output {path}: {kind} ({exc.__class__.__name__}: {exc})") from None
    if not existed:
        os.unlink(path)


def _has_entries(fd: h5py.File) -> bool:
    """Whether the file holds any complete group with a dataset (an image or a pair)."""

    def visit(_: str, obj: Any) -> bool | None:
        if isinstance(obj, h5py.Dataset) and _is_complete(obj.parent):
            return True
        return None

    return bool(fd.visititems(visit))


def check_settings(path: str | os.PathLike, settings: dict[str, Any], overwrite: bool = False) -> None:
    """Record ``settings`` in the file at ``path`` (created if needed), or check them against the recorded ones.

    A file written with other settings (another model, patch or detector options, descriptor dtype) raises
    :class:`~deepdesc.errors.OutputMismatchError` saying what differs, so that one file never mixes two
    descriptor spaces; with ``overwrite`` the file is then started anew (empty, the new settings recorded). A
    file with image groups but no settings (written by another tool or an older deepdesc) counts as different;
    a file that holds no complete image or pair yet (a run that stopped before writing one) takes the new
    settings. Raises ``OSError`` naming the file when it cannot be created or is not HDF5.
    """
    settings = json.loads(json.dumps(settings, default=str))  # as it will read back
    try:
        fd_cm = open_h5(path, "a")
        fd = fd_cm.__enter__()
    except FileInUseError:
        raise
    except OSError as exc:
        raise OSError(f"{path}: cannot open as an HDF5 file for writing ({exc})") from None
    try:
        text = fd.attrs.get(SETTINGS_ATTR)
        entries = _has_entries(fd)
        diff = _differences(json.loads(text), settings) if text is not None and entries else []
        if text is None and len(fd):
            diff = ["no settings recorded (written by another tool or an older deepdesc)"] if entries else ["empty"]
        if diff and entries and not overwrite:
            raise OutputMismatchError(
                f"{path} was written with other settings ({'; '.join(diff[:6])}); resuming would mix two "
                "descriptor spaces in one file. Pass --overwrite to start it again, or write to another file"
            )
        if not diff:
            fd.attrs[SETTINGS_ATTR] = json.dumps(settings, sort_keys=True)
    finally:
        fd_cm.__exit__(None, None, None)
    if diff:  # nothing of the old file may stay, and a new file frees the old one's space
        with atomic_path(path) as tmp, open_h5(tmp, "w") as new:
            new.attrs[SETTINGS_ATTR] = json.dumps(settings, sort_keys=True)


def _storage_bytes(fd: h5py.File) -> int:
    total = 0

    def visit(_: str, obj: Any) -> None:
        nonlocal total
        if isinstance(obj, h5py.Dataset):
            total += obj.id.get_storage_size()

    fd.visititems(visit)
    return total


#: HDF5 metadata per group (object header, link, B-tree and heap entries), a generous estimate.
_GROUP_OVERHEAD = 8192


def wasted_bytes(path: str | os.PathLike) -> int:
    """Bytes of the file at ``path`` beyond its live data and a generous metadata estimate: space left by
    replaced or interrupted groups, which HDF5 never reuses (0 when the file does not exist)."""
    if not os.path.exists(path):
        return 0
    with open_h5(path, "r") as fd:
        live = _storage_bytes(fd)
        groups = [0]
        fd.visit(lambda _: groups.__setitem__(0, groups[0] + 1))
    return max(0, os.path.getsize(path) - live - _GROUP_OVERHEAD * (groups[0] + 1))


def compact(path: str | os.PathLike, min_waste: float = 0.5) -> bool:
    """Rewrite the file at ``path`` with its live groups only (atomically: temp file + rename) when its
    :func:`wasted_bytes` exceed ``min_waste`` x its size (0: always); returns whether it was rewritten.

    Incomplete groups are dropped; attributes (settings, records) are kept. The file stays locked for reading
    while it is copied, so no writer can add to the old file meanwhile.
    """
    if not os.path.exists(path):
        return False
    if min_waste > 0 and wasted_bytes(path) <= min_waste * os.path.getsize(path):
        return False
    before = os.path.getsize(path)
    with atomic_path(path) as tmp:
        with open_h5(path, "r") as src, open_h5(tmp, "w") as dst:
            for key, value in src.attrs.items():
                dst.attrs[key] = value

            def copy(group: h5py.Group, target: h5py.Group) -> None:
                for key, obj in group.items():
                    if isinstance(obj, h5py.Group):
                        if not _is_complete(obj):
                            continue
                        if any(isinstance(v, h5py.Dataset) for v in obj.values()):
                            group.copy(obj, target, name=key)  # a leaf: datasets and attributes
                        else:
                            sub = target.create_group(key)
                            for k, v in obj.attrs.items():
                                sub.attrs[k] = v
                            copy(obj, sub)
                    else:
                        group.copy(obj, target, name=key)

            copy(src, dst)
    logger.info("compacted %s: %.1f MB -> %.1f MB", path, before / 1e6, os.path.getsize(path) / 1e6)
    return True


def clean_temp_files(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files (``.NAME.*.tmp``, and their journals) that killed writers of ``path`` left
    beside it; files another process still holds locked are left alone. Returns the removed paths."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            with open(tmp, "rb") as f:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # HDF5 holds a lock on files it has open
                tmp.unlink()
                journal_path(tmp).unlink(missing_ok=True)
        except OSError:
            continue
        removed.append(tmp)
    if removed:
        logger.info(
            "removed %d temporary file(s) of an interrupted run: %s", len(removed), ", ".join(map(str, removed))
        )
    return removed
