"""Training configs: [model] merges with the preset, unknown keys are refused with
a suggestion, and every value is checked for type and range when the config is read."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from deepdesc.errors import ConfigError
from deepdesc.train import PRESETS, load_config, parse_overrides

ROOT = Path(__file__).resolve().parent.parent


def _tiny(tmp_path: Path) -> list[str]:
    """``--set`` items for a one-step CPU run on built-in data (so a wrongly accepted config ends fast)."""
    return [
        "data.sources=['synthetic-noise']",
        "data.weights=[1.0]",
        "data.batch_size=16",
        "data.val_pairs=16",
        "data.num_workers=0",
        "run.steps=1",
        "run.device='cpu'",
        f"run.out_dir='{tmp_path / 'run'}'",
    ]


# -- item 3: [model] merges and its keys are checked ---------------------------------------------
def test_model_table_merges_with_the_preset():
    conf = load_config(None, {"preset": "hardnet", "model": {"channels": [32, 64, 128]}})
    assert conf["model"]["input_norm"] == "patch" and conf["model"]["l2_normalize"] is True
    assert conf["model"]["channels"] == [32, 64, 128]
    conf = load_config(None, parse_overrides(["model.l2_normalize=false"]))
    assert conf["model"] == {"input_norm": "pixel", "l2_normalize": False}  # the paper preset's other key kept


def test_model_typo_is_refused_with_a_suggestion():
    message = r"unknown config key 'model.l2_normalise' \(did you mean 'model.l2_normalize'\?\)"
    with pytest.raises(ConfigError, match=message):
        load_config(None, parse_overrides(["model.l2_normalise=false"]))


def test_typos_in_every_table_get_a_suggestion(tmp_path):
    cases = {  # --set KEY=1 -> (the key reported, the suggestion)
        "run.stepz": ("run.stepz", "run.steps"),
        "optim.xyz": ("optim.xyz", None),
        "optim.momentun": ("optim.momentun", "optim.momentum"),
        "loss.margn": ("loss.margn", "loss.margin"),
        "data.batchsize": ("data.batchsize", "data.batch_size"),
        "data.augment.blur_sigm": ("data.augment.blur_sigm", "data.augment.blur_sigma"),
        "modle.channels": ("modle", "model"),
    }
    for key, (reported, suggestion) in cases.items():
        with pytest.raises(ConfigError, match=f"unknown config key '{reported}'") as info:
            load_config(None, parse_overrides([f"{key}=1"]))
        if suggestion:
            assert f"did you mean '{suggestion}'?" in str(info.value), str(info.value)
        else:
            assert "did you mean" not in str(info.value), str(info.value)
    path = tmp_path / "c.toml"
    path.write_text("[run]\nstepz = 3\n")
    with pytest.raises(ConfigError, match=rf"^{path}: unknown config key 'run.stepz' \(did you mean 'run.steps'\?\)"):
        load_config(path)


@pytest.mark.parametrize("name,text", [("empty.toml", ""), ("comments.toml", "# nothing yet\n"), ("empty.yaml", "")])
def test_an_empty_config_file_is_refused_not_run_as_the_paper_preset(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"^{path}: the config is empty"):
        load_config(path)
    (tmp_path / "preset.toml").write_text('preset = "paper"\n')
    assert load_config(tmp_path / "preset.toml")["preset"] == "paper"


def test_cli_rejects_a_model_typo_with_exit_code_2(tmp_path):
    argv = ["train", *[x for item in _tiny(tmp_path) for x in ("--set", item)], "--set", "model.l2_normalise=false"]
    result = subprocess.run(
        [sys.executable, "-m", "deepdesc.cli", *argv], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("deepdesc train: error: "), result.stderr
    assert "model.l2_normalise" in lines[0] and "did you mean 'model.l2_normalize'" in lines[0]
    assert not (tmp_path / "run").exists()


# -- item 5: values are validated when the config is read -----------------------------------------
def test_string_learning_rate():
    with pytest.raises(ConfigError, match=r"^config: optim.lr = 'abc': expected a finite number in \(0, 10\]$"):
        load_config(None, parse_overrides(["optim.lr=abc"]))


def test_negative_steps():
    with pytest.raises(ConfigError, match=r"^config: run.steps = -5: expected an integer >= 1$"):
        load_config(None, {"run": {"steps": -5}})


def test_zero_batch_size():
    with pytest.raises(ConfigError, match=r"^config: data.batch_size = 0: expected an integer >= 2"):
        load_config(None, {"data": {"batch_size": 0}})


def test_batch_size_per_micro_batch():
    message = r"^config: data.batch_size = 3 with run.micro_batches = 2: expected data.batch_size >= 4"
    with pytest.raises(ConfigError, match=message):
        load_config(None, {"data": {"batch_size": 3}, "run": {"micro_batches": 2}})
    assert load_config(None, {"data": {"batch_size": 4}, "run": {"micro_batches": 2}})["data"]["batch_size"] == 4


def test_negative_margin():
    for preset in ("paper", "hardnet"):
        with pytest.raises(ConfigError, match=r"^config: loss.margin = -1: expected a finite number > 0$"):
            load_config(None, {"preset": preset, "loss": {"margin": -1}})


@pytest.mark.parametrize("lr", [math.nan, 1e30, math.inf, 0.0, -0.01, True])
def test_unusable_learning_rates_name_optim_lr(lr):
    with pytest.raises(ConfigError, match=r"^config: optim.lr = .*: expected a finite number in \(0, 10\]$"):
        load_config(None, {"optim": {"lr": lr}})


def test_bad_values_from_a_file_name_the_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('preset = "hardnet"\n[optim]\nlr = "abc"\n')
    with pytest.raises(ConfigError, match=rf"^{path}: optim.lr = 'abc': expected a finite number in \(0, 10\]$"):
        load_config(path)
    # a --set override is not the file's fault
    with pytest.raises(ConfigError, match=r"^config: run.steps = 0: expected an integer >= 1$"):
        load_config(path, {"optim": {"lr": 0.1}, "run": {"steps": 0}})
    yaml = tmp_path / "c.yaml"
    yaml.write_text("data: {batch_size: 1}\n")
    with pytest.raises(ConfigError, match=rf"^{yaml}: data.batch_size = 1: expected an integer >= 2"):
        load_config(yaml)


BAD_VALUES = [
    ({"preset": 3}, "unknown preset 3"),
    ({"model": {"arch": "resnet"}}, "model.arch = 'resnet': expected one of 'cnn3'"),
    ({"model": {"channels": [32, 64]}}, r"model.channels = \[32, 64\]: expected a list of 3 integers >= 1"),
    ({"model": {"channels": [32, 0, 128]}}, "model.channels = .*: expected a list of 3 integers >= 1"),
    ({"model": {"kernel_sizes": [7, 6, 5.5]}}, "model.kernel_sizes = .*: expected a list of 3 integers >= 1"),
    ({"model": {"pool_sizes": [2, 3, 2]}}, r"model.pool_sizes = \[2, 3, 2\]: the layers do not .*1x1 \(got 2\)"),
    ({"model": {"norm_kernel_size": 4}}, "model.norm_kernel_size = 4: expected an odd integer >= 1"),
    ({"model": {"input_norm": "global"}}, "model.input_norm = 'global': expected one of 'pixel', 'patch'"),
    ({"model": {"l2_normalize": "yes"}}, "model.l2_normalize = 'yes': expected true or false"),
    ({"model": {"region_scale": 8.0}}, "model.region_scale = 8.0 differs from data.region_scale"),
    ({"loss": {"kind": "contrastive"}}, "loss.kind = 'contrastive': expected one of 'hinge', 'triplet'"),
    ({"loss": {"positive_mining": 0}}, "loss.positive_mining = 0: expected an integer >= 1"),
    ({"loss": {"negative_mining": 2.5}}, "loss.negative_mining = 2.5: expected an integer >= 1"),
    ({"loss": {"negatives_per_pair": -1}}, "loss.negatives_per_pair = -1: expected an integer >= 1"),
    ({"preset": "hardnet", "loss": {"kind": "hinge"}}, "loss.kind = 'hinge' needs loss.positive_mining"),
    ({"optim": {"kind": "rmsprop"}}, "optim.kind = 'rmsprop': expected one of 'sgd', 'adam'"),
    ({"optim": {"momentum": 1.5}}, r"optim.momentum = 1.5: expected a finite number in \[0, 1\)"),
    ({"optim": {"weight_decay": -1e-4}}, "optim.weight_decay = -0.0001: expected a finite number >= 0"),
    ({"optim": {"lr_step": -1}}, "optim.lr_step = -1: expected an integer >= 0"),
    ({"optim": {"lr_gamma": 0}}, r"optim.lr_gamma = 0: expected a finite number in \(0, 1\]"),
    ({"data": {"sources": []}}, r"data.sources = \[\]: expected a non-empty list"),
    ({"data": {"sources": ["sheet"], "weights": [1]}}, "data.sources.0. = 'sheet': expected .*did you mean 'sheets'"),
    ({"data": {"sources": ["phototour:"], "weights": [1]}}, "data.sources.0. = 'phototour:': expected"),
    ({"data": {"weights": [1.0, 1.0]}}, "data.weights = .*: expected one weight per data.sources entry .3."),
    ({"data": {"weights": [0, 0, 0]}}, "data.weights = .*positive sum"),
    ({"data": {"weights": [1, -1, 1]}}, "data.weights = .*: expected a list of finite numbers >= 0"),
    ({"data": {"val_pairs": 1}}, "data.val_pairs = 1: expected an integer >= 2"),
    ({"data": {"num_workers": -1}}, "data.num_workers = -1: expected an integer >= 0"),
    ({"data": {"region_scale": 0}}, "data.region_scale = 0: expected a finite number > 0"),
    ({"data": {"blur_sigma": -1}}, "data.blur_sigma = -1: expected a finite number >= 0"),
    ({"data": {"augment": 3}}, "config key 'data.augment' must be a table"),
    ({"data": {"augment": {"blur_sigma": [3, 1]}}}, r"data.augment.blur_sigma = \[3, 1\]: expected \[low, high\]"),
    ({"data": {"augment": {"rotation_deg": "x"}}}, "data.augment.rotation_deg = 'x': expected a finite number >= 0"),
    ({"data": {"augment": {"jpeg_probability": 2}}}, r"jpeg_probability = 2: expected a finite number in \[0, 1\]"),
    ({"data": {"augment": {"jpeg_quality": [30.5, 90]}}}, "data.augment.jpeg_quality = .*: expected .*integers"),
    ({"run": {"seed": -1}}, r"run.seed = -1: expected an integer in \[0, 4294967295\]"),
    ({"run": {"micro_batches": 0}}, "run.micro_batches = 0: expected an integer >= 1"),
    ({"run": {"val_every": 0}}, "run.val_every = 0: expected an integer >= 1"),
    ({"run": {"ckpt_every": 1.5}}, "run.ckpt_every = 1.5: expected an integer >= 1"),
    ({"run": {"out_dir": ""}}, "run.out_dir = '': expected a non-empty string"),
    ({"run": {"device": 0}}, "run.device = 0: expected 'auto' or a torch device"),
    ({"run": {"device": "gpu"}}, "run.device = 'gpu': expected 'auto' or a torch device"),
    ({"run": {"tensorboard": 1}}, "run.tensorboard = 1: expected true or false"),
    ({"run": {"select": "auc"}}, "run.select = 'auc': expected one of 'fpr95', 'precision_at_1'"),
    ({"run": {"init": None}}, "run.init = null: expected a string"),
    ({"run": 3}, "config key 'run' must be a table"),
]


@pytest.mark.parametrize(("override", "message"), BAD_VALUES, ids=[m.split(" ")[0] for _, m in BAD_VALUES])
def test_every_key_is_checked(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, override)


def test_presets_and_shipped_configs_are_valid():
    for preset in PRESETS:
        assert load_config(None, {"preset": preset})["preset"] == preset
    configs = sorted((ROOT / "configs").rglob("*.toml"))
    assert len(configs) >= 4
    for path in configs:
        load_config(path)
    good = {
        "model": {"channels": [16, 32, 64], "norm_kernel_size": 3, "region_scale": None},
        "optim": {"lr": 10, "momentum": 0},  # ints are numbers
        "data": {"augment": {"blur_sigma": [0, 3], "jpeg_quality": [50, 60]}, "region_scale": 16},
        "run": {"device": "cuda:1", "seed": 2**32 - 1},
    }
    conf = load_config(None, good)
    assert conf["model"]["channels"] == [16, 32, 64] and conf["optim"]["lr"] == 10


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_schema_covers_every_key():
    from dataclasses import asdict, fields

    from deepdesc.nn.factory import ARCHS
    from deepdesc.train.config import SCHEMA
    from deepdesc.train.synthetic import Augment

    assert set(SCHEMA["model"]) == {key for family in ARCHS.values() for key in family.default_conf}
    assert set(SCHEMA["data.augment"]) == {f.name for f in fields(Augment)}
    for name, preset in PRESETS.items():
        for table, values in preset.items():
            assert set(values) <= set(SCHEMA[table]), (name, table)
    for family in ARCHS.values():
        for key, value in family.default_conf.items():
            assert SCHEMA["model"][key].check(value), (family.arch, key)
    for key, value in asdict(Augment()).items():
        assert SCHEMA["data.augment"][key].check(value), key
