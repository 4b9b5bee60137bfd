"""Loading the original Torch7 models safely: structure checks, corrupt and truncated files."""

from __future__ import annotations

import copy
import struct
import time

import numpy as np
import pytest
import torch

from deepdesc.hub.t7 import T7FormatError, TorchObject, parse_t7, read_t7
from deepdesc.hub.weights import ModelFormatError, load_t7

from .t7_writer import write_t7

CNN3 = ["nn.SpatialConvolution", "nn.Tanh", "nn.SpatialLPPooling", "nn.SpatialSubtractiveNormalization"] * 2 + [
    "nn.SpatialConvolution",
    "nn.Tanh",
    "nn.SpatialLPPooling",
    "nn.Reshape",
]


@pytest.fixture(scope="module")
def split4_bytes(t7_paths) -> bytes:
    return t7_paths["split4"].read_bytes()


def _layers(tree):
    mods = tree["desc"]["modules"]
    return [mods[k] for k in sorted(mods)]


def test_parses_the_original_structure(t7_paths):
    tree = read_t7(t7_paths["split4"])
    assert set(tree) == {"desc", "mean", "std"}
    assert [m.class_name for m in _layers(tree)] == CNN3
    conv1 = _layers(tree)[0]
    assert conv1["weight"].shape == (32, 1, 7, 7) and conv1["weight"].dtype == np.float32
    assert tree["mean"].shape == tree["std"].shape == (1, 64, 64)


def test_all_four_models_load_and_differ(t7_paths):
    weights = [load_t7(p).conv1.weight for p in t7_paths.values()]
    for a in range(4):
        for b in range(a + 1, 4):
            assert not torch.equal(weights[a], weights[b])


def test_writer_round_trip_gives_the_same_model(tmp_path, t7_paths):
    tree = read_t7(t7_paths["split4"])
    path = tmp_path / "copy.t7"
    path.write_bytes(write_t7(tree))
    a, b = load_t7(t7_paths["split4"]), load_t7(path)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def _mutated(tree, change):
    tree = copy.deepcopy(tree)
    change(tree)
    return write_t7(tree)


def _set_layer_class(i, name):
    def change(tree):
        _layers(tree)[i].class_name = name

    return change


def _set_field(i, key, value):
    def change(tree):
        _layers(tree)[i].fields[key] = value

    return change


@pytest.mark.parametrize(
    "change, message",
    [
        (_set_layer_class(1, "nn.ReLU"), "CNN3 layout"),
        (_set_field(0, "weight", np.zeros((32, 1, 5, 5), np.float32)), "weight should be"),
        (_set_field(4, "kW", 5.0), "SpatialConvolution"),
        (_set_field(0, "bias", np.full(32, np.nan, np.float32)), "NaN"),
        (lambda t: t.pop("mean"), "'mean'"),
        (lambda t: t.__setitem__("std", np.zeros((1, 64, 64), np.float32)), "std"),
        (lambda t: t.__setitem__("desc", TorchObject("nn.Linear", {})), "nn.Sequential"),
        (lambda t: t["desc"]["modules"].pop(12.0), "CNN3 layout"),
    ],
)
def test_structurally_unexpected_models_are_rejected(tmp_path, t7_paths, change, message):
    path = tmp_path / "bad.t7"
    path.write_bytes(_mutated(read_t7(t7_paths["split4"]), change))
    with pytest.raises(ModelFormatError, match=message) as info:
        load_t7(path)
    assert "bad.t7" in str(info.value)


def test_truncated_files_raise_quickly(tmp_path, split4_bytes):
    rng = np.random.default_rng(0)
    cuts = sorted(set(range(0, 300, 3)) | set(rng.integers(0, len(split4_bytes), 150).tolist()))
    for cut in cuts:
        path = tmp_path / "cut.t7"
        path.write_bytes(split4_bytes[:cut])
        start = time.perf_counter()
        with pytest.raises(ModelFormatError, match="cut.t7"):
            load_t7(path)
        assert time.perf_counter() - start < 1.0


def test_byte_flips_raise_clearly_or_load(tmp_path, split4_bytes):
    """Flips in raw weight bytes are undetectable; anything else must be a ModelFormatError."""
    rng = np.random.default_rng(1)
    # bias towards the structured head of the file, where the flips matter most
    positions = np.concatenate([rng.integers(0, 4096, 200), rng.integers(0, len(split4_bytes), 100)])
    failures = 0
    for pos in positions:
        data = bytearray(split4_bytes)
        data[pos] ^= 1 << int(rng.integers(0, 8))
        path = tmp_path / "flip.t7"
        path.write_bytes(bytes(data))
        start = time.perf_counter()
        try:
            model = load_t7(path)
        except ModelFormatError as exc:
            assert "flip.t7" in str(exc)
            failures += 1
        else:
            assert all(torch.isfinite(t).all() for t in model.state_dict().values())
        assert time.perf_counter() - start < 1.0
    assert failures >= 10  # most flips land in raw weight bytes


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "truncated"),
        (b"\x89PNG\r\n\x1a\n" + bytes(64), "unknown type tag"),
        (b"\x06\x00\x00\x00" + bytes(16), "Lua function"),
        (b"\x02\x00\x00\x00\xff\xff\xff\x7f", "truncated"),
        (b"\x03\x00\x00\x00\x01\x00\x00\x00\xff\xff\xff\x0f", "table size"),
    ],
)
def test_non_t7_bytes(data, message):
    with pytest.raises(T7FormatError, match=message):
        parse_t7(data, "x.t7")


