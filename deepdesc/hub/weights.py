"""Model files: import of the original Torch7 models and the project's safetensors format.

A safetensors file holds the :class:`~deepdesc.model.DeepDescNet` state dict plus string
metadata: ``format`` (``deepdesc``), ``config`` (JSON of the model conf), ``normalisation``,
``provenance``, ``training_data`` and ``license``. Both readers are safe: no code runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ModelFormatError, T7FormatError
from ..nn.cnn3 import DeepDescNet
from ..utils import atomic_path
from .t7 import TorchObject, read_t7

__all__ = ["ModelFormatError", "load_safetensors", "load_t7", "save_safetensors"]

FORMAT_TAG = "deepdesc"


def _seq(obj: Any) -> list:
    """The ``modules`` list of a Torch7 container, in order."""
    modules = obj.get("modules") if isinstance(obj, TorchObject) else None
    if not isinstance(modules, dict) or not all(isinstance(k, float) for k in modules):
        raise KeyError("container without a modules list")
    return [modules[k] for k in sorted(modules)]


def _num(module: TorchObject, key: str) -> float:
    value = module.get(key)
    if not isinstance(value, float):
        raise KeyError(f"{module.class_name} has no number '{key}'")
    return value


def _array(module: TorchObject, key: str, shape: tuple[int, ...]) -> torch.Tensor:
    value = module.get(key)
    if not isinstance(value, np.ndarray) or value.shape != shape:
        got = value.shape if isinstance(value, np.ndarray) else type(value).__name__
        raise KeyError(f"{module.class_name}.{key} should be {shape}, got {got}")
    if not np.isfinite(value).all():
        raise KeyError(f"{module.class_name}.{key} holds NaN or inf")
    return torch.from_numpy(value.astype(np.float32))


def _expect(module: Any, class_name: str) -> TorchObject:
    if not isinstance(module, TorchObject) or module.class_name != class_name:
        got = module.class_name if isinstance(module, TorchObject) else type(module).__name__
        raise KeyError(f"expected {class_name}, found {got}")
    return module


def _load_conv(module: Any, conv: torch.nn.Conv2d) -> None:
    m = _expect(module, "nn.SpatialConvolution")
    cout, cin, kh, kw = conv.weight.shape
    geometry = {k: _num(m, k) for k in ("nInputPlane", "nOutputPlane", "kW", "kH", "dW", "dH")}
    expected = {"nInputPlane": cin, "nOutputPlane": cout, "kW": kw, "kH": kh, "dW": 1, "dH": 1}
    pads = (m.get("padW", 0.0), m.get("padH", 0.0))
    if geometry != expected or pads != (0.0, 0.0):
        raise KeyError(f"SpatialConvolution {geometry} pad {pads}, expected {expected} pad (0, 0)")
    weight = m.get("weight")
    if isinstance(weight, np.ndarray) and weight.shape == (cout, cin * kh * kw):
        weight = weight.reshape(cout, cin, kh, kw)  # older nn stored 2-D weights
        m.fields["weight"] = weight
    conv.weight.data.copy_(_array(m, "weight", (cout, cin, kh, kw)))
    conv.bias.data.copy_(_array(m, "bias", (cout,)))


def _load_lppool(module: Any, pool: Any) -> None:
    m = _expect(module, "nn.SpatialLPPooling")
    k = pool.kernel_size
    parts = _seq(m)
    if len(parts) != 4:
        raise KeyError(f"SpatialLPPooling with {len(parts)} modules, expected 4")
    square, avg, mul, sqrt = parts
    _expect(square, "nn.Square")
    _expect(avg, "nn.SpatialAveragePooling")
    geometry = tuple(_num(avg, key) for key in ("kW", "kH", "dW", "dH"))
    if geometry != (k, k, k, k) or avg.get("padW", 0.0) or avg.get("padH", 0.0) or avg.get("ceil_mode"):
        raise KeyError(f"SpatialAveragePooling {geometry}, expected non-overlapping {k}x{k}")
    # Saved models without 'divide' predate it: their average pooling summed the window.
    divide = avg.get("divide", False)
    scale = _num(_expect(mul, "nn.MulConstant"), "constant_scalar")
    if _num(_expect(sqrt, "nn.Sqrt"), "eps") != 0.0:
        raise KeyError("nn.Sqrt with a non-zero eps is not supported")
    pool.scale = scale if divide else scale * k * k


def _load_subnorm(module: Any, norm: Any) -> None:
    m = _expect(module, "nn.SpatialSubtractiveNormalization")
    channels = norm.weight.shape[1]
    if _num(m, "nInputPlane") != channels:
        raise KeyError(f"SpatialSubtractiveNormalization over {_num(m, 'nInputPlane')} planes, expected {channels}")
    parts = _seq(_expect(m.get("meanestimator"), "nn.Sequential"))
    if len(parts) != 3:
        raise KeyError(f"mean estimator with {len(parts)} modules, expected 3")
    pad, conv, replicate = parts
    _expect(pad, "nn.SpatialZeroPadding")
    _expect(replicate, "nn.Replicate")
    kh, kw = norm.weight.shape[2:]
    pads = tuple(_num(pad, key) for key in ("pad_l", "pad_r", "pad_t", "pad_b"))
    if pads != (kw // 2, kw // 2, kh // 2, kh // 2):
        raise KeyError(f"SpatialZeroPadding {pads} does not match a {kh}x{kw} kernel")
    weight = _array(_expect(conv, "nn.SpatialConvolution"), "weight", (1, channels, kh, kw))
    if conv.get("bias") is not None and np.any(conv["bias"] != 0):
        raise KeyError("subtractive normalisation mean estimator with a non-zero bias")
    if abs(float(weight.double().sum()) - 1.0) > 1e-4:
        raise KeyError(f"subtractive normalisation kernel sums to {float(weight.sum())}, expected 1")
    norm.weight.copy_(weight)


def load_t7(path: str | os.PathLike) -> DeepDescNet:
    """Load an original DeepDesc Torch7 model (``CNN3_*.t7``) into a :class:`DeepDescNet`.

    The file must hold a table ``{desc=nn.Sequential, mean=1x64x64, std=1x64x64}`` with the
    CNN3 structure; every module type, geometry and tensor shape is checked.
    """
    path = Path(path)
    try:
        tree = read_t7(path)
    except T7FormatError as exc:
        raise ModelFormatError(str(exc)) from None
    model = DeepDescNet()
    try:
        if not isinstance(tree, dict) or not {"desc", "mean", "std"} <= set(tree):
            raise KeyError("top level should be a table with 'desc', 'mean' and 'std'")
        layers = _seq(_expect(tree["desc"], "nn.Sequential"))
        names = [m.class_name if isinstance(m, TorchObject) else type(m).__name__ for m in layers]
        expected = ["nn.SpatialConvolution", "nn.Tanh", "nn.SpatialLPPooling", "nn.SpatialSubtractiveNormalization"] * 2
        expected += ["nn.SpatialConvolution", "nn.Tanh", "nn.SpatialLPPooling", "nn.Reshape"]
        if names != expected:
            raise KeyError(f"network is {names}, expected the CNN3 layout {expected}")
        with torch.no_grad():
            _load_conv(layers[0], model.conv1)
            _load_lppool(layers[2], model.pool1)
            _load_subnorm(layers[3], model.norm1)
            _load_conv(layers[4], model.conv2)
            _load_lppool(layers[6], model.pool2)
            _load_subnorm(layers[7], model.norm2)
            _load_conv(layers[8], model.conv3)
            _load_lppool(layers[10], model.pool3)
            reshape = layers[11]
            size = reshape.get("size")
            if not isinstance(size, np.ndarray) or size.tolist() != [model.descriptor_size]:
                raise KeyError(f"nn.Reshape to {size}, expected [{model.descriptor_size}]")
            mean = tree["mean"]
            std = tree["std"]
            for key, value in (("mean", mean), ("std", std)):
                if not isinstance(value, np.ndarray) or value.shape != (1, 64, 64):
                    got = getattr(value, "shape", type(value).__name__)
                    raise KeyError(f"'{key}' should be a 1x64x64 tensor, got {got}")
            if not np.isfinite(mean).all() or not (np.isfinite(std).all() and (std > 0).all()):
                raise KeyError("'mean'/'std' maps hold NaN/inf or a non-positive std")
            model.mean.copy_(torch.from_numpy(mean.astype(np.float32)))
            model.std.copy_(torch.from_numpy(std.astype(np.float32)))
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        problem = exc.args[0] if exc.args else type(exc).__name__
        raise ModelFormatError(f"{path}: unexpected model structure: {problem}") from None
    model.info = {"source": path.name, "normalisation": "pixel mean/std maps (original)"}
    return model.eval()


def save_safetensors(model: DeepDescNet, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Write ``model`` to ``path`` (atomically) as safetensors with its config and ``metadata``."""
    from safetensors.torch import save_file

    meta = {**model.info, **(metadata or {})}
    meta.update({"format": FORMAT_TAG, "config": json.dumps(model.conf)})
    meta["lp_scales"] = json.dumps([model.pool1.scale, model.pool2.scale, model.pool3.scale])
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={k: str(v) for k, v in meta.items()})


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a safetensors file (raises :class:`ModelFormatError` if unreadable)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:  # safetensors raises its own error types
        raise ModelFormatError(f"{path}: not a readable safetensors file ({exc})") from None


