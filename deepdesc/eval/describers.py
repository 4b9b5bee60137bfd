"""What a benchmark describes with: a model name/path/network or a function, and the methods it compares."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..features.describe import describe
from ..features.extractor import Extractor
from ..features.sift import SIFT_REGION_SCALE, sift_descriptors
from ..hub.registry import model_path
from ..nn.base import DescriptorNet
from ..utils import atomic_path, sha256_file

__all__ = ["Describer", "Method", "as_describe_fn", "parse_methods", "sift_patch_descriptors"]


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


def _spec_region(spec: str) -> tuple[str, float | None, str]:
    """``"NAME@R"`` -> (NAME, R, "R" as written); without a numeric ``@R``: (spec, None, "")."""
    base, sep, region = spec.rpartition("@")
    if not sep:
        return spec, None, ""
    try:
        return base, float(region), region
    except ValueError:
        return spec, None, ""


@dataclass
class Method:
    """A descriptor to evaluate: ``sift``, ``rootsift``, or a DeepDesc model name/path with patch options.

    ``name`` labels its results; ``spec`` is the text it was parsed from (without a ``LABEL=``), ``region``
    the ``@R`` of that text (None without one)."""

    name: str
    model: str | None = None
    patch_options: dict = field(default_factory=dict)
    spec: str = ""
    region: float | None = None

    @classmethod
    def parse(cls, spec: str, **patch_options: Any) -> Method:
        """``sift``/``rootsift`` (native region), a model name/path, and any of them as ``SPEC@R``: the
        measurement region scaled to R x the keypoint size (DeepDesc's ``region_scale``; SIFT's native is 6)."""
        base, region_scale, region = _spec_region(spec)
        if base in ("sift", "rootsift"):
            options = {"region_scale": region_scale} if region_scale else {}
            return cls(spec, patch_options=options, spec=spec, region=region_scale)
        label = Path(base).stem if base.endswith((".t7", ".safetensors")) else base
        options = {k: v for k, v in patch_options.items() if v is not None}
        if region_scale is not None:
            label, options["region_scale"] = f"{label}@{region:s}", region_scale
        return cls(label, model=base, patch_options=options, spec=spec, region=region_scale)

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


def _is_label(text: str) -> bool:
    return bool(text) and not any(c in text for c in "/\\")


def _path_label(method: Method, parts: int) -> str:
    """The last ``parts`` components of a model file's path (the file without its extension), plus ``@R``."""
    path = Path(os.path.normpath(os.path.abspath(method.model or "")))
    tail = [*path.parent.parts[-(parts - 1) :], path.stem] if parts > 1 else [path.stem]
    suffix = method.name[len(Path(method.model or "").stem) :] if method.region is not None else ""
    return "/".join(tail) + suffix


def parse_methods(specs: Sequence[str], **patch_options: Any) -> list[Method]:
    """:meth:`Method.parse` of each spec, each with its own label: ``LABEL=SPEC`` names one explicitly; model
    files that share a file name (``runs/a/best.safetensors``, ``runs/b/best.safetensors``) are labelled by the
    shortest path suffix that tells them apart (``a/best``, ``b/best``). Raises ``ValueError`` for a spec given
    twice or two methods with one label."""
    methods, labelled = [], []
    seen: set[str] = set()
    for text in specs:
        label, sep, rest = text.partition("=")
        # an existing file whose name holds "=" stays a path
        explicit = bool(sep) and _is_label(label) and bool(rest) and not Path(_spec_region(text)[0]).exists()
        spec = rest if explicit else text
        method = Method.parse(spec, **patch_options)
        base = _spec_region(spec)[0]
        identity = os.path.normpath(os.path.abspath(base)) + spec[len(base) :] if Path(base).is_file() else spec
        if identity in seen and not explicit:
            raise ValueError(f"--model {text!r} is given twice")
        seen.add(identity)
        if explicit:
            method.name = label
        methods.append(method)
        labelled.append(explicit)
    by_name: dict[str, list[int]] = {}
    for i, m in enumerate(methods):
        by_name.setdefault(m.name, []).append(i)
    for members in by_name.values():
        files = [
            i for i in members if not labelled[i] and methods[i].model is not None and Path(methods[i].model).is_file()
        ]
        if len(members) < 2 or len(files) < 2:
            continue
        depth = max(len(Path(os.path.abspath(methods[i].model or "")).parts) for i in files)
        for parts in range(2, depth + 1):
            labels = [_path_label(methods[i], parts) for i in files]
            if len(set(labels)) == len(labels):
                for i, new in zip(files, labels):
                    methods[i].name = new
                break
    names: dict[str, str] = {}
    for text, m in zip(specs, methods):
        if m.name in names:
            spec = text.partition("=")[2] if _is_label(text.partition("=")[0]) else text
            raise ValueError(
                f"--model {names[m.name]!r} and --model {text!r} are both labelled {m.name!r}: give one another "
                f"label, e.g. --model OTHER={spec}"
            )
        names[m.name] = text
    return methods


def sift_patch_descriptors(patches: np.ndarray, root: bool = False, chunk: int = 256) -> np.ndarray:
    """OpenCV SIFT (or RootSIFT) of whole patches: (B, S, S) uint8 -> (B, 128) float32, the descriptor grid
    spanning each patch, upright, at its centre (the SIFT baseline of patch benchmarks such as PhotoTour).

    ``chunk`` patches at a time are tiled into one mosaic for OpenCV, each padded by replicating its border (no
    gradient across it), so a descriptor does not depend on the patch's neighbours in the mosaic."""
    patches = np.asarray(patches)
    if patches.ndim == 4 and patches.shape[1] == 1:
        patches = patches[:, 0]
    if patches.ndim != 3 or patches.shape[1] != patches.shape[2]:
        raise ValueError(f"expected square patches (B, S, S), got shape {patches.shape}")
    side = patches.shape[1]
    pad = side // 4
    tile = side + 2 * pad
    out = np.zeros((len(patches), 128), np.float32)
    for start in range(0, len(patches), chunk):
        part = np.clip(patches[start : start + chunk], 0, 255).astype(np.uint8)
        tiles = np.pad(part, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
        cols = int(np.ceil(np.sqrt(len(part))))
        rows = int(np.ceil(len(part) / cols))
        mosaic = np.zeros((rows * tile, cols * tile), np.uint8)
        kpts = np.zeros((len(part), 5), np.float32)
        for i, t in enumerate(tiles):
            r, c = divmod(i, cols)
            mosaic[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile] = t
            kpts[i] = (c * tile + pad + (side - 1) / 2, r * tile + pad + (side - 1) / 2, side / SIFT_REGION_SCALE, 0, 1)
        out[start : start + len(part)] = sift_descriptors(mosaic, kpts, root)
    return out
