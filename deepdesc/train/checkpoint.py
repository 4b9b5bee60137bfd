"""Training checkpoints (``last.pt``): the one place that writes them (atomically), reads them (with
``weights_only``) and builds the network a run config describes.

A checkpoint is a dict: ``step``, ``best``, ``model``, ``optimizer``, ``scheduler`` (state dicts),
``torch_rng`` and ``config`` (the run config as JSON).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..nn.base import DescriptorNet
from ..nn.factory import ARCHS, DEFAULT_ARCH, build_net
from ..utils import atomic_path
from .config import PRESETS, _show
from .synthetic import Augment

__all__ = [
    "RESUMABLE_KEYS",
    "CheckpointError",
    "build_model",
    "check_compatible",
    "config_differences",
    "load_checkpoint",
    "model_from_checkpoint",
    "save_checkpoint",
]


def build_model(conf: dict) -> DescriptorNet:
    """The (untrained) network of a run config: its ``[model]`` table (``arch`` picks the network, see
    :func:`deepdesc.nn.build_net`), with the patch region of ``[data]`` (``region_scale``, ``blur_sigma``)
    recorded so the weights are later used with the patches they saw."""
    patch = {k: conf["data"][k] for k in ("region_scale", "blur_sigma")}
    return build_net({**patch, **conf["model"]})


def _with_defaults(model: dict) -> dict:
    """A ``[model]`` table with its network's defaults filled in (as it was, for an unknown arch)."""
    family = ARCHS.get(model.get("arch", DEFAULT_ARCH))
    return {**family.default_conf, **model} if family is not None else model


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (a killed run leaves the previous checkpoint intact)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(path: str | os.PathLike, missing: str = "no such checkpoint") -> dict[str, Any]:
    """A checkpoint's state dict with ``config`` decoded to a dict; :class:`CheckpointError` naming ``path``
    when the file is missing (``"{path}: {missing}"``), damaged or not a deepdesc checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {missing}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not {"step", "model", "config"} <= state.keys():
            raise ValueError("not a deepdesc training checkpoint")
        state = {**state, "config": json.loads(state["config"])}
    except Exception as exc:  # torch.load raises many types for a damaged file
        raise CheckpointError(f"{path}: corrupt or incompatible checkpoint ({type(exc).__name__}: {exc})") from None
    return state


# Keys a resumed run may change: where and how the run is executed, logged and checkpointed, and how long it runs.
# Batches are pure functions of (seed, step), so none of these changes what the steps already taken did.
# ``run.steps`` extends (or shortens) the run; with ``optim.lr_step = 0`` the linear decay is stretched to the new
# total from the resumed step on.
RESUMABLE_KEYS = (
    "run.steps",
    "run.out_dir",
    "run.device",
    "run.val_every",
    "run.ckpt_every",
    "run.tensorboard",
    "data.num_workers",
)


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 0.1}}`` -> ``{"optim.lr": 0.1}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _complete(conf: dict) -> dict[str, Any]:
    """A run config as dotted keys with every default filled in: the preset's (for keys an older checkpoint
    lacks), the network's ([model]) and :class:`~deepdesc.train.synthetic.Augment`'s ([data.augment])."""
    preset = PRESETS.get(conf.get("preset", "paper"), PRESETS["paper"])
    flat = {**_flatten(preset), **_flatten(conf)}
    model = conf.get("model") if isinstance(conf.get("model"), dict) else {}
    flat.update({f"model.{k}": v for k, v in _with_defaults({**preset["model"], **model}).items()})
    augment = conf.get("data", {}).get("augment") or {}
    defaults = {f.name: f.default for f in dataclasses.fields(Augment)}
    for key, value in {**defaults, **augment}.items():
        flat[f"data.augment.{key}"] = list(value) if isinstance(value, tuple) else value
    return flat


def config_differences(saved: dict, conf: dict) -> list[tuple[str, Any, Any]]:
    """``(dotted key, checkpoint value, current value)`` for every key whose value differs between two run
    configs (defaults filled in, so spelling a default out is no difference), sorted by key."""
    a, b = _complete(saved), _complete(conf)
    missing = object()
    return [(k, a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k, missing) != b.get(k, missing)]


def check_compatible(path: str | os.PathLike, saved: dict, conf: dict) -> None:
    """Refuse to resume a run whose config differs from the checkpoint's in any key but :data:`RESUMABLE_KEYS`,
    naming each differing key with its old and new value (:class:`CheckpointError`)."""
    refused = [(k, old, new) for k, old, new in config_differences(saved, conf) if k not in RESUMABLE_KEYS]
    if refused:
        tables = ", ".join(dict.fromkeys(f"[{k.rpartition('.')[0] or k}]" for k, _, _ in refused))
        lines = "; ".join(f"{k} = {_show(old)} in the checkpoint, {_show(new)} now" for k, old, new in refused)
        raise CheckpointError(
            f"{path}: the checkpoint was trained with a different {tables} config, and resuming continues a run "
            f"exactly: {lines}. Use the checkpoint's values (its config.json) or another run.out_dir; only "
            f"{', '.join(RESUMABLE_KEYS)} may change on resume"
        )


def model_from_checkpoint(path: str | os.PathLike) -> tuple[DescriptorNet, dict]:
    """The model of a trainer checkpoint (``last.pt``) in eval mode, and its run config."""
    state = load_checkpoint(path)
    conf = state["config"]
    try:
        model = build_model(conf)
        model.load_state_dict(state["model"])
        model.info = {
            "provenance": f"deepdesc train, preset {conf['preset']}, step {state['step']}",
            "training_data": ", ".join(conf["data"]["sources"]),
            "license": "MIT",
        }
    except Exception as exc:
        raise CheckpointError(f"{path}: corrupt or incompatible checkpoint ({type(exc).__name__}: {exc})") from None
    return model.eval(), conf
