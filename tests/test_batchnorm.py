"""Re-estimated BatchNorm statistics: hand-computed averages, dropout on/off, the model left as it was, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from deepdesc.nn import CompactNet, TFeatNet
from deepdesc.train.batchnorm import recalibrate_batch_norm

from .test_compact import _patches, _trained_stats


def test_statistics_are_the_plain_average_of_the_batch_statistics():
    batches = [torch.randn(5, 2, 3, 3) * s + s for s in (1.0, 2.0, 4.0)]
    net = nn.Sequential(nn.BatchNorm2d(2, affine=False))
    out = recalibrate_batch_norm(net, batches)
    per_channel = [b.transpose(0, 1).reshape(2, -1).double() for b in batches]
    mean = np.mean([x.mean(1).numpy() for x in per_channel], axis=0)
    var = np.mean([x.var(1, unbiased=True).numpy() for x in per_channel], axis=0)
    np.testing.assert_allclose(out[0].running_mean.numpy(), mean, rtol=1e-5)
    np.testing.assert_allclose(out[0].running_var.numpy(), var, rtol=1e-5)
    assert not out.training and out[0].momentum == net[0].momentum == 0.1
    assert torch.equal(net[0].running_mean, torch.zeros(2))  # the input model is untouched


def test_dropout_changes_only_the_statistics_after_it():
    torch.manual_seed(0)
    model = _trained_stats(CompactNet({"width": 4, "dropout": 0.5}))
    batches = [_patches(16, s) for s in range(3)]
    torch.manual_seed(1)
    off = recalibrate_batch_norm(model, batches)
    torch.manual_seed(1)
    on = recalibrate_batch_norm(model, batches, dropout=True)
    for i in range(1, 7):  # dropout sits before conv7
        assert torch.allclose(getattr(off, f"bn{i}").running_var, getattr(on, f"bn{i}").running_var)
    assert not torch.allclose(off.bn7.running_var, on.bn7.running_var)
    for key, value in model.state_dict().items():
        if "running" not in key and "num_batches" not in key:
            assert torch.equal(value, off.state_dict()[key])
    assert not torch.allclose(model.bn3.running_mean, off.bn3.running_mean)
    with torch.no_grad():
        assert torch.allclose(off(batches[0]).norm(dim=1), torch.ones(16), atol=1e-5)


def test_one_large_batch_gives_eval_outputs_close_to_training_mode_ones():
    torch.manual_seed(0)
    model = _trained_stats(CompactNet({"width": 4}))
    batch = _patches(512, 9)
    out = recalibrate_batch_norm(model, [batch])
    reference = CompactNet(dict(model.conf))
    reference.load_state_dict(model.state_dict())
    reference.train()
    reference.dropout.eval()
    with torch.no_grad():
        # equal but for the unbiased (running) against the biased (batch) variance: n / (n - 1), n >= 512
        assert (out(batch) - reference(batch)).abs().max() < 1e-2
        assert (model.eval()(batch) - reference(batch)).abs().max() > 5e-2


def test_refuses_networks_without_batch_norm_and_bad_batches():
    with pytest.raises(ValueError, match="TFeatNet has no BatchNorm"):
        recalibrate_batch_norm(TFeatNet(), [_patches(4)])
    with pytest.raises(ValueError, match="no batch given"):
        recalibrate_batch_norm(CompactNet({"width": 4}), [])
    with pytest.raises(ValueError, match="B >= 2"):
        recalibrate_batch_norm(CompactNet({"width": 4}), [_patches(1)])


def test_bench_script_writes_the_recalibrated_model(tmp_path, capsys):
    from deepdesc.hub.weights import load_safetensors, save_safetensors

    from .conftest import bench_script

    torch.manual_seed(0)
    model = _trained_stats(CompactNet({"width": 4}))
    save_safetensors(model, tmp_path / "m.safetensors", {"provenance": "a test network", "version": "9"})
    config = tmp_path / "c.toml"
    config.write_text(
        'preset = "hardnet"\n[model]\narch = "compact"\nwidth = 4\n'
        '[data]\nsources = ["synthetic-noise"]\nweights = [1.0]\nbatch_size = 8\nval_pairs = 8\nnum_workers = 0\n'
    )
    out = tmp_path / "bn.safetensors"
    script = bench_script("recalibrate_bn")
    script.main([str(tmp_path / "m.safetensors"), "--config", str(config), "-o", str(out), "--batches", "2"])
    assert "re-estimated on 2 x 256 pairs" in capsys.readouterr().out
    new = load_safetensors(out)
    assert new.info["provenance"].startswith("a test network; BatchNorm statistics re-estimated")
    assert "version" not in new.info
    assert torch.equal(new.conv2.weight, model.conv2.weight)
    assert not torch.allclose(new.bn2.running_var, model.bn2.running_var)
    with pytest.raises(SystemExit):
        script.main([str(tmp_path / "m.safetensors"), "--config", str(config), "-o", str(out), "--batches", "0"])
