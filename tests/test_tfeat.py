"""TFeat (arch "tfeat"): shapes, an independent float64 reference, cost, the prepared path, files, ONNX,
the pipeline, training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import deepdesc
from deepdesc.errors import ConfigError, ModelFormatError
from deepdesc.hub import weights
from deepdesc.hub.weights import load_safetensors, read_safetensors_metadata, save_safetensors
from deepdesc.nn import ARCHS, CompactNet, DescriptorNet, TFeatNet, build_net
from deepdesc.nn.fast import FastDescriber, PreparedTFeatNet, _cpu_has_bf16, fast_describer, prepare_net
from deepdesc.train import Trainer, load_config
from deepdesc.train.checkpoint import model_from_checkpoint

from .test_weights import _join, _split


def _patches(n: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).uniform(0, 255, (n, 1, 64, 64)).astype(np.float32))


def _randomised(model: TFeatNet, seed: int = 0) -> TFeatNet:
    """Non-zero biases (the initialisation zeroes them) and non-trivial pixel maps, so every term counts."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bias in (model.conv1.bias, model.conv2.bias, model.fc.bias):
            bias.copy_(torch.empty(bias.shape).uniform_(-0.3, 0.3, generator=gen))
        model.mean.copy_(torch.empty(model.mean.shape).uniform_(90, 150, generator=gen))
        model.std.copy_(torch.empty(model.std.shape).uniform_(40, 80, generator=gen))
    return model.eval()


@pytest.fixture(scope="module")
def tfeat() -> TFeatNet:
    torch.manual_seed(0)
    return _randomised(TFeatNet())


def _reference(model: TFeatNet, x: torch.Tensor) -> torch.Tensor:
    """TFeat written out from torch.nn.functional calls, in float64, on ``model``'s weights."""
    x = x.double()
    if model.conf["input_norm"] == "patch":
        flat = x.flatten(1)
        mu = flat.mean(1).view(-1, 1, 1, 1)
        sd = ((flat - flat.mean(1, keepdim=True)) ** 2).sum(1).div(flat.shape[1] - 1).sqrt().view(-1, 1, 1, 1)
        x = (x - mu) / (sd + 1.0)
    else:
        x = (x - model.mean.double()) / model.std.double()
    x = x.reshape(-1, 1, 32, 2, 32, 2).mean(dim=(3, 5))  # 2x2 average pooling
    p = {k: v.detach().double() for k, v in model.named_parameters()}
    x = F.max_pool2d(torch.tanh(F.conv2d(x, p["conv1.weight"], p["conv1.bias"])), 2, 2)
    x = torch.tanh(F.conv2d(x, p["conv2.weight"], p["conv2.bias"]))
    x = torch.tanh(F.linear(x.reshape(x.shape[0], -1), p["fc.weight"], p["fc.bias"]))
    if model.conf["l2_normalize"]:
        x = x / x.norm(dim=1, keepdim=True)
    return x


# ---------------------------------------------------------------- the network


def test_shapes_unit_norm_and_parameters(tfeat):
    out = tfeat(_patches(5))
    assert out.shape == (5, 128) and out.dtype == torch.float32 and tfeat.descriptor_size == 128
    assert torch.allclose(out.norm(dim=1), torch.ones(5), atol=1e-5)
    # conv1 32*49 + 32, conv2 64*32*36 + 64, fc 4096*128 + 128
    assert sum(p.numel() for p in tfeat.parameters()) == 1600 + 73_792 + 524_416 == 599_808
    assert isinstance(tfeat, DescriptorNet) and tfeat.conf["arch"] == "tfeat"
    raw = TFeatNet({"l2_normalize": False}).eval()(_patches(3))
    assert raw.abs().max() < 1 and not raw.norm(dim=1).allclose(torch.ones(3))  # tanh outputs, not unit norm


