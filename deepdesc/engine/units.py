"""Deterministic work units and the job folder that makes a distributed job resumable.

A job's items (``(name, path)`` of images, or ``(name0, name1)`` pairs) are split in their given order into
units of ``unit_size`` items: unit ``k`` is ``items[k * unit_size : (k + 1) * unit_size]``, so the same input
always gives the same units. The job folder ``OUTPUT.parts/`` beside the output holds

- ``job.json``: what the job is (kind, recorded settings, unit size, SHA-256 of the items), written atomically.
  A run whose job differs (other images, other settings, another unit size) starts the folder again.
- ``manifest.jsonl``: one JSON line per finished unit, appended and fsync'ed by the driver. A torn last line
  (a driver killed mid-write) is ignored.
- ``unit-NNNNNN.h5``: the shard of unit N (:mod:`.shards`), and short-lived ``.unit-*.tmp`` files of units in
  flight.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..utils import atomic_path, logger

__all__ = ["JobDir", "items_digest", "make_units"]

JOB_VERSION = 1


def make_units(items: Sequence[Any], unit_size: int) -> list[list[Any]]:
    """``items`` in order, in chunks of ``unit_size`` (the last one shorter)."""
    if not isinstance(unit_size, int) or unit_size < 1:
        raise ValueError(f"unit_size must be a positive integer, got {unit_size!r}")
    return [list(items[i : i + unit_size]) for i in range(0, len(items), unit_size)]


def items_digest(items: Sequence[Any]) -> str:
    """SHA-256 of the JSON of ``items`` (names, paths, pairs): identifies a job's input."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(json.dumps(item, default=str).encode())
        digest.update(b"\n")
    return digest.hexdigest()


class JobDir:
    """The folder ``OUTPUT.parts`` of a distributed job writing ``output``."""

    def __init__(self, output: str | os.PathLike):
        self.output = Path(output)
        self.root = self.output.with_name(self.output.name + ".parts")

    @property
    def job_path(self) -> Path:
        return self.root / "job.json"

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.jsonl"

    def shard(self, index: int) -> Path:
        """The shard file of unit ``index``."""
        return self.root / f"unit-{index:06d}.h5"

    def stage(self, index: int) -> Path:
        """A scratch folder for unit ``index`` (image links named as in the job)."""
        return self.root / "stage" / f"unit-{index:06d}"

    def read_job(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.job_path.read_text())
        except (OSError, ValueError):
            return None

    def open(self, job: dict[str, Any]) -> bool:
        """Prepare the folder for ``job``; True when it resumes the same job, False when it starts afresh.

        Temporary files of units that were in flight when a run stopped are removed either way.
        """
        job = json.loads(json.dumps({"version": JOB_VERSION, **job}, default=str))
        resumed = self.read_job() == job
        if not resumed and self.root.exists():
            logger.info("%s belongs to another job (other inputs or settings): starting it again", self.root)
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        for tmp in self.root.glob(".*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        shutil.rmtree(self.root / "stage", ignore_errors=True)
        if not resumed:
            with atomic_path(self.job_path) as tmp:
                tmp.write_text(json.dumps(job, sort_keys=True, indent=1))
        return resumed

    def records(self) -> dict[int, dict[str, Any]]:
        """Finished units recorded in the manifest: unit index -> its record (the last one wins)."""
        out: dict[int, dict[str, Any]] = {}
        if not self.manifest_path.exists():
            return out
        for line in self.manifest_path.read_text().splitlines():
            try:
                record = json.loads(line)
                out[int(record["unit"])] = record
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a killed driver
        return out

    def record(self, record: dict[str, Any]) -> None:
        """Append one finished unit's record durably (flushed and fsync'ed before returning)."""
        line = json.dumps(record, sort_keys=True, default=str)
        with open(self.manifest_path, "a") as f:
            if f.tell() and not self._ends_with_newline():
                f.write("\n")  # after a torn line: start a fresh one
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _ends_with_newline(self) -> bool:
        with open(self.manifest_path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def remove(self) -> None:
        """Delete the folder (after a verified merge)."""
        shutil.rmtree(self.root, ignore_errors=True)
