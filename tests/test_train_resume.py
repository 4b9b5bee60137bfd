"""Resuming a run: the whole config is compared with the checkpoint's, and config.json keeps the values used."""

from __future__ import annotations

import json

import pytest

from deepdesc.cli import main
from deepdesc.train import CheckpointError, Trainer, load_config
from deepdesc.train.checkpoint import RESUMABLE_KEYS, config_differences


def _conf(tmp_path, **tables) -> dict:
    base = {
        "preset": "hardnet",
        "data": {"sources": ["synthetic-noise"], "weights": [1.0], "batch_size": 16, "val_pairs": 32, "num_workers": 0},
        "run": {"steps": 2, "val_every": 2, "ckpt_every": 1, "out_dir": str(tmp_path / "run"), "device": "cpu"},
    }
    for table, values in tables.items():
        base[table] = {**base.get(table, {}), **values}
    return load_config(None, base)


@pytest.fixture
def finished_run(tmp_path):
    Trainer(_conf(tmp_path)).run(progress=False)
    return tmp_path


def _recorded(tmp_path) -> dict:
    return json.loads((tmp_path / "run" / "config.json").read_text())


def test_changed_lr_and_seed_are_refused_naming_each_key(finished_run):
    before = _recorded(finished_run)
    conf = _conf(finished_run, optim={"lr": 0.05}, run={"seed": 3, "steps": 3})
    with pytest.raises(CheckpointError) as info:
        Trainer(conf).run(resume=True, progress=False)
    message = str(info.value)
    assert "optim.lr = 0.1 in the checkpoint, 0.05 now" in message
    assert "run.seed = 0 in the checkpoint, 3 now" in message
    assert "run.steps =" not in message  # may change: extends the run
    assert _recorded(finished_run) == before  # config.json still holds the values the run used


def test_changed_optimiser_kind_is_a_config_difference_not_a_corrupt_checkpoint(finished_run):
    with pytest.raises(CheckpointError, match=r"optim.kind = 'sgd' in the checkpoint, 'adam' now") as info:
        Trainer(_conf(finished_run, optim={"kind": "adam"})).run(resume=True, progress=False)
    assert "corrupt" not in str(info.value) and "KeyError" not in str(info.value)


def test_model_and_data_keys_are_named(finished_run):
    conf = _conf(finished_run, model={"channels": [16, 32, 64]}, data={"batch_size": 8})
    with pytest.raises(CheckpointError) as info:
        Trainer(conf).run(resume=True, progress=False)
    assert "model.channels = [32, 64, 128] in the checkpoint, [16, 32, 64] now" in str(
        info.value
    ) and "data.batch_size = 16 in the checkpoint, 8 now" in str(info.value)


def test_extending_a_run_is_allowed_and_recorded(finished_run):
    summary = Trainer(_conf(finished_run, run={"steps": 3, "val_every": 1})).run(resume=True, progress=False)
    assert summary["step"] == 3
    recorded = _recorded(finished_run)
    assert recorded["run"]["steps"] == 3 and recorded["run"]["val_every"] == 1


def test_cli_refusal_is_one_line_naming_the_key(finished_run, capsys):
    toml = finished_run / "c.toml"
    toml.write_text(
        'preset = "hardnet"\n[data]\nsources = ["synthetic-noise"]\nweights = [1.0]\nbatch_size = 16\n'
        f"val_pairs = 32\nnum_workers = 0\n[run]\nsteps = 2\nval_every = 2\nckpt_every = 1\n"
        f'out_dir = "{finished_run / "run"}"\ndevice = "cpu"\n'
    )
    before = (finished_run / "run" / "config.json").read_text()
    assert main(["train", "--config", str(toml), "--resume", "--set", "optim.lr=0.2"]) == 2
    err = capsys.readouterr().err
    assert "optim.lr = 0.1 in the checkpoint, 0.2 now" in err and "Traceback" not in err
    assert (finished_run / "run" / "config.json").read_text() == before


def test_differences_fill_defaults_of_older_checkpoints(tmp_path):
    conf = _conf(tmp_path)
    older = json.loads(json.dumps(conf))
    del older["data"]["multiview_batching"]  # a key added after the checkpoint was written, at its default
    del older["model"]["l2_normalize"]
    assert config_differences(older, conf) == []
    changed = {**conf, "data": {**conf["data"], "multiview_batching": "view_pair"}}
    assert config_differences(older, changed) == [("data.multiview_batching", "random", "view_pair")]
    assert {"run.steps", "run.device", "run.out_dir"} <= set(RESUMABLE_KEYS)
