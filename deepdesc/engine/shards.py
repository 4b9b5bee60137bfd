"""Per-unit shard files and their merge into one hloc-layout file.

A worker writes unit N with the local engine (``extract.main`` / ``match.main``, so a shard has exactly the
layout and recorded settings of a local run) into a temporary file ``.unit-N.h5.PID.tmp``, stamps it with the
unit's identity (:data:`UNIT_ATTR`: unit index, SHA-256 of its items, the entries written and the images
skipped) and renames it to ``unit-N.h5``. Writing a unit twice (Ray retries tasks of a restarted worker)
replaces the shard by an identical one. A shard counts only when it opens, carries the right identity and
holds every entry it lists (:func:`check_shard`); anything else is redone.

:func:`merge` copies the groups of all shards (HDF5 object copies: datasets, dtypes and attributes as the local
engine wrote them; no descriptor passes through Python) into a temporary copy of the output, verifies it
(:mod:`.verify`) and only then renames it into place.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py

from ..errors import DeepDescError
from ..io import h5
from ..io.journal import recover
from ..utils import atomic_path
from .verify import verify_features, verify_matches

__all__ = ["MergeError", "UNIT_ATTR", "check_shard", "merge", "seal_shard"]

UNIT_ATTR = "deepdesc_unit"  # JSON identity of a shard: unit, items_sha256, entries, skipped


class MergeError(DeepDescError, RuntimeError):
    """The merged file failed verification; the output was left as it was."""


def seal_shard(tmp: Path, shard: Path, info: dict[str, Any]) -> None:
    """Stamp the finished temporary shard ``tmp`` with ``info`` and rename it to ``shard`` (atomic)."""
    with h5py.File(tmp, "a") as fd:
        fd.attrs[UNIT_ATTR] = json.dumps(info, sort_keys=True)
    os.replace(tmp, shard)


def _leaf(kind: str) -> str:
    return "matches0" if kind == "matches" else "keypoints"


def check_shard(path: Path, kind: str, unit: int, digest: str, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The identity of the shard at ``path`` when it is complete and belongs to unit ``unit`` with items
    ``digest`` and the job's ``settings``; None when it is missing, unreadable, foreign or incomplete."""
    if not path.exists():
        return None
    try:
        with h5py.File(path, "r") as fd:
            info = json.loads(fd.attrs[UNIT_ATTR])
            recorded = json.loads(fd.attrs[h5.SETTINGS_ATTR])
            if info.get("unit") != unit or info.get("items_sha256") != digest:
                return None
            if recorded != json.loads(json.dumps(settings, default=str)):
                return None
            if not set(info["entries"]) <= set(h5.complete_groups(fd, _leaf(kind))):
                return None
    except (OSError, KeyError, ValueError, TypeError):
        return None
    return info


def _copy_group(src: h5py.File, dst: h5py.File, key: str) -> None:
    if key in dst:
        del dst[key]
    parent = key.rpartition("/")[0]
    if parent:
        dst.require_group(parent)
    src.copy(src[key], dst, name=key)


def merge(
    kind: str,
    output: Path,
    shards: Sequence[Path],
    settings: dict[str, Any],
    expected: list[str] | list[tuple[str, str]],
    remove: Sequence[str] = (),
) -> None:
    """Merge ``shards`` (in unit order) into ``output`` atomically: a temporary copy of ``output`` (when it exists)
    receives every shard's groups (replacing groups of the same name; a pair stored reversed is replaced too),
    is verified against ``settings`` and the ``expected`` image names / pairs, then renamed over ``output``.
    ``remove``: groups to delete (images whose old features describe another file). Raises :class:`MergeError`
    listing the problems when verification fails (``output`` is then unchanged)."""
    leaf = _leaf(kind)
    with atomic_path(output) as tmp:
        recover(output)  # a single-process run killed mid-write
        if output.exists():
            shutil.copyfile(output, tmp)
        with h5py.File(tmp, "a") as dst:
            dst.attrs[h5.SETTINGS_ATTR] = json.dumps(json.loads(json.dumps(settings, default=str)), sort_keys=True)
            for key in remove:
                if key in dst:
                    del dst[key]
            for shard in shards:
                with h5py.File(shard, "r") as src:
                    info = json.loads(src.attrs[UNIT_ATTR])
                    for key in info["entries"]:
                        if kind == "matches":
                            a, b = key.split("/")
                            reverse = f"{b}/{a}"
                            if reverse != key and reverse in dst and isinstance(dst[reverse].get(leaf), h5py.Dataset):
                                del dst[reverse]
                        _copy_group(src, dst, key)
                    for name, value in src.attrs.items():  # any other file-level record of the local engine
                        if name not in (UNIT_ATTR, h5.SETTINGS_ATTR) and name not in dst.attrs:
                            dst.attrs[name] = value
        if kind == "matches":
            report = verify_matches(tmp, expected, settings)  # type: ignore[arg-type]
        else:
            report = verify_features(tmp, expected, settings)  # type: ignore[arg-type]
        if not report.ok:
            report.path = output
            raise MergeError(f"merge into {output} failed verification, output left unchanged:\n{report}")