def test_self_referencing_table_does_not_recurse_forever():
    # table #2 = {1: <reference to table #2>}
    data = b"\x03\x00\x00\x00\x02\x00\x00\x00\x01\x00\x00\x00" + b"\x01\x00\x00\x00" + bytes(6) + b"\xf0\x3f"
    data += b"\x03\x00\x00\x00\x02\x00\x00\x00"
    table = parse_t7(data)
    assert table[1.0] is table


def test_deep_nesting_is_bounded():
    data = b"".join(
        b"\x03\x00\x00\x00" + i.to_bytes(4, "little") + b"\x01\x00\x00\x00\x01\x00\x00\x00" + bytes(8)
        for i in range(2, 500)
    )
    with pytest.raises(T7FormatError, match="nesting"):
        parse_t7(data)


def test_zero_stride_view_cannot_blow_up_memory():
    header = b"\x04\x00\x00\x00\x02\x00\x00\x00" + b"\x03\x00\x00\x00V 1" + b"\x11\x00\x00\x00torch.FloatTensor"
    dims = (2).to_bytes(4, "little") + (10**9).to_bytes(8, "little") * 2 + bytes(16) + (1).to_bytes(8, "little")
    storage = b"\x04\x00\x00\x00\x03\x00\x00\x00" + b"\x03\x00\x00\x00V 1" + b"\x12\x00\x00\x00torch.FloatStorage"
    storage += (1).to_bytes(8, "little") + bytes(4)
    with pytest.raises(T7FormatError, match="larger than its storage"):
        parse_t7(header + dims + storage)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.t7"):
        load_t7(tmp_path / "nope.t7")


def _views_of_one_storage(count: int, size: int, stride: int, storage_size: int) -> bytes:
    """A table of ``count`` distinct DoubleTensors of ``size`` elements, all views of one storage."""
    i32, i64 = (lambda v: struct.pack("<i", v)), (lambda v: struct.pack("<q", v))

    def name(s: str) -> bytes:
        return i32(len(s)) + s.encode()

    data = i32(3) + i32(1) + i32(count)
    for k in range(count):
        data += i32(1) + struct.pack("<d", k + 1.0)  # key
        data += i32(4) + i32(10 + k) + name("V 1") + name("torch.DoubleTensor")
        data += i32(1) + i64(size) + i64(stride) + i64(1)
        data += i32(4) + i32(2)  # the storage: written once, then referenced
        if k == 0:
            data += name("V 1") + name("torch.DoubleStorage") + i64(storage_size) + bytes(8 * storage_size)
    return data


@pytest.mark.parametrize(
    "count, size, stride, storage_size",
    [
        (200, 1 << 24, 0, 1),  # a 10 KB file claiming 200 x 128 MB of zero-stride views
        (60, 1 << 19, 1, 1 << 19),  # a 4 MB storage viewed by 60 tensors: 240 MB
    ],
)
def test_views_sharing_a_storage_cannot_blow_up_memory(count, size, stride, storage_size):
    data = _views_of_one_storage(count, size, stride, storage_size)
    start = time.perf_counter()
    with pytest.raises(T7FormatError, match="more tensor data than") as info:
        parse_t7(data, "views.t7")
    assert time.perf_counter() - start < 1.0
    assert "views.t7" in str(info.value)


def test_a_few_views_of_one_storage_are_fine():
    tree = parse_t7(_views_of_one_storage(3, 1 << 10, 0, 1))
    assert len(tree) == 3 and all(v.shape == (1 << 10,) for v in tree.values())


@pytest.mark.parametrize("sizes", [(0, 2**62, 2**62), (0, 2**63 - 1), (0, -5)])
def test_empty_tensor_with_absurd_sizes(sizes):
    header = b"\x04\x00\x00\x00\x02\x00\x00\x00" + b"\x03\x00\x00\x00V 1" + b"\x11\x00\x00\x00torch.FloatTensor"
    dims = struct.pack("<i", len(sizes)) + b"".join(struct.pack("<q", s) for s in sizes) + bytes(8 * len(sizes))
    data = header + dims + struct.pack("<q", 1) + b"\x00\x00\x00\x00"  # offset, nil storage
    with pytest.raises(T7FormatError, match="size"):
        parse_t7(data, "empty.t7")


def test_load_t7_wraps_every_reader_problem(tmp_path):
    header = b"\x04\x00\x00\x00\x02\x00\x00\x00" + b"\x03\x00\x00\x00V 1" + b"\x11\x00\x00\x00torch.FloatTensor"
    path = tmp_path / "empty.t7"
    path.write_bytes(header + struct.pack("<iqqqqq", 2, 0, 2**62, 0, 0, 1) + bytes(4))
    with pytest.raises(ModelFormatError, match="empty.t7"):
        load_t7(path)