def test_map_sizes_and_layers():
    model = TFeatNet().eval()
    sizes = []
    for layer in (model.conv1, model.conv2, model.fc):
        layer.register_forward_hook(lambda m, a, out: sizes.append(tuple(out.shape[1:])))
    model(_patches(2))
    assert sizes == [(32, 26, 26), (64, 8, 8), (128,)]
    assert [name for name, _ in model.named_children()] == ["conv1", "conv2", "fc"]  # no BatchNorm, no dropout
    assert all(layer.bias is not None for layer in (model.conv1, model.conv2, model.fc))


@pytest.mark.parametrize(
    "conf",
    [{}, {"input_norm": "pixel"}, {"l2_normalize": False}, {"input_norm": "pixel", "l2_normalize": False}],
    ids=["default", "pixel", "unnormalised", "pixel-unnormalised"],
)
def test_forward_matches_a_float64_functional_reference(conf):
    torch.manual_seed(1)
    model = _randomised(TFeatNet(conf), seed=1)
    x = torch.cat([_patches(9, 2), _patches(3, 3) * 0.05 + 100])  # low-contrast patches too
    with torch.no_grad():
        out = model(x)
    ref = _reference(model, x)
    assert ref.abs().max() > 0.05  # not a degenerate (saturated or zero) output
    assert (out.double() - ref).abs().max() <= 1e-5


def test_num_flops_by_hand(tfeat):
    conv1 = 26 * 26 * 32 * (1 * 7 * 7)  # 26 = 32 - 7 + 1
    conv2 = 8 * 8 * 64 * (32 * 6 * 6)  # 8 = 13 - 6 + 1, 13 = 26 / 2
    linear = 64 * 8 * 8 * 128
    assert tfeat.num_flops() == 2 * (conv1 + conv2 + linear) == 12_605_696  # ~12.6 MFLOP
    assert CompactNet().num_flops() > 1.6 * tfeat.num_flops()  # cheaper than the compact net (~20 MFLOP)


def test_train_mode_equals_eval_mode_and_batches_do_not_matter(tfeat):
    model = TFeatNet()
    model.load_state_dict(tfeat.state_dict())
    x = _patches(8, 4)
    with torch.no_grad():
        trained = model.train()(x)
        evaluated = model.eval()(x)
        parts = torch.cat([model(x[:3]), model(x[3:])])
    assert torch.equal(trained, evaluated)
    assert (evaluated - parts).abs().max() <= 1e-6


def test_factory_and_conf_validation():
    assert set(ARCHS) == {"cnn3", "compact", "tfeat"} and ARCHS["tfeat"] is TFeatNet
    net = build_net({"arch": "tfeat"})
    assert type(net) is TFeatNet and net.conf == TFeatNet.default_conf
    assert TFeatNet.default_conf == {
        "arch": "tfeat",
        "input_norm": "patch",
        "l2_normalize": True,
        "region_scale": None,
        "blur_sigma": None,
    }
    assert build_net({"arch": "tfeat", "input_norm": "pixel", "region_scale": 12.0}).conf["region_scale"] == 12.0
    with pytest.raises(ValueError, match="unknown network arch 'tf'; known: 'cnn3', 'compact', 'tfeat'"):
        build_net({"arch": "tf"})
    with pytest.raises(ValueError, match=r"unknown TFeatNet conf keys \['dropout', 'width'\]"):
        build_net({"arch": "tfeat", "width": 16, "dropout": 0.1})
    with pytest.raises(ValueError, match="implements arch 'tfeat', not 'compact'"):
        TFeatNet({"arch": "compact"})
    with pytest.raises(ValueError, match="input_norm"):
        TFeatNet({"input_norm": "zca"})


# ---------------------------------------------------------------- prepared inference


