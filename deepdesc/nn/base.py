"""What every descriptor network shares: :class:`DescriptorNet`.

A network maps ``(B, 1, 64, 64)`` raw intensities in 0..255 to ``(B, D)`` float descriptors, with its
input normalisation inside (per-pixel mean/std maps, or per patch). Its architecture is the plain-data
``conf`` dict (keys of the subclass's ``default_conf``, ``conf["arch"]`` naming the subclass), which
safetensors files, training configs and :func:`deepdesc.nn.factory.build_net` all use. The concrete
networks are :class:`~deepdesc.nn.cnn3.DeepDescNet` (the paper's CNN3),
:class:`~deepdesc.nn.compact.CompactNet` and :class:`~deepdesc.nn.tfeat.TFeatNet` (TFeat, BMVC 2016).
"""

from __future__ import annotations

import abc
import copy
import hashlib
from typing import Any, ClassVar

import torch
from torch import nn

from .layers import INPUT_NORMS, normalize_patches

__all__ = ["PATCH_SIZE", "DescriptorNet"]

PATCH_SIZE = 64


class DescriptorNet(nn.Module, abc.ABC):
    """A descriptor network. (B, 1, 64, 64) float intensities in 0..255 -> (B, descriptor_size) float.

    Subclasses set ``arch`` (the ``conf["arch"]`` value they implement) and ``default_conf`` (every
    key they accept, with its default; ``arch``, ``input_norm``, ``l2_normalize``, ``region_scale``
    and ``blur_sigma`` are common to all), and implement ``forward``, ``descriptor_size`` and
    ``num_flops``. This base validates ``conf`` (unknown keys, ``arch``, ``input_norm``), holds the
    per-pixel ``mean``/``std`` maps (1, 64, 64) used by ``input_norm = "pixel"`` and the string
    ``info`` dict (provenance, licence, ...) that model files carry.
    """

    arch: ClassVar[str]
    default_conf: ClassVar[dict[str, Any]]

    def __init__(self, conf: dict[str, Any] | None = None):
        super().__init__()
        conf = dict(conf or {})
        name = self._family().__name__
        unknown = set(conf) - set(self.default_conf)
        if unknown:
            raise ValueError(f"unknown {name} conf keys {sorted(unknown)}; known: {sorted(self.default_conf)}")
        self.conf: dict[str, Any] = {**copy.deepcopy(self.default_conf), **conf}
        if self.conf["arch"] != self.arch:
            raise ValueError(
                f"{name} implements arch {self.arch!r}, not {self.conf['arch']!r}: "
                "build networks from a conf with deepdesc.nn.build_net(conf)"
            )
        if self.conf["input_norm"] not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {INPUT_NORMS}, got {self.conf['input_norm']!r}")
        self.register_buffer("mean", torch.full((1, PATCH_SIZE, PATCH_SIZE), 128.0))
        self.register_buffer("std", torch.full((1, PATCH_SIZE, PATCH_SIZE), 64.0))
        self.info: dict[str, str] = {}

    @classmethod
    def _family(cls) -> type:
        """The class that defines this network's ``default_conf`` (a subclass overriding ``forward`` keeps it)."""
        for klass in cls.__mro__:
            if "default_conf" in vars(klass):
                return klass
        return cls

    @property
    @abc.abstractmethod
    def descriptor_size(self) -> int:
        """D, the length of one descriptor."""

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def normalize_input(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 64, 64) raw intensities -> the network's normalised input."""
        return normalize_patches(x, self.conf["input_norm"], self.mean, 1.0 / self.std)

    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor: ...

    @abc.abstractmethod
    def num_flops(self) -> int:
        """Multiply-accumulates x 2 of the convolutions (and linear layers) for one 64x64 patch."""

    def static_state(self) -> tuple[str, ...]:
        """Settings outside ``conf`` and the state dict that change the output (CNN3: its LP pooling scales)."""
        return ()

    def weights_sha256(self) -> str:
        """SHA-256 of every parameter and buffer (name, dtype, shape, bytes) and :meth:`static_state`:
        identifies the descriptor space. BatchNorm's ``num_batches_tracked`` counters are left out (they
        do not change a descriptor)."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.state_dict().items()):
            if name.endswith("num_batches_tracked"):
                continue
            t = tensor.detach().cpu().contiguous()
            digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
            digest.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
        for item in self.static_state():
            digest.update(item.encode())
        return digest.hexdigest()
