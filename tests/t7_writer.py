"""A minimal Torch7 binary writer for tests: builds well-formed and deliberately wrong files."""

from __future__ import annotations

import struct

import numpy as np

from deepdesc.hub.t7 import TorchObject

_STORAGE = {np.dtype("float32"): "Float", np.dtype("float64"): "Double", np.dtype("int64"): "Long"}


class _Writer:
    def __init__(self) -> None:
        self.out = bytearray()
        self.next_index = 1

    def int32(self, v: int) -> None:
        self.out += struct.pack("<i", v)

    def int64(self, v: int) -> None:
        self.out += struct.pack("<q", v)

    def string(self, s: str) -> None:
        raw = s.encode()
        self.int32(len(raw))
        self.out += raw

    def index(self) -> int:
        self.next_index += 1
        return self.next_index

    def write(self, obj) -> None:
        if obj is None:
            self.int32(0)
        elif isinstance(obj, bool):
            self.int32(5)
            self.int32(int(obj))
        elif isinstance(obj, (int, float)):
            self.int32(1)
            self.out += struct.pack("<d", float(obj))
        elif isinstance(obj, str):
            self.int32(2)
            self.string(obj)
        elif isinstance(obj, dict):
            self.int32(3)
            self.int32(self.index())
            self.int32(len(obj))
            for k, v in obj.items():
                self.write(k)
                self.write(v)
        elif isinstance(obj, np.ndarray):
            kind = _STORAGE[obj.dtype]
            self.int32(4)
            self.int32(self.index())
            self.string("V 1")
            self.string(f"torch.{kind}Tensor")
            self.int32(obj.ndim)
            strides = [s // obj.itemsize for s in np.ascontiguousarray(obj).strides]
            for n in obj.shape:
                self.int64(n)
            for s in strides:
                self.int64(s)
            self.int64(1)
            if obj.size == 0:
                self.int32(0)
                return
            self.int32(4)
            self.int32(self.index())
            self.string("V 1")
            self.string(f"torch.{kind}Storage")
            self.int64(obj.size)
            self.out += np.ascontiguousarray(obj).astype(obj.dtype.newbyteorder("<")).tobytes()
        elif isinstance(obj, TorchObject):
            self.int32(4)
            self.int32(self.index())
            self.string("V 1")
            self.string(obj.class_name)
            self.write(obj.fields)
        else:
            raise TypeError(type(obj))


def write_t7(obj) -> bytes:
    w = _Writer()
    w.write(obj)
    return bytes(w.out)
