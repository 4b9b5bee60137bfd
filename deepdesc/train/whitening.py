"""Learned whitening of a trained compact network, folded into its last layer (free at run time).

The descriptor before L2 normalisation, ``r`` (128-d), is replaced by ``M (r - m)``, with ``m`` the mean of the
descriptors of training pairs and ``M = C^(-power/2)`` from ``C``, the covariance of the difference between the two
descriptors of a corresponding pair ("intra-class" covariance; supervised whitening as in Mikolajczyk & Matas,
ICCV 2007, and Radenovic et al., ECCV 2016). ``power = 1`` whitens fully: after it, the nearest-neighbour distance
is the Mahalanobis distance of the pair differences, so directions in which corresponding patches disagree count
less. ``shrinkage`` pulls ``C`` towards a multiple of the identity before the inverse square root.

Since the compact network's last convolution and batch norm are linear, ``M`` and ``m`` are folded into them
(:func:`whiten_model`): a whitened model has the same architecture, size and speed.

    pairs = whitening_pairs(load_config("configs/v4/default.toml"), num_pairs=50_000)
    w = fit_whitening(*raw_descriptors(model, *pairs), power=0.5)
    whitened = whiten_model(model, w)              # CompactNet -> CompactNet
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..hub.registry import load_model
from ..hub.weights import save_safetensors
from ..nn.compact import CompactNet
from .config import load_config
from .sources import build_sources
from .synthetic import PairBatches

__all__ = ["Whitening", "fit_whitening", "raw_descriptors", "whiten", "whiten_model", "whitening_pairs"]


@dataclass(frozen=True)
class Whitening:
    """``mean`` (D,) and ``matrix`` (D, D), float64: descriptor ``r`` -> ``matrix @ (r - mean)``."""

    mean: np.ndarray
    matrix: np.ndarray

    def apply(self, descriptors: np.ndarray) -> np.ndarray:
        """(N, D) raw descriptors -> (N, D) float64 whitened (not normalised)."""
        return (np.asarray(descriptors, np.float64) - self.mean) @ self.matrix.T


def _check_pairs(anchors: np.ndarray, positives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, p = np.asarray(anchors, np.float64), np.asarray(positives, np.float64)
    if a.ndim != 2 or a.shape != p.shape:
        raise ValueError(f"anchors and positives must both be (N, D) arrays; got shapes {a.shape} and {p.shape}")
    n, d = a.shape
    if n <= d:
        raise ValueError(f"need more pairs than descriptor dimensions to fit a whitening: {n} pairs, {d} dimensions")
    if not (np.isfinite(a).all() and np.isfinite(p).all()):
        raise ValueError("descriptors hold NaN or infinite values")
    return a, p


def _check_options(power: float, shrinkage: float) -> None:
    if not 0.0 <= power <= 1.0:
        raise ValueError(f"power must be in [0, 1], got {power!r}")
    if not 0.0 <= shrinkage < 1.0:
        raise ValueError(f"shrinkage must be in [0, 1), got {shrinkage!r}")


def fit_whitening(anchors: np.ndarray, positives: np.ndarray, power: float = 1.0, shrinkage: float = 0.0) -> Whitening:
    """Supervised whitening from (N, D) descriptors of N corresponding pairs (row i of each shows one point).

    ``power`` in [0, 1]: 0 only centres (identity matrix), 1 whitens fully. ``shrinkage`` in [0, 1): ``C`` becomes
    ``(1 - s) C + s tr(C) / D I``. The matrix is symmetric and scaled to keep the mean eigenvalue of ``C`` (so
    whitened descriptors have about the raw ones' magnitude). Raises ``ValueError`` for bad shapes, non-finite
    values, too few pairs, or a singular ``C`` (pairs that never differ in some direction).
    """
    _check_options(power, shrinkage)
    a, p = _check_pairs(anchors, positives)
    n, d = a.shape
    diff = a - p
    cov = diff.T @ diff / (2 * n)  # per-descriptor covariance: a - p has twice the variance of a
    level = np.trace(cov) / d
    cov = (1.0 - shrinkage) * cov + shrinkage * level * np.eye(d)
    values, vectors = np.linalg.eigh(cov)
    if values[0] <= 1e-12 * max(values[-1], 1e-300):
        raise ValueError(
            "the pairs' difference covariance is singular (corresponding descriptors never differ in some "
            "direction): give more, varied pairs or shrinkage > 0"
        )
    scale = (values / level) ** (-power / 2)
    matrix = (vectors * scale) @ vectors.T
    return Whitening(mean=np.concatenate([a, p]).mean(0), matrix=(matrix + matrix.T) / 2)


def _unnormalised_copy(model: CompactNet) -> CompactNet:
    if type(model) is not CompactNet:
        raise ValueError(
            f"whitening is folded into the compact network's last layer; got {type(model).__name__} "
            "(arch 'compact' only)"
        )
    raw = CompactNet({**model.conf, "l2_normalize": False})
    raw.load_state_dict(model.state_dict())
    return raw.eval()


@torch.no_grad()
def raw_descriptors(
    model: CompactNet, *patch_sets: np.ndarray | torch.Tensor, batch_size: int = 512
) -> tuple[np.ndarray, ...]:
    """The network's descriptors before L2 normalisation, eval mode: each (N, 1, 64, 64) or (N, 64, 64) set of
    0..255 patches -> (N, 128) float64. The model is not modified."""
    raw = _unnormalised_copy(model)
    out = []
    for patches in patch_sets:
        x = torch.as_tensor(np.asarray(patches), dtype=torch.float32)
        if x.ndim == 3:
            x = x[:, None]
        if x.ndim != 4 or x.shape[1:] != (1, 64, 64):
            raise ValueError(f"expected patches (N, 1, 64, 64) or (N, 64, 64), got shape {tuple(x.shape)}")
        parts = [raw(x[i : i + batch_size]).double() for i in range(0, len(x), batch_size)]
        out.append(torch.cat(parts).numpy() if parts else np.zeros((0, raw.descriptor_size)))
    return tuple(out)


@torch.no_grad()
def whiten_model(model: CompactNet, whitening: Whitening) -> CompactNet:
    """A new compact network whose descriptor is ``normalize(whitening.apply(raw))`` (``raw``: ``model``'s
    descriptor before normalisation), with the whitening folded into ``conv7`` and ``bn7`` (eval mode). It keeps
    ``model.info`` (licence, training data, provenance) except its ``version``."""
    raw = _unnormalised_copy(model)
    d = raw.descriptor_size
    if whitening.matrix.shape != (d, d) or whitening.mean.shape != (d,):
        raise ValueError(
            f"whitening is for {whitening.mean.shape[0]}-d descriptors, the model's are {d}-d "
            f"(matrix {whitening.matrix.shape}, expected {(d, d)})"
        )
    bn = raw.bn7
    conv = raw.conv7
    # raw = (z - running_mean) / sqrt(running_var + eps) with z = conv7(x); whitened = M raw - M m
    inv_std = 1.0 / torch.sqrt(bn.running_var.double() + bn.eps)
    matrix = torch.from_numpy(whitening.matrix) * inv_std[None, :]  # M D
    shift = torch.from_numpy(whitening.matrix) @ (bn.running_mean.double() * inv_std + torch.from_numpy(whitening.mean))
    weight = conv.weight.double().reshape(d, -1)
    out = CompactNet(dict(model.conf))
    out.load_state_dict(model.state_dict())
    out.conv7.weight.copy_((matrix @ weight).reshape(conv.weight.shape).to(conv.weight.dtype))
    # the batch norm now only subtracts the folded shift: variance 1 - eps makes its scale exactly 1
    out.bn7.running_mean.copy_(shift.to(bn.running_mean.dtype))
    out.bn7.running_var.fill_(1.0 - bn.eps)
    out.info = {k: v for k, v in model.info.items() if k != "version"}  # licence, data; not the source's version
    return out.eval()


def whitening_pairs(
    conf: dict, num_pairs: int, seed: int = 0, batch: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``num_pairs`` corresponding training pairs drawn as the training batches of ``conf`` are (its
    ``data.sources`` and weights, training split; distractor rows left out), ``batch`` rows at a time (default
    ``min(1024, num_pairs + 16)``): two (N, 64, 64) float32 arrays."""
    if num_pairs < 1:
        raise ValueError(f"num_pairs must be positive, got {num_pairs}")
    sources, weights = build_sources(conf, "train")
    batch = batch or min(1024, num_pairs + 16)
    batches = PairBatches(sources, batch, seed=seed, weights=weights)
    anchors, positives, count, index = [], [], 0, 0
    while count < num_pairs:
        if index >= 1000 and count == 0:
            raise ValueError("the config's data sources gave no corresponding pairs (only distractor rows)")
        a, p, valid = batches[index]
        anchors.append(a[valid, 0].numpy())
        positives.append(p[valid, 0].numpy())
        count += int(valid.sum())
        index += 1
    return np.concatenate(anchors)[:num_pairs], np.concatenate(positives)[:num_pairs]


def whiten(
    model: str | os.PathLike | CompactNet,
    config: str | os.PathLike,
    output: str | os.PathLike,
    power: float = 1.0,
    shrinkage: float = 0.0,
    num_pairs: int = 50_000,
    seed: int = 0,
    half: bool = False,
) -> dict[str, Any]:
    """Fit a whitening of ``model`` (name, path or network) on ``num_pairs`` training pairs of the training
    config ``config`` and write the whitened model to ``output`` (safetensors; ``half``: float16 tensors), its
    recipe in the metadata. Returns a summary (the recipe and the spread of the pair-difference eigenvalues)."""
    _check_options(power, shrinkage)  # before any work
    net = load_model(model, device="cpu")
    conf = load_config(config)
    pairs = whitening_pairs(conf, num_pairs, seed=seed)
    anchors, positives = raw_descriptors(net, *pairs)
    whitening = fit_whitening(anchors, positives, power=power, shrinkage=shrinkage)
    recipe = {
        "power": power,
        "shrinkage": shrinkage,
        "pairs": num_pairs,
        "seed": seed,
        "config": str(config),
        "sources": conf["data"]["sources"],
    }
    provenance = net.info.get("provenance", str(model))
    save_safetensors(
        whiten_model(net, whitening),
        output,
        {"provenance": f"{provenance}; whitened (deepdesc.train.whitening)", "whitening": json.dumps(recipe)},
        half=half,
    )
    spread = np.linalg.eigvalsh(np.cov((anchors - positives).T))
    return {**recipe, "output": str(output), "difference_eigenvalue_ratio": float(spread[-1] / spread[0])}
