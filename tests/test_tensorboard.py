"""TensorBoard logging of the trainer (``run.tensorboard = true``): the event files hold the log.csv scalars."""

from __future__ import annotations

import csv
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

from deepdesc.train import Trainer

from .test_train import _tiny_conf as _train_conf

STEPS, VAL_EVERY = 4, 2


def _tiny_conf(tmp_path: Path, **run) -> dict:
    settings = {"steps": STEPS, "val_every": VAL_EVERY, "ckpt_every": 1000, "tensorboard": True, **run}
    return _train_conf(tmp_path, **settings)


def _csv_rows(out: Path) -> list[dict[str, str]]:
    with open(out / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def _scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the event files under ``logdir``: tag -> [(step, value)] in file order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})  # 0: keep every event
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _f32(text: str) -> float:
    """A log.csv value as TensorBoard stores it (a float32 ``simple_value``)."""
    return float(np.float32(float(text)))


def test_tensorboard_scalars_match_the_csv_log(tmp_path):
    summary = Trainer(_tiny_conf(tmp_path)).run(progress=False)
    out = tmp_path / "run"
    assert summary["step"] == STEPS
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1, events

    rows = _csv_rows(out)
    assert [int(r["step"]) for r in rows] == list(range(1, STEPS + 1))
    scalars = _scalars(out / "tensorboard")
    # every log.csv column but step and seconds is a scalar tag, with the same steps and (float32) values
    columns = [c for c in rows[0] if c not in ("step", "seconds")]
    assert {"loss", "lr", "pos_dist", "neg_dist", "val_fpr95"} <= set(columns)
    assert set(scalars) == set(columns)
    for tag in columns:
        if tag.startswith("val_"):  # validation only every val_every steps (and at the last step)
            logged = [r for r in rows if r[tag] != ""]
            assert [int(r["step"]) for r in logged] == list(range(VAL_EVERY, STEPS + 1, VAL_EVERY)), tag
        else:
            logged = rows
        assert scalars[tag] == [(int(r["step"]), _f32(r[tag])) for r in logged], tag
    assert scalars["val_fpr95"][-1][1] == pytest.approx(summary["last_fpr95"], abs=1e-5)
    # the values are real numbers, not placeholders
    losses = [v for _, v in scalars["loss"]]
    assert all(np.isfinite(losses)) and len(set(losses)) > 1


def test_tensorboard_off_writes_no_event_files(tmp_path):
    Trainer(_tiny_conf(tmp_path, steps=1, tensorboard=False)).run(progress=False)
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_missing_tensorboard_is_a_clear_error(tmp_path, monkeypatch):
    # None in sys.modules makes `from torch.utils.tensorboard import ...` raise ImportError
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    trainer = Trainer(_tiny_conf(tmp_path))
    with pytest.raises(RuntimeError, match=r"tensorboard package.*pip install tensorboard"):
        trainer.run(progress=False)
    assert trainer.step == 0
    assert not (tmp_path / "run" / "log.csv").exists()


def test_missing_tensorboard_restores_signal_handlers(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(RuntimeError, match="tensorboard package"):
            Trainer(_tiny_conf(tmp_path)).run(progress=False)
        after = {sig: signal.getsignal(sig) for sig in before}
    finally:
        for sig, handler in before.items():  # never leave Ctrl-C swallowed for the rest of the test run
            signal.signal(sig, handler)
    assert after == before


def test_resume_does_not_duplicate_tensorboard_steps(tmp_path):
    crashed = Trainer(_tiny_conf(tmp_path, ckpt_every=2, val_every=1000))
    original = crashed.loss

    def crashing_loss(a, p, index, valid=None):  # dies computing step 4: steps 1-3 logged, last checkpoint at step 2
        if crashed.step == 3:
            raise KeyboardInterrupt("simulated kill")
        return original(a, p, index, valid)

    crashed.loss = crashing_loss
    with pytest.raises(KeyboardInterrupt):
        crashed.run(progress=False)
    Trainer(_tiny_conf(tmp_path, ckpt_every=2, val_every=1000)).run(resume=True, progress=False)
    out = tmp_path / "run"
    rows = _csv_rows(out)
    assert [int(r["step"]) for r in rows] == list(range(1, STEPS + 1))
    assert _scalars(out / "tensorboard")["loss"] == [(int(r["step"]), _f32(r["loss"])) for r in rows]
