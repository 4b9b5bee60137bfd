"""Training: losses and mining on hand-made cases, a short run, exact resume, DDP, failures."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from deepdesc.train import CheckpointError, Trainer, load_config
from deepdesc.train.losses import (
    global_orthogonal_regularization,
    hardest_in_batch_triplet_loss,
    hinge_embedding_loss,
    mined_hinge_loss,
    top_fraction,
)

ROOT = Path(__file__).resolve().parent.parent


def test_hinge_embedding_loss_hand_computed():
    d = torch.tensor([0.5, 3.0, 1.0, 5.0])
    labels = torch.tensor([1, 1, 0, 0])
    assert hinge_embedding_loss(d, labels, margin=4.0).tolist() == [0.5, 3.0, 3.0, 0.0]


def test_top_fraction_is_exactly_the_hardest():
    losses = torch.tensor([0.1, 0.9, 0.3, 0.7, 0.5, 0.2, 0.8, 0.0])
    assert sorted(top_fraction(losses, 3).tolist()) == [1, 3, 6]
    assert sorted(top_fraction(losses, 20).tolist()) == list(range(8))


def test_mined_hinge_keeps_hardest_positives():
    # 1-D descriptors: anchors far apart (negatives beyond the margin: zero loss), positive i at
    # distance d_i from its anchor. Mining 4 keeps the 2 largest positive distances of 8.
    d = torch.tensor([0.1, 0.7, 0.2, 0.9, 0.3, 0.4, 0.5, 0.6])
    anchors = (torch.arange(8.0) * 10)[:, None]
    positives = anchors + d[:, None]
    loss, stats = mined_hinge_loss(anchors, positives, margin=4.0, positive_mining=4, negative_mining=4)
    # kept: positives 0.9 and 0.7, plus 2 negatives of loss 0
    assert loss.item() == pytest.approx((0.9 + 0.7) / 4, abs=1e-5)
    assert stats["pos_dist"] == pytest.approx(d.mean().item(), abs=1e-5)


def test_mined_hinge_backpropagates_only_mined_pairs():
    anchors = (torch.arange(8.0) * 10)[:, None].requires_grad_(True)
    positives = (anchors.detach() + torch.tensor([0.1, 0.7, 0.2, 0.9, 0.3, 0.4, 0.5, 0.6])[:, None]).requires_grad_()
    loss, _ = mined_hinge_loss(anchors, positives, positive_mining=4, negative_mining=4)
    loss.backward()
    assert sorted(torch.nonzero(positives.grad[:, 0]).flatten().tolist()) == [1, 3]


def test_mined_hinge_hardest_negatives():
    # positives coincide with anchors (zero loss); two anchors close together make the only hard negatives
    anchors = torch.tensor([[0.0], [1.0], [50.0], [100.0]])
    loss, _ = mined_hinge_loss(
        anchors,
        anchors.clone(),
        margin=4.0,
        positive_mining=1,
        negative_mining=1,
        num_negatives=400,
        generator=torch.Generator().manual_seed(0),
    )
    # ~1/6 of sampled pairs are (0,1) or (1,0) with loss 3; the rest 0; over 4 positives + 400 negatives
    assert 0 < loss.item() < 3.0
    loss_mined, _ = mined_hinge_loss(
        anchors,
        anchors.clone(),
        margin=4.0,
        positive_mining=4,
        negative_mining=40,
        num_negatives=400,
        generator=torch.Generator().manual_seed(0),
    )
    assert loss_mined.item() == pytest.approx(
        3.0 * 10 / 11, abs=1e-4
    )  # 10 hardest negatives all (0,1)-pairs, 1 positive


def test_hardest_in_batch_triplet_hand_computed():
    a = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    p = torch.tensor([[0.0, 1.0], [3.0, 0.5]])
    loss, stats = hardest_in_batch_triplet_loss(a, p, margin=1.0)
    # d(a0,p0)=1, d(a1,p1)=0.5; hardest negatives: row0 min(d(a0,p1)=3.04), col0 min(d(a1,p0)=3.16)
    d01 = np.hypot(3.0, 0.5)
    expected = (max(0, 1 + 1 - d01) + max(0, 1 + 0.5 - d01)) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-4)
    assert stats["pos_dist"] == pytest.approx(0.75, abs=1e-4)


def test_global_orthogonal_regularization_hand_computed_and_zero_when_spread():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    p = torch.tensor([[0.0, 1.0], [1.0, 0.0], [-0.8, 0.6]])
    s = (a @ p.T).numpy()
    off = s[~np.eye(3, dtype=bool)].astype(np.float64)
    expected = off.mean() ** 2 + max(0.0, (off**2).mean() - 1 / 2)
    assert global_orthogonal_regularization(a, p).item() == pytest.approx(expected, abs=1e-6)
    # orthonormal non-matching pairs (s = 0): first moment 0, second moment 0 < 1/D -> no penalty
    eye = torch.eye(4)
    assert global_orthogonal_regularization(eye, eye).item() == pytest.approx(0.0, abs=1e-7)
    # every descriptor at one point: the largest penalty, 1 + (1 - 1/D)
    same = torch.ones(5, 4) / 2
    assert global_orthogonal_regularization(same, same).item() == pytest.approx(1 + 1 - 1 / 4, abs=1e-6)
    with pytest.raises(ValueError, match="at least 2 pairs"):
        global_orthogonal_regularization(a[:1], p[:1])


def test_gor_weight_adds_the_regulariser_to_the_triplet_loss(tmp_path):
    conf = _tiny_conf(tmp_path)
    with_gor = load_config(None, {**conf, "loss": {**conf["loss"], "gor_weight": 2.0}})
    torch.manual_seed(0)
    a, p = torch.rand(8, 1, 64, 64) * 255, torch.rand(8, 1, 64, 64) * 255
    plain, gor = Trainer(conf), Trainer(with_gor)
    gor.net.load_state_dict(plain.net.state_dict())
    plain.net.eval(), gor.net.eval()
    base, _ = plain.loss(a, p, 0)
    total, _ = gor.loss(a, p, 0)
    da, dp = plain.net(torch.cat([a, p])).chunk(2)
    assert total.item() == pytest.approx(base.item() + 2.0 * global_orthogonal_regularization(da, dp).item(), abs=1e-5)
    with pytest.raises(ValueError, match=r"loss.gor_weight = -1"):
        load_config(None, {"preset": "hardnet", "loss": {"gor_weight": -1}})
    with pytest.raises(ValueError, match=r"gor_weight"):
        load_config(None, {"preset": "paper", "loss": {"gor_weight": 1.0}})


def _tiny_conf(tmp_path, **run):
    return load_config(
        None,
        {
            "preset": "hardnet",
            "data": {
                "sources": ["synthetic-noise"],
                "weights": [1.0],
                "batch_size": 16,
                "val_pairs": 64,
                "num_workers": 0,
            },
            "optim": {"lr": 0.05},
            "run": {
                "steps": 6,
                "val_every": 3,
                "ckpt_every": 3,
                "out_dir": str(tmp_path / "run"),
                "device": "cpu",
                **run,
            },
        },
    )


def _losses(out_dir: Path) -> dict[int, float]:
    with open(out_dir / "log.csv", newline="") as f:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f)}


def test_short_run_lowers_validation_fpr95(tmp_path):
    conf = _tiny_conf(tmp_path, steps=40, val_every=40, ckpt_every=40)
    conf["data"]["batch_size"] = 32
    conf["data"]["val_pairs"] = 256
    trainer = Trainer(conf)
    from deepdesc.train.sources import validation_pairs
    from deepdesc.train.trainer import validation_fpr95

    val = validation_pairs(conf)
    before = validation_fpr95(trainer.model, *val)
    summary = trainer.run(progress=False)
    assert summary["step"] == 40
    assert before > 0.03 and summary["last_fpr95"] < 0.5 * before, (before, summary)
    assert (tmp_path / "run" / "best.safetensors").exists() and (tmp_path / "run" / "last.pt").exists()
    from deepdesc import load_model

    assert load_model(tmp_path / "run" / "best.safetensors").conf["input_norm"] == "patch"


def test_resume_continues_exactly(tmp_path):
    full = Trainer(_tiny_conf(tmp_path / "a"))
    full.run(progress=False)
    first = Trainer(_tiny_conf(tmp_path / "b"))
    original = first.loss

    def stop_after_three(a, p, index, valid=None):
        first.stop_requested = first.step >= 2
        return original(a, p, index, valid)

    first.loss = stop_after_three
    assert first.run(progress=False)["step"] == 3
    conf = _tiny_conf(tmp_path / "b")
    resumed = Trainer(conf)
    resumed.run(resume=True, progress=False)
    a, b = _losses(tmp_path / "a" / "run"), _losses(tmp_path / "b" / "run")
    assert list(b) == list(range(1, 7))
    np.testing.assert_allclose([b[s] for s in range(4, 7)], [a[s] for s in range(4, 7)], rtol=1e-5)
    for k, v in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v, rtol=1e-5, atol=1e-6)


def _write_config(path: Path, out_dir: Path, steps: int, ckpt_every: int = 1) -> Path:
    path.write_text(
        f"""
