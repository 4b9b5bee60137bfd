"""Self-supervised pairs: the two views of a pair show the same scene point."""

from __future__ import annotations

import numpy as np
import pytest

from deepdesc.train.synthetic import Augment, ImagePairs

skimage_data = pytest.importorskip("skimage.data")

# no photometric change and a pure similarity between the views: only the keypoint noise remains
CLEAN = dict(
    blur_sigma=(0.0, 0.0),
    noise_std=(0.0, 0.0),
    gamma=(1.0, 1.0),
    contrast=(1.0, 1.0),
    brightness=0.0,
    jpeg_probability=0.0,
    view_shear=0.0,
    view_perspective=0.0,
    view_aspect=0.0,
)


def _correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    a = (a - a.mean(1, keepdims=True)) / (a.std(1, keepdims=True) + 1e-9)
    b = (b - b.mean(1, keepdims=True)) / (b.std(1, keepdims=True) + 1e-9)
    return (a * b).mean(1)


def _pairs(**noise) -> tuple[np.ndarray, np.ndarray]:
    aug = Augment(**CLEAN, **noise)
    source = ImagePairs([skimage_data.camera()], augment=aug, keypoints_per_image=300)
    return source.sample(np.random.default_rng(0), 64)


def test_image_pairs_correspond():
    a, p = _pairs(kp_position=0.0, kp_log2_scale=0.0, kp_angle_deg=0.0)
    same = _correlation(a, p)
    shuffled = _correlation(a, np.roll(p, 1, axis=0))
    assert np.median(same) > 0.9, np.median(same)  # same scene point, resampled
    assert np.median(shuffled) < 0.5 * np.median(same)


def test_keypoint_noise_is_applied():
    exact = np.median(_correlation(*_pairs(kp_position=0.0, kp_log2_scale=0.0, kp_angle_deg=0.0)))
    rotated = np.median(_correlation(*_pairs(kp_position=0.0, kp_log2_scale=0.0, kp_angle_deg=90.0)))
    shifted = np.median(_correlation(*_pairs(kp_position=4.0, kp_log2_scale=0.0, kp_angle_deg=0.0)))
    rescaled = np.median(_correlation(*_pairs(kp_position=0.0, kp_log2_scale=1.0, kp_angle_deg=0.0)))
    # the patch spans 16 keypoint sizes: a shift of up to 4 sizes moves it by up to a quarter
    assert rotated < exact - 0.1 and shifted < exact - 0.1, (exact, rotated, shifted)
    assert rescaled < exact - 0.05, (exact, rescaled)
