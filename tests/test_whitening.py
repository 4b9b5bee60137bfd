"""Learned whitening: the fit against hand-computable cases, the fold into the compact network against float64
arithmetic, the fast path, files, the CLI, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deepdesc.cli import main
from deepdesc.hub.weights import load_safetensors, save_safetensors
from deepdesc.nn import CompactNet, TFeatNet
from deepdesc.nn.fast import FastDescriber
from deepdesc.train import load_config
from deepdesc.train.whitening import (
    Whitening,
    fit_whitening,
    raw_descriptors,
    whiten,
    whiten_model,
    whitening_pairs,
)

from .test_compact import _patches, _trained_stats


def _pairs(n: int, d: int, noise_scales: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Points with unit spread; each pair's two views differ by noise with per-axis scale ``noise_scales``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) + 3.0
    return x + rng.normal(size=(n, d)) * noise_scales, x + rng.normal(size=(n, d)) * noise_scales


@pytest.fixture(scope="module")
def compact() -> CompactNet:
    torch.manual_seed(1)
    return _trained_stats(CompactNet({"width": 4}), seed=3)


def _fitted(model: CompactNet, power: float = 1.0, seed: int = 0) -> Whitening:
    a, p = raw_descriptors(model, _patches(300, seed), _patches(300, seed) * 0.9 + 10)
    return fit_whitening(a, p, power=power)


# ---------------------------------------------------------------- the fit


def test_full_whitening_makes_pair_differences_isotropic():
    scales = np.array([0.1, 0.5, 2.0, 1.0])
    a, p = _pairs(20_000, 4, scales)
    w = fit_whitening(a, p, power=1.0)
    diff = w.apply(a) - w.apply(p)
    cov = diff.T @ diff / (2 * len(a))
    # isotropic, at the mean level of the raw difference covariance
    level = np.trace((a - p).T @ (a - p) / (2 * len(a))) / 4
    np.testing.assert_allclose(cov, level * np.eye(4), atol=1e-10 * level)
    # the axis where views disagree most is shrunk the most (diagonal noise: a diagonal matrix)
    np.testing.assert_allclose(w.matrix, np.diag(np.diag(w.matrix)), atol=0.02)
    assert np.argmin(np.diag(w.matrix)) == 2 and np.argmax(np.diag(w.matrix)) == 0
    np.testing.assert_allclose(w.mean, np.concatenate([a, p]).mean(0))


def test_power_zero_only_centres_and_half_power_is_the_square_root():
    a, p = _pairs(5_000, 3, np.array([0.2, 1.0, 3.0]), seed=1)
    np.testing.assert_allclose(fit_whitening(a, p, power=0.0).matrix, np.eye(3), atol=1e-12)
    half, full = fit_whitening(a, p, power=0.5).matrix, fit_whitening(a, p, power=1.0).matrix
    np.testing.assert_allclose(half @ half, full, rtol=1e-9, atol=1e-12)


def test_shrinkage_pulls_towards_the_identity():
    a, p = _pairs(5_000, 3, np.array([0.2, 1.0, 3.0]), seed=2)
    spread = [np.ptp(np.linalg.eigvalsh(fit_whitening(a, p, shrinkage=s).matrix)) for s in (0.0, 0.5, 0.9)]
    assert spread[0] > spread[1] > spread[2] > 0


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.0, 1.0))
def test_fit_is_rotation_equivariant(seed, power):
    """Rotating every descriptor rotates the whitening: R^T M R and R^T m."""
    a, p = _pairs(400, 5, np.array([0.3, 0.5, 1.0, 1.5, 2.0]), seed=seed % 1000)
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(5, 5)))
    w, wr = fit_whitening(a, p, power), fit_whitening(a @ q, p @ q, power)
    np.testing.assert_allclose(wr.matrix, q.T @ w.matrix @ q, atol=1e-9)
    np.testing.assert_allclose(wr.mean, w.mean @ q, atol=1e-9)
    assert np.allclose(w.matrix, w.matrix.T) and np.linalg.eigvalsh(w.matrix).min() > 0


@pytest.mark.parametrize(
    ("a", "p", "kwargs", "message"),
    [
        (np.zeros((10, 4)), np.zeros((9, 4)), {}, "both be \\(N, D\\)"),
        (np.zeros(10), np.zeros(10), {}, "both be \\(N, D\\)"),
        (np.zeros((4, 8)), np.zeros((4, 8)), {}, "more pairs than descriptor dimensions"),
        (np.full((20, 2), np.nan), np.zeros((20, 2)), {}, "NaN"),
        (np.ones((20, 2)), np.ones((20, 2)), {}, "singular"),
        (np.ones((20, 2)), np.zeros((20, 2)), {"power": 1.5}, "power must be in \\[0, 1\\]"),
        (np.ones((20, 2)), np.zeros((20, 2)), {"shrinkage": 1.0}, "shrinkage must be in \\[0, 1\\)"),
    ],
)
def test_fit_refuses_bad_input(a, p, kwargs, message):
    with pytest.raises(ValueError, match=message):
        fit_whitening(a, p, **kwargs)


def test_shrinkage_makes_a_singular_covariance_usable():
    a = np.random.default_rng(0).normal(size=(50, 3))
    p = a.copy()
    p[:, :2] += np.random.default_rng(1).normal(size=(50, 2))  # never differ along the third axis
    assert np.isfinite(fit_whitening(a, p, shrinkage=0.1).matrix).all()


# ---------------------------------------------------------------- the fold


def test_raw_descriptors_are_the_network_before_normalisation(compact):
    x = _patches(7, 5)
    (raw,) = raw_descriptors(compact, x)
    assert raw.shape == (7, 128) and raw.dtype == np.float64
    with torch.no_grad():
        np.testing.assert_allclose(compact(x).numpy(), raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)
    (same,) = raw_descriptors(compact, x[:, 0].numpy())  # (N, 64, 64) too
    np.testing.assert_array_equal(raw, same)
    with pytest.raises(ValueError, match="expected patches"):
        raw_descriptors(compact, np.zeros((2, 32, 32)))


def test_folded_model_equals_whitening_then_normalising_in_float64(compact):
    w = _fitted(compact)
    assert not np.allclose(w.matrix, np.eye(128), atol=0.05)  # a real transform, not near identity
    folded = whiten_model(compact, w).double()
    x = _patches(9, 11)
    (raw,) = raw_descriptors(compact.double(), x.double())
    compact.float()
    expected = w.apply(raw)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    with torch.no_grad():
        got = folded(x.double()).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)  # the folded weights are stored in float32
    # the original is untouched and the whitened one differs from it
    with torch.no_grad():
        assert (compact(x) - folded.float()(x)).abs().max() > 1e-2


def test_identity_whitening_changes_nothing(compact):
    identity = Whitening(mean=np.zeros(128), matrix=np.eye(128))
    x = _patches(6, 2)
    with torch.no_grad():
        np.testing.assert_allclose(whiten_model(compact, identity)(x).numpy(), compact(x).numpy(), atol=1e-6)


def test_folded_model_runs_on_the_fast_path_and_survives_a_file(compact, tmp_path):
    folded = whiten_model(compact, _fitted(compact, power=0.5))
    x = _patches(40, 4)
    with torch.no_grad():
        reference = folded(x)
    np.testing.assert_allclose(FastDescriber(folded)(x).numpy(), reference.numpy(), atol=2e-5)
    save_safetensors(folded, tmp_path / "w.safetensors")
    with torch.no_grad():
        np.testing.assert_allclose(load_safetensors(tmp_path / "w.safetensors")(x).numpy(), reference, atol=1e-6)


def test_fold_refuses_other_networks_and_sizes(compact):
    with pytest.raises(ValueError, match="arch 'compact' only"):
        whiten_model(TFeatNet(), Whitening(np.zeros(128), np.eye(128)))
    with pytest.raises(ValueError, match="expected \\(128, 128\\)"):
        whiten_model(compact, Whitening(np.zeros(64), np.eye(64)))


# ---------------------------------------------------------------- data and the command


def _config(tmp_path) -> str:
    path = tmp_path / "train.toml"
    path.write_text(
        'preset = "hardnet"\n[model]\narch = "compact"\nwidth = 4\n'
        '[data]\nsources = ["synthetic-noise"]\nweights = [1.0]\nbatch_size = 16\nval_pairs = 16\nnum_workers = 0\n'
    )
    return str(path)


def test_whitening_pairs_are_drawn_from_the_config_and_reproducible(tmp_path):
    conf = load_config(_config(tmp_path))
    a, p = whitening_pairs(conf, 300, seed=4, batch=128)
    assert a.shape == p.shape == (300, 64, 64) and a.dtype == np.float32
    b, _ = whitening_pairs(conf, 300, seed=4, batch=128)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, p)
    with pytest.raises(ValueError, match="num_pairs must be positive"):
        whitening_pairs(conf, 0)


def test_whiten_command_writes_a_whitened_model_with_its_recipe(compact, tmp_path, capsys):
    model = tmp_path / "m.safetensors"
    save_safetensors(compact, model, {"provenance": "a test network", "license": "MIT", "version": "9"})
    out = tmp_path / "white.safetensors"
    argv = ["whiten", "--model", str(model), "--config", _config(tmp_path), "-o", str(out)]
    assert main([*argv, "--power", "0.5", "--pairs", "200", "--half"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["power"] == 0.5 and summary["pairs"] == 200 and summary["difference_eigenvalue_ratio"] > 1
    white = load_safetensors(out)
    recipe = json.loads(white.info["whitening"])
    assert white.info["license"] == "MIT" and "version" not in white.info
    assert recipe["sources"] == ["synthetic-noise"] and white.info["provenance"].startswith("a test network")
    # the same as fitting by hand on the same pairs
    conf = load_config(_config(tmp_path))
    expected = whiten_model(compact, fit_whitening(*raw_descriptors(compact, *whitening_pairs(conf, 200)), 0.5))
    x = _patches(5, 8)
    with torch.no_grad():
        np.testing.assert_allclose(white(x).numpy(), expected(x).numpy(), atol=2e-3)  # float16 file
    assert whiten(compact, _config(tmp_path), tmp_path / "again.safetensors", power=0.5, num_pairs=200)["seed"] == 0
    assert main([*argv, "--power", "2"]) != 0
    assert "power must be in [0, 1]" in capsys.readouterr().err
