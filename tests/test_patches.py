"""Patch extraction: geometry conventions, covariance under rotation/scale/homography, smoothing, borders."""

from __future__ import annotations

import functools

import cv2
import numpy as np
import pytest

from deepdesc.features.keypoints import to_keypoint_array, transform_keypoints
from deepdesc.features.patches import (
    DEFAULT_BLUR_SIGMA,
    DEFAULT_REGION_SCALE,
    ScaleSpace,
    extract_patches,
    patch_sampling_grid,
)

P = 64


def textured(shape: tuple[int, int] = (256, 256), sigma: float = 2.0, seed: int = 0) -> np.ndarray:
    """Smoothed random noise stretched to 0..255, float32."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.random(shape).astype(np.float32), (0, 0), sigma)
    return cv2.normalize(noise, None, 0, 255, cv2.NORM_MINMAX)


def ncc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Normalised cross-correlation of corresponding patches. (N, H, W) x 2 -> (N,)."""
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))


def blob_image(x0: float, y0: float, sigma: float = 2.0, shape: tuple[int, int] = (96, 128)) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    return (255 * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * sigma**2))).astype(np.float32)


# ----------------------------------------------------------------------------- conventions


def test_integer_keypoint_is_centred_on_its_pixel():
    """The patch centre ((P-1)/2, (P-1)/2) is the keypoint; an off-by-half-pixel sampler fails this."""
    image = blob_image(60, 40, sigma=2.0)
    size = 60.0 / DEFAULT_REGION_SCALE  # one patch pixel per image pixel (approximately)
    for angle in (0.0, 37.0):
        patch = extract_patches(image, [[60, 40, size, angle]], blur_sigma=0.0)[0][0]
        peak = patch.max()
        assert peak > 100
        for flipped in (patch[::-1, :], patch[:, ::-1], patch[::-1, ::-1], patch.T):
            assert np.abs(patch - flipped).max() < 0.02 * peak
    # Half a pixel off: clearly asymmetric, with the blob on the side the offset says.
    patch = extract_patches(image, [[60.5, 40, size, 0]], blur_sigma=0.0)[0][0]
    assert np.abs(patch - patch[:, ::-1]).max() > 0.1 * patch.max()
    assert np.abs(patch - patch[::-1, :]).max() < 0.02 * patch.max()
    cols = np.arange(P) - (P - 1) / 2
    centroid = (patch.sum(0) * cols).sum() / patch.sum()
    assert centroid == pytest.approx(-0.5 * P / 60.0, abs=0.05)  # blob left of the centre
    patch = extract_patches(image, [[60, 39.5, size, 0]], blur_sigma=0.0)[0][0]
    rows = (patch.sum(1) * cols).sum() / patch.sum()
    assert rows == pytest.approx(0.5 * P / 60.0, abs=0.05)  # blob below the centre (y down)


