"""Layer 2, weights: the safe Torch7 reader, safetensors files, and the registry of named models."""

from .registry import MODELS, ModelInfo, cache_dir, load_model, model_path
from .t7 import read_t7
from .weights import load_safetensors, load_t7, read_safetensors_metadata, save_safetensors

__all__ = [
    # registry
    "MODELS",
    "ModelInfo",
    "cache_dir",
    "load_model",
    "model_path",
    # t7
    "read_t7",
    # weights
    "load_safetensors",
    "load_t7",
    "read_safetensors_metadata",
    "save_safetensors",
]