@pytest.mark.parametrize(
    "conf",
    [{}, {"input_norm": "pixel", "l2_normalize": False}],
    ids=["default", "pixel-unnormalised"],
)
def test_prepared_fast_path_matches_the_module(conf):
    torch.manual_seed(2)
    model = _randomised(TFeatNet(conf), seed=2)
    x = _patches(37, 3)
    with torch.no_grad():
        ref = model(x)
    plain = prepare_net(model)
    assert isinstance(plain, PreparedTFeatNet) and not plain.channels_last
    optimized = prepare_net(model, optimized=True)
    assert optimized.channels_last and optimized.inplace
    with torch.no_grad():
        assert (plain(x) - ref).abs().max() <= 1e-5
        assert (optimized(x) - ref).abs().max() <= 1e-5  # NHWC maps, permuted linear weights
    for workers in (1, 2):
        fast = FastDescriber(model, batch_size=8, workers=workers)
        out = fast(x)
        assert out.shape == (37, 128) and out.dtype == torch.float32
        assert (out - ref).abs().max() <= 1e-5, workers
    assert FastDescriber(model)(x[:0]).shape == (0, 128)


def test_fast_path_leaves_the_model_alone_and_follows_its_weights(tfeat):
    model = TFeatNet()
    model.load_state_dict(tfeat.state_dict())
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    first = fast_describer(model)
    assert isinstance(first, FastDescriber) and fast_describer(model) is first
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        model.fc.weight.mul_(0.5)  # an in-place change, as an optimiser step
    second = fast_describer(model)
    assert second is not first
    x = _patches(3)
    with torch.no_grad():
        assert (second(x) - model(x)).abs().max() <= 1e-5


def test_unprepared_networks_are_named():
    class Negated(TFeatNet):
        def forward(self, x):
            return -super().forward(x)

    model = Negated().eval()
    assert fast_describer(model) is model
    with pytest.raises(ValueError, match="TFeatNet's own forward; Negated overrides it"):
        fast_describer(model, "bf16")

    class Other(DescriptorNet):
        arch = "other"
        default_conf = {"arch": "other", "input_norm": "patch"}
        descriptor_size = 1

        def forward(self, x):
            return x.flatten(1)[:, :1]

        def num_flops(self):
            return 0

    with pytest.raises(TypeError, match="known: DeepDescNet, CompactNet, TFeatNet"):
        prepare_net(Other())
    with pytest.raises(ValueError, match=r"prepared path \(DeepDescNet, CompactNet, TFeatNet\), not Other"):
        fast_describer(Other(), "bf16")


@pytest.mark.skipif(not _cpu_has_bf16(), reason="CPU without native bfloat16")
def test_bf16_close_to_fp32(tfeat):
    x = _patches(64, 7)
    with torch.no_grad():
        ref = tfeat(x)
    out = FastDescriber(tfeat, "bf16")(x)
    assert out.dtype == torch.float32 and (out - ref).abs().max() <= 0.02


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fp32_and_fp16(tfeat):
    x = _patches(300, 8)
    with torch.no_grad():
        ref = tfeat(x)
    gpu = torch.device("cuda")
    out = FastDescriber(tfeat, "fp32", device=gpu)(x.to(gpu))
    assert out.device.type == "cuda" and (out.cpu() - ref).abs().max() <= 1e-3  # TF32 may be enabled
    half = FastDescriber(tfeat, "fp16", device=gpu)(x)
    assert half.dtype == torch.float32 and (half.cpu() - ref).abs().max() <= 0.01
    on_gpu = TFeatNet()
    on_gpu.load_state_dict(tfeat.state_dict())
    described = deepdesc.describe(x.to(gpu), model=on_gpu.to(gpu).eval())
    assert described.device.type == "cuda" and (described.cpu() - ref).abs().max() <= 1e-3


# ---------------------------------------------------------------- safetensors


def test_safetensors_round_trip(tmp_path, tfeat):
    path = tmp_path / "tfeat.safetensors"
    model = TFeatNet({"input_norm": "pixel", "region_scale": 12.0, "blur_sigma": 0.5})
    model.load_state_dict(tfeat.state_dict())
    model.info = {"provenance": "test"}
    save_safetensors(model, path, {"note": "x"})
    meta = read_safetensors_metadata(path)
    assert json.loads(meta["config"]) == model.conf and "lp_scales" not in meta
    loaded = load_safetensors(path)
    assert type(loaded) is TFeatNet and not loaded.training
    assert loaded.conf == model.conf and loaded.info == {"provenance": "test", "note": "x"}
    assert loaded.weights_sha256() == model.weights_sha256()
    x = _patches(6)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded(x))
    assert weights._expected_shapes(model.conf) == {k: tuple(v.shape) for k, v in model.state_dict().items()}
    save_safetensors(model.to(torch.bfloat16), path)  # half precision files load as float32
    again = deepdesc.load_model(path, device="cpu")
    assert type(again) is TFeatNet and again.fc.weight.dtype == torch.float32