def load_safetensors(path: str | os.PathLike) -> DeepDescNet:
    """Load a model written by :func:`save_safetensors`."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    meta = read_safetensors_metadata(path)
    if meta.get("format") != FORMAT_TAG:
        raise ModelFormatError(f"{path}: safetensors file without deepdesc metadata (format={meta.get('format')!r})")
    try:
        conf = json.loads(meta["config"])
        scales = json.loads(meta.get("lp_scales", "null"))
        model = DeepDescNet(conf)
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelFormatError(f"{path}: bad model config in metadata ({exc})") from None
    try:
        tensors = load_file(str(path))
    except Exception as exc:
        raise ModelFormatError(f"{path}: not a readable safetensors file ({exc})") from None
    expected = model.state_dict()
    if set(tensors) != set(expected):
        raise ModelFormatError(
            f"{path}: tensors {sorted(set(tensors) ^ set(expected))} missing or unexpected for this config"
        )
    for key, value in tensors.items():
        if value.shape != expected[key].shape:
            raise ModelFormatError(
                f"{path}: '{key}' has shape {tuple(value.shape)}, expected {tuple(expected[key].shape)}"
            )
        if not torch.isfinite(value).all():
            raise ModelFormatError(f"{path}: '{key}' holds NaN or inf")
    model.load_state_dict(tensors)
    if scales is not None:
        model.pool1.scale, model.pool2.scale, model.pool3.scale = (float(s) for s in scales)
    model.info = {k: v for k, v in meta.items() if k not in ("format", "config", "lp_scales")}
    return model.eval()
