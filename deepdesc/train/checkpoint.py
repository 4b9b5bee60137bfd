"""Training checkpoints (``last.pt``): the one place that writes them (atomically), reads them (with
``weights_only``) and builds the network a run config describes.

A checkpoint is a dict: ``step``, ``best``, ``model``, ``optimizer``, ``scheduler`` (state dicts),
``torch_rng`` and ``config`` (the run config as JSON).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..nn.base import DescriptorNet
from ..nn.factory import ARCHS, DEFAULT_ARCH, build_net
from ..utils import atomic_path

__all__ = [
    "CheckpointError",
    "build_model",
    "check_compatible",
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


def check_compatible(path: str | os.PathLike, saved: dict, conf: dict) -> None:
    """Refuse to resume a run whose ``[model]``, ``[loss]`` or ``[data]`` tables differ from the checkpoint's
    (``[model]`` compared with the network defaults filled in, so equivalent tables match)."""
    for key in ("model", "loss", "data"):
        a, b = saved.get(key), conf.get(key)
        if key == "model" and isinstance(a, dict) and isinstance(b, dict):
            a, b = _with_defaults(a), _with_defaults(b)
        if a != b:
            raise CheckpointError(f"{path}: checkpoint was trained with a different [{key}] config")


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
