"""Named pretrained models: where they come from, what they were trained on, their digests.

Original DeepDesc models download on first use into the cache (``$DEEPDESC_CACHE``, default
``~/.cache/deepdesc``), are verified by SHA-256 and written atomically. ``default`` names the
project's own weights shipped inside the package.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelNotAvailableError
from ..nn.base import DescriptorNet
from ..utils import download_file, resolve_device, sha256_file
from .weights import load_safetensors, load_t7, save_safetensors

__all__ = ["MODELS", "ModelInfo", "ModelNotAvailableError", "cache_dir", "load_model", "model_path"]

_RELEASE = "https://github.com/etrulls/deepdesc-release/raw/master/models/"
_ORIGINAL_LICENSE = "CC BY-NC-SA 4.0 (Edgar Simo-Serra, Eduard Trulls)"


@dataclass(frozen=True)
class ModelInfo:
    name: str
    filename: str
    trained_on: str
    license: str
    url: str | None = None  # None: shipped inside the package
    sha256: str | None = None
    description: str = ""


def _original(split: int, iteration: str, sha256: str, trained_on: str, note: str = "") -> ModelInfo:
    filename = f"CNN3_p8_n8_split{split}_{iteration}.t7"
    return ModelInfo(
        name=f"split{split}",
        filename=filename,
        trained_on=trained_on,
        license=_ORIGINAL_LICENSE,
        url=_RELEASE + filename,
        sha256=sha256,
        description=f"original DeepDesc CNN3, Torch7, iteration {int(iteration)}{note}",
    )


MODELS: dict[str, ModelInfo] = {
    m.name: m
    for m in (
        _original(
            1,
            "072000",
            "e2e7d1b9b274510e4cd86ab0ce70228703c002f2142b26939c7d6335a2876267",
            "PhotoTour Liberty + Yosemite",
        ),
        _original(
            2,
            "104000",
            "bdf83f8d6bc05455eceb0d64036da8e9727826deb3fd2e444513e7d9e9f84017",
            "PhotoTour Liberty + Notre Dame",
        ),
        _original(
            3,
            "067000",
            "e34f186da5bb29563b11372b4eccf48d0d25595b45641a5e7a5fc9f39a245fd3",
            "PhotoTour Yosemite + Notre Dame",
        ),
        _original(
            4,
            "073000",
            "e89b84c2fe5c86e342684a0e67653f2dfafac00b92182ede4ef86e9279dfd36b",
            "PhotoTour, a subset of Liberty + Notre Dame + Yosemite",
            "; the original release's recommended model",
        ),
        ModelInfo(
            name="default",
            filename="default.safetensors",
            trained_on="real multi-view pairs of castle-P30, buddha, monstree and PhotoTour Notre Dame (model card)",
            license="MIT",
            description="deepdesc's own weights (v4.3, compact net), shipped in the package",
        ),
    )
}


def cache_dir() -> Path:
    """Where downloaded models live: ``$DEEPDESC_CACHE`` or ``~/.cache/deepdesc``."""
    return Path(os.environ.get("DEEPDESC_CACHE") or Path.home() / ".cache" / "deepdesc")


def _packaged(filename: str) -> Path:
    return Path(__file__).resolve().parent / "pretrained" / filename


def model_path(name: str, download_missing: bool = True) -> Path:
    """Local path of registry model ``name``, downloading it into the cache if needed."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(MODELS)} (or pass a .t7/.safetensors path)")
    info = MODELS[name]
    if info.url is None:
        path = _packaged(info.filename)
        if not path.is_file():
            raise ModelNotAvailableError(
                f"model {name!r}: deepdesc's packaged weights are missing from this installation "
                f"(expected {path}); reinstall deepdesc, or use an original model, e.g. load_model('split4')"
            )
        return path
    path = cache_dir() / info.filename
    if path.is_file():
        if sha256_file(path) == info.sha256:
            return path
        raise ModelNotAvailableError(
            f"model {name!r}: cached file {path} does not match SHA-256 {info.sha256}; delete it to re-download"
        )
    if not download_missing:
        raise ModelNotAvailableError(f"model {name!r} is not in the cache ({path})")
    try:
        return download_file(info.url, path, info.sha256)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ModelNotAvailableError(
            f"model {name!r}: could not download {info.url} ({reason}). Offline, put the file "
            f"{info.filename} (SHA-256 {info.sha256}) at {path}, or set DEEPDESC_CACHE to its folder"
        ) from None


