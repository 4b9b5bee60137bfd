"""What a benchmark describes with: a model name/path/network or a function, and the methods it compares."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..features.describe import describe
from ..features.extractor import Extractor
from ..features.sift import sift_descriptors
from ..hub.registry import model_path
from ..nn.base import DescriptorNet
from ..utils import atomic_path, sha256_file

__all__ = ["Describer", "Method", "as_describe_fn"]


def as_describe_fn(model: Any, device: Any, batch_size: int) -> Callable[[np.ndarray], np.ndarray]:
    """A network (DescriptorNet), model name/path or ``None`` (default) -> a function (B, 64, 64) -> (B, D);
    callables pass."""
    if isinstance(model, (str, os.PathLike, DescriptorNet)) or model is None:
        return lambda patches: describe(patches, model=model, batch_size=batch_size, device=device)
    if not callable(model):
        raise TypeError(
            f"expected a network (DescriptorNet), a model name/path or a describe function; got {type(model)}"
        )
    return model


@dataclass
class Method:
    """A descriptor to evaluate: ``sift``, ``rootsift``, or a DeepDesc model name/path with patch options."""

    name: str
    model: str | None = None
    patch_options: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str, **patch_options: Any) -> Method:
        """``sift``/``rootsift`` (native region), a model name/path, and any of them as ``SPEC@R``: the
        measurement region scaled to R x the keypoint size (DeepDesc's ``region_scale``; SIFT's native is 6)."""
        base, sep, region = spec.rpartition("@")
        try:
            region_scale = float(region) if sep else None
        except ValueError:
            base, region_scale = spec, None
        base = base if sep and region_scale is not None else spec
        if base in ("sift", "rootsift"):
            return cls(spec, patch_options={"region_scale": region_scale} if region_scale else {})
        label = Path(base).stem if base.endswith((".t7", ".safetensors")) else base
        options = {k: v for k, v in patch_options.items() if v is not None}
        if region_scale is not None:
            label, options["region_scale"] = f"{label}@{region:s}", region_scale
        return cls(label, model=base, patch_options=options)

    def key(self) -> str:
        """Cache key: the method, its patch options and the SHA-256 of its weights (a retrained model at the
        same path or name must not reuse the old descriptors)."""
        weights = None
        if self.model is not None:
            path = Path(self.model)
            weights = sha256_file(path if path.is_file() else model_path(self.model))
        return json.dumps([self.name, self.model, weights, sorted(self.patch_options.items())])


class Describer:
    """Descriptors of a :class:`Method` at given keypoints, cached on disk by method, weights, image and keypoints."""

    def __init__(self, method: Method, cache_dir: Path | None):
        self.method = method
        self.cache_dir = cache_dir
        self.key = method.key() if cache_dir is not None else ""
        self._dd = None

    def _deepdesc(self):
        if self._dd is None:
            self._dd = Extractor(model=self.method.model, border="replicate", **self.method.patch_options)
        return self._dd

    def __call__(self, image: np.ndarray, image_id: str, kpts: np.ndarray) -> np.ndarray:
        """(H, W) float image, (N, 5) keypoints -> (N, D) float32 descriptors (every keypoint kept)."""
        path = None
        if self.cache_dir is not None:
            digest = hashlib.sha1((self.key + image_id).encode() + kpts.tobytes()).hexdigest()
            path = self.cache_dir / f"{digest}.npy"
            if path.is_file():
                return np.load(path)
        if self.method.model is None:
            root = self.method.name.startswith("rootsift")
            desc = sift_descriptors(image, kpts, root, self.method.patch_options.get("region_scale"))
        else:
            desc, kept = self._deepdesc().describe_keypoints(image, kpts)
            assert len(kept) == len(kpts)
        if path is not None:
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.save(f, desc)
        return desc
