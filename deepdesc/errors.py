"""The library's exceptions: every error deepdesc raises on purpose derives from :class:`DeepDescError`.

Each also derives from the built-in type a caller would otherwise catch (``ValueError`` for bad
input or files, ``RuntimeError`` for a missing resource), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DatasetFormatError",
    "DeepDescError",
    "ModelFormatError",
    "ModelNotAvailableError",
    "OutputMismatchError",
    "T7FormatError",
]


class DeepDescError(Exception):
    """Base class of deepdesc's own exceptions."""


class T7FormatError(DeepDescError, ValueError):
    """A file is not a well-formed Torch7 serialisation (names the file and byte offset)."""


class ModelFormatError(DeepDescError, ValueError):
    """A model file parses but does not hold a network deepdesc can build."""


class ModelNotAvailableError(DeepDescError, RuntimeError):
    """A named model is neither cached nor downloadable (the message says where to put the file)."""


class DatasetFormatError(DeepDescError, ValueError):
    """A data set's files are missing or malformed (names the file and, where known, the line)."""


class CheckpointError(DeepDescError, RuntimeError):
    """A training checkpoint is missing, corrupt or from another configuration."""


class ConfigError(DeepDescError, ValueError):
    """A configuration value has the wrong type or range (names the key, the value and the expected form)."""


class OutputMismatchError(DeepDescError, ValueError):
    """An existing output file was written with other settings than the ones now requested."""
