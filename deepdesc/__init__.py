"""deepdesc: DeepDesc learned local feature descriptors (Simo-Serra et al., ICCV 2015) in PyTorch.

Public API (imported lazily, so ``import deepdesc`` is cheap)::

    load_model(name_or_path="default", device="auto") -> DeepDescNet
    describe(patches, model=None) -> (N, 128) float32
    DeepDesc(...)                  OpenCV-style detectAndCompute/compute on images
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "DeepDescNet": "deepdesc.model",
    "default_conf": "deepdesc.model",
    "describe": "deepdesc.describe",
    "load_model": "deepdesc.registry",
    "MODELS": "deepdesc.registry",
    "ModelNotAvailableError": "deepdesc.registry",
    "ModelFormatError": "deepdesc.weights",
    "load_t7": "deepdesc.weights",
    "load_safetensors": "deepdesc.weights",
    "save_safetensors": "deepdesc.weights",
    "T7FormatError": "deepdesc.t7",
    "read_t7": "deepdesc.t7",
    "DeepDesc": "deepdesc.pipeline",
    "Features": "deepdesc.pipeline",
    "detect_keypoints": "deepdesc.keypoints",
    "load_image": "deepdesc.keypoints",
    "extract_patches": "deepdesc.patches",
    "match_descriptors": "deepdesc.matching",
    "estimate_homography": "deepdesc.verify",
    "estimate_fundamental": "deepdesc.verify",
    "export_onnx": "deepdesc.export",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'deepdesc' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
