"""The compact network (arch "compact"): shapes, cost, modes, BN folding, files, ONNX, the pipeline, training."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import deepdesc
from deepdesc.errors import ConfigError
from deepdesc.hub import weights
from deepdesc.hub.weights import load_safetensors, save_safetensors
from deepdesc.nn import ARCHS, CompactNet, DeepDescNet, DescriptorNet, build_net
from deepdesc.nn.fast import FastDescriber, PreparedCompactNet, _cpu_has_bf16, fast_describer, prepare_net
from deepdesc.train import CheckpointError, Trainer, load_config
from deepdesc.train.checkpoint import check_compatible, model_from_checkpoint

from .test_weights import _join, _rejected, _split


def _patches(n: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).uniform(0, 255, (n, 1, 64, 64)).astype(np.float32))


def _trained_stats(model: CompactNet, seed: int = 0) -> CompactNet:
    """Non-trivial BN running statistics (and pixel maps): a few training-mode passes, no optimiser."""
    model.train()
    with torch.no_grad():
        for i in range(3):
            model(_patches(16, seed + i) * torch.linspace(0.3, 1.0, 16).view(-1, 1, 1, 1))
        model.mean.uniform_(90, 150)
        model.std.uniform_(40, 80)
    return model.eval()


@pytest.fixture(scope="module")
def compact() -> CompactNet:
    torch.manual_seed(0)
    return _trained_stats(CompactNet())


# ---------------------------------------------------------------- the network


def test_shapes_unit_norm_parameters_and_flops(compact):
    out = compact(_patches(5))
    assert out.shape == (5, 128) and compact.descriptor_size == 128
    assert torch.allclose(out.norm(dim=1), torch.ones(5), atol=1e-5)
    assert sum(p.numel() for p in compact.parameters()) == 595_856  # ~0.6 M at width 16
    assert 20.0e6 < compact.num_flops() < 20.5e6  # ~20 MFLOP per patch
    assert DeepDescNet().num_flops() / compact.num_flops() > 4.9  # CNN3: ~102 MFLOP
    wide = CompactNet({"width": 32})
    assert sum(p.numel() for p in wide.parameters()) == 1_334_560 and 78e6 < wide.num_flops() < 79e6
    assert isinstance(compact, DescriptorNet) and compact.conf["arch"] == "compact"
    assert not CompactNet({"l2_normalize": False}).eval()(_patches(2)).norm(dim=1).allclose(torch.ones(2))


def test_map_sizes_follow_the_layout():
    model = CompactNet({"width": 8}).eval()
    sizes = []
    for i in range(1, 8):
        getattr(model, f"conv{i}").register_forward_hook(lambda m, a, out: sizes.append(tuple(out.shape[1:])))
    model(_patches(2))
    assert sizes == [(8, 32, 32), (8, 32, 32), (16, 16, 16), (16, 16, 16), (32, 8, 8), (32, 8, 8), (128, 1, 1)]
    assert all(getattr(model, f"conv{i}").bias is None and not getattr(model, f"bn{i}").affine for i in range(1, 8))


def test_train_and_eval_modes():
    torch.manual_seed(1)
    model = CompactNet({"dropout": 0.5})
    x = _patches(8)
    model.train()
    before = model.bn1.running_mean.clone()
    a, b = model(x), model(x)
    assert not torch.allclose(a, b)  # dropout
    assert not torch.equal(before, model.bn1.running_mean)  # running statistics move
    model.dropout.p = 0.0
    with torch.no_grad():  # batch statistics: a patch's descriptor depends on its batch
        assert not torch.allclose(model(x)[:4], model(x[:4]), atol=1e-4)
    model.eval()
    with torch.no_grad():
        c = model(x)
        assert torch.equal(c, model(x))
        assert torch.allclose(c[:4], model(x[:4]), atol=1e-6)
    assert model.bn1.num_batches_tracked.item() == 4


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 12), split=st.integers(0, 12), seed=st.integers(0, 2**16), scale=st.floats(0.0, 1.0))
def test_eval_descriptors_do_not_depend_on_the_batch(compact, n, split, seed, scale):
    x = (_patches(n, seed) * scale).round()
    split = min(split, n)
    with torch.no_grad():
        whole = compact(x)
        parts = torch.cat([compact(x[:split]), compact(x[split:])]) if 0 < split < n else compact(x)
        single = compact(x[-1:])
    assert torch.isfinite(whole).all()
    assert (whole - parts).abs().max() <= 1e-5
    assert (whole[-1:] - single).abs().max() <= 1e-5


def test_factory_and_conf_validation():
    assert {"cnn3", "compact"} <= set(ARCHS)
    assert type(build_net()) is DeepDescNet and type(build_net({"arch": "cnn3"})) is DeepDescNet
    net = build_net({"arch": "compact", "width": 8, "dropout": 0.0})
    assert type(net) is CompactNet and net.conv1.out_channels == 8 and net.dropout.p == 0.0
    with pytest.raises(ValueError, match="unknown network arch 'hardnet'; known: 'cnn3', 'compact'"):
        build_net({"arch": "hardnet"})
    with pytest.raises(ValueError, match=r"unknown CompactNet conf keys \['channels'\]"):
        build_net({"arch": "compact", "channels": [8, 16, 32]})
    with pytest.raises(ValueError, match=r"unknown DeepDescNet conf keys \['width'\]"):
        build_net({"width": 16})
    with pytest.raises(ValueError, match="implements arch 'cnn3', not 'compact'"):
        DeepDescNet({"arch": "compact"})
    for bad in ({"width": 0}, {"width": 2.0}, {"dropout": 1.0}, {"dropout": -0.1}, {"input_norm": "zca"}):
        with pytest.raises(ValueError):
            CompactNet(bad)


def test_weights_sha256_tracks_statistics_not_the_counter(compact):
    model = CompactNet()
    model.load_state_dict(compact.state_dict())
    digest = model.weights_sha256()
    assert digest == compact.weights_sha256()
    model.bn3.num_batches_tracked += 5
    assert model.weights_sha256() == digest
    with torch.no_grad():
        model.bn3.running_var[0] += 0.5
    assert model.weights_sha256() != digest


# ---------------------------------------------------------------- prepared inference (BN folded)


@pytest.mark.parametrize(
    "conf",
    [{}, {"input_norm": "pixel", "l2_normalize": False}, {"width": 8, "dropout": 0.0}],
    ids=["default", "pixel-unnormalised", "width8"],
)
def test_folded_fast_path_matches_the_module(conf):
    torch.manual_seed(2)
    model = _trained_stats(CompactNet(conf))
    x = _patches(37, 3)
    with torch.no_grad():
        ref = model(x)
    plain = prepare_net(model)
    assert isinstance(plain, PreparedCompactNet)
    with torch.no_grad():
        assert (plain(x) - ref).abs().max() <= 1e-5
    for workers in (1, 2):
        fast = FastDescriber(model, batch_size=8, workers=workers)
        out = fast(x)
        assert out.shape == (37, 128) and out.dtype == torch.float32
        assert (out - ref).abs().max() <= 1e-5, workers
    assert FastDescriber(model)(x[:0]).shape == (0, 128)


@pytest.mark.skipif(not _cpu_has_bf16(), reason="CPU without native bfloat16")
def test_bf16_close_to_fp32(compact):
    x = _patches(64, 7)
    with torch.no_grad():
        ref = compact(x)
    out = FastDescriber(compact, "bf16")(x)
    assert out.dtype == torch.float32 and (out - ref).abs().max() <= 0.01  # measured ~1.2e-3 (unit-norm output)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fp32_and_fp16(compact):
    x = _patches(300, 8)
    with torch.no_grad():
        ref = compact(x)
    gpu = torch.device("cuda")
    out = FastDescriber(compact, "fp32", device=gpu)(x.to(gpu))
    assert out.device.type == "cuda" and (out.cpu() - ref).abs().max() <= 1e-3  # TF32 may be enabled
    half = FastDescriber(compact, "fp16", device=gpu)(x)
    assert half.dtype == torch.float32 and (half.cpu() - ref).abs().max() <= 0.01
    on_gpu = CompactNet()
    on_gpu.load_state_dict(compact.state_dict())
    on_gpu = on_gpu.to(gpu).eval()
    described = deepdesc.describe(x.to(gpu), model=on_gpu)
    assert described.device.type == "cuda" and (described.cpu() - ref).abs().max() <= 1e-3


def test_fast_path_is_eval_mode_and_leaves_the_model_alone():
    torch.manual_seed(4)
    model = _trained_stats(CompactNet()).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = _patches(6)
    out = FastDescriber(model)(x)
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        assert (out - model.eval()(x)).abs().max() <= 1e-5


def test_fast_describer_cache_follows_running_statistics(compact):
    model = CompactNet()
    model.load_state_dict(compact.state_dict())
    model.eval()
    first = fast_describer(model)
    assert fast_describer(model) is first
    model.train()
    with torch.no_grad():
        model(_patches(8, 9))  # a training-mode pass moves the BN statistics in place
    model.eval()
    second = fast_describer(model)
    assert second is not first
    x = _patches(3)
    with torch.no_grad():
        assert (second(x) - model(x)).abs().max() <= 1e-5


def test_overridden_forward_runs_as_is():
    class Negated(CompactNet):
        def forward(self, x):
            return -super().forward(x)

    model = Negated().eval()
    assert fast_describer(model) is model
    with pytest.raises(ValueError, match="CompactNet's own forward; Negated overrides it"):
        fast_describer(model, "bf16")


# ---------------------------------------------------------------- safetensors


def test_safetensors_round_trip(tmp_path, compact):
    path = tmp_path / "compact.safetensors"
    compact.info = {"provenance": "test"}
    save_safetensors(compact, path, {"note": "x"})
    meta = weights.read_safetensors_metadata(path)
    assert json.loads(meta["config"]) == compact.conf and "lp_scales" not in meta
    loaded = load_safetensors(path)
    assert isinstance(loaded, CompactNet) and not loaded.training
    assert loaded.conf == compact.conf and loaded.info == {"provenance": "test", "note": "x"}
    assert loaded.weights_sha256() == compact.weights_sha256()
    assert loaded.bn2.num_batches_tracked.item() == compact.bn2.num_batches_tracked.item() == 3
    x = _patches(4)
    with torch.no_grad():
        assert torch.equal(compact(x), loaded(x))
    assert weights._expected_shapes(compact.conf) == {k: tuple(v.shape) for k, v in compact.state_dict().items()}
    other = CompactNet({"width": 4, "dropout": 0.0, "region_scale": 12.0, "blur_sigma": 0.5})
    save_safetensors(other.to(torch.bfloat16), path)  # half precision files load too
    again = deepdesc.load_model(path, device="cpu")
    assert isinstance(again, CompactNet) and again.conf == other.conf and again.conv1.weight.dtype == torch.float32


@pytest.fixture(scope="module")
def compact_bytes(tmp_path_factory, compact) -> bytes:
    path = tmp_path_factory.mktemp("w") / "c.safetensors"
    save_safetensors(compact, path)
    return path.read_bytes()


def _edit(data: bytes, config=None, metadata=None, entries=None) -> bytes:
    header, body = _split(data)
    conf = json.loads(header["__metadata__"]["config"])
    conf.update(config or {})
    for key in [k for k, v in conf.items() if v is _DROP]:
        del conf[key]
    header["__metadata__"]["config"] = json.dumps(conf)
    header["__metadata__"].update(metadata or {})
    for name, change in (entries or {}).items():
        if change is _DROP:
            del header[name]
        else:
            header[name].update(change)
    return _join(header, body)


_DROP = object()

BAD_FILES = [
    ({"config": {"arch": "hardnet"}}, ["'arch'", '"hardnet"', '"cnn3" or "compact"']),
    ({"config": {"arch": "cnn3"}}, ["unknown keys", "'dropout'", "'width'", 'arch "cnn3"']),
    ({"config": {"arch": "cnn3", "width": _DROP, "dropout": _DROP}}, ["missing", "'conv1.bias'", "unexpected"]),
    ({"config": {"channels": [16, 32, 64]}}, ["unknown keys", "'channels'", 'arch "compact"', "width"]),
    ({"config": {"width": 0}}, ["'width'", "integer in 1..1024"]),
    ({"config": {"width": 10**9}}, ["'width'", "1000000000", "1..1024"]),
    ({"config": {"width": 16.0}}, ["'width'", "16.0", "integer"]),
    ({"config": {"width": 8}}, ["'bn1.running_mean'", "(16,)", "implies (8,)", "arch compact, width 8"]),
    ({"config": {"dropout": 1.0}}, ["'dropout'", "[0, 1)"]),
    ({"config": {"dropout": "0.1"}}, ["'dropout'", "[0, 1)"]),
    ({"config": {"input_norm": "zca"}}, ["'input_norm'", '"pixel" or "patch"']),
    ({"metadata": {"lp_scales": "[4, 9, 16]"}}, ["'lp_scales'", 'arch "compact"']),
    (
        {"entries": {"conv7.weight": {"shape": [128, 64, 4, 4]}}},
        ["'conv7.weight'", "(128, 64, 4, 4)", "(128, 64, 8, 8)"],
    ),
    ({"entries": {"bn4.running_var": _DROP}}, ["missing ['bn4.running_var']"]),
    ({"entries": {"bn4.num_batches_tracked": {"dtype": "F32"}}}, ["'bn4.num_batches_tracked'", "F32", "I64"]),
    ({"entries": {"bn4.running_mean": {"dtype": "I64"}}}, ["'bn4.running_mean'", "I64", "F32"]),
    ({"entries": {"bn1.running_mean": {"shape": [17]}}}, ["'bn1.running_mean'", "(17,)", "(16,)"]),
]


@pytest.mark.parametrize("change, fragments", BAD_FILES, ids=lambda v: json.dumps(v, default=str)[:48])
def test_malformed_compact_files_are_rejected_before_building(tmp_path, compact_bytes, no_build, change, fragments):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(_edit(compact_bytes, **change))
    message = _rejected(path, *fragments)
    assert "expected" in message or "implies" in message


@pytest.mark.parametrize(
    "name, value, fragment",
    [("bn2.running_var", -1.0, "negative"), ("bn2.running_mean", float("nan"), "NaN"), ("conv5.weight", np.inf, "inf")],
)
def test_bad_values_name_the_tensor(tmp_path, compact, name, value, fragment):
    model = CompactNet()
    model.load_state_dict(compact.state_dict())
    with torch.no_grad():
        model.state_dict()[name].view(-1)[0] = value
    path = tmp_path / "values.safetensors"
    save_safetensors(model, path)
    _rejected(path, f"'{name}'", fragment)


def test_registry_accepts_any_network(compact):
    assert deepdesc.load_model(compact, device="cpu") is compact


# ---------------------------------------------------------------- ONNX, describe, Extractor


def test_onnx_parity(tmp_path, compact):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from deepdesc.nn.export import OnnxDescriber, export_onnx

    path = export_onnx(compact, tmp_path / "compact.onnx")
    ort = OnnxDescriber(path)
    x = _patches(7, 5).round().numpy()
    with torch.no_grad():
        ref = compact(torch.from_numpy(x)).numpy()
    out = ort(x)
    assert out.shape == (7, 128) and np.abs(out - ref).max() < 1e-4
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["arch"] == "compact"
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "BatchNormalization" not in ops and "Dropout" not in ops  # folded, eval mode


def test_describe_with_a_compact_model(compact):
    x = _patches(20, 6).round().numpy().astype(np.uint8)
    out = deepdesc.describe(x, model=compact, batch_size=7)
    assert isinstance(out, np.ndarray) and out.shape == (20, 128) and out.dtype == np.float32
    with torch.no_grad():
        ref = compact(torch.from_numpy(x.astype(np.float32)))
    assert np.abs(out - ref.numpy()).max() <= 1e-5
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_extractor_with_a_compact_model(compact):
    rng = np.random.default_rng(0)
    noise = cv2.GaussianBlur(rng.random((240, 320)).astype(np.float32), (0, 0), 2.5)
    image = cv2.normalize(noise, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    extractor = deepdesc.Extractor(model=compact, max_keypoints=200, device="cpu")
    features = extractor.extract(image)
    assert len(features.keypoints) > 20
    assert features.descriptors.shape == (len(features.keypoints), 128)
    assert np.allclose(np.linalg.norm(features.descriptors, axis=1), 1.0, atol=1e-5)
    assert extractor.descriptorSize() == 128
    keypoints, descriptors = extractor.detectAndCompute(image)
    assert len(keypoints) == len(descriptors) > 0


def test_kornia_style_descriptor_wraps_a_compact_model(compact):
    module = deepdesc.DeepDescDescriptor(compact, input_range=1.0)
    x = _patches(3) / 255.0
    with torch.no_grad():
        assert torch.allclose(module(x), compact(x * 255.0), atol=1e-5)


# ---------------------------------------------------------------- training


def _tiny_compact_conf(tmp_path, **model):
    return load_config(
        None,
        {
            "preset": "hardnet",
            "model": {"arch": "compact", "width": 16, **model},
            "data": {
                "sources": ["synthetic-noise"],
                "weights": [1.0],
                "batch_size": 16,
                "val_pairs": 32,
                "num_workers": 0,
            },
            "optim": {"lr": 0.05},
            "run": {"steps": 4, "val_every": 2, "ckpt_every": 2, "out_dir": str(tmp_path / "run"), "device": "cpu"},
        },
    )


def test_config_keys_per_arch():
    conf = load_config(None, {"preset": "hardnet", "model": {"arch": "compact", "width": 32, "dropout": 0.0}})
    assert conf["model"]["width"] == 32
    with pytest.raises(ConfigError, match=r"model.width is not a setting of model.arch = 'cnn3'; its settings: "):
        load_config(None, {"model": {"width": 16}})
    with pytest.raises(ConfigError, match=r"model.channels is not a setting of model.arch = 'compact'"):
        load_config(None, {"model": {"arch": "compact", "channels": [8, 16, 32]}})
    with pytest.raises(ConfigError, match=r"model.width = 2: expected an integer in \[4, 256\]"):
        load_config(None, {"model": {"arch": "compact", "width": 2}})
    with pytest.raises(ConfigError, match=r"model.dropout = 1: expected a finite number in \[0, 1\)"):
        load_config(None, {"model": {"arch": "compact", "dropout": 1}})
    with pytest.raises(ConfigError, match="model.arch = 'resnet': expected one of 'cnn3', 'compact'"):
        load_config(None, {"model": {"arch": "resnet"}})


def test_a_compact_config_trains_and_its_best_model_loads(tmp_path):
    conf = _tiny_compact_conf(tmp_path)
    trainer = Trainer(conf)
    assert isinstance(trainer.model, CompactNet) and trainer.model.conf["width"] == 16
    summary = trainer.run(progress=False)
    assert summary["step"] == 4 and np.isfinite(summary["last_fpr95"])
    model = deepdesc.load_model(tmp_path / "run" / "best.safetensors", device="cpu")
    assert isinstance(model, CompactNet) and not model.training
    assert model.conf == {**CompactNet.default_conf, "width": 16, "input_norm": "patch", "l2_normalize": True}
    assert model.bn1.num_batches_tracked.item() > 0  # trained statistics travelled with the weights
    out = deepdesc.describe(_patches(5).numpy(), model=model)
    assert out.shape == (5, 128) and np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    last, saved = model_from_checkpoint(tmp_path / "run" / "last.pt")
    assert isinstance(last, CompactNet) and last.bn1.num_batches_tracked.item() == 4
    check_compatible("last.pt", saved, {**saved, "model": {**saved["model"], "dropout": 0.1}})  # defaults filled in
    with pytest.raises(CheckpointError, match=r"different \[model\]"):
        check_compatible("last.pt", saved, {**saved, "model": {**saved["model"], "width": 8}})
    resumed = _tiny_compact_conf(tmp_path)
    resumed["run"]["steps"] = 5
    assert Trainer(resumed).run(resume=True, progress=False)["step"] == 5


def test_pixel_normalised_compact_net_trains_with_the_paper_preset(tmp_path):
    conf = load_config(
        None,
        {
            "model": {"arch": "compact", "width": 8},
            "loss": {"positive_mining": 2, "negative_mining": 2},
            "data": {
                "sources": ["synthetic-noise"],
                "weights": [1.0],
                "batch_size": 16,
                "val_pairs": 16,
                "num_workers": 0,
            },
            "run": {"steps": 2, "val_every": 2, "ckpt_every": 2, "out_dir": str(tmp_path / "run"), "device": "cpu"},
        },
    )
    trainer = Trainer(conf)
    trainer.run(progress=False)
    assert not torch.equal(trainer.model.mean, torch.full_like(trainer.model.mean, 128.0))  # maps from the data
    model = load_safetensors(tmp_path / "run" / "best.safetensors")
    assert model.conf["input_norm"] == "pixel" and torch.equal(model.mean, trainer.model.mean.cpu())
