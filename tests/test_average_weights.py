"""bench/average_weights.py: the mean of models fine-tuned from one start."""

from __future__ import annotations

import pytest
import torch

from deepdesc.hub.weights import load_safetensors, save_safetensors
from deepdesc.nn.compact import CompactNet

from .conftest import bench_script

average_weights = bench_script("average_weights")


def _saved(path, seed, conf=None):
    torch.manual_seed(seed)
    model = CompactNet(conf).eval()
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
            bn.num_batches_tracked.fill_(seed)
    save_safetensors(model, path)
    return load_safetensors(path)


def test_floating_tensors_are_averaged_and_counters_kept(tmp_path):
    a, b = _saved(tmp_path / "a.safetensors", 1), _saved(tmp_path / "b.safetensors", 2)
    mean = average_weights.average([tmp_path / "a.safetensors", tmp_path / "b.safetensors"])
    for key, value in mean.state_dict().items():
        if value.is_floating_point():
            expected = (a.state_dict()[key].double() + b.state_dict()[key].double()) / 2
            torch.testing.assert_close(value.double(), expected, rtol=0, atol=1e-6)
        else:
            assert torch.equal(value, a.state_dict()[key])
    assert not torch.equal(mean.state_dict()["conv1.weight"], a.state_dict()["conv1.weight"])


def test_models_of_another_config_are_refused(tmp_path):
    _saved(tmp_path / "a.safetensors", 1)
    _saved(tmp_path / "w.safetensors", 2, {"width": 8})
    with pytest.raises(SystemExit, match="another architecture or config"):
        average_weights.average([tmp_path / "a.safetensors", tmp_path / "w.safetensors"])
