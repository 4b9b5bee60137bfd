"""Job: detect and describe a set of images into an hloc-layout features file (resumable).

hloc's pattern: a named conf and one ``main``::

    from deepdesc import extract
    summary = extract.main(extract.confs["deepdesc-default"], "images/", "outputs/features.h5")

Each image is written (and flushed) on its own, so an interrupted run resumes where it stopped. The
file records the settings that produced it (extractor, model and the SHA-256 of its weights, patch
and detector options, ``resize_max``, descriptor dtype); resuming with other settings stops with a message
that says what differs (:class:`~deepdesc.errors.OutputMismatchError`). Each image's group records the file
it came from and that file's size and modification time: an image of the same name from another folder, or
a file changed since, is described again (and the summary says so) rather than reused. Unreadable images,
and images too large for the memory (see ``resize_max``), are skipped with one warning each
(``strict=True`` stops at the first); :class:`ExtractSummary` lists them.

The pieces a distributed runner needs: :func:`plan` (what to describe), :func:`describe_one` (one image ->
:class:`~deepdesc.features.types.Features` as written) and :func:`deepdesc.io.h5.write_features`.
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

from .engine import ray as ray_engine
from .features.extractor import Extractor, check_extractor_options
from .features.image import keypoints_to_original, list_images, load_resized
from .features.sift import SIFT
from .features.types import Features
from .io import h5
from .utils import logger

__all__ = ["ExtractSummary", "ResizedExtractor", "confs", "describe_one", "main", "make_extractor", "plan"]

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
    #: images in the file whose recorded source differs (another folder, or the file changed): described again
    recomputed: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        total = len(self.described) + len(self.existing) + len(self.skipped)
        text = f"{total} images, {len(self.existing)} already in {self.features_path}, {len(self.described)} described"
        if self.recomputed:
            text += f" ({len(self.recomputed)} of them again: their file differs from the one described before)"
        return text + skipped_text(self.skipped)


def skipped_text(skipped: dict[str, str]) -> str:
    """``", 2 skipped: a.jpg, b.png"`` (at most 5 names), or "" when nothing was skipped."""
    if not skipped:
        return ""
    names = ", ".join(list(skipped)[:5]) + (", ..." if len(skipped) > 5 else "")
    return f", {len(skipped)} skipped: {names}"


def _resolve(conf: dict[str, Any] | str) -> dict[str, Any]:
    if isinstance(conf, str):
        if conf not in confs:
            raise KeyError(f"unknown extract conf {conf!r}; known: {', '.join(confs)}")
        return copy.deepcopy(confs[conf])
    return dict(conf)


class ResizedExtractor:
    """An extractor without its own ``resize_max`` (:class:`~deepdesc.features.sift.SIFT`) run on images whose
    longest side is downscaled to ``resize_max``, keypoints reported in the original's pixels; images too large
    for the memory are refused before decoding. Same ``prepare``/``finish``/``extract``/``settings`` API."""

    def __init__(self, inner: Any, resize_max: int | None):
        self.inner, self.resize_max = inner, resize_max
        self.conf = {**getattr(inner, "conf", {}), "resize_max": resize_max}

    def prepare(self, image: Any, mask: np.ndarray | None = None) -> tuple[Any, tuple[float, float], tuple[int, int]]:
        img, scale, size = load_resized(image, self.resize_max)
        if mask is not None and scale != (1.0, 1.0):
            raise ValueError("a mask is not supported together with resize_max for this extractor")
        return self.inner.prepare(img, mask), scale, size

    def finish(self, prepared: tuple[Any, tuple[float, float], tuple[int, int]]) -> Features:
        inner, scale, size = prepared
        features = self.inner.finish(inner)
        kpts = keypoints_to_original(features.keypoint_array(), scale)
        features.keypoints, features.scales = kpts[:, :2].copy(), kpts[:, 2].copy()
        features.image_size = size
        return features

    def extract(self, image: Any, mask: np.ndarray | None = None) -> Features:
        return self.finish(self.prepare(image, mask))

    def settings(self) -> dict[str, Any]:
        return {**self.inner.settings(), "resize_max": self.resize_max}


def make_extractor(conf: dict[str, Any] | str) -> Extractor | ResizedExtractor:
    """An extractor from a conf dict or a name in :data:`confs` (``model`` may also be a path or network).

    Options are checked here, before any image: ``max_keypoints`` >= 0, ``resize_max`` >= 16 or None.
    """
    conf = _resolve(conf)
    conf.pop("unit_norm", None)  # applied by main() when writing
    kind = conf.pop("extractor", "deepdesc")
    check_extractor_options(conf.get("max_keypoints"), conf.get("resize_max"))
    if kind == "sift":
        resize_max = conf.pop("resize_max", None)
        return ResizedExtractor(SIFT(**conf), resize_max)
    if kind == "deepdesc":
        return Extractor(**conf)
    raise ValueError(f"conf 'extractor' must be 'deepdesc' or 'sift', got {kind!r}")


def plan(
    found: Sequence[tuple[str, Path]], features_path: str | os.PathLike, overwrite: bool = False
) -> tuple[list[tuple[str, Path]], list[str], dict[str, str]]:
    """Which of ``found`` (name, path) to describe into ``features_path``: (to describe, already there and
    reusable, in the file but from another file -> why). An image is reused only when its group records the
    same source path and fingerprint (:func:`deepdesc.io.h5.file_fingerprint`); groups without a record
    (other tools, older deepdesc) are reused as they are."""
    records = {} if overwrite else h5.image_records(features_path)
    todo, existing, stale = [], [], {}
    unrecorded = 0
    for name, path in found:
        rec = records.get(name)
        if rec is None:
            todo.append((name, path))
            continue
        if rec["fingerprint"] is None:
            unrecorded += 1
            existing.append(name)
            continue
        source = str(Path(path).resolve())
        if rec["source"] != source:
            stale[name] = f"described from {rec['source']}, now {source}"
        elif rec["fingerprint"] != h5.file_fingerprint(path):
            stale[name] = f"{source} changed since it was described (size or modification time)"
        else:
            existing.append(name)
            continue
        todo.append((name, path))
    if unrecorded:
        logger.info("%d image(s) in %s record no source file: reused as they are", unrecorded, features_path)
    return todo, existing, stale


def describe_one(extractor: Any, prepared: Any, unit_norm: bool = False) -> Features:
    """The network half for one image: ``extractor.finish(prepared)``, descriptors L2-normalised when
    ``unit_norm`` (what :func:`main` writes)."""
    features = extractor.finish(prepared)
    if unit_norm:
        norms = np.linalg.norm(features.descriptors, axis=1)
        features.descriptors = features.descriptors / np.maximum(norms, 1e-12)[:, None]
    return features


def main(
    conf: dict[str, Any] | str,
    images: str | os.PathLike | Sequence[str | os.PathLike],
    features_path: str | os.PathLike,
    overwrite: bool = False,
    as_half: bool = False,
    strict: bool = False,
    progress: bool = True,
    extractor: Any = None,
    engine: str = "local",
    **engine_options: Any,
) -> ExtractSummary:
    """Describe ``images`` (a folder, searched recursively, or files and folders) into ``features_path``.

    Image names are paths relative to their folder (hloc's naming). ``overwrite`` describes images already
    in the file again (and, when the recorded settings differ, starts the file anew). ``as_half`` stores
    float16 descriptors. ``conf["unit_norm"]``: L2-normalise descriptors before writing (hloc's dot-product
    matchers assume unit vectors; the original split models' are not). ``conf["resize_max"]``: longest side
    the detector sees (keypoints stay in the original's pixels). ``extractor``: an already-built one (else
    made from ``conf``). Images of the same name from another file than the one recorded are described again.
    The file is compacted at the end when replaced groups left much unused space in it. ``engine="ray"``: the
    same job on a Ray cluster, same output (:mod:`deepdesc.engine.ray`; ``engine_options``: ``workers``,
    ``gpus_per_worker``, ``cpus_per_worker``, ``address``, ``unit_size``).
    """
    if ray_engine.use_engine(engine, engine_options):
        return ray_engine.run_extract(
            main, make_extractor, plan, conf, images, features_path, overwrite=overwrite, as_half=as_half,
            strict=strict, progress=progress, extractor=extractor, **engine_options,
        )  # fmt: skip
    features_path = Path(features_path)
    h5.clean_temp_files(features_path)
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
    todo, summary.existing, summary.recomputed = plan(found, features_path, overwrite)
    logger.info("%d images, %d already in %s", len(found), len(summary.existing), features_path)
    if summary.recomputed:
        shown = "; ".join(f"{n}: {why}" for n, why in list(summary.recomputed.items())[:3])
        more = ", ..." if len(summary.recomputed) > 3 else ""
        logger.warning(
            "%d image(s) in %s come from another file than before; describing them again (%s%s)",
            len(summary.recomputed), features_path, shown, more,
        )  # fmt: skip
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
    replace = overwrite or bool(summary.recomputed)
    # decode, detect and cut the next image's patches in a thread while the network describes this one
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(prepare, todo[0][1])
        for i, (name, path) in enumerate(tqdm(todo, desc="extract", unit="img", disable=not progress)):
            prepared = pending.result()
            if i + 1 < len(todo):
                pending = pool.submit(prepare, todo[i + 1][1])
            if isinstance(prepared, Exception):
                summary.skipped[name] = str(prepared)
                logger.warning("skipped %s: %s", name, prepared)
                continue
            features = describe_one(extractor, prepared, unit_norm)
            del prepared
            if not (unit_norm or warned_norm) and len(features.descriptors):
                norms = np.linalg.norm(features.descriptors, axis=1)
                if np.abs(norms - 1).max() > 1e-3:
                    logger.warning(
                        "descriptors are not unit-norm (norm %.3g..%.3g); hloc's nearest-neighbour matcher assumes "
                        "unit vectors: pass unit_norm (--unit-norm) to normalise them",
                        norms.min(),
                        norms.max(),
                    )
                    warned_norm = True
            h5.write_features(features_path, name, features.as_dict(), overwrite=replace, as_half=as_half, source=path)
            summary.described.append(name)
    stale_skipped = [n for n in summary.skipped if n in summary.recomputed]
    if stale_skipped:  # the old group describes another file: it must not pass for this one
        h5.remove_images(features_path, stale_skipped)
        logger.warning("removed the features of %s from %s: described from another file", stale_skipped, features_path)
    if summary.described or stale_skipped:
        h5.compact(features_path)  # replaced groups and killed writes leave space HDF5 never reuses
    return summary
