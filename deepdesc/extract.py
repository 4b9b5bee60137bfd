"""Job: detect and describe a set of images into an hloc-layout features file (resumable).

hloc's pattern: a named conf and one ``main``::

    from deepdesc import extract
    summary = extract.main(extract.confs["deepdesc-default"], "images/", "outputs/features.h5")

Each image is written (and flushed) on its own, so an interrupted run resumes where it stopped. The
file records the settings that produced it (extractor, model and the SHA-256 of its weights, patch
and detector options, descriptor dtype); resuming with other settings stops with a message that says
what differs (:class:`~deepdesc.errors.OutputMismatchError`). Unreadable images are skipped with one
warning each (``strict=True`` stops at the first); :class:`ExtractSummary` lists them.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .features.extractor import Extractor
from .features.image import list_images
from .features.sift import SIFT
from .io import h5
from .utils import logger

__all__ = ["ExtractSummary", "confs", "main", "make_extractor"]

#: Named extraction confs: ``extractor`` ("deepdesc" or "sift") plus that extractor's options.
confs: dict[str, dict[str, Any]] = {
    "deepdesc-default": {"extractor": "deepdesc", "model": "default", "max_keypoints": 2000},
    "deepdesc-split4": {"extractor": "deepdesc", "model": "split4", "max_keypoints": 2000},
    "sift": {"extractor": "sift", "root": False, "max_keypoints": 2000},
    "rootsift": {"extractor": "sift", "root": True, "max_keypoints": 2000},
}


@dataclass
class ExtractSummary:
    """What :func:`main` did: image names described, already in the file, and skipped (name -> reason)."""

    features_path: Path
    described: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        total = len(self.described) + len(self.existing) + len(self.skipped)
        text = f"{total} images, {len(self.existing)} already in {self.features_path}, {len(self.described)} described"
        if self.skipped:
            names = ", ".join(list(self.skipped)[:5]) + (", ..." if len(self.skipped) > 5 else "")
            text += f", {len(self.skipped)} skipped: {names}"
        return text


def _resolve(conf: dict[str, Any] | str) -> dict[str, Any]:
    if isinstance(conf, str):
        if conf not in confs:
            raise KeyError(f"unknown extract conf {conf!r}; known: {', '.join(confs)}")
        return copy.deepcopy(confs[conf])
    return dict(conf)


def make_extractor(conf: dict[str, Any] | str) -> Extractor | SIFT:
    """An extractor from a conf dict or a name in :data:`confs` (``model`` may also be a path or network)."""
    conf = _resolve(conf)
    conf.pop("unit_norm", None)  # applied by main() when writing
    kind = conf.pop("extractor", "deepdesc")
    if kind == "sift":
        return SIFT(**conf)
    if kind == "deepdesc":
        return Extractor(**conf)
    raise ValueError(f"conf 'extractor' must be 'deepdesc' or 'sift', got {kind!r}")


def main(
    conf: dict[str, Any] | str,
    images: str | os.PathLike | Sequence[str | os.PathLike],
    features_path: str | os.PathLike,
    overwrite: bool = False,
    as_half: bool = False,
    strict: bool = False,
    progress: bool = True,
    extractor: Extractor | SIFT | None = None,
) -> ExtractSummary:
    """Describe ``images`` (a folder, searched recursively, or files and folders) into ``features_path``.

    Image names are paths relative to their folder (hloc's naming). ``overwrite`` describes images already
    in the file again (and, when the recorded settings differ, empties the file first). ``as_half`` stores
    float16 descriptors. ``conf["unit_norm"]``: L2-normalise descriptors before writing (hloc's dot-product
    matchers assume unit vectors; the original split models' are not). ``extractor``: an already-built one
    (else made from ``conf``).
    """
    features_path = Path(features_path)
    h5.check_writable(features_path)  # before loading a model or computing anything
    found = list_images([images] if isinstance(images, (str, os.PathLike)) else images)
    unit_norm = bool(_resolve(conf).get("unit_norm", False))
    extractor = extractor or make_extractor(conf)
    settings = {
        **extractor.settings(),
        "descriptor_dtype": "float16" if as_half else "float32",
        "unit_norm": unit_norm,
    }
    h5.check_settings(features_path, settings, overwrite=overwrite)  # before any image is computed
    summary = ExtractSummary(features_path)
    done = set() if overwrite else set(h5.list_images(features_path))
    todo = [(n, p) for n, p in found if n not in done]
    summary.existing = [n for n, _ in found if n in done]
    logger.info("%d images, %d already in %s", len(found), len(summary.existing), features_path)
    if not todo:
        return summary

    def prepare(path: Path) -> Any:
        try:
            return extractor.prepare(path)
        except (ValueError, OSError) as exc:
            if strict:
                raise
            return exc

    warned_norm = False
    # decode, detect and cut the next image's patches in a thread while the network describes this one
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(prepare, todo[0][1])
        for i, (name, _) in enumerate(tqdm(todo, desc="extract", unit="img", disable=not progress)):
            prepared = pending.result()
            if i + 1 < len(todo):
                pending = pool.submit(prepare, todo[i + 1][1])
            if isinstance(prepared, Exception):
                summary.skipped[name] = str(prepared)
                logger.warning("skipped %s: %s", name, prepared)
                continue
            features = extractor.finish(prepared)
            norms = np.linalg.norm(features.descriptors, axis=1)
            if unit_norm:
                features.descriptors = features.descriptors / np.maximum(norms, 1e-12)[:, None]
            elif len(norms) and not warned_norm and np.abs(norms - 1).max() > 1e-3:
                logger.warning(
                    "descriptors are not unit-norm (norm %.3g..%.3g); hloc's nearest-neighbour matcher assumes unit "
                    "vectors: pass unit_norm (--unit-norm) to normalise them",
                    norms.min(),
                    norms.max(),
                )
                warned_norm = True
            h5.write_features(features_path, name, features.as_dict(), overwrite=overwrite, as_half=as_half)
            summary.described.append(name)
    return summary
