"""Settings of make-patches and the data passed between its stages (package docs, steps 1-6)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...datasets.scenes import Scene
from ...features.patches import DEFAULT_BLUR_SIGMA, DEFAULT_REGION_SCALE

__all__ = ["PAIRINGS", "MultiviewConfig", "MultiviewSet", "SplitSet", "validation_views"]

#: Seed pairings (package docs, step 2; :mod:`.pairing`).
PAIRINGS = ("nearest", "covisibility")


@dataclass(frozen=True)
class MultiviewConfig:
    """Every setting of :func:`build_multiview` and :func:`split_multiview` (module docs, steps 1-6)."""

    max_keypoints: int = 4000
    region_scale: float = DEFAULT_REGION_SCALE
    blur_sigma: float = DEFAULT_BLUR_SIGMA
    seed_neighbours: int = 3
    max_pair_angle: float = 45.0
    pairing: str = "nearest"
    min_pair_angle: float = 3.0
    min_overlap: float = 0.25
    epipolar_px: float = 1.5
    max_reproj_px: float = 1.0
    min_triangulation_angle: float = 2.0
    max_log2_scale: float = 0.5
    max_angle_deg: float = 30.0
    snap_px: float = 2.0
    min_views: int = 3
    max_link_angle: float = 45.0
    extend_passes: int = 2
    occlusion_cell: int = 8
    occlusion_depth: float = 0.1
    distractor_px: float = 8.0
    max_distractors_per_view: int = 300
    hard_epipolar_px: float = 2.0
    hard_min_px: float = 10.0
    hard_negatives_per_track: int = 1
    val_every: int = 4
    val_share: float = 0.5
    pairs: int = 100_000
    seed: int = 0

    def __post_init__(self) -> None:
        positive = ("region_scale", "epipolar_px", "max_reproj_px", "max_log2_scale", "max_angle_deg", "snap_px")
        positive += ("max_link_angle", "max_pair_angle")
        for name in positive + ("distractor_px", "hard_epipolar_px", "hard_min_px", "occlusion_depth"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"MultiviewConfig.{name} must be a positive number, got {value!r}")
        if not (math.isfinite(self.blur_sigma) and self.blur_sigma >= 0):
            raise ValueError(f"MultiviewConfig.blur_sigma must be >= 0, got {self.blur_sigma!r}")
        if self.min_views < 2:
            raise ValueError(f"MultiviewConfig.min_views must be >= 2, got {self.min_views}")
        if self.max_keypoints < 1 or self.seed_neighbours < 1 or self.occlusion_cell < 1:
            raise ValueError("MultiviewConfig: max_keypoints, seed_neighbours and occlusion_cell must be >= 1")
        if self.val_every < 0 or self.val_every == 1:
            raise ValueError(f"MultiviewConfig.val_every must be 0 (no validation) or >= 2, got {self.val_every}")
        if not 0.0 <= self.val_share <= 1.0:
            raise ValueError(f"MultiviewConfig.val_share must be in [0, 1], got {self.val_share}")
        if self.pairs < 2:
            raise ValueError(f"MultiviewConfig.pairs must be >= 2, got {self.pairs}")
        if self.pairing not in PAIRINGS:
            raise ValueError(f"MultiviewConfig.pairing must be one of {', '.join(PAIRINGS)}, got {self.pairing!r}")
        if not 0.0 <= self.min_pair_angle < self.max_pair_angle:
            raise ValueError(
                f"MultiviewConfig: need 0 <= min_pair_angle < max_pair_angle, got {self.min_pair_angle}, "
                f"{self.max_pair_angle}"
            )
        if not 0.0 <= self.min_overlap <= 1.0:
            raise ValueError(f"MultiviewConfig.min_overlap must be in [0, 1], got {self.min_overlap}")


@dataclass
class MultiviewSet:
    """Tracks, distractors and hard negatives of a scene (before the split). Detections are indices into
    ``keypoints[view]`` ((K_v, 5) float32, x y size angle response).

    ``points`` (T, 3) world coordinates; ``observations`` (T, V) int64 detection index per view, -1 where the
    track is not observed; ``distractors``: (D, 2) (view, detection); ``hard_negatives``: (H, 5) (track, view v,
    view w, detection in w), the track's detection in v being the anchor, plus the distance in pixels of the
    negative to the track's projection in w (as an int, rounded); ``track_val`` (T,) bool: the track goes to the
    validation set (module docs, step 6)."""

    scene: Scene
    config: MultiviewConfig
    keypoints: list[np.ndarray]
    points: np.ndarray
    observations: np.ndarray
    distractors: np.ndarray
    hard_negatives: np.ndarray
    track_val: np.ndarray
    stats: dict[str, Any] = field(default_factory=dict)
    views: Any = field(default=None, repr=False)  # the internal per-view state (cameras, sites and their owners)

    @property
    def num_views(self) -> int:
        return len(self.keypoints)

    def track_lengths(self) -> np.ndarray:
        return (self.observations >= 0).sum(axis=1)


@dataclass
class SplitSet:
    """One split, ready to write: one row per patch; ``pairs`` (M, 3) patch indices and a hard-negative flag.

    ``views`` (N,) view index, ``detections`` (N,) detection index in that view, ``point_ids`` (N,) (tracks first,
    consecutive patches), ``kinds`` (N,) 0 track, 1 distractor, 2 hard-negative detection without track;
    ``track_of`` (N,) the :class:`MultiviewSet` track index or -1."""

    name: str
    views: np.ndarray
    detections: np.ndarray
    point_ids: np.ndarray
    kinds: np.ndarray
    track_of: np.ndarray
    pairs: np.ndarray
    unique_positive_pairs: int
    num_tracks: int
    num_hard_negatives: int


def validation_views(n: int, val_every: int) -> np.ndarray:
    """Boolean mask (n,) of the validation views: ``i % val_every == val_every - 1`` (none for 0)."""
    idx = np.arange(n)
    return (idx % val_every == val_every - 1) if val_every else np.zeros(n, bool)
