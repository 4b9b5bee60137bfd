"""Match visualisation with matplotlib's Agg canvas (no display, no pyplot global state)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .utils import atomic_path, optional_import

__all__ = ["check_picture_path", "plot_matches", "side_by_side"]

INLIER_COLOR = (0.1, 0.85, 0.1)
OUTLIER_COLOR = (0.95, 0.1, 0.1)
UNVERIFIED_COLOR = (0.1, 0.8, 0.95)


def _as_rgb(image: Any) -> np.ndarray:
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4), uint8 0..255, uint16 0..65535 or float (0..1, or 0..255 when
    the maximum exceeds 1) -> (H, W, 3) float32 in 0..1 (NaN drawn black)."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] in (1, 3, 4):
        img = img[..., :3] if img.shape[2] != 1 else img[..., 0]
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an image of shape (H, W) or (H, W, 3), got {np.shape(image)}")
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    if img.dtype.kind in "ui":
        top = 255.0 if not img.size or int(img.max()) <= 255 else float(np.iinfo(img.dtype).max)
        return np.clip(img.astype(np.float32) / top, 0.0, 1.0)
    img = np.nan_to_num(img.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    img = img / 255.0 if img.size and img.max() > 1.0 else img
    return np.clip(img, 0.0, 1.0)


def check_picture_path(path: str | os.PathLike) -> Path:
    """Raise ``ValueError``/``OSError`` naming ``path`` unless a PNG can be written there (a file in an existing
    or creatable, writable folder; matplotlib installed): checked before the work that draws it."""
    optional_import("matplotlib", "viz", "drawing matches")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"picture output {path} is a folder; give a file name such as {path / 'matches.png'}")
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise OSError(f"picture output {path}: cannot write into {folder}")
    if path.exists() and not os.access(path, os.W_OK):
        raise OSError(f"picture output {path}: the existing file is not writable")
    return path


def side_by_side(image1: Any, image2: Any, gap: int = 10) -> tuple[np.ndarray, float]:
    """Two images on one white canvas -> (canvas (max(H1, H2), W1 + gap + W2, 3) float32, x offset of image 2)."""
    a, b = _as_rgb(image1), _as_rgb(image2)
    h = max(a.shape[0], b.shape[0])
    canvas = np.ones((h, a.shape[1] + gap + b.shape[1], 3), np.float32)
    canvas[: a.shape[0], : a.shape[1]] = a
    offset = a.shape[1] + gap
    canvas[: b.shape[0], offset:] = b
    return canvas, float(offset)


def plot_matches(
    image1: Any,
    image2: Any,
    kpts1: Any,
    kpts2: Any,
    matches: Any,
    inlier_mask: Any = None,
    path: str | os.PathLike | None = None,
    title: str | None = None,
    dpi: int = 100,
    line_width: float = 0.8,
) -> Any:
    """Draw matches between two images side by side -> the matplotlib ``Figure``; writes a PNG when ``path``.

    ``image1``/``image2``: (H, W) grayscale or (H, W, 3) RGB (convert OpenCV's BGR first), uint8 or float 0..1.
    ``kpts1``/``kpts2``: (N, >=2) x, y in pixels, OpenCV convention (centre of the top-left pixel at (0, 0)).
    ``matches``: (K, 2) int indices into ``kpts1``, ``kpts2``. ``inlier_mask``: (K,) bool; inliers are drawn
    green, outliers red, and without a mask all matches are cyan. The figure has the canvas' pixel size at
    ``dpi``; the PNG is written atomically.
    """
    optional_import("matplotlib", "viz", "drawing matches")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    canvas, offset = side_by_side(image1, image2)
    k1, k2 = np.asarray(kpts1, np.float64), np.asarray(kpts2, np.float64)
    m = np.asarray(matches).reshape(-1, 2).astype(np.int64)
    if k1.ndim != 2 or k1.shape[1] < 2 or k2.ndim != 2 or k2.shape[1] < 2:
        raise ValueError(f"keypoints must have shape (N, >=2); got {k1.shape} and {k2.shape}")
    if len(m) and (m.min() < 0 or m[:, 0].max() >= len(k1) or m[:, 1].max() >= len(k2)):
        raise ValueError("matches index keypoints out of range")
    if inlier_mask is None:
        colors = np.tile(UNVERIFIED_COLOR, (len(m), 1))
    else:
        mask = np.asarray(inlier_mask, dtype=bool).reshape(-1)
        if mask.shape != (len(m),):
            raise ValueError(f"inlier_mask has shape {mask.shape}, need ({len(m)},)")
        colors = np.where(mask[:, None], INLIER_COLOR, OUTLIER_COLOR)

    h, w = canvas.shape[:2]
    fig = Figure(figsize=(w / dpi, h / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    # imshow's default extent puts pixel centres at integer coordinates: the OpenCV convention.
    ax.imshow(canvas, interpolation="nearest")
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_axis_off()
    p1 = k1[m[:, 0], :2]
    p2 = k2[m[:, 1], :2] + np.array([offset, 0.0])
    if len(m):
        segments = np.stack([p1, p2], axis=1)
        ax.add_collection(LineCollection(segments, colors=colors, linewidths=line_width, alpha=0.8))
        ax.scatter(p1[:, 0], p1[:, 1], s=4, c=colors, linewidths=0)
        ax.scatter(p2[:, 0], p2[:, 1], s=4, c=colors, linewidths=0)
    if title:
        bbox = {"facecolor": "black", "alpha": 0.5, "pad": 2}
        ax.text(5, 5, title, color="white", fontsize=10, va="top", ha="left", bbox=bbox)
    if path is not None:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    return fig
