"""Distributed engine of the jobs: deterministic work units, per-unit shard files, one verified merge.

- :mod:`.units`: the work split into units (chunks of image names or pairs) and the job folder with its durable
  manifest of finished units, so that a killed run resumes where it stopped.
- :mod:`.shards`: per-unit shard files (atomic, self-describing, safe to write twice) and their merge into one
  hloc-layout file.
- :mod:`.verify`: checks of a features or matches file (every image once, shapes, recorded settings).
- :mod:`.ray`: Ray actors (one model load each) and the driver behind ``extract.main(..., engine="ray")`` and
  ``match.main(..., engine="ray")``. Ray itself is imported only when that engine runs.
"""

from __future__ import annotations

__all__ = ["ENGINES"]

ENGINES = ("local", "ray")