@pytest.fixture(scope="module")
def tfeat_bytes(tmp_path_factory, tfeat) -> bytes:
    path = tmp_path_factory.mktemp("w") / "t.safetensors"
    save_safetensors(tfeat, path)
    return path.read_bytes()


def _rejected(path, *fragments) -> str:
    with pytest.raises(ModelFormatError) as info:
        load_safetensors(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def test_a_stored_wrong_shaped_tensor_is_named(tmp_path, tfeat, no_build):
    """A well-formed safetensors file whose fc.weight has the wrong shape (its bytes agree with it)."""
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in tfeat.state_dict().items()}
    tensors["fc.weight"] = tensors["fc.weight"][:, :2048].contiguous()
    path = tmp_path / "narrow.safetensors"
    save_file(tensors, str(path), metadata={"format": "deepdesc", "config": json.dumps(tfeat.conf)})
    _rejected(path, "tensor 'fc.weight' has shape (128, 2048)", "(arch tfeat) implies (128, 4096)")


_DROP = object()

BAD_FILES = [
    ({"config": {"width": 16}}, ["unknown keys ['width']", 'arch "tfeat"', "expected only arch, blur_sigma"]),
    ({"config": {"arch": "compact"}}, ["missing", "'conv2.weight'", "unexpected", "'fc.weight'"]),
    ({"config": {"arch": "cnn3"}}, ["missing", "'conv3.weight'", "unexpected", "'fc.bias'"]),
    ({"config": {"arch": "tfeet"}}, ["'arch'", '"tfeet"', '"cnn3" or "compact" or "tfeat"']),
    ({"config": {"l2_normalize": 1}}, ["'l2_normalize'", "true or false"]),
    ({"config": {"input_norm": "zca"}}, ["'input_norm'", '"pixel" or "patch"']),
    ({"metadata": {"lp_scales": "[4, 9, 16]"}}, ["'lp_scales'", 'arch "tfeat"']),
    ({"entries": {"conv1.weight": {"shape": [32, 1, 5, 5]}}}, ["'conv1.weight'", "(32, 1, 5, 5)", "(32, 1, 7, 7)"]),
    ({"entries": {"conv2.bias": {"shape": [32]}}}, ["'conv2.bias'", "(32,)", "implies (64,)"]),
    ({"entries": {"fc.weight": {"shape": [4096, 128]}}}, ["'fc.weight'", "(4096, 128)", "implies (128, 4096)"]),
    ({"entries": {"fc.bias": _DROP}}, ["missing ['fc.bias']"]),
    ({"entries": {"fc.bias": {"dtype": "I64"}}}, ["'fc.bias'", "I64", "F32"]),
]


def _edit(data: bytes, config=None, metadata=None, entries=None) -> bytes:
    header, body = _split(data)
    conf = json.loads(header["__metadata__"]["config"])
    header["__metadata__"]["config"] = json.dumps({**conf, **(config or {})})
    header["__metadata__"].update(metadata or {})
    for name, change in (entries or {}).items():
        if change is _DROP:
            del header[name]
        else:
            header[name].update(change)
    return _join(header, body)


@pytest.mark.parametrize("change, fragments", BAD_FILES, ids=lambda v: json.dumps(v, default=str)[:48])
def test_malformed_tfeat_files_are_rejected_before_building(tmp_path, tfeat_bytes, no_build, change, fragments):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(_edit(tfeat_bytes, **change))
    message = _rejected(path, *fragments)
    assert "expected" in message or "implies" in message


