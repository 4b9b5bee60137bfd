"""Whitespace-separated numeric text tables (PhotoTour info/match files, homography files)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..errors import DatasetFormatError

__all__ = ["read_table"]


def read_table(path: Path, ncols: int | None, dtype: type, min_cols: int = 1) -> np.ndarray:
    """Whitespace-separated numeric table. (rows, cols). Errors name the file and the 1-based line."""
    text = path.read_text(encoding="ascii", errors="replace")
    lines = text.rstrip().splitlines() if text.strip() else []
    cols = ncols
    if cols is None:
        cols = len(lines[0].split()) if lines else min_cols
        if cols < min_cols:
            raise DatasetFormatError(f"{path}, line 1: expected at least {min_cols} columns, got {cols}")
    if not lines:
        return np.zeros((0, cols), dtype=dtype)
    try:
        table = np.loadtxt(io.StringIO(text), dtype=dtype, comments=None, ndmin=2)
        if table.shape == (len(lines), cols):
            return table
    except ValueError:
        pass
    convert = int if dtype is np.int64 else float
    kind = "an integer" if dtype is np.int64 else "a number"
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if len(fields) != cols:
            raise DatasetFormatError(f"{path}, line {number}: expected {cols} columns, got {len(fields)}: {line!r}")
        for field in fields:
            try:
                convert(field)
            except ValueError:
                raise DatasetFormatError(f"{path}, line {number}: {field!r} is not {kind}: {line!r}") from None
    raise DatasetFormatError(f"{path}: cannot parse as a numeric table")  # pragma: no cover
