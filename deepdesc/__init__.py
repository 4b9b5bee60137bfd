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
    "DeepDescNet": "deepdesc.nn.cnn3",
    "default_conf": "deepdesc.nn.cnn3",
    "describe": "deepdesc.features.describe",
    "load_model": "deepdesc.hub.registry",
    "MODELS": "deepdesc.hub.registry",
    "ModelNotAvailableError": "deepdesc.errors",
    "ModelFormatError": "deepdesc.errors",
    "load_t7": "deepdesc.hub.weights",
    "load_safetensors": "deepdesc.hub.weights",
    "save_safetensors": "deepdesc.hub.weights",
    "T7FormatError": "deepdesc.errors",
    "read_t7": "deepdesc.hub.t7",
    "DeepDesc": "deepdesc.features.extractor",
    "Features": "deepdesc.features.extractor",
    "detect_keypoints": "deepdesc.features.keypoints",
    "load_image": "deepdesc.features.keypoints",
    "extract_patches": "deepdesc.features.patches",
    "match_descriptors": "deepdesc.matching.nearest_neighbor",
    "estimate_homography": "deepdesc.matching.verify",
    "estimate_fundamental": "deepdesc.matching.verify",
    "export_onnx": "deepdesc.nn.export",
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