def test_bad_values_name_the_tensor(tmp_path, tfeat):
    model = TFeatNet()
    model.load_state_dict(tfeat.state_dict())
    with torch.no_grad():
        model.fc.bias[3] = float("nan")
    path = tmp_path / "nan.safetensors"
    save_safetensors(model, path)
    _rejected(path, "'fc.bias'", "NaN")


# ---------------------------------------------------------------- ONNX, describe


def test_onnx_parity(tmp_path, tfeat):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from deepdesc.nn.export import OnnxDescriber, export_onnx

    path = export_onnx(tfeat, tmp_path / "tfeat.onnx")
    x = _patches(7, 5).round().numpy()
    with torch.no_grad():
        ref = tfeat(torch.from_numpy(x)).numpy()
    out = OnnxDescriber(path)(x)
    assert out.shape == (7, 128) and np.abs(out - ref).max() < 1e-5
    proto = onnx.load(str(path))
    assert {p.key: p.value for p in proto.metadata_props}["arch"] == "tfeat"
    ops = [node.op_type for node in proto.graph.node]
    assert ops.count("Conv") == 2 and ops.count("Tanh") == 3 and "MaxPool" in ops


def test_describe_with_a_tfeat_model(tfeat):
    x = _patches(20, 6).round().numpy().astype(np.uint8)
    out = deepdesc.describe(x, model=tfeat, batch_size=7)
    assert isinstance(out, np.ndarray) and out.shape == (20, 128) and out.dtype == np.float32
    ref = _reference(tfeat, torch.from_numpy(x.astype(np.float32))).numpy()
    assert np.abs(out - ref).max() <= 1e-5
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


# ---------------------------------------------------------------- training


def test_config_keys_of_tfeat():
    conf = load_config(None, {"preset": "hardnet", "model": {"arch": "tfeat"}})
    assert conf["model"] == {"arch": "tfeat", "input_norm": "patch", "l2_normalize": True}
    with pytest.raises(ConfigError, match=r"model.width is not a setting of model.arch = 'tfeat'; its settings: "):
        load_config(None, {"model": {"arch": "tfeat", "width": 16}})
    with pytest.raises(ConfigError, match=r"model.channels is not a setting of model.arch = 'tfeat'"):
        load_config(None, {"model": {"arch": "tfeat", "channels": [8, 16, 32]}})
    with pytest.raises(ConfigError, match="model.arch = 'tfet': expected one of 'cnn3', 'compact', 'tfeat'"):
        load_config(None, {"model": {"arch": "tfet"}})


def test_a_tfeat_config_trains_and_its_best_model_loads(tmp_path):
    conf = load_config(
        None,
        {
            "preset": "hardnet",
            "model": {"arch": "tfeat"},
            "data": {
                "sources": ["synthetic-noise"],
                "weights": [1.0],
                "batch_size": 16,
                "val_pairs": 16,
                "num_workers": 0,
            },
            "optim": {"lr": 0.05},
            "run": {"steps": 2, "val_every": 2, "ckpt_every": 2, "out_dir": str(tmp_path / "run"), "device": "cpu"},
        },
    )
    trainer = Trainer(conf)
    assert type(trainer.model) is TFeatNet
    before = trainer.model.fc.weight.detach().clone()
    summary = trainer.run(progress=False)
    assert summary["step"] == 2 and np.isfinite(summary["last_fpr95"])
    assert not torch.equal(before, trainer.model.fc.weight.detach().cpu())  # the optimiser moved the weights
    model = deepdesc.load_model(tmp_path / "run" / "best.safetensors", device="cpu")
    assert type(model) is TFeatNet and not model.training and model.conf == TFeatNet.default_conf
    last, _ = model_from_checkpoint(tmp_path / "run" / "last.pt")
    assert type(last) is TFeatNet and last.weights_sha256() == model.weights_sha256()
    out = deepdesc.describe(_patches(5).numpy(), model=model)
    assert out.shape == (5, 128) and np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
