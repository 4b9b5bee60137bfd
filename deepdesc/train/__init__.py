"""Layer 8, training: configs, data sources, losses, checkpoints and the resumable trainer.

``deepdesc train --config FILE.toml [--resume] [--set TABLE.KEY=VALUE ...]``; see docs/training.md.
"""

from __future__ import annotations

# Checkpoints: atomic save and load, and the model of a checkpoint (checkpoint.py).
from .checkpoint import CheckpointError, model_from_checkpoint

# Configs: presets, TOML/YAML files, --set overrides, validation (config.py).
from .config import PRESETS, ConfigError, load_config, parse_overrides, validate_config

# The trainer and its entry point (trainer.py).
from .trainer import Trainer, train

__all__ = [
    "PRESETS",
    "CheckpointError",
    "ConfigError",
    "Trainer",
    "load_config",
    "model_from_checkpoint",
    "parse_overrides",
    "train",
    "validate_config",
]
