"""Safe, bounded reader for Torch7 ``.t7`` binary files.

Torch7's ``torch.save`` writes a tree of Lua values (numbers, strings, tables,
booleans and torch classes such as tensors and ``nn`` modules). This module
parses that tree into plain Python values without executing anything:

* tables become :class:`dict` (Lua keys as ``float``/``str``/``bool``),
* tensors become :class:`numpy.ndarray` (copied out of their storage),
* other torch classes become :class:`TorchObject` (class name + fields),
* serialized Lua functions are rejected.

Every length read from the file is checked against the bytes that remain, the
nesting depth and object count are capped, the tensor data materialised for the
whole file is capped in proportion to the file's size (tensors may view one
storage, even with zero strides, so their sum could otherwise dwarf the file),
and any problem raises :class:`T7FormatError` naming the file and byte offset.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import T7FormatError

__all__ = ["T7FormatError", "TorchObject", "read_t7", "parse_t7"]

_NIL, _NUMBER, _STRING, _TABLE, _TORCH, _BOOLEAN = 0, 1, 2, 3, 4, 5
_FUNCTIONS = {6, 7, 8}

_STORAGE_DTYPES = {
    "torch.FloatStorage": np.dtype("<f4"),
    "torch.DoubleStorage": np.dtype("<f8"),
    "torch.LongStorage": np.dtype("<i8"),
    "torch.IntStorage": np.dtype("<i4"),
    "torch.ShortStorage": np.dtype("<i2"),
    "torch.CharStorage": np.dtype("i1"),
    "torch.ByteStorage": np.dtype("u1"),
}
_TENSOR_TO_STORAGE = {name.replace("Storage", "Tensor"): name for name in _STORAGE_DTYPES}

MAX_DEPTH = 64
MAX_OBJECTS = 1_000_000
MAX_DIMS = 16
MAX_FILE_BYTES = 2**31
# A tensor may view its storage with zero strides (expand); cap what such a view may materialise.
MAX_VIEW_ELEMENTS = 1 << 24
# All tensors of a file together may materialise at most this many bytes beyond twice the file's size.
MAX_EXTRA_TENSOR_BYTES = 1 << 26
# Largest product of the non-zero sizes of an empty tensor (which stores nothing).
MAX_EMPTY_SHAPE = 1 << 40


@dataclass
class TorchObject:
    """A torch class instance that is not a tensor or storage (e.g. an ``nn`` module)."""

    class_name: str
    fields: Any = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default) if isinstance(self.fields, dict) else default


class _Reader:
    def __init__(self, data: bytes, name: str):
        self.data = data
        self.pos = 0
        self.name = name
        self.memo: dict[int, Any] = {}
        self.count = 0
        self.tensor_bytes = 0
        self.max_tensor_bytes = 2 * len(data) + MAX_EXTRA_TENSOR_BYTES

    def fail(self, problem: str) -> T7FormatError:
        return T7FormatError(f"{self.name}: not a valid Torch7 file: {problem} (at byte {self.pos})")

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"truncated: needs {n} more bytes, {len(self.data) - self.pos} left")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def int32(self) -> int:
        return struct.unpack("<i", self.take(4))[0]

    def int64(self) -> int:
        return struct.unpack("<q", self.take(8))[0]

    def string(self) -> str:
        n = self.int32()
        if n < 0:
            raise self.fail(f"negative string length {n}")
        raw = self.take(n)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("latin-1")

    def read(self, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise self.fail(f"nesting deeper than {MAX_DEPTH}")
        self.count += 1
        if self.count > MAX_OBJECTS:
            raise self.fail(f"more than {MAX_OBJECTS} objects")
        start = self.pos
        kind = self.int32()
        if kind == _NIL:
            return None
        if kind == _NUMBER:
            return struct.unpack("<d", self.take(8))[0]
        if kind == _STRING:
            return self.string()
        if kind == _BOOLEAN:
            return self.int32() == 1
        if kind == _TABLE:
            return self._table(depth)
        if kind == _TORCH:
            return self._torch(depth)
        self.pos = start
        if kind in _FUNCTIONS:
            raise self.fail("contains a serialized Lua function, which is not supported")
        raise self.fail(f"unknown type tag {kind}")

    def _table(self, depth: int) -> dict:
        index = self.int32()
        if index in self.memo:
            return self.memo[index]
        size = self.int32()
        if size < 0 or size * 8 > len(self.data) - self.pos:
            raise self.fail(f"implausible table size {size}")
        table: dict = {}
        self.memo[index] = table
        for _ in range(size):
            key = self.read(depth + 1)
            if isinstance(key, (dict, list, np.ndarray, TorchObject)):
                key = f"<{type(key).__name__} key>"
            table[key] = self.read(depth + 1)
        return table

    def _torch(self, depth: int) -> Any:
        index = self.int32()
        if index in self.memo:
            return self.memo[index]
        version = self.string()
        if version.startswith("V "):
            class_name = self.string()
        else:
            class_name = version
        if class_name in _STORAGE_DTYPES:
            obj = self._storage(class_name)
        elif class_name in _TENSOR_TO_STORAGE:
            obj = self._tensor(class_name, depth)
        else:
            obj = TorchObject(class_name)
            self.memo[index] = obj
            obj.fields = self.read(depth + 1)
        self.memo[index] = obj
        return obj

    def _storage(self, class_name: str) -> np.ndarray:
        dtype = _STORAGE_DTYPES[class_name]
        n = self.int64()
        if n < 0 or n * dtype.itemsize > len(self.data) - self.pos:
            raise self.fail(f"{class_name} of {n} elements does not fit in the file")
        return np.frombuffer(self.take(n * dtype.itemsize), dtype=dtype)

    def _tensor(self, class_name: str, depth: int) -> np.ndarray:
        ndim = self.int32()
        if not 0 <= ndim <= MAX_DIMS:
            raise self.fail(f"{class_name} with {ndim} dimensions")
        sizes = [self.int64() for _ in range(ndim)]
        strides = [self.int64() for _ in range(ndim)]
        offset = self.int64() - 1
        storage = self.read(depth + 1)
        dtype = _STORAGE_DTYPES[_TENSOR_TO_STORAGE[class_name]]
        if any(s < 0 for s in sizes):
            raise self.fail(f"{class_name} with negative size {tuple(sizes)}")
        if ndim == 0 or 0 in sizes:
            # Stores nothing, but its other sizes are bounded so that numpy can represent the shape.
            if np.prod([max(s, 1) for s in sizes], dtype=np.float64) > MAX_EMPTY_SHAPE:
                raise self.fail(f"empty {class_name} of implausible size {tuple(sizes)}")
            return np.zeros(sizes or [0], dtype=dtype)
        if any(s < 0 for s in strides) or offset < 0:
            raise self.fail(f"{class_name} with negative stride or offset")
        if not isinstance(storage, np.ndarray) or storage.ndim != 1:
            raise self.fail(f"{class_name} without a storage")
        if storage.dtype != dtype:
            raise self.fail(f"{class_name} backed by a {storage.dtype} storage")
        last = offset + sum((n - 1) * s for n, s in zip(sizes, strides))
        elements = int(np.prod(sizes, dtype=np.float64))
        if elements > max(storage.size, MAX_VIEW_ELEMENTS):
            raise self.fail(f"{class_name} of size {tuple(sizes)} is larger than its storage of {storage.size}")
        if last >= storage.size:
            raise self.fail(
                f"{class_name} of size {tuple(sizes)} reaches element {last} of a storage of {storage.size}"
            )
        self.tensor_bytes += elements * dtype.itemsize
        if self.tensor_bytes > self.max_tensor_bytes:
            raise self.fail(
                f"{class_name} of size {tuple(sizes)} brings the file to more tensor data than "
                f"{self.max_tensor_bytes} bytes (twice its {len(self.data)} bytes plus {MAX_EXTRA_TENSOR_BYTES}): "
                "tensors viewing one storage many times"
            )
        view = np.lib.stride_tricks.as_strided(
            storage[offset:],
            shape=sizes,
            strides=[s * dtype.itemsize for s in strides],
            writeable=False,
        )
        return np.ascontiguousarray(view).astype(dtype.newbyteorder("="), copy=True)


def parse_t7(data: bytes, name: str = "<bytes>") -> Any:
    """Parse the bytes of a Torch7 binary file into Python values (see module docstring)."""
    reader = _Reader(data, name)
    try:
        return reader.read()
    except RecursionError:
        raise reader.fail("nesting too deep") from None


def read_t7(path: str | os.PathLike) -> Any:
    """Read a Torch7 binary file (``torch.save`` default format) from ``path``."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise FileNotFoundError(f"{path}: cannot read model file ({exc.strerror})") from None
    if size > MAX_FILE_BYTES:
        raise T7FormatError(f"{path}: file of {size} bytes is too large for a Torch7 model")
    return parse_t7(path.read_bytes(), str(path))
