"""Layer 8, training: configs, data sources, losses, checkpoints and the resumable trainer."""
