"""Reconstruction accuracy against ground-truth cameras: similarity alignment of camera centres."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..datasets.scenes import Scene

__all__ = ["align_similarity", "camera_center_errors"]


def align_similarity(src: Any, dst: Any) -> np.ndarray:
    """Umeyama (1991): the scale, rotation and translation taking ``src`` (N, 3) closest to ``dst`` (N, 3)
    in least squares; returns the aligned ``src`` (N, 3). Needs N >= 3 points not all on a line."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3 or len(src) < 3:
        raise ValueError(f"expected two (N, 3) arrays with N >= 3, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    U, S, Vt = np.linalg.svd(b.T @ a / len(src))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt)) or 1.0])
    R = U @ D @ Vt
    scale = np.trace(np.diag(S) @ D) / (a**2).sum(1).mean()
    return scale * a @ R.T + mu_d


def camera_center_errors(reconstructed: Scene, ground_truth: Scene) -> dict[str, Any]:
    """Camera-centre errors of the registered images after a similarity alignment to the ground truth.

    Returns ``errors`` (name -> distance in ground-truth units), their ``median``/``max``, the scene
    ``extent`` (largest distance of a ground-truth centre from their mean) and ``registered``.
    """
    gt = dict(zip(ground_truth.image_names, ground_truth.cameras))
    names = [n for n in reconstructed.image_names if n in gt]
    if len(names) < 3:
        raise ValueError(f"only {len(names)} registered images are in the ground truth; need 3 to align")
    est = np.array([c.center for n, c in zip(reconstructed.image_names, reconstructed.cameras) if n in gt])
    ref = np.array([gt[n].center for n in names])
    errors = np.linalg.norm(align_similarity(est, ref) - ref, axis=1)
    extent = float(np.linalg.norm(ref - ref.mean(0), axis=1).max())
    return {
        "errors": dict(zip(names, errors.tolist())),
        "median": float(np.median(errors)),
        "max": float(errors.max()),
        "extent": extent,
        "registered": len(names),
    }