preset = "hardnet"
[data]
sources = ["synthetic-noise"]
weights = [1.0]
batch_size = 16
val_pairs = 64
num_workers = 0
[run]
steps = {steps}
val_every = 100
ckpt_every = {ckpt_every}
out_dir = "{out_dir}"
device = "cpu"
"""
    )
    return path


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "deepdesc.cli", *args]


def test_resume_after_kill_9_reproduces_losses(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = _write_config(tmp_path / "ref.toml", tmp_path / "ref", steps=8)
    subprocess.run(_cli("train", "--config", str(ref)), check=True, env=env, capture_output=True, timeout=300)
    cfg = _write_config(tmp_path / "k.toml", tmp_path / "k", steps=8)
    proc = subprocess.Popen(_cli("train", "--config", str(cfg)), env=env, stderr=subprocess.DEVNULL)
    log = tmp_path / "k" / "log.csv"
    deadline = time.time() + 240
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 4):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(_losses(tmp_path / "k")) < 8, "the run finished before it could be killed"
    subprocess.run(
        _cli("train", "--config", str(cfg), "--resume"), check=True, env=env, capture_output=True, timeout=300
    )
    a, b = _losses(tmp_path / "ref"), _losses(tmp_path / "k")
    assert sorted(b) == list(range(1, 9))
    np.testing.assert_allclose([b[s] for s in range(1, 9)], [a[s] for s in range(1, 9)], rtol=1e-5)


def test_sigint_saves_a_checkpoint(tmp_path):
    trainer = Trainer(_tiny_conf(tmp_path, steps=50, ckpt_every=1000, val_every=1000))
    original = trainer.loss

    def interrupting_loss(a, p, index, valid=None):
        if trainer.step == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return original(a, p, index, valid)

    trainer.loss = interrupting_loss
    summary = trainer.run(progress=False)
    assert summary["interrupted"] and summary["step"] == 3
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["step"] == 3


def test_nan_loss_stops_with_a_clear_message_and_keeps_last_checkpoint(tmp_path):
    trainer = Trainer(_tiny_conf(tmp_path, steps=6, ckpt_every=2))
    original = trainer.loss

    def exploding_loss(a, p, index, valid=None):
        loss, stats = original(a, p, index)
        return (loss * float("nan") if trainer.step >= 3 else loss), stats

    trainer.loss = exploding_loss
    with pytest.raises(FloatingPointError, match="last good checkpoint"):
        trainer.run(progress=False)
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"] == 2


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    trainer = Trainer(_tiny_conf(tmp_path, steps=2, ckpt_every=1))
    trainer.run(progress=False)
    path = tmp_path / "run" / "last.pt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        Trainer(_tiny_conf(tmp_path, steps=4)).run(resume=True, progress=False)
    path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="last.pt"):
        Trainer(_tiny_conf(tmp_path, steps=4)).run(resume=True, progress=False)


def test_refuses_to_overwrite_a_run_and_bad_configs(tmp_path):
    Trainer(_tiny_conf(tmp_path, steps=1)).run(progress=False)
    with pytest.raises(CheckpointError, match="--resume"):
        Trainer(_tiny_conf(tmp_path, steps=2)).run(progress=False)
    with pytest.raises(ValueError, match="unknown config key 'run.stepz'"):
        load_config(None, {"run": {"stepz": 3}})
    with pytest.raises(ValueError, match="unknown preset"):
        load_config(None, {"preset": "nope"})
    bad = tmp_path / "bad.toml"
    bad.write_text("preset = [")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_config(bad)


def test_paper_preset_values():
    conf = load_config(None)
    assert conf["loss"] == {
        "kind": "hinge",
        "margin": 4.0,
        "positive_mining": 8,
        "negative_mining": 8,
        "negatives_per_pair": 1,
    }
    assert conf["optim"]["kind"] == "sgd" and conf["optim"]["lr"] == 0.01 and conf["optim"]["momentum"] == 0.9
    assert conf["model"]["input_norm"] == "pixel"


def test_two_process_ddp_matches_single_process(tmp_path):
    """torchrun with 2 CPU processes (gloo) == one process accumulating the same 2 micro-batches."""
    single = _write_config(tmp_path / "s.toml", tmp_path / "s", steps=3, ckpt_every=3)
    ddp = _write_config(tmp_path / "d.toml", tmp_path / "d", steps=3, ckpt_every=3)
    for path in (single, ddp):
        path.write_text(path.read_text().replace("[run]\n", "[run]\nmicro_batches = 2\n"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_cli("train", "--config", str(single)), check=True, env=env, capture_output=True, timeout=300)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        "-m",
        "deepdesc.cli",
        "train",
        "--config",
        str(ddp),
    ]
    result = subprocess.run(cmd, env=env, capture_output=True, timeout=300, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    a = torch.load(tmp_path / "s" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "d" / "last.pt", weights_only=True)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


def test_phototour_pairs_share_a_3d_point(tmp_path, monkeypatch):
    from deepdesc.train.synthetic import PhotoTourPairs

    from .make_fake_data import make_phototour

    monkeypatch.setenv("DEEPDESC_CACHE", str(tmp_path / "cache"))
    fake = make_phototour(tmp_path / "liberty", n_patches=120, patches_per_point=3)
    pairs = PhotoTourPairs(fake["patches"], fake["point_ids"])
    a, p = pairs.sample(np.random.default_rng(0), 50)
    lookup = {patch.tobytes(): pid for patch, pid in zip(fake["patches"], fake["point_ids"])}
    for x, y in zip(a, p):
        assert lookup[x.tobytes()] == lookup[y.tobytes()] and not np.array_equal(x, y)
    # the trainer reads it as a source; validation holds out every 10th 3D point
    conf = _tiny_conf(tmp_path, steps=2, val_every=2, ckpt_every=2)
    conf["data"]["sources"] = [f"phototour:{tmp_path / 'liberty'}"]
    conf["data"]["val_pairs"] = 16
    assert Trainer(conf).run(progress=False)["step"] == 2


def test_trainer_two_pass_mining_equals_single_pass_loss(tmp_path):
    """Forward-all-without-gradients then re-forward-the-mined gives the loss of the one-pass definition."""
    conf = load_config(None, {"run": {"device": "cpu", "out_dir": str(tmp_path)}})
    trainer = Trainer(conf)
    a = torch.rand(32, 1, 64, 64) * 255
    p = (a + torch.randn_like(a) * 20).clamp(0, 255)
    two_pass, _ = trainer.loss(a, p, index=5)
    gen = torch.Generator().manual_seed(conf["run"]["seed"] * 1_000_003 + 5)
    da, dp = trainer.model(torch.cat([a, p])).chunk(2)
    one_pass, _ = mined_hinge_loss(da, dp, 4.0, 8, 8, num_negatives=32, generator=gen)
    assert two_pass.item() == pytest.approx(one_pass.item(), rel=1e-5)
    two_pass.backward()
    assert trainer.model.conv1.weight.grad.abs().sum() > 0


def test_convert_a_checkpoint_to_weights(tmp_path):
    from deepdesc import load_model
    from deepdesc.cli import main

    trainer = Trainer(_tiny_conf(tmp_path, steps=2, ckpt_every=2))
    trainer.run(progress=False)
    out = tmp_path / "w.safetensors"
    assert main(["convert", str(tmp_path / "run" / "last.pt"), str(out)]) == 0
    model = load_model(out)
    assert model.conf["input_norm"] == "patch" and model.info["license"] == "MIT"
    x = torch.rand(3, 1, 64, 64) * 255
    with torch.no_grad():
        torch.testing.assert_close(model(x), trainer.model.eval()(x))
    (tmp_path / "bad.pt").write_bytes(b"junk")
    assert main(["convert", str(tmp_path / "bad.pt"), str(tmp_path / "x.safetensors")]) == 2
    # a best-by-validation model re-labelled for packaging: weights and earlier metadata kept, new keys added
    relabelled = tmp_path / "r.safetensors"
    argv = ["convert", str(tmp_path / "run" / "best.safetensors"), str(relabelled), "--meta", "name=mine"]
    assert main([*argv, "--meta", "model_card=docs/x.md"]) == 0
    model = load_model(relabelled)
    assert model.info["name"] == "mine" and model.info["model_card"] == "docs/x.md"
    assert "validation_fpr95" in model.info and model.info["license"] == "MIT"
    best = load_model(tmp_path / "run" / "best.safetensors")
    for k, v in best.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v)
    assert main([*argv, "--meta", "novalue"]) == 2


def test_paper_preset_runs_and_sets_pixel_normalisation_maps(tmp_path):
    conf = load_config(
        None,
        {
            "data": {
                "sources": ["synthetic-noise"],
                "weights": [1.0],
                "batch_size": 32,
                "val_pairs": 32,
                "num_workers": 0,
            },
            "run": {"steps": 2, "val_every": 2, "ckpt_every": 2, "out_dir": str(tmp_path / "run"), "device": "cpu"},
        },
    )
    assert conf["preset"] == "paper" and conf["loss"]["kind"] == "hinge"
    trainer = Trainer(conf)
    summary = trainer.run(progress=False)
    assert summary["step"] == 2 and np.isfinite(summary["last_fpr95"])
    # per-pixel maps estimated from training patches, not the constructor's placeholders
    assert not torch.allclose(trainer.model.mean, torch.full_like(trainer.model.mean, 128.0))
    assert (trainer.model.std > 1.0).all()


class _Flatten(torch.nn.Module):
    """A stand-in descriptor: the first 4 pixels of the patch."""

    device = torch.device("cpu")

    def forward(self, x):
        return x.flatten(1)[:, :4]


def test_validation_precision_at_1_hand_made():
    from deepdesc.train.trainer import validation_scores

    anchors = torch.zeros(4, 1, 64, 64)
    for i in range(4):
        anchors[i, 0, 0, i] = 10.0  # descriptors 10 * e_i
    positives = anchors.clone()
    positives[0, 0, 0, 0], positives[0, 0, 0, 3] = 0.0, 30.0  # |a0 - p0| = 31.6 > |a0 - p1| = 14.1
    scores = validation_scores(_Flatten(), anchors, positives)
    assert scores["precision_at_1"] == pytest.approx(0.75)  # anchors 1, 2, 3 find their own at distance 0
    # FPR95: 3 positives at 0 and one at 31.6 -> the threshold for 95% recall admits every negative (14.1)
    assert scores["fpr95"] == pytest.approx(1.0)


def test_select_by_precision_at_1_keeps_the_best_checkpoint(tmp_path):
    from deepdesc.hub.weights import read_safetensors_metadata

    summary = Trainer(_tiny_conf(tmp_path, steps=6, val_every=2, select="precision_at_1")).run(progress=False)
    with open(tmp_path / "run" / "log.csv", newline="") as f:
        p1 = [float(r["val_precision_at_1"]) for r in csv.DictReader(f) if r["val_precision_at_1"]]
    assert len(p1) == 3 and summary["select"] == "precision_at_1"
    assert summary["best"] == pytest.approx(max(p1), abs=1e-5)
    meta = read_safetensors_metadata(tmp_path / "run" / "best.safetensors")
    assert float(meta["validation_precision_at_1"]) == pytest.approx(max(p1), abs=1e-4)
    with pytest.raises(ValueError, match="run.select"):
        Trainer(_tiny_conf(tmp_path / "x", select="auc")).run(progress=False)


def test_init_from_an_earlier_run(tmp_path):
    Trainer(_tiny_conf(tmp_path / "a", steps=2)).run(progress=False)
    source = torch.load(tmp_path / "a" / "run" / "last.pt", weights_only=True)["model"]
    # lr 0: the fine-tuned run must still hold exactly the initial weights
    for init in (tmp_path / "a" / "run" / "last.pt", tmp_path / "a" / "run" / "best.safetensors"):
        out = tmp_path / f"b_{init.suffix[1:]}"
        conf = _tiny_conf(out, steps=1, val_every=1, ckpt_every=1, init=str(init))
        conf["optim"]["lr"] = 0.0
        trainer = Trainer(conf)
        trainer.run(progress=False)
        if init.suffix == ".pt":
            for k, v in source.items():
                torch.testing.assert_close(trainer.model.state_dict()[k], v)
        else:
            assert not torch.equal(trainer.model.conv1.weight, Trainer(_tiny_conf(out / "fresh")).model.conv1.weight)
    conf = _tiny_conf(tmp_path / "c", init=str(tmp_path / "a" / "run" / "last.pt"))
    conf["model"]["input_norm"] = "pixel"
    with pytest.raises(ValueError, match="input_norm"):
        Trainer(conf).run(progress=False)


def test_augment_and_nested_overrides(tmp_path):
    from deepdesc.train.sources import make_augment

    conf = load_config(None, {"run": {"steps": 3}})
    assert conf["run"]["steps"] == 3 and conf["run"]["val_every"] == 500  # siblings kept
    path = tmp_path / "c.toml"
    path.write_text('preset = "hardnet"\n[data.augment]\nblur_sigma = [0.0, 3.0]\nrotation_deg = 5.0\n')
    conf = load_config(path)
    aug = make_augment(conf["data"]["augment"])
    assert aug.blur_sigma == (0.0, 3.0) and aug.rotation_deg == 5.0 and aug.gamma == (0.6, 1.6)
    with pytest.raises(ValueError, match="unknown data.augment keys"):
        make_augment({"blurr": 1.0})


def test_paper_recipe_learns_on_phototour_format_data(tmp_path, monkeypatch):
    """The paper's preset (hinge loss, r_p = r_n = 8 mining, SGD, per-pixel normalisation) on labelled
    data in the PhotoTour layout, 3D points held out for validation: FPR95 must fall several-fold."""
    from deepdesc.train.sources import validation_pairs
    from deepdesc.train.trainer import validation_fpr95

    from .make_fake_data import make_phototour

    monkeypatch.setenv("DEEPDESC_CACHE", str(tmp_path / "cache"))
    make_phototour(tmp_path / "liberty", n_patches=1500, patches_per_point=3, learnable=True)
    overrides = {
        "data": {"sources": [f"phototour:{tmp_path / 'liberty'}"], "weights": [1.0], "batch_size": 64},
        "run": {"steps": 20, "val_every": 20, "ckpt_every": 20, "out_dir": str(tmp_path / "run"), "device": "cpu"},
    }
    overrides["data"].update(val_pairs=48, num_workers=0)
    conf = load_config(None, overrides)
    assert conf["preset"] == "paper" and conf["loss"]["positive_mining"] == conf["loss"]["negative_mining"] == 8
    trainer = Trainer(conf)
    before = validation_fpr95(trainer.model, *validation_pairs(conf))
    summary = trainer.run(progress=False)
    assert before > 0.3 and summary["last_fpr95"] < 0.3 * before, (before, summary)


def test_yaml_config_equals_toml(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('preset = "hardnet"\n[optim]\nlr = 0.002\n[data.augment]\nblur_sigma = [0.0, 3.0]\n')
    yaml = tmp_path / "c.yaml"
    yaml.write_text("preset: hardnet\noptim: {lr: 0.002}\ndata:\n  augment: {blur_sigma: [0.0, 3.0]}\n")
    assert load_config(yaml) == load_config(toml)
    (tmp_path / "bad.yml").write_text("run: [1, 2\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(tmp_path / "bad.yml")
    (tmp_path / "list.yml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="mapping"):
        load_config(tmp_path / "list.yml")
    (tmp_path / "code.yml").write_text("run: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ValueError, match="not valid YAML"):  # safe_load: tags that would run code are refused
        load_config(tmp_path / "code.yml")


def test_command_line_overrides(tmp_path):
    from deepdesc.cli import main
    from deepdesc.train import parse_overrides

    assert parse_overrides(["optim.lr=0.001", "run.out_dir=runs/x", "data.sources=['sheets', 'photos']"]) == {
        "optim": {"lr": 0.001},
        "run": {"out_dir": "runs/x"},
        "data": {"sources": ["sheets", "photos"]},
    }
    assert parse_overrides(["run.tensorboard=true", "data.augment.blur_sigma=[0, 3]"]) == {
        "run": {"tensorboard": True},
        "data": {"augment": {"blur_sigma": [0, 3]}},
    }
    for bad in ("optim.lr", "=3", "optim..lr=1"):
        with pytest.raises(ValueError, match="TABLE.KEY=VALUE"):
            parse_overrides([bad])
    config = _write_config(tmp_path / "c.toml", tmp_path / "run", steps=5)
    argv = ["train", "--config", str(config), "--set", "run.steps=2", "--set", f"run.out_dir='{tmp_path / 'o'}'"]
    assert main(argv) == 0
    assert sorted(_losses(tmp_path / "o")) == [1, 2] and not (tmp_path / "run").exists()
    assert main(["train", "--config", str(config), "--set", "run.stepz=2"]) == 2  # unknown key: clear error


def test_phototour_split_sources(tmp_path, monkeypatch):
    """phototour-split1:ROOT trains on ROOT/liberty + ROOT/yosemite (as the original split1 model)."""
    from deepdesc.train.sources import build_sources

    from .make_fake_data import make_phototour

    monkeypatch.setenv("DEEPDESC_CACHE", str(tmp_path / "cache"))
    for k, name in enumerate(("liberty", "yosemite")):
        make_phototour(tmp_path / name, n_patches=90, patches_per_point=3, seed=k)
    conf = _tiny_conf(tmp_path)
    conf["data"].update(sources=[f"phototour-split1:{tmp_path}", "synthetic-noise"], weights=[0.5, 0.5])
    sources, weights = build_sources(conf, "train")
    assert weights == [0.25, 0.25, 0.5] and len(sources) == 3
    assert [type(s).__name__ for s in sources] == ["PhotoTourPairs", "PhotoTourPairs", "SheetPairs"]
    assert len(sources[0].patches) == 90 and sources[1].patches[0].tobytes() != sources[0].patches[0].tobytes()
    conf["data"]["sources"] = [f"phototour-split2:{tmp_path}"]  # needs notredame, which is missing
    conf["data"]["weights"] = [1.0]
    with pytest.raises((ValueError, OSError), match="notredame"):
        build_sources(conf, "train")
    for bad in ([f"phototour-split9:{tmp_path}"], ["phototour-split1:"]):
        conf["data"]["sources"] = bad
        with pytest.raises(ValueError, match="phototour-split1..4"):
            build_sources(conf, "train")
    conf["data"].update(sources=["sheets", "photos"], weights=[1.0])
    with pytest.raises(ValueError, match="same length"):
        build_sources(conf, "train")


def test_distractor_rows_are_negatives_only():
    """valid=False rows add no positive term; their anchors become the hardest negative of a real pair."""
    from deepdesc.train.losses import hardest_in_batch_triplet_loss

    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1]])
    p = torch.tensor([[0.8, 0.2], [0.1, 0.9], [-1.0, 0.0]])
    valid = torch.tensor([True, True, False])
    loss, stats = hardest_in_batch_triplet_loss(a, p, margin=1.0, valid=valid)
    d = torch.cdist(a, p)
    # pair 0: its hardest negative is distractor anchor 2 in column 0 (d(a2, p0) is tiny)
    neg0 = min(d[0, 1], d[0, 2], d[1, 0], d[2, 0])
    neg1 = min(d[1, 0], d[1, 2], d[0, 1], d[2, 1])
    expected = (torch.relu(1 + d[0, 0] - neg0) + torch.relu(1 + d[1, 1] - neg1)) / 2
    torch.testing.assert_close(loss, expected)
    assert neg0 == d[2, 0]
    without, _ = hardest_in_batch_triplet_loss(a[:2], p[:2], margin=1.0)
    assert loss > without  # the distractor made pair 0 harder
    with pytest.raises(ValueError, match="at least one valid pair"):
        hardest_in_batch_triplet_loss(a, p, valid=torch.zeros(3, dtype=torch.bool))


def test_phototour_pairs_sample_distractor_rows():
    from deepdesc.train.synthetic import PhotoTourPairs

    rng = np.random.default_rng(0)
    patches = rng.integers(0, 256, (12, 64, 64)).astype(np.uint8)
    ids = np.array([0, 0, 1, 1, 2, 2, 2, 3, 4, 5, 6, 7])  # points 3..7 are single-view distractors
    source = PhotoTourPairs(patches, ids, distractor_fraction=0.5)
    a, p, valid = source.sample(np.random.default_rng(1), 200)
    assert a.shape == p.shape == (200, 64, 64) and valid.dtype == bool
    assert 0.3 < 1 - valid.mean() < 0.7
    index = {patches[i].tobytes(): i for i in range(12)}
    a_ids = np.array([ids[index[x.tobytes()]] for x in a])
    p_ids = np.array([ids[index[x.tobytes()]] for x in p])
    assert (a_ids[valid] == p_ids[valid]).all()  # real pairs: one point
    assert (a_ids[~valid] >= 3).all()  # distractor rows: a single-view patch
    plain = PhotoTourPairs(patches, ids).sample(np.random.default_rng(1), 10)
    assert len(plain) == 2


def _multiview_conf(root: Path, out_dir: Path, **data) -> dict:
    """A 2-step hardnet config training on ``multiview:root`` and synthetic noise; ``data`` adds [data] keys."""
    run = {"steps": 2, "val_every": 2, "ckpt_every": 2, "out_dir": str(out_dir), "device": "cpu"}
    sources = {"sources": [f"multiview:{root}", "synthetic-noise"], "weights": [0.5, 0.5]}
    sizes = {"batch_size": 16, "val_pairs": 32, "num_workers": 0}
    return load_config(None, {"preset": "hardnet", "data": {**sources, **sizes, **data}, "run": run})


def test_multiview_source_trains_with_distractor_rows(tmp_path):
    """multiview:DIR reads make-patches output (DIR = training views, DIR/val = validation views)."""
    from .make_fake_data import make_phototour

    root = tmp_path / "mv"
    make_phototour(root, n_patches=120, patches_per_point=3, seed=0, learnable=True)
    make_phototour(root / "val", n_patches=60, patches_per_point=3, seed=1, learnable=True)
    conf = _multiview_conf(root, tmp_path / "run", distractor_fraction=0.3)
    summary = Trainer(conf).run(progress=False)
    assert summary["step"] == 2
    with pytest.raises(ValueError, match=r"data.distractor_fraction = 0.95"):
        load_config(None, {"preset": "hardnet", "data": {"distractor_fraction": 0.95}})


def _view_pair_scene(n_views: int = 4, n_tracks: int = 60, n_single: int = 20, seed: int = 0):
    """Patches of tracks seen in random subsets (>= 2) of ``n_views`` views, plus single-view detections; each
    patch is unique, so a sampled patch can be traced back to its index."""
    rng = np.random.default_rng(seed)
    point_ids, view_ids = [], []
    for t in range(n_tracks):
        views = rng.choice(n_views, size=int(rng.integers(2, n_views + 1)), replace=False)
        point_ids += [t] * len(views)
        view_ids += list(views)
    for k in range(n_single):
        point_ids.append(n_tracks + k)
        view_ids.append(k % n_views)
    n = len(point_ids)
    patches = np.zeros((n, 64, 64), np.uint8)
    patches.reshape(n, -1)[:, :2] = np.stack([np.arange(n) // 256, np.arange(n) % 256], 1)
    return patches, np.array(point_ids), np.array(view_ids)


def test_view_pair_batches_come_from_one_pair_of_views():
    from deepdesc.train.synthetic import ViewPairPairs

    patches, ids, views = _view_pair_scene()
    source = ViewPairPairs(patches, ids, views, distractor_fraction=0.3)
    single = {int(i) for i, c in zip(*np.unique(ids, return_counts=True)) if c == 1}
    seen_pairs = set()
    for seed in range(30):
        a, p, valid = source.sample(np.random.default_rng(seed), 12)
        ia = a.reshape(12, -1)[:, 0].astype(int) * 256 + a.reshape(12, -1)[:, 1]
        ip = p.reshape(12, -1)[:, 0].astype(int) * 256 + p.reshape(12, -1)[:, 1]
        assert len(set(views[ia])) == 1 and len(set(views[ip])) == 1  # one view for anchors, one for positives
        assert views[ia][0] != views[ip][0]
        seen_pairs.add(frozenset((int(views[ia][0]), int(views[ip][0]))))
        assert (ids[ia][valid] == ids[ip][valid]).all()  # real rows: one track in both views
        assert set(ids[ia][~valid].tolist()) <= single  # distractor rows: detections without a counterpart
        assert len(set(ids[ip].tolist())) == 12  # distinct tracks: no row is another's false negative
        assert valid.sum() >= 2
    assert len(seen_pairs) > 1  # the pair of views changes from batch to batch
    # the draw follows the shared-track counts: a pair is only drawn if it shares the rows asked for
    big = int(source.sizes.max())
    with pytest.raises(ValueError, match=f"no pair of views shares {big + 1} points"):
        source.sample(np.random.default_rng(0), big + 1)
    with pytest.raises(ValueError, match="must be \\(N,\\) arrays"):
        ViewPairPairs(patches, ids, views[:-1])


def test_view_pair_draw_is_proportional_to_shared_tracks():
    from deepdesc.train.synthetic import ViewPairPairs

    # views 0-1 share 30 tracks, views 1-2 share 10: with 4 rows asked, pair (0, 1) is drawn 3x as often
    ids = np.r_[np.repeat(np.arange(30), 2), np.repeat(np.arange(30, 40), 2)]
    views = np.r_[np.tile([0, 1], 30), np.tile([1, 2], 10)]
    patches = np.zeros((len(ids), 64, 64), np.uint8)
    patches[:, 0, 0] = views  # the patch records its view
    source = ViewPairPairs(patches, ids, views)
    assert source.view_pairs == [(0, 1), (1, 2)]
    draws = [source.sample(np.random.default_rng(s), 4) for s in range(2000)]
    pairs = [frozenset(a[:, 0, 0].tolist() + p[:, 0, 0].tolist()) for a, p, _ in draws]
    assert set(pairs) == {frozenset((0, 1)), frozenset((1, 2))}
    assert abs(np.mean([x == frozenset((0, 1)) for x in pairs]) - 0.75) < 0.04
    # asked for more rows than views 1-2 share, only views 0-1 can serve the batch
    assert all(set(source.sample(np.random.default_rng(s), 20)[0][:, 0, 0].tolist()) <= {0, 1} for s in range(20))


def test_multiview_batching_config(tmp_path):
    """data.multiview_batching = "view_pair" trains on view-pair batches; validation pairs stay random."""
    from deepdesc.datasets.phototour import write_phototour
    from deepdesc.train.sources import build_sources
    from deepdesc.train.synthetic import PhotoTourPairs, ViewPairPairs

    from .make_fake_data import related_patches

    root = tmp_path / "mv"
    for folder, seed in ((root, 0), (root / "val", 1)):
        patches, ids, views = _view_pair_scene(n_tracks=80, seed=seed)
        write_phototour(folder, related_patches(len(ids), 1, seed), ids, views)
    conf = _multiview_conf(root, tmp_path / "run", distractor_fraction=0.2, multiview_batching="view_pair")
    assert isinstance(build_sources(conf, "train")[0][0], ViewPairPairs)
    assert isinstance(build_sources(conf, "val")[0][0], PhotoTourPairs)
    assert Trainer(conf).run(progress=False)["step"] == 2
    with pytest.raises(ValueError, match=r"data.multiview_batching = 'image'"):
        load_config(None, {"preset": "hardnet", "data": {"multiview_batching": "image"}})
