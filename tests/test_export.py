"""ONNX export: parity through onnxruntime with the PyTorch model, atomic writes, lazy imports."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from deepdesc.nn.cnn3 import DeepDescNet
from deepdesc.nn.export import OnnxDescriber, export_onnx

from .test_fast import oxford_pairs

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def split4_onnx(split4_model, tmp_path_factory):
    return export_onnx(split4_model, tmp_path_factory.mktemp("onnx") / "split4.onnx")


def _reference(model, x):
    with torch.inference_mode():
        return model(torch.as_tensor(x)).numpy()


def test_parity_on_random_and_real_patches(split4_model, split4_onnx):
    ort = OnnxDescriber(split4_onnx, batch_size=64)
    x = np.random.default_rng(0).uniform(0, 255, (70, 1, 64, 64)).astype(np.float32)
    out = ort(x)
    assert out.shape == (70, 128) and out.dtype == np.float32
    assert np.abs(out - _reference(split4_model, x)).max() < 1e-4
    for patches in oxford_pairs("bikes", n=60):
        out = ort(patches)  # a CPU tensor in, a tensor out
        assert isinstance(out, torch.Tensor)
        assert (out - torch.from_numpy(_reference(split4_model, patches))).abs().max() < 1e-4


def test_graph_interface_and_metadata(split4_onnx):
    proto = onnx.load(str(split4_onnx))
    onnx.checker.check_model(proto)
    (inp,), (out,) = proto.graph.input, proto.graph.output
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert inp.name == "patches" and dims == ["batch", 1, 64, 64]
    assert out.name == "descriptors" and [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim][1] == 128
    assert proto.opset_import[0].version == 17
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["format"] == "deepdesc" and meta["source"].startswith("CNN3_")


def test_static_batch_other_config_and_empty_input(tmp_path):
    torch.manual_seed(0)
    model = DeepDescNet({"input_norm": "patch", "l2_normalize": True}).eval()
    path = export_onnx(model, tmp_path / "sub" / "m.onnx", dynamic_batch=False, batch_size=3)
    ort = OnnxDescriber(path)
    x = (torch.rand(3, 1, 64, 64) * 255).numpy()
    assert np.abs(ort(x) - _reference(model, x)).max() < 1e-4
    dims = [d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [3, 1, 64, 64]
    with pytest.raises(ValueError, match="64, 64"):
        ort(np.zeros((2, 64, 64), np.float32))
    assert [p.name for p in tmp_path.joinpath("sub").iterdir()] == ["m.onnx"]  # no temporary left


def test_failed_export_leaves_no_file(tmp_path, monkeypatch):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"old")

    def boom(*args, **kwargs):
        raise RuntimeError("export failed")

    monkeypatch.setattr(torch.onnx, "export", boom)
    with pytest.raises(RuntimeError, match="export failed"):
        export_onnx(DeepDescNet(), target)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_missing_extra_names_it(tmp_path, monkeypatch):
    for name in ("onnx", "onnxruntime"):
        monkeypatch.setitem(sys.modules, name, None)  # makes "import name" raise ImportError
    with pytest.raises(ImportError, match=r"pip install deepdesc\[onnx\]"):
        export_onnx(DeepDescNet(), tmp_path / "m.onnx")
    with pytest.raises(ImportError, match=r"pip install deepdesc\[onnx\]"):
        OnnxDescriber(tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())
