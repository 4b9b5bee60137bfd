"""Named models: download into the cache (file:// URLs), digests, atomicity, formats."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
import torch

import deepdesc
from deepdesc.cli import main
from deepdesc.hub import registry
from deepdesc.hub.registry import MODELS, ModelNotAvailableError, load_model
from deepdesc.hub.weights import ModelFormatError, load_safetensors, load_t7, read_safetensors_metadata


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPDESC_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _point_at(monkeypatch, name, url, sha256=None):
    info = dataclasses.replace(MODELS[name], url=url, sha256=sha256 or MODELS[name].sha256)
    monkeypatch.setitem(MODELS, name, info)


def test_registry_digests_match_shared_sha256sums(t7_paths):
    sums = dict(line.split()[::-1] for line in (t7_paths["split1"].parent / "SHA256SUMS").read_text().splitlines())
    for name, path in t7_paths.items():
        assert MODELS[name].filename == path.name
        assert MODELS[name].sha256 == sums[path.name] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert "CC BY-NC-SA" in MODELS[name].license


def test_name_downloads_once_into_cache(cache, monkeypatch, t7_paths):
    _point_at(monkeypatch, "split2", t7_paths["split2"].as_uri())
    model = load_model("split2", device="cpu")
    cached = cache / MODELS["split2"].filename
    assert cached.read_bytes() == t7_paths["split2"].read_bytes()
    assert torch.equal(model.conv2.weight, load_t7(t7_paths["split2"]).conv2.weight)
    # second load comes from the cache, even with the source gone
    _point_at(monkeypatch, "split2", (cache / "missing.t7").as_uri())
    assert torch.equal(load_model("split2").conv1.weight, model.conv1.weight)
    assert not list(cache.glob(".*tmp"))


def test_wrong_digest_is_never_used(cache, monkeypatch, t7_paths):
    _point_at(monkeypatch, "split1", t7_paths["split1"].as_uri(), sha256="0" * 64)
    with pytest.raises(ModelNotAvailableError, match="SHA-256 mismatch"):
        load_model("split1")
    assert not cache.exists() or not any(cache.iterdir())


def test_partial_cached_file_is_rejected(cache, monkeypatch, t7_paths):
    cache.mkdir()
    (cache / MODELS["split3"].filename).write_bytes(t7_paths["split3"].read_bytes()[:1000])
    with pytest.raises(ModelNotAvailableError, match="does not match SHA-256"):
        load_model("split3")


def test_offline_error_says_where_to_put_the_file(cache, monkeypatch, tmp_path):
    _point_at(monkeypatch, "split4", (tmp_path / "nowhere" / "x.t7").as_uri())
    with pytest.raises(ModelNotAvailableError) as info:
        load_model("split4")
    assert str(cache / MODELS["split4"].filename) in str(info.value)
    assert MODELS["split4"].sha256 in str(info.value)


def test_default_is_reserved_with_a_clear_message(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "_packaged", lambda filename: tmp_path / filename)
    with pytest.raises(ModelNotAvailableError, match="split4"):
        load_model("default")


def test_unknown_name_and_bad_suffix(tmp_path):
    with pytest.raises(KeyError, match="split1"):
        load_model("split9")
    (tmp_path / "m.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match=".t7 or .safetensors"):
        load_model(tmp_path / "m.bin")


def test_convert_cli_round_trip(tmp_path, t7_paths):
    out = tmp_path / "split4.safetensors"
    assert main(["convert", str(t7_paths["split4"]), str(out)]) == 0
    meta = read_safetensors_metadata(out)
    assert meta["name"] == "split4" and "CC BY-NC-SA" in meta["license"]
    assert "Liberty" in meta["training_data"] and meta["provenance"].startswith("converted from CNN3")
    original, converted = load_t7(t7_paths["split4"]), load_model(out)
    x = torch.from_numpy(np.random.default_rng(0).uniform(0, 255, (4, 1, 64, 64)).astype(np.float32))
    with torch.no_grad():
        assert torch.equal(original(x), converted(x))
    assert converted.info["license"] == meta["license"]


def test_bad_safetensors_files(tmp_path, split4_model):
    garbage = tmp_path / "g.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    with pytest.raises(ModelFormatError, match="g.safetensors"):
        load_safetensors(garbage)
    from safetensors.torch import save_file

    foreign = tmp_path / "f.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(ModelFormatError, match="deepdesc metadata"):
        load_safetensors(foreign)
    good = tmp_path / "ok.safetensors"
    deepdesc.save_safetensors(split4_model, good)
    data = good.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError, match="cut.safetensors"):
        load_safetensors(tmp_path / "cut.safetensors")


def test_models_cli_lists_registry(cache, capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("split1", "split2", "split3", "split4", "default"):
        assert name in out
    assert "CC BY-NC-SA" in out and "downloadable" in out


def test_cli_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "bad.t7").write_bytes(b"junk")
    assert main(["convert", str(tmp_path / "bad.t7"), str(tmp_path / "o.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "bad.t7" in err and "Traceback" not in err


def test_public_api_is_lazy_and_complete():
    import subprocess
    import sys

    code = "import sys, deepdesc; assert 'torch' not in sys.modules; print(len(deepdesc.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) > 10
    for name in deepdesc.__all__:
        assert getattr(deepdesc, name) is not None


def test_packaged_default_weights_load_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPDESC_CACHE", str(tmp_path / "empty-cache"))
    path = registry.model_path("default")
    assert path.stat().st_size < 2_000_000
    model = load_model()
    assert model.conf["input_norm"] == "patch" and model.conf["l2_normalize"]
    assert model.info["license"] == "MIT" and "eval" in model.info["training_data"]
    out = deepdesc.describe(np.random.default_rng(0).integers(0, 256, (3, 64, 64), dtype=np.uint8))
    assert out.shape == (3, 128)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-4)
    assert not (tmp_path / "empty-cache").exists()  # nothing was downloaded


def test_atomic_writes_have_normal_permissions(tmp_path):
    from deepdesc.utils import atomic_path

    with atomic_path(tmp_path / "f.txt") as tmp:
        tmp.write_text("x")
    assert (tmp_path / "f.txt").stat().st_mode & 0o044 == 0o044