def cached(name: str) -> bool:
    """Whether registry model ``name`` is available without a download."""
    info = MODELS[name]
    if info.url is None:
        return _packaged(info.filename).is_file()
    return (cache_dir() / info.filename).is_file()


def load_model(name_or_path: str | os.PathLike = "default", device: str = "auto") -> DescriptorNet:
    """Load a model by registry name (``split1``..``split4``, ``default``) or from a ``.t7`` /
    ``.safetensors`` path, in eval mode on ``device`` (``auto``, ``cpu``, ``cuda``). A loaded network
    (any :class:`~deepdesc.nn.base.DescriptorNet`) is moved there and returned."""
    if isinstance(name_or_path, DescriptorNet):
        return name_or_path.to(resolve_device(device)).eval()
    text = str(name_or_path)
    path = model_path(text) if text in MODELS else Path(text)
    if path.suffix == ".t7":
        model = load_t7(path)
    elif path.suffix == ".safetensors":
        model = load_safetensors(path)
    elif not path.exists():
        raise KeyError(f"unknown model {text!r}; known: {', '.join(MODELS)} (or pass a .t7/.safetensors path)")
    else:
        raise ValueError(f"{path}: unknown model file type; expected a .t7 or .safetensors file")
    if text in MODELS:
        model.info.setdefault("name", text)
    return model.to(resolve_device(device)).eval()


def copy_into_cache(path: str | os.PathLike, name: str) -> Path:
    """Install a local copy of registry model ``name`` into the cache, verifying its digest."""
    info = MODELS[name]
    return download_file(Path(path).resolve().as_uri(), cache_dir() / info.filename, info.sha256, progress=False)


def describe_models() -> str:
    """A table of the named models: cache status, training data, licence (``deepdesc models``)."""
    lines = [f"cache: {cache_dir()}", f"{'name':<9} {'status':<14} {'trained on':<52} license"]
    for info in MODELS.values():
        if info.url is None:
            status = "packaged" if cached(info.name) else "not yet trained"
        else:
            status = "cached" if cached(info.name) else "downloadable"
        lines.append(f"{info.name:<9} {status:<14} {info.trained_on:<52} {info.license}")
    return "\n".join(lines)


def convert_model(
    model: DescriptorNet | str | os.PathLike, output: str | os.PathLike, metadata: dict[str, str], half: bool = False
) -> str:
    """Write ``model`` (a network, or a .t7/.safetensors path) as safetensors with provenance metadata.

    An original release file (``CNN3_*.t7``) is labelled with its registry entry (name, training data,
    licence, source); ``metadata`` overrides. Returns the licence (or provenance) recorded. ``half``: float16
    tensors (see :func:`~deepdesc.hub.weights.save_safetensors`).
    """
    if isinstance(model, DescriptorNet):
        save_safetensors(model, output, metadata, half=half)
        return metadata.get("provenance", model.info.get("provenance", ""))
    path = Path(model)
    if path.suffix == ".safetensors":  # a re-labelled copy
        net = load_safetensors(path)
        save_safetensors(net, output, metadata, half=half)
        return metadata.get("provenance", net.info.get("provenance", ""))
    net = load_t7(path)
    meta = {"provenance": f"converted from {path.name} by deepdesc convert"}
    info = {i.filename: i for i in MODELS.values()}.get(path.name)
    if info is not None:
        meta.update(name=info.name, training_data=info.trained_on, license=info.license, source_url=info.url or "")
    else:
        meta.update(training_data="unknown", license="unknown (check the source of the .t7 file)")
    save_safetensors(net, output, {**meta, **metadata}, half=half)
    return meta["license"]
