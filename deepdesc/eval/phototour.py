"""PhotoTour (Brown/UBC) patch verification benchmark: FPR95, FDR95 and PR AUC of L2 distances."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..datasets.phototour import PhotoTour
from ..errors import DatasetFormatError
from .describers import as_describe_fn
from .metrics import brown_protocol

__all__ = ["evaluate_phototour"]


def evaluate_phototour(
    model_or_describe_fn: Any,
    root: str | os.PathLike | PhotoTour,
    pairs_file: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 1024,
    device: Any = None,
) -> dict[str, Any]:
    """Brown protocol (FPR95, FDR95, PR AUC) of a descriptor on the pairs of ``pairs_file`` (default: the
    set's :meth:`~deepdesc.datasets.phototour.PhotoTour.default_match_file`, so a ``deepdesc make-patches``
    output folder or its ``val`` folder works as it is).

    ``model_or_describe_fn``: a network (:class:`~deepdesc.nn.base.DescriptorNet`), a model name/path, or a
    function mapping uint8 patches (B, 64, 64) to descriptors (B, D); distances are L2. Each
    distinct patch is described once, ``batch_size`` at a time. Returns
    :func:`deepdesc.metrics.brown_protocol`'s dict plus ``dataset`` and ``pairs_file``.
    """
    ds = root if isinstance(root, PhotoTour) else PhotoTour(root, cache_dir=cache_dir)
    if pairs_file is None:
        pairs_file = ds.default_match_file()
    ids1, ids2, labels = ds.pairs(pairs_file)
    unique, inverse = np.unique(np.r_[ids1, ids2], return_inverse=True)
    fn = as_describe_fn(model_or_describe_fn, device, batch_size)
    descs: np.ndarray | None = None
    for start in range(0, len(unique), batch_size):
        chunk = np.asarray(ds.patches[unique[start : start + batch_size]])
        out = fn(chunk)
        out = out.detach().cpu().numpy() if hasattr(out, "detach") else np.asarray(out)
        if out.ndim != 2 or len(out) != len(chunk):
            raise ValueError(f"describe function returned shape {out.shape} for {len(chunk)} patches")
        if descs is None:
            descs = np.empty((len(unique), out.shape[1]), dtype=np.float32)
        descs[start : start + len(chunk)] = out
    if descs is None:
        raise DatasetFormatError(f"match file {pairs_file!r} of {ds.root} has no pairs")
    n = len(ids1)
    distances = np.linalg.norm(descs[inverse[:n]] - descs[inverse[n:]], axis=1)
    result: dict[str, Any] = brown_protocol(distances, labels)
    result["dataset"] = ds.name
    result["pairs_file"] = str(pairs_file)
    return result
