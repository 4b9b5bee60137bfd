"""Networks by name: :data:`ARCHS` and :func:`build_net`, dispatching on ``conf["arch"]``."""

from __future__ import annotations

from typing import Any

from .base import DescriptorNet
from .cnn3 import DeepDescNet
from .compact import CompactNet
from .tfeat import TFeatNet

__all__ = ["ARCHS", "arch_class", "build_net"]

# conf["arch"] -> the network class (a conf without "arch" is a CNN3 one, as in files that predate the key)
ARCHS: dict[str, type[DescriptorNet]] = {"cnn3": DeepDescNet, "compact": CompactNet, "tfeat": TFeatNet}
DEFAULT_ARCH = "cnn3"


def arch_class(arch: Any) -> type[DescriptorNet]:
    """The network class of ``arch``; ``ValueError`` listing the known ones otherwise."""
    if not isinstance(arch, str) or arch not in ARCHS:
        raise ValueError(f"unknown network arch {arch!r}; known: {', '.join(repr(a) for a in ARCHS)}")
    return ARCHS[arch]


def build_net(conf: dict[str, Any] | None = None) -> DescriptorNet:
    """The (untrained) network ``conf`` describes: ``conf["arch"]`` (default ``"cnn3"``) picks the class,
    whose ``default_conf`` the other keys override (unknown keys for that arch raise ``ValueError``)."""
    conf = dict(conf or {})
    return arch_class(conf.get("arch", DEFAULT_ARCH))(conf)
