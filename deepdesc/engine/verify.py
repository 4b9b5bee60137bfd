"""Checks of a finished features or matches file: every expected entry present once, consistent shapes, settings.

``verify_file(path)`` tells the kind of file from its recorded settings (a matches file records ``match``) and
returns a :class:`VerifyReport` listing every problem found (empty when the file is sound). Run by the
distributed engine on every merge before the file is renamed into place, and by ``deepdesc verify``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..io import h5
from ..io.journal import recover

__all__ = ["VerifyReport", "verify_features", "verify_file", "verify_matches"]

_SHOWN = 20  # problems listed in the one-paragraph summary
_Groups = list[tuple[str, h5py.Group]]  # (name, group) of each image or pair


@dataclass
class VerifyReport:
    """What :func:`verify_file` found: the kind of file, how many entries it holds, and every problem."""

    path: Path
    kind: str  # "features" or "matches"
    entries: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        what = "images" if self.kind == "features" else "pairs"
        if self.ok:
            return f"{self.path}: OK, {self.entries} {what}"
        lines = [f"{self.path}: {len(self.problems)} problem(s) in {self.entries} {what}"]
        lines += [f"  - {p}" for p in self.problems[:_SHOWN]]
        if len(self.problems) > _SHOWN:
            lines.append(f"  ... and {len(self.problems) - _SHOWN} more")
        return "\n".join(lines)


def _groups(fd: h5py.File, leaf: str) -> tuple[_Groups, list[str]]:
    """Groups holding a ``leaf`` dataset (images or pairs), and the names of such groups that also hold groups."""
    found: _Groups = []

    def visit(key: str, obj: Any) -> None:
        if isinstance(obj, h5py.Group) and isinstance(obj.get(leaf), h5py.Dataset):
            found.append((key, obj))

    fd.visititems(visit)
    nested = [k for k, g in found if any(isinstance(v, h5py.Group) for v in g.values())]
    return found, nested


def _read_settings(fd: h5py.File) -> tuple[Any, str | None]:
    text = fd.attrs.get(h5.SETTINGS_ATTR)
    if text is None:
        return None, "no settings recorded (attribute deepdesc_settings missing)"
    try:
        return json.loads(text), None
    except ValueError:
        return None, "recorded settings are not valid JSON"


def _check_settings(recorded: Any, settings: dict[str, Any] | None, problems: list[str]) -> None:
    if settings is None or recorded is None:
        return
    expected = json.loads(json.dumps(settings, default=str))
    if recorded != expected:
        keys = sorted(k for k in set(recorded) | set(expected) if recorded.get(k) != expected.get(k))
        problems.append(f"recorded settings differ from the job's in: {', '.join(keys)}")


def _listed(names: list[str]) -> str:
    return ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")


def _missing_unexpected(found: set[str], expected: set[str], what: str, problems: list[str]) -> None:
    missing = sorted(expected - found)
    unexpected = sorted(found - expected)
    if missing:
        problems.append(f"{len(missing)} {what}(s) missing: {_listed(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected {what}(s): {_listed(unexpected)}")


def _verify(
    path: str | os.PathLike,
    kind: str,
    leaf: str,
    settings: dict[str, Any] | None,
    check_groups: Callable[[Any, _Groups, list[str]], None],
) -> tuple[VerifyReport, _Groups | None]:
    """The checks every file gets (readable, settings recorded and equal ``settings`` when given, entry groups
    hold no groups), then ``check_groups(recorded settings, groups, problems)`` on its ``leaf`` groups while
    the file is open. Returns the report and the groups (None when the file cannot be read)."""
    report = VerifyReport(Path(path), kind)
    problems = report.problems
    try:
        recover(path)  # a writer killed mid-write: back to its last complete write
        fd = h5py.File(path, "r")
    except OSError as exc:
        problems.append(f"cannot be read as HDF5 ({exc})")
        return report, None
    with fd:
        recorded, error = _read_settings(fd)
        if error:
            problems.append(error)
        _check_settings(recorded, settings, problems)
        groups, nested = _groups(fd, leaf)
        report.entries = len(groups)
        problems += [f"{name}: holds other groups besides its {kind}" for name in nested]
        check_groups(recorded, groups, problems)
    return report, groups


def _complete(groups: _Groups, problems: list[str]) -> Iterator[tuple[str, h5py.Group]]:
    """The groups that were written to the end; a problem for each other one, in order."""
    for name, grp in groups:
        if not bool(grp.attrs.get(h5.COMPLETE_ATTR, True)):
            problems.append(f"{name}: incomplete (an interrupted write)")
            continue
        yield name, grp


def _check_feature_groups(recorded: Any, groups: _Groups, problems: list[str]) -> None:
    dtype = np.dtype((recorded or {}).get("descriptor_dtype", "float32")) if isinstance(recorded, dict) else None
    dims: dict[int, str] = {}
    for name, grp in _complete(groups, problems):
        kpts = grp["keypoints"]
        if kpts.ndim != 2 or kpts.shape[1] != 2:
            problems.append(f"{name}: keypoints have shape {kpts.shape}, expected (N, 2)")
            continue
        n = kpts.shape[0]
        if "descriptors" not in grp:
            problems.append(f"{name}: no descriptors")
        else:
            desc = grp["descriptors"]
            if desc.ndim != 2 or desc.shape[1] != n:
                problems.append(f"{name}: descriptors have shape {desc.shape}, expected (D, {n})")
            else:
                dims.setdefault(desc.shape[0], name)
                if dtype is not None and desc.dtype != dtype:
                    problems.append(f"{name}: descriptors are {desc.dtype}, the file records {dtype}")
                if not np.isfinite(desc[()]).all():
                    problems.append(f"{name}: descriptors hold NaN or inf")
        if not np.isfinite(kpts[()]).all():
            problems.append(f"{name}: keypoints hold NaN or inf")
        for key in ("scores", "scales", "angles"):
            if key in grp and grp[key].shape != (n,):
                problems.append(f"{name}: {key} have shape {grp[key].shape}, expected ({n},)")
        if "image_size" not in grp:
            problems.append(f"{name}: no image_size")
        else:
            size = grp["image_size"][()]
            if size.shape != (2,) or size.dtype.kind not in "iu" or (size <= 0).any():
                problems.append(f"{name}: image_size {size!r}, expected (width, height) positive integers")
    if len(dims) > 1:
        problems.append(f"descriptor sizes differ: {', '.join(f'{d} ({n})' for d, n in sorted(dims.items()))}")


def _check_match_groups(recorded: Any, groups: _Groups, problems: list[str]) -> None:
    for name, grp in _complete(groups, problems):
        m = grp["matches0"]
        if m.ndim != 1 or m.dtype.kind not in "iu":
            problems.append(f"{name}: matches0 is {m.dtype} {m.shape}, expected (N0,) integers")
            continue
        values = m[()]
        if len(values) and values.min() < -1:
            problems.append(f"{name}: matches0 holds indices below -1")
        scores = grp.get("matching_scores0")
        if scores is not None and scores.shape != m.shape:
            problems.append(f"{name}: matching_scores0 has shape {scores.shape}, expected {m.shape}")


def verify_features(
    path: str | os.PathLike, expected: Iterable[str] | None = None, settings: dict[str, Any] | None = None
) -> VerifyReport:
    """Check a features file: each image group has ``keypoints`` (N, 2), ``descriptors`` (D, N) with one D and the
    recorded dtype, ``scores``/``scales``/``angles`` (N,), ``image_size`` (2,) positive, finite values; settings
    are recorded (and equal ``settings`` when given); with ``expected`` names, none is missing or extra."""
    report, groups = _verify(path, "features", "keypoints", settings, _check_feature_groups)
    if groups is not None and expected is not None:
        _missing_unexpected({n for n, _ in groups}, set(expected), "image", report.problems)
    return report


def verify_matches(
    path: str | os.PathLike,
    expected: Iterable[tuple[str, str]] | None = None,
    settings: dict[str, Any] | None = None,
) -> VerifyReport:
    """Check a matches file: each pair group has ``matches0`` (N0,) integers >= -1 and ``matching_scores0`` (N0,);
    settings are recorded (and equal ``settings`` when given); with ``expected`` pairs, each is present in one
    order only and no other pair is."""
    report, groups = _verify(path, "matches", "matches0", settings, _check_match_groups)
    if groups is not None and expected is not None:
        problems = report.problems
        keys = {n for n, _ in groups}
        wanted = set()
        for a, b in expected:
            key, rev = h5.names_to_pair(a, b), h5.names_to_pair(b, a)
            if key in keys and rev in keys and key != rev:
                problems.append(f"pair {a} {b}: stored in both orders")
            wanted.add(rev if rev in keys and key not in keys else key)
        _missing_unexpected(keys, wanted, "pair", problems)
    return report


def file_kind(path: str | os.PathLike) -> str:
    """``"matches"`` when the file records matching settings or holds pair groups, else ``"features"``."""
    settings = h5.read_settings(path)
    if isinstance(settings, dict):
        return "matches" if "match" in settings else "features"
    with h5.open_h5(path, "r") as fd:
        groups, _ = _groups(fd, "matches0")
    return "matches" if groups else "features"


def verify_file(
    path: str | os.PathLike,
    images: Iterable[str] | None = None,
    pairs: Iterable[tuple[str, str]] | None = None,
    settings: dict[str, Any] | None = None,
) -> VerifyReport:
    """Verify a features or a matches file (told apart by :func:`file_kind`); ``images``: the image names a
    features file must hold, ``pairs``: the pairs a matches file must hold."""
    if not os.path.exists(path):
        report = VerifyReport(Path(path), "features")
        report.problems.append("no such file")
        return report
    try:
        kind = file_kind(path)
    except (OSError, ValueError) as exc:
        report = VerifyReport(Path(path), "features")
        report.problems.append(f"cannot be read as HDF5 ({exc})")
        return report
    if kind == "matches":
        return verify_matches(path, pairs, settings)
    return verify_features(path, images, settings)
