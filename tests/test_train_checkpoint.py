"""deepdesc.train.checkpoint: the one reader/writer of trainer checkpoints, and the package's public API."""

from __future__ import annotations

import pytest
import torch

import deepdesc.train
from deepdesc.train import CheckpointError, Trainer, load_config, model_from_checkpoint
from deepdesc.train.checkpoint import build_model, check_compatible, load_checkpoint, save_checkpoint


def _conf(tmp_path, **model):
    overrides = {"preset": "hardnet", "run": {"device": "cpu", "out_dir": str(tmp_path / "run")}}
    return load_config(None, {**overrides, "model": model, "data": {"region_scale": 12.0, "blur_sigma": 1.0}})


def test_public_api():
    names = {"train", "Trainer", "load_config", "parse_overrides", "model_from_checkpoint", "PRESETS"}
    assert names | {"CheckpointError", "ConfigError", "validate_config"} == set(deepdesc.train.__all__)
    for name in deepdesc.train.__all__:
        assert getattr(deepdesc.train, name) is not None
    from deepdesc.errors import CheckpointError as base

    assert deepdesc.train.CheckpointError is base and issubclass(base, RuntimeError)


def test_save_load_and_model_round_trip(tmp_path):
    trainer = Trainer(_conf(tmp_path))
    path = save_checkpoint(tmp_path / "ck" / "last.pt", trainer.state())
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temporary file left behind
    state = load_checkpoint(path)
    assert state["step"] == 0 and state["config"] == trainer.conf
    model, conf = model_from_checkpoint(path)
    assert conf == trainer.conf and not model.training
    assert model.conf["region_scale"] == 12.0 and model.conf["input_norm"] == "patch"
    x = torch.rand(2, 1, 64, 64) * 255
    with torch.no_grad():
        torch.testing.assert_close(model(x), trainer.model.eval()(x))
    assert build_model(conf).conf == model.conf


def test_unreadable_checkpoints_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"missing.pt: no such checkpoint"):
        model_from_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"missing.pt: no checkpoint to resume from"):
        load_checkpoint(tmp_path / "missing.pt", missing="no checkpoint to resume from")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match=r"junk.pt: corrupt or incompatible checkpoint"):
        model_from_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a deepdesc training checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_resume_compatibility(tmp_path):
    conf = _conf(tmp_path)
    # a [model] table that only spells out a network default is the same network
    check_compatible("last.pt", {**conf, "model": {**conf["model"], "channels": [32, 64, 128]}}, conf)
    with pytest.raises(
        CheckpointError, match=r"model.channels = \[16, 32, 64\] in the checkpoint, \[32, 64, 128\] now"
    ):
        check_compatible("last.pt", {**conf, "model": {**conf["model"], "channels": [16, 32, 64]}}, conf)
    with pytest.raises(CheckpointError, match=r"loss.margin = 2.0 in the checkpoint, 1.0 now"):
        check_compatible("last.pt", {**conf, "loss": {**conf["loss"], "margin": 2.0}}, conf)
    # where and how long a run goes may change
    check_compatible("last.pt", {**conf, "run": {**conf["run"], "steps": 7, "device": "cuda"}}, conf)
