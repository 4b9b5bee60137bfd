"""deepdesc: DeepDesc learned local feature descriptors (Simo-Serra et al., ICCV 2015) in PyTorch.

Public API, grouped by layer (imported lazily, so ``import deepdesc`` is cheap)::

    load_model(name_or_path="default", device="auto") -> DescriptorNet    # hub
    build_net(conf) -> DescriptorNet: DeepDescNet (arch "cnn3"), CompactNet ("compact"), TFeatNet ("tfeat")   # nn
    describe(patches, model=None) -> (N, 128) float32                      # features
    Extractor(...)  SIFT(...)      OpenCV-style detectAndCompute/compute on images -> Features
    match_descriptors(d1, d2) -> matches (K, 2), distances (K,)            # matching
    extract.main(conf, images, features_path), match.main(...), reconstruct.main(...)   # jobs
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_EXPORTS = {
    # nn: networks
    "DescriptorNet": "deepdesc.nn.base",
    "DeepDescNet": "deepdesc.nn.cnn3",
    "CompactNet": "deepdesc.nn.compact",
    "TFeatNet": "deepdesc.nn.tfeat",
    "build_net": "deepdesc.nn.factory",
    "export_onnx": "deepdesc.nn.export",
    # hub: weights and the model registry
    "MODELS": "deepdesc.hub.registry",
    "load_model": "deepdesc.hub.registry",
    "load_t7": "deepdesc.hub.weights",
    "load_safetensors": "deepdesc.hub.weights",
    "save_safetensors": "deepdesc.hub.weights",
    "read_t7": "deepdesc.hub.t7",
    # features: images -> keypoints -> patches -> descriptors
    "read_image": "deepdesc.features.image",
    "load_image": "deepdesc.features.image",
    "detect_keypoints": "deepdesc.features.keypoints",
    "extract_patches": "deepdesc.features.patches",
    "describe": "deepdesc.features.describe",
    "Extractor": "deepdesc.features.extractor",
    "SIFT": "deepdesc.features.sift",
    "Features": "deepdesc.features.types",
    "DeepDescDescriptor": "deepdesc.features.descriptor",
    # matching: nearest neighbours, geometric verification
    "match_descriptors": "deepdesc.matching.nearest_neighbor",
    "estimate_homography": "deepdesc.matching.verify",
    "estimate_fundamental": "deepdesc.matching.verify",
    # errors
    "DeepDescError": "deepdesc.errors",
    "ModelNotAvailableError": "deepdesc.errors",
    "ModelFormatError": "deepdesc.errors",
    "T7FormatError": "deepdesc.errors",
    "DatasetFormatError": "deepdesc.errors",
    "OutputMismatchError": "deepdesc.errors",
}
_JOBS = ("extract", "match", "evaluate", "reconstruct")

__all__ = sorted([*_EXPORTS, *_JOBS, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _JOBS:
        value = importlib.import_module(f"deepdesc.{name}")
    else:
        raise AttributeError(f"module 'deepdesc' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