def test_matches_direct_affine_warp():
    """Without smoothing and at <= 1 image pixel per patch pixel, patches equal a cv2.warpAffine crop."""
    image = textured((200, 220), seed=1)
    kp = to_keypoint_array([[100.0, 90.0, 9.0, 0.0], [80.25, 120.5, 7.0, 30.0], [130.0, 70.0, 10.0, 250.0]])
    patches, kept = extract_patches(image, kp, region_scale=6.0, blur_sigma=0.0)
    np.testing.assert_array_equal(kept, [0, 1, 2])
    c = (P - 1) / 2
    for patch, (x, y, size, angle, _) in zip(patches, kp):
        s = 6.0 * size / P
        a, b = s * np.cos(np.deg2rad(angle)), s * np.sin(np.deg2rad(angle))
        m = np.array([[a, -b, x - a * c + b * c], [b, a, y - b * c - a * c]])
        ref = cv2.warpAffine(image, m, (P, P), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        np.testing.assert_allclose(patch, ref, atol=0.05)
    map_x, map_y = patch_sampling_grid(kp, region_scale=6.0)
    assert map_x.shape == (3, P, P)
    assert (map_x[0, 0, 0], map_y[0, 0, 0]) == pytest.approx((100 - c * 9 * 6 / 64, 90 - c * 9 * 6 / 64), abs=1e-4)
    # Angle 90 deg: the patch's +x axis points down the image.
    map_x, map_y = patch_sampling_grid(to_keypoint_array([[50.0, 50.0, 10.0, 90.0]]))
    assert map_y[0, 0, -1] - map_y[0, 0, 0] > 50 and abs(map_x[0, 0, -1] - map_x[0, 0, 0]) < 1e-3


def test_size_is_a_diameter():
    """With region_scale 1 a disc of diameter ``size`` exactly fills the patch (inscribed)."""
    yy, xx = np.mgrid[:200, :200].astype(np.float32)
    radius = 30.0
    disc = np.where(np.hypot(xx - 100, yy - 100) <= radius, 255.0, 0.0).astype(np.float32)
    patch = extract_patches(disc, [[100, 100, 2 * radius, 0]], region_scale=1.0, blur_sigma=0.0)[0][0]
    bright = (patch > 127).mean()
    assert bright == pytest.approx(np.pi / 4, abs=0.04)
    assert patch[P // 2, 1] > 127 and patch[1, P // 2] > 127 and patch[0, 0] < 10
    half = extract_patches(disc, [[100, 100, radius, 0]], region_scale=1.0, blur_sigma=0.0)[0][0]
    assert (half > 127).all()  # a radius-sized region lies inside the disc


# ----------------------------------------------------------------------------- covariance


def _centre_keypoints(n: int, centre: tuple[float, float], spread: float, sizes: tuple[float, float], seed: int):
    rng = np.random.default_rng(seed)
    r = spread * np.sqrt(rng.random(n))
    t = rng.uniform(0, 2 * np.pi, n)
    return to_keypoint_array(
        np.stack(
            [centre[0] + r * np.cos(t), centre[1] + r * np.sin(t), rng.uniform(*sizes, n), rng.uniform(0, 360, n)],
            axis=1,
        )
    )


def test_rotation_covariance_and_angle_sign():
    image = textured((301, 301), sigma=2.0, seed=2)
    extract = functools.partial(extract_patches, region_scale=6.0)  # regions stay inside the rotated view
    centre = (150.0, 150.0)
    kp = _centre_keypoints(40, centre, 50, (6, 12), seed=0)
    phi = 30.0
    rot = cv2.getRotationMatrix2D(centre, phi, 1.0)  # counter-clockwise on screen
    rotated = np.clip(cv2.warpAffine(image, rot, image.shape[::-1], flags=cv2.INTER_CUBIC), 0, 255)
    moved = transform_keypoints(kp, rot)
    np.testing.assert_allclose((kp[:, 3] - moved[:, 3]) % 360, phi, atol=1e-3)  # angle - phi
    ref = extract(image, kp)[0]
    good = ncc(ref, extract(rotated, moved)[0])
    assert np.median(good) > 0.95 and good.min() > 0.9
    wrong_sign = moved.copy()
    wrong_sign[:, 3] = (kp[:, 3] + phi) % 360
    bad = ncc(ref, extract(rotated, wrong_sign)[0])
    assert np.median(bad) < 0.6 and np.median(good) - np.median(bad) > 0.35
    # Without orientation normalisation the patches do not align either.
    upright = ncc(extract(image, kp, upright=True)[0], extract(rotated, moved, upright=True)[0])
    assert np.median(upright) < 0.7


@pytest.mark.parametrize("sizes", [(6.0, 12.0), (20.0, 40.0)])
def test_scale_covariance(sizes):
    """Halving the image and the keypoint sizes gives the same patches (anti-aliased when sizes are large)."""
    image = textured((480, 480), sigma=2.0, seed=4)
    kp = _centre_keypoints(30, (240.0, 240.0), 80, sizes, seed=1)
    half = cv2.resize(image, (240, 240), interpolation=cv2.INTER_AREA)
    kp_half = kp.copy()
    kp_half[:, :2] = (kp[:, :2] + 0.5) / 2 - 0.5
    kp_half[:, 2] = kp[:, 2] / 2
    a = extract_patches(image, kp)[0]
    b = extract_patches(half, kp_half)[0]
    score = ncc(a, b)
    assert np.median(score) > 0.95 and score.min() > 0.9
    assert np.abs(a.mean(axis=(1, 2)) - b.mean(axis=(1, 2))).max() < 3.0


def test_homography_covariance():
    image = textured((320, 320), sigma=2.0, seed=5)
    # Rotation by 20 deg, scale 0.85 and a mild perspective (patches only normalise similarity).
    c, s = 0.85 * np.cos(0.35), 0.85 * np.sin(0.35)
    h = np.array([[c, -s, 120.0], [s, c, 0.0], [1.5e-4, 1e-4, 1.0]])
    warped = np.clip(cv2.warpPerspective(image, h, (360, 360), flags=cv2.INTER_CUBIC), 0, 255)
    kp = _centre_keypoints(40, (160.0, 160.0), 60, (6, 10), seed=2)
    moved = transform_keypoints(kp, h)
    score = ncc(extract_patches(image, kp)[0], extract_patches(warped, moved)[0])
    assert np.median(score) > 0.95 and score.min() > 0.85
    shuffled = ncc(extract_patches(image, kp)[0], extract_patches(warped, np.roll(moved, 1, axis=0))[0])
    assert np.median(shuffled) < 0.3


# ----------------------------------------------------------------------------- smoothing


def test_no_aliasing_for_large_regions():
    """A fine pattern far above the patch's Nyquist frequency averages out instead of aliasing."""
    yy, xx = np.mgrid[:600, :600].astype(np.float32)
    stripes = (127.5 + 127.5 * np.cos(2 * np.pi * 0.4 * xx + 0.3 * yy)).astype(np.float32)
    kp = to_keypoint_array([[300.0, 300.0, 60.0, 0.0], [310.3, 290.7, 45.0, 20.0]])  # 5-6 px per patch pixel
    patches = extract_patches(stripes, kp, blur_sigma=0.0)[0]
    assert patches.std(axis=(1, 2)).max() < 3.0
    assert np.abs(patches.mean(axis=(1, 2)) - 127.5).max() < 3.0
    # Point sampling the same grid (what an unfiltered warp does) aliases strongly.
    map_x, map_y = patch_sampling_grid(kp)
    naive = cv2.remap(stripes, map_x.reshape(-1, P), map_y.reshape(-1, P), cv2.INTER_LINEAR)
    assert naive.std() > 30


def test_blur_sigma_smooths_patches():
    image = textured((200, 200), sigma=1.0, seed=6)
    for sizes in ((2.0, 4.0), (15.0, 30.0)):  # upsampled (patch-space blur) and downsampled (scale space)
        kp = _centre_keypoints(10, (100.0, 100.0), 30, sizes, seed=3)
        energies = []
        for blur in (0.0, 1.0, 3.0):
            patches = extract_patches(image, kp, blur_sigma=blur)[0]
            energies.append(np.mean(np.diff(patches, axis=2) ** 2))
        assert energies[0] > 1.15 * energies[1] and energies[1] > 1.5 * energies[2]


def test_scale_space_levels():
    image = textured((200, 300), seed=7)
    space = ScaleSpace(image)
    top = space.build(100)
    assert 8 < top < 100
    assert min(space.images[top].shape) >= 8
    for j in range(1, top + 1):
        assert space.pitches[j] in (space.pitches[j - 1], 2 * space.pitches[j - 1])
        assert space.images[j].shape == tuple(-(-s // space.pitches[j]) for s in image.shape)
        # Every level keeps the image's mean and position (no drift from the 2x2 block means).
        assert space.images[j].mean() == pytest.approx(image.mean(), rel=0.02)
    levels = ScaleSpace.nearest_level(np.array([0.0, 0.3, 0.5, 1.0, 2.0, 8.0]))
    np.testing.assert_array_equal(levels, [0, 0, 1, 4, 7, 13])
    for j in (1, 4, 9):
        assert ScaleSpace.nearest_level(np.array([ScaleSpace.level_sigma(j)]))[0] == j


def test_scale_space_blob_position_is_preserved():
    """A blob sampled from coarse levels stays centred (pitch/offset bookkeeping)."""
    image = blob_image(151, 97, sigma=6.0, shape=(220, 300))
    for size in (30.0, 60.0, 120.0):  # levels with pitch 1, 2 and 4
        patch = extract_patches(image, [[151, 97, size, 0]], blur_sigma=0.5)[0][0]
        cols = np.arange(P) - (P - 1) / 2
        cx = (patch.sum(0) * cols).sum() / patch.sum()
        cy = (patch.sum(1) * cols).sum() / patch.sum()
        assert abs(cx) < 0.1 and abs(cy) < 0.1


# ----------------------------------------------------------------------------- borders, modes, validation


def test_border_modes():
    image = textured((120, 140), seed=8)
    size = 64.0 / DEFAULT_REGION_SCALE  # exactly one image pixel per patch pixel
    kp = to_keypoint_array([[0.0, 60.0, size, 0.0], [70.0, 60.0, size, 0.0], [139.0, 119.0, size, 45.0]])
    rep, kept = extract_patches(image, kp, blur_sigma=0.0, border="replicate")
    np.testing.assert_array_equal(kept, [0, 1, 2])
    # Keypoint on column 0: the left half repeats column 0 (sampled at x = -31.5..-0.5).
    np.testing.assert_allclose(rep[0][:, :32], np.repeat(rep[0][:, :1], 32, axis=1), atol=1e-3)
    ref, _ = extract_patches(image, kp, blur_sigma=0.0, border="reflect")
    # Mirrored about column 0 (BORDER_REFLECT_101): sample at -x equals sample at +x.
    np.testing.assert_allclose(ref[0][:, :32], ref[0][:, 32:][:, ::-1], atol=0.05)
    np.testing.assert_allclose(ref[1], rep[1])  # interior keypoints do not depend on the border mode
    assert np.isfinite(rep).all() and np.isfinite(ref).all()
    dropped, kept = extract_patches(image, kp, blur_sigma=0.0, border="drop")
    np.testing.assert_array_equal(kept, [1])
    np.testing.assert_array_equal(dropped, rep[1:2])
    # The region must lie inside [0, W-1] x [0, H-1]: a grid just touching the border is kept.
    touching = to_keypoint_array([[31.5, 31.5, size, 0.0], [31.4, 31.5, size, 0.0]])
    np.testing.assert_array_equal(extract_patches(image, touching, border="drop")[1], [0])
    # A keypoint outside the image still gives a (replicated) patch unless dropped.
    far = extract_patches(image, [[-50.0, -50.0, size, 0.0]], border="replicate")[0]
    assert far.shape == (1, P, P) and np.allclose(far, far[0, 0, 0], atol=0.5)


def test_patches_do_not_depend_on_opencv_threads():
    """The warps run on cv2.getNumThreads() threads, each writing its own patches: the same bytes with one."""
    image = textured((300, 400), seed=5)
    kp = _centre_keypoints(700, (200.0, 150.0), 120, (0.5, 60), seed=6)  # small ones take the patch-space blur
    threads = cv2.getNumThreads()
    try:
        cv2.setNumThreads(4)
        assert cv2.getNumThreads() == 4
        parallel = extract_patches(image, kp)[0]
        cv2.setNumThreads(1)
        serial = extract_patches(image, kp)[0]
    finally:
        cv2.setNumThreads(threads)
    assert np.array_equal(parallel, serial)
    assert parallel.std(axis=(1, 2)).min() > 0  # real content in every patch, no unwritten buffer


def test_empty_and_shapes():
    image = textured((100, 100), seed=9)
    for empty in ([], np.zeros((0, 2)), np.zeros((0, 5), np.float32)):
        patches, kept = extract_patches(image, empty)
        assert patches.shape == (0, P, P) and patches.dtype == np.float32 and kept.shape == (0,)
    patches, kept = extract_patches(image, [[-500.0, 0.0, 10.0, 0.0]], border="drop")
    assert patches.shape == (0, P, P) and kept.shape == (0,)
    kp = _centre_keypoints(7, (50.0, 50.0), 20, (2, 40), seed=4)
    patches, kept = extract_patches(image.astype(np.uint8), kp, patch_size=32)
    assert patches.shape == (7, 32, 32) and patches.dtype == np.float32 and kept.dtype == np.int64
    assert patches.min() >= 0 and patches.max() <= 255
    cv_kps = [cv2.KeyPoint(50, 50, 10, 30)]
    np.testing.assert_array_equal(extract_patches(image, cv_kps)[0], extract_patches(image, [[50, 50, 10, 30]])[0])
    rgb = np.repeat(image[:, :, None], 3, axis=2).astype(np.uint8)
    np.testing.assert_allclose(extract_patches(rgb, kp)[0], extract_patches(image.astype(np.uint8), kp)[0], atol=0.05)
    assert DEFAULT_BLUR_SIGMA >= 0


def test_upright_ignores_angles():
    image = textured((160, 160), seed=10)
    kp = to_keypoint_array([[80.0, 80.0, 12.0, 45.0], [60.0, 90.0, 8.0, 200.0]])
    zero = kp.copy()
    zero[:, 3] = 0
    np.testing.assert_array_equal(extract_patches(image, kp, upright=True)[0], extract_patches(image, zero)[0])
    assert np.abs(extract_patches(image, kp)[0] - extract_patches(image, zero)[0]).max() > 10


@pytest.mark.parametrize(
    "kwargs",
    [
        {"border": "wrap"},
        {"patch_size": 0},
        {"patch_size": 12.5},
        {"region_scale": 0.0},
        {"region_scale": float("nan")},
        {"blur_sigma": -1.0},
    ],
)
def test_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        extract_patches(textured((64, 64)), [[30.0, 30.0, 8.0, 0.0]], **kwargs)


def test_rejects_bad_keypoints_and_images():
    image = textured((64, 64))
    for bad in ([[30.0, 30.0, 0.0, 0.0]], np.zeros((2, 3)), [[np.nan, 1.0]]):
        with pytest.raises(ValueError):
            extract_patches(image, bad)
    with pytest.raises(ValueError):
        extract_patches(np.zeros((4, 4), np.uint8), [[1.0, 1.0]])
