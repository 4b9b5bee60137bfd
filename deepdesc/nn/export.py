"""ONNX export of the networks (:class:`~deepdesc.nn.cnn3.DeepDescNet`, :class:`~deepdesc.nn.compact.CompactNet`,
:class:`~deepdesc.nn.tfeat.TFeatNet`) and an onnxruntime describer.

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

from ..utils import atomic_path
from .base import PATCH_SIZE, DescriptorNet
from .fast import prepare_net

__all__ = ["OnnxDescriber", "export_onnx"]

INPUT_NAME = "patches"
OUTPUT_NAME = "descriptors"


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"ONNX support needs the optional package '{module}': pip install deepdesc[onnx]") from None


def export_onnx(
    model: DescriptorNet,
    path: str | os.PathLike,
    opset: int = 17,
    dynamic_batch: bool = True,
    batch_size: int = 1,
) -> Path:
    """Write ``model`` as an ONNX graph to ``path`` (atomically); returns the path.

    Input ``patches``: float32 (B, 1, 64, 64) intensities in 0..255; output ``descriptors``:
    (B, D). ``dynamic_batch=False`` fixes B to ``batch_size``. Needs the ``onnx`` extra. The graph is
    the model's eval-mode arithmetic (a compact net's BatchNorms folded into its convolutions).
    """
    onnx = _require("onnx")
    path = Path(path)
    net = prepare_net(model, device="cpu").eval()  # the fast path's prepared constants, plain ops
    example = torch.full((batch_size, 1, PATCH_SIZE, PATCH_SIZE), 128.0)
    dynamic_axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter; no onnxscript needed
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape tests on constant buffers
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
        meta = {"format": "deepdesc", "input": "float32 (B,1,64,64) intensities 0..255", "arch": model.arch}
        meta.update(model.info)
        for key, value in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = str(key), str(value)
        onnx.save(proto, str(tmp))
    return path


class OnnxDescriber:
    """Describe patches with an exported graph on onnxruntime. (B, 1, 64, 64) 0..255 -> (B, D) float32.

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
