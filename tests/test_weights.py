"""safetensors model files: the header and architecture metadata are checked before anything is built.

Every malformed file must raise :class:`ModelFormatError` quickly, naming the file, the offending
key or tensor and the expected form, and must never allocate what its metadata merely claims.
"""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from deepdesc.errors import ModelFormatError
from deepdesc.hub import weights
from deepdesc.hub.registry import model_path
from deepdesc.hub.weights import load_safetensors, read_safetensors_metadata, save_safetensors
from deepdesc.nn.cnn3 import DeepDescNet

# ---------------------------------------------------------------- helpers


def _split(data: bytes) -> tuple[dict, bytes]:
    """(header dict, tensor bytes) of a safetensors file's contents."""
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _join(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


@pytest.fixture(scope="module")
def default_bytes(tmp_path_factory) -> bytes:
    """A CNN3 file like the v2 default (patch-normalised, L2 output, 16x region, MIT metadata), seeded weights.

    The packaged default is the compact net since v3; these tests are about the CNN3 layout."""
    torch.manual_seed(0)
    net = DeepDescNet({"input_norm": "patch", "l2_normalize": True, "region_scale": 16.0, "blur_sigma": 2.0})
    path = tmp_path_factory.mktemp("cnn3") / "cnn3.safetensors"
    save_safetensors(net, path, {"license": "MIT", "name": "cnn3-test"})
    return path.read_bytes()


def _with_config(data: bytes, **changes) -> bytes:
    header, body = _split(data)
    conf = json.loads(header["__metadata__"]["config"])
    conf.update(changes)
    header["__metadata__"]["config"] = json.dumps(conf)
    return _join(header, body)


def _with_metadata(data: bytes, **changes) -> bytes:
    header, body = _split(data)
    for key, value in changes.items():
        if value is None:
            header["__metadata__"].pop(key, None)
        else:
            header["__metadata__"][key] = value
    return _join(header, body)


def _rejected(path: Path, *fragments: str) -> str:
    """Load ``path``: it must raise ModelFormatError within 1 s, naming the file and ``fragments``."""
    start = time.perf_counter()
    with pytest.raises(ModelFormatError) as info:
        load_safetensors(path)
    elapsed = time.perf_counter() - start
    message = str(info.value)
    assert elapsed < 1.0, f"took {elapsed:.2f} s: {message}"
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- the architecture metadata

BAD_CONFIGS = [
    # (config changes, fragments the message must contain)
    ({"channels": [32, 64, 200000]}, ["'channels'", "[32, 64, 200000]", "3 integers in 1..4096"]),
    ({"channels": [32, 64, 10**9]}, ["'channels'", "1000000000", "1..4096"]),
    ({"channels": [32, 64, 10**30]}, ["'channels'", "1..4096"]),
    ({"channels": [32, -64, 128]}, ["'channels'", "-64", "1..4096"]),
    ({"channels": [32, 0, 128]}, ["'channels'", "1..4096"]),
    ({"channels": [32, 64.0, 128]}, ["'channels'", "64.0", "integers"]),
    ({"channels": [32, 64.5, 128]}, ["'channels'", "64.5", "integers"]),
    ({"channels": [32, "64", 128]}, ["'channels'", '"64"', "integers"]),
    ({"channels": [32, True, 128]}, ["'channels'", "true", "integers"]),
    ({"channels": [32, 64]}, ["'channels'", "[32, 64]", "3 integers"]),
    ({"channels": [32, 64, 128, 256]}, ["'channels'", "3 integers"]),
    ({"channels": 128}, ["'channels'", "a list of 3"]),
    ({"channels": None}, ["'channels'", "null"]),
    ({"kernel_sizes": [7, 6, -5]}, ["'kernel_sizes'", "-5", "1..64"]),
    ({"kernel_sizes": [7, 6, 500]}, ["'kernel_sizes'", "500", "1..64"]),
    ({"pool_sizes": [2, 3, 0]}, ["'pool_sizes'", "1..64"]),
    ({"pool_sizes": [2, 3]}, ["'pool_sizes'", "3 integers"]),
    ({"kernel_sizes": [7, 6, 1]}, ["kernel_sizes [7, 6, 1]", "pool_sizes [2, 3, 4]", "2x2", "1x1"]),
    ({"pool_sizes": [2, 2, 4]}, ["pool_sizes [2, 2, 4]", "1x1"]),
    ({"kernel_sizes": [64, 6, 5]}, ["kernel_sizes [64, 6, 5]", "64x64", "1x1"]),
    ({"pool_sizes": [64, 3, 4]}, ["pool_sizes [64, 3, 4]", "1x1"]),
    ({"norm_kernel_size": 4}, ["'norm_kernel_size'", "4", "odd integer"]),
    ({"norm_kernel_size": -5}, ["'norm_kernel_size'", "-5", "odd integer"]),
    ({"norm_kernel_size": 10**9 + 1}, ["'norm_kernel_size'", "odd integer in 1..63"]),
    ({"norm_kernel_size": 5.0}, ["'norm_kernel_size'", "odd integer"]),
    ({"input_norm": "zca"}, ["'input_norm'", '"zca"', '"pixel" or "patch"']),
    ({"input_norm": None}, ["'input_norm'", "null"]),
    ({"l2_normalize": "yes"}, ["'l2_normalize'", '"yes"', "true or false"]),
    ({"l2_normalize": 1}, ["'l2_normalize'", "true or false"]),
    ({"region_scale": -16.0}, ["'region_scale'", "-16.0", "positive"]),
    ({"region_scale": "16"}, ["'region_scale'", "positive"]),
    ({"region_scale": float("nan")}, ["'region_scale'", "NaN", "positive"]),
    ({"region_scale": 10**400}, ["'region_scale'", "positive finite"]),
    ({"blur_sigma": -1}, ["'blur_sigma'", "-1", ">= 0"]),
    ({"blur_sigma": float("inf")}, ["'blur_sigma'", "Infinity", ">= 0"]),
    ({"arch": "resnet"}, ["'arch'", '"resnet"', '"cnn3"']),
    ({"dropout": 0.5}, ["unknown", "'dropout'", "channels"]),
]


@pytest.mark.parametrize("changes, fragments", BAD_CONFIGS, ids=lambda v: json.dumps(v)[:40])
def test_bad_architecture_metadata_is_rejected_before_building(tmp_path, default_bytes, no_build, changes, fragments):
    path = tmp_path / "claims.safetensors"
    path.write_bytes(_with_config(default_bytes, **changes))
    message = _rejected(path, "metadata 'config'", *fragments)
    assert "expected" in message


def test_huge_channel_claim_allocates_nothing(tmp_path, default_bytes):
    """The issue's case end to end in a fresh process: fast, and no large allocation at all."""
    paths = []
    for i, channels in enumerate(([32, 64, 200000], [32, 64, 10**9], [200000, 64, 128])):
        paths.append(tmp_path / f"big{i}.safetensors")
        paths[-1].write_bytes(_with_config(default_bytes, channels=channels))
    code = """
import resource, sys, time
import torch
from deepdesc.errors import ModelFormatError
from deepdesc.hub.weights import load_safetensors
torch.nn.Conv2d(1, 1, 1)  # warm up torch before the baseline
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for path in sys.argv[1:]:
    start = time.perf_counter()
    try:
        load_safetensors(path)
    except ModelFormatError as exc:
        print(f"{time.perf_counter() - start:.3f} {exc}")
    else:
        print("loaded", path)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)
"""
    out = subprocess.run([sys.executable, "-c", code, *map(str, paths)], capture_output=True, text=True, check=True)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 4, out.stdout + out.stderr
    for path, line in zip(paths, lines):
        seconds, message = line.split(" ", 1)
        assert float(seconds) < 0.5 and str(path) in message and "'channels'" in message
    assert int(lines[-1]) < 200  # MB of peak RSS growth


def test_non_json_and_missing_config(tmp_path, default_bytes, no_build):
    path = tmp_path / "m.safetensors"
    for config, fragment in (
        ("{not json", "not valid JSON"),
        ("[" * 100_000, "not valid JSON"),
        ("[32, 64, 128]", "a JSON object"),
        ('"cnn3"', "a JSON object"),
    ):
        path.write_bytes(_with_metadata(default_bytes, config=config))
        _rejected(path, "metadata 'config'", fragment, "expected")
    path.write_bytes(_with_metadata(default_bytes, config=None))
    _rejected(path, "'config'", "expected")


@pytest.mark.parametrize(
    "scales",
    ["[4, 1" + "0" * 400 + ", 16]", "[4.0, 9.0]", "[4.0, -9.0, 16.0]", "[4.0, NaN, 16.0]", "nope", '"4"', "[[4]]"],
)
def test_bad_lp_scales(tmp_path, default_bytes, no_build, scales):
    path = tmp_path / "m.safetensors"
    path.write_bytes(_with_metadata(default_bytes, lp_scales=scales))
    _rejected(path, "'lp_scales'", "3 positive finite numbers")


def test_foreign_format_tag(tmp_path, default_bytes, no_build):
    path = tmp_path / "m.safetensors"
    path.write_bytes(_with_metadata(default_bytes, format="other"))
    _rejected(path, "deepdesc metadata", "'other'")
    path.write_bytes(_with_metadata(default_bytes, format=None))
    _rejected(path, "deepdesc metadata")


# ---------------------------------------------------------------- tensors against the metadata


def _edit_header(data: bytes, change) -> bytes:
    header, body = _split(data)
    body = change(header, body) or body
    return _join(header, body)


def _set_shape(name, shape):
    def change(header, body):
        header[name]["shape"] = shape

    return change


def _drop(name):
    def change(header, body):
        del header[name]

    return change


def _add_extra(header, body):
    header["extra.weight"] = {"dtype": "F32", "shape": [2], "data_offsets": [len(body), len(body) + 8]}
    return body + bytes(8)


def _set_dtype(name, dtype):
    def change(header, body):
        header[name]["dtype"] = dtype

    return change


def _set_offsets(name, offsets):
    def change(header, body):
        header[name]["data_offsets"] = offsets

    return change


def _overlap(header, body):
    """conv1.bias (128 bytes) moved onto the start of conv2.bias."""
    begin = header["conv2.bias"]["data_offsets"][0]
    header["conv1.bias"]["data_offsets"] = [begin, begin + 128]


BAD_TENSORS = [
    (_set_shape("conv1.weight", [16, 2, 7, 7]), ["'conv1.weight'", "(16, 2, 7, 7)", "(32, 1, 7, 7)"]),
    (_set_shape("conv3.bias", [64, 2]), ["'conv3.bias'", "(64, 2)", "(128,)"]),
    (_set_shape("mean", [64, 64]), ["'mean'", "(64, 64)", "(1, 64, 64)"]),
    (_set_shape("conv1.bias", [-32]), ["'conv1.bias'", "shape", "non-negative integers"]),
    (_set_shape("conv1.bias", [32.0]), ["'conv1.bias'", "shape", "non-negative integers"]),
    (_set_shape("conv1.bias", "32"), ["'conv1.bias'", "shape", "non-negative integers"]),
    (_drop("std"), ["missing", "'std'"]),
    (_drop("conv3.weight"), ["missing", "'conv3.weight'"]),
    (_add_extra, ["unexpected", "'extra.weight'"]),
    (_set_dtype("conv2.bias", "I32"), ["'conv2.bias'", "I32", "F32"]),
    (_set_dtype("conv2.bias", 7), ["'conv2.bias'", "dtype"]),
    (_set_offsets("conv1.bias", [0, 64]), ["'conv1.bias'", "64 bytes", "128"]),
    (_set_offsets("conv1.bias", [0, -128]), ["'conv1.bias'", "data_offsets"]),
    (_set_offsets("conv1.bias", [0]), ["'conv1.bias'", "data_offsets"]),
    (_overlap, ["'conv1.bias'", "overlap"]),
]


@pytest.mark.parametrize("change, fragments", BAD_TENSORS, ids=[f"t{i}" for i in range(len(BAD_TENSORS))])
def test_tensors_disagreeing_with_the_header_or_metadata(tmp_path, default_bytes, no_build, change, fragments):
    path = tmp_path / "t.safetensors"
    path.write_bytes(_edit_header(default_bytes, change))
    _rejected(path, *fragments)


def test_config_consistent_claim_but_tensors_are_smaller(tmp_path, default_bytes, no_build):
    """A bounded claim the tensors do not back: the shapes are compared before anything is built."""
    path = tmp_path / "wide.safetensors"
    path.write_bytes(_with_config(default_bytes, channels=[32, 64, 256]))
    message = _rejected(path, "'conv3.", "(256", "channels [32, 64, 256]")
    assert "(128" in message
    # [7, 6, 4] also reduces 64x64 to 1x1 (floor pooling), but the file's conv3 is 5x5
    path.write_bytes(_with_config(default_bytes, kernel_sizes=[7, 6, 4]))
    _rejected(path, "'conv3.weight'", "(128, 64, 5, 5)", "kernel_sizes [7, 6, 4]", "(128, 64, 4, 4)")


@pytest.mark.parametrize("name, value", [("conv2.weight", math.nan), ("conv3.bias", math.inf), ("mean", -math.inf)])
def test_non_finite_weights_name_the_tensor(tmp_path, default_bytes, no_build, name, value):
    header, body = _split(default_bytes)
    begin = header[name]["data_offsets"][0]
    body = body[:begin] + struct.pack("<f", value) + body[begin + 4 :]
    path = tmp_path / "nan.safetensors"
    path.write_bytes(_join(header, body))
    _rejected(path, f"'{name}'", "NaN or inf", "finite")


def test_pixel_normalisation_needs_a_positive_std(tmp_path, default_bytes, no_build):
    header, body = _split(default_bytes)
    begin, end = header["std"]["data_offsets"]
    body = body[:begin] + bytes(end - begin) + body[end:]
    header["__metadata__"]["config"] = json.dumps(
        {**json.loads(header["__metadata__"]["config"]), "input_norm": "pixel"}
    )
    path = tmp_path / "std.safetensors"
    path.write_bytes(_join(header, body))
    _rejected(path, "'std'", "positive")


# ---------------------------------------------------------------- files that are not (whole) safetensors


def test_truncated_files(tmp_path, default_bytes, no_build):
    n = struct.unpack("<Q", default_bytes[:8])[0]
    cuts = [0, 3, 7, 8, 9, 100, n + 7, n + 8, n + 9, n + 1000, len(default_bytes) // 2, len(default_bytes) - 1]
    path = tmp_path / "cut.safetensors"
    for cut in cuts:
        path.write_bytes(default_bytes[:cut])
        message = _rejected(path)
        assert any(word in message for word in ("truncated", "too short", "not a safetensors")), message


def test_trailing_bytes_are_rejected(tmp_path, default_bytes, no_build):
    path = tmp_path / "long.safetensors"
    path.write_bytes(default_bytes + bytes(16))
    _rejected(path, "16 bytes", "after the last tensor")


@pytest.mark.parametrize(
    "data, fragments",
    [
        (b"", ["too short"]),
        (b"\x89PNG\r\n\x1a\n" + bytes(64), ["header", "16777216"]),
        (struct.pack("<Q", 2**63) + b"{}", ["header", "16777216"]),
        (struct.pack("<Q", 50) + b"{}", ["truncated"]),
        (struct.pack("<Q", 10) + b"{not json}", ["not valid JSON"]),
        (struct.pack("<Q", 2) + b"[]", ["JSON object"]),
        (struct.pack("<Q", 4) + b"\xff\xfe{}", ["UTF-8"]),
        (_join({"__metadata__": {"format": 3}}, b""), ["'__metadata__'", "strings"]),
        (_join({"__metadata__": ["format"]}, b""), ["'__metadata__'", "strings"]),
        (_join({"__metadata__": ""}, b""), ["'__metadata__'", "strings"]),
        (_join({"w": [1, 2]}, b""), ["'w'", "dtype"]),
        (struct.pack("<Q", 200_000) + b"[" * 200_000, ["not valid JSON"]),
    ],
    ids=lambda v: None if isinstance(v, list) else v[:12].hex(),
)
def test_not_safetensors_at_all(tmp_path, no_build, data, fragments):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(data)
    _rejected(path, *fragments)
    with pytest.raises(ModelFormatError, match="junk.safetensors"):
        read_safetensors_metadata(path)


def test_t7_file_renamed_to_safetensors(tmp_path, t7_paths, no_build):
    path = tmp_path / "split4.safetensors"
    path.write_bytes(t7_paths["split4"].read_bytes())
    _rejected(path, "not a safetensors file")


def test_oversized_header_is_not_read(tmp_path, no_build):
    path = tmp_path / "hdr.safetensors"
    size = weights.MAX_HEADER_BYTES + 1
    path.write_bytes(struct.pack("<Q", size) + b"{" + b" " * (size - 2) + b"}")
    _rejected(path, f"header of {size} bytes", "16777216")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_safetensors(tmp_path / "nope.safetensors")
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        read_safetensors_metadata(tmp_path / "nope.safetensors")


# ---------------------------------------------------------------- valid files still load

VALID_CONFS = [
    {},
    {"channels": [8, 16, 24], "input_norm": "patch", "l2_normalize": True},
    {"kernel_sizes": [5, 5, 5], "pool_sizes": [2, 2, 9], "norm_kernel_size": 3},
    {"channels": [1, 1, 1], "kernel_sizes": [1, 1, 1], "pool_sizes": [1, 1, 64], "norm_kernel_size": 1},
    {"region_scale": 12, "blur_sigma": 0.0},
]


@pytest.mark.parametrize("conf", VALID_CONFS, ids=lambda c: json.dumps(c)[:40])
def test_round_trip_of_valid_architectures(tmp_path, conf):
    torch.manual_seed(0)
    model = DeepDescNet(conf).eval()
    model.pool2.scale = 7.5
    path = tmp_path / "ok.safetensors"
    save_safetensors(model, path, {"note": "x"})
    loaded = load_safetensors(path)
    assert loaded.conf == model.conf and loaded.info["note"] == "x"
    assert loaded.pool2.scale == 7.5
    x = torch.from_numpy(np.random.default_rng(0).uniform(0, 255, (2, 1, 64, 64)).astype(np.float32))
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert weights._expected_shapes(model.conf) == {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_half_precision_file_loads(tmp_path):
    model = DeepDescNet({"channels": [8, 16, 24]}).eval()
    path = tmp_path / "half.safetensors"
    save_safetensors(model.to(torch.bfloat16), path)
    loaded = load_safetensors(path)
    assert loaded.conv1.weight.dtype == torch.float32
    assert torch.equal(loaded.conv1.weight, model.conv1.weight.float())


def test_older_file_without_optional_keys_loads(tmp_path, default_bytes):
    """Files from before region_scale/blur_sigma/lp_scales existed: the defaults apply."""
    header, body = _split(default_bytes)
    conf = json.loads(header["__metadata__"]["config"])
    for key in ("region_scale", "blur_sigma", "arch"):
        del conf[key]
    header["__metadata__"]["config"] = json.dumps(conf)
    del header["__metadata__"]["lp_scales"]
    path = tmp_path / "old.safetensors"
    path.write_bytes(_join(header, body))
    model = load_safetensors(path)
    assert model.conf["region_scale"] is None and model.pool3.scale == 16.0


def test_cnn3_file_loads_quickly(default_bytes, tmp_path):
    path = tmp_path / "cnn3.safetensors"
    path.write_bytes(default_bytes)
    start = time.perf_counter()
    model = load_safetensors(path)
    assert time.perf_counter() - start < 1.0
    assert model.conf["channels"] == [32, 64, 128] and model.info["license"] == "MIT"
    meta = read_safetensors_metadata(path)
    assert meta["format"] == "deepdesc" and json.loads(meta["config"]) == model.conf


def test_packaged_default_loads_quickly():
    start = time.perf_counter()
    model = load_safetensors(model_path("default"))
    assert time.perf_counter() - start < 1.0
    assert model.conf["arch"] == "compact" and model.conf["width"] == 16 and model.info["license"] == "MIT"
    meta = read_safetensors_metadata(model_path("default"))
    assert meta["format"] == "deepdesc" and json.loads(meta["config"]) == model.conf


def test_half_precision_file_loads_as_float32(tmp_path):
    """convert --half: half the bytes, float32 network, descriptors within float16 rounding."""
    import numpy as np

    from deepdesc import describe
    from deepdesc.cli import main
    from deepdesc.hub.weights import load_safetensors, save_safetensors
    from deepdesc.nn.factory import build_net

    torch.manual_seed(0)
    net = build_net({"arch": "compact", "width": 8}).eval()
    full, half = tmp_path / "full.safetensors", tmp_path / "half.safetensors"
    save_safetensors(net, full)
    assert main(["convert", str(full), str(half), "--half"]) == 0
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded = load_safetensors(half)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    patches = np.random.default_rng(0).integers(0, 256, (8, 64, 64)).astype(np.uint8)
    np.testing.assert_allclose(describe(patches, model=loaded), describe(patches, model=net), atol=5e-3)
