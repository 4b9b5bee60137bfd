"""ONNX export of :class:`~deepdesc.model.DeepDescNet` and an onnxruntime describer.

The exported graph takes raw intensities, float32 ``(B, 1, 64, 64)`` in 0..255 (input name
``patches``), and returns ``(B, 128)`` float32 descriptors (``descriptors``); the input
normalisation is inside the graph, as in the PyTorch model. onnx and onnxruntime are an optional
extra: ``pip install deepdesc[onnx]``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .model import PATCH_SIZE, DeepDescNet
from .utils import atomic_path

__all__ = ["OnnxDescriber", "export_onnx"]

INPUT_NAME = "patches"
OUTPUT_NAME = "descriptors"


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"ONNX support needs the optional package '{module}': pip install deepdesc[onnx]") from None


class _ExportNet(nn.Module):
    """DeepDescNet's forward for a fixed 64x64 input, written for a lean ONNX graph.

    Same arithmetic as :meth:`DeepDescNet.forward` up to float rounding, but the subtractive
    normalisation's border coefficients are constants (not recomputed from an all-ones map at
    run time) and its mean estimator is one channel sum plus a single-channel convolution when
    the kernel is the same for every plane (as in all Torch7 models).
    """

    def __init__(self, model: DeepDescNet):
        super().__init__()
        self.conf = dict(model.conf)
        self.convs = nn.ModuleList()
        self.pool_sizes: list[int] = []
        self.pool_scales: list[float] = []
        self.shared: list[bool] = []
        self.register_buffer("mean", model.mean.detach().clone())
        self.register_buffer("inv_std", (1.0 / model.std.detach().double()).float())
        size = PATCH_SIZE
        pools = (model.pool1, model.pool2, model.pool3)
        norms = (model.norm1, model.norm2, None)
        for i, (conv, pool, norm) in enumerate(zip((model.conv1, model.conv2, model.conv3), pools, norms)):
            new = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size)
            new.load_state_dict(conv.state_dict())
            self.convs.append(new)
            self.pool_sizes.append(pool.kernel_size)
            self.pool_scales.append(float(pool.scale))
            size = (size - conv.kernel_size[0] + 1) // pool.kernel_size
            if norm is None:
                continue
            w = norm.weight.detach()
            shared = bool(torch.equal(w, w[:, :1].expand_as(w)))
            self.shared.append(shared)
            with torch.no_grad():
                coef = norm.border_coef(size, size, w)
            self.register_buffer(f"norm{i}_weight", (w[:, :1] if shared else w).clone())
            self.register_buffer(f"norm{i}_inv_coef", 1.0 / coef)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conf["input_norm"] == "pixel":
            x = (x - self.mean) * self.inv_std
        else:
            mu = x.mean(dim=(1, 2, 3), keepdim=True)
            sd = x.std(dim=(1, 2, 3), keepdim=True)
            x = (x - mu) / (sd + 1.0)
        for i, conv in enumerate(self.convs):
            k = self.pool_sizes[i]
            t = torch.tanh(conv(x))
            x = torch.sqrt(F.avg_pool2d(t * t, k, k) * self.pool_scales[i])
            if i < len(self.shared):
                w = getattr(self, f"norm{i}_weight")
                pad = w.shape[2] // 2
                src = x.sum(dim=1, keepdim=True) if self.shared[i] else x
                x = x - F.conv2d(src, w, padding=pad) * getattr(self, f"norm{i}_inv_coef")
        x = torch.flatten(x, 1)
        if self.conf["l2_normalize"]:
            x = F.normalize(x, dim=1)
        return x


def export_onnx(
    model: DeepDescNet,
    path: str | os.PathLike,
    opset: int = 17,
    dynamic_batch: bool = True,
    batch_size: int = 1,
) -> Path:
    """Write ``model`` as an ONNX graph to ``path`` (atomically); returns the path.

    Input ``patches``: float32 (B, 1, 64, 64) intensities in 0..255; output ``descriptors``:
    (B, 128). ``dynamic_batch=False`` fixes B to ``batch_size``. Needs the ``onnx`` extra.
    """
    onnx = _require("onnx")
    path = Path(path)
    net = _ExportNet(model).cpu().eval()
    example = torch.full((batch_size, 1, PATCH_SIZE, PATCH_SIZE), 128.0)
    dynamic_axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter; no onnxscript needed
        torch.onnx.export(
            net,
            (example,),
            str(tmp),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )
        proto = onnx.load(str(tmp))
        onnx.checker.check_model(proto)
        meta = {"format": "deepdesc", "input": "float32 (B,1,64,64) intensities 0..255", **model.info}
        for key, value in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = str(key), str(value)
        onnx.save(proto, str(tmp))
    return path


class OnnxDescriber:
    """Describe patches with an exported graph on onnxruntime. (B, 1, 64, 64) 0..255 -> (B, 128) float32.

    Accepts numpy arrays or CPU torch tensors and returns the same kind. ``num_threads``: intra-op
    threads (default torch's thread count). ``providers``: onnxruntime execution providers.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        num_threads: int | None = None,
        providers: list[str] | None = None,
        batch_size: int = 256,
    ):
        ort = _require("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(num_threads or torch.get_num_threads())
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = Path(path)
        self.batch_size = batch_size
        self.session = ort.InferenceSession(
            str(self.path), sess_options=options, providers=providers or ["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: Any) -> Any:
        is_tensor = isinstance(x, torch.Tensor)
        arr = x.detach().cpu().numpy() if is_tensor else np.asarray(x)
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if arr.ndim != 4 or arr.shape[1:] != (1, PATCH_SIZE, PATCH_SIZE):
            raise ValueError(f"expected a (B, 1, {PATCH_SIZE}, {PATCH_SIZE}) array, got {arr.shape}")
        if len(arr) == 0:
            out = np.zeros((0, self.session.get_outputs()[0].shape[1]), dtype=np.float32)
            return torch.from_numpy(out) if is_tensor else out
        parts = [
            self.session.run(None, {self.input_name: arr[i : i + self.batch_size]})[0]
            for i in range(0, len(arr), self.batch_size)
        ]
        out = np.concatenate(parts) if len(parts) != 1 else parts[0]
        return torch.from_numpy(out) if is_tensor else out
