"""Keypoint arrays, conversions, the SIFT detector and its angle convention, image loading."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepdesc.features.keypoints import (
    DEFAULT_KEYPOINT_SIZE,
    detect_keypoints,
    load_image,
    to_cv_keypoints,
    to_keypoint_array,
    transform_keypoints,
)


def textured(shape: tuple[int, int] = (256, 256), sigma: float = 2.5, seed: int = 0) -> np.ndarray:
    """Smoothed random noise stretched to 0..255, uint8."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.random(shape).astype(np.float32), (0, 0), sigma)
    return cv2.normalize(noise, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


# ----------------------------------------------------------------------------- keypoint arrays


def test_to_keypoint_array_forms():
    xy = np.array([[1.0, 2.0], [3.5, 4.25]])
    arr = to_keypoint_array(xy)
    assert arr.dtype == np.float32 and arr.shape == (2, 5)
    np.testing.assert_array_equal(arr[:, :2], xy)
    np.testing.assert_array_equal(arr[:, 2], DEFAULT_KEYPOINT_SIZE)
    np.testing.assert_array_equal(arr[:, 3:], 0)
    assert to_keypoint_array(xy, default_size=7.0)[0, 2] == 7.0

    four = np.array([[1, 2, 3, 45], [5, 6, 7, -1]], dtype=np.float64)
    arr = to_keypoint_array(four)
    np.testing.assert_array_equal(arr[:, :3], four[:, :3])
    np.testing.assert_array_equal(arr[:, 3], [45, 0])  # OpenCV's -1 (no orientation) means 0
    np.testing.assert_array_equal(arr[:, 4], 0)

    five = np.array([[1, 2, 3, 370, 0.5], [1, 2, 3, -30, 0.25]], dtype=np.float32)
    arr = to_keypoint_array(five)
    np.testing.assert_allclose(arr[:, 3], [10, 330], atol=1e-4)  # wrapped into [0, 360)
    np.testing.assert_array_equal(arr[:, 4], [0.5, 0.25])

    kps = [cv2.KeyPoint(10.5, 20.25, 12.0, -1, 0.1), cv2.KeyPoint(1, 2, 3, 90.0, 0.2)]
    arr = to_keypoint_array(kps)
    np.testing.assert_allclose(arr, [[10.5, 20.25, 12, 0, 0.1], [1, 2, 3, 90, 0.2]], rtol=1e-6)

    for empty in ([], (), np.zeros((0, 2)), np.zeros((0, 5))):
        assert to_keypoint_array(empty).shape == (0, 5)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((3, 3)), np.zeros(5), np.zeros((2, 5, 1)), [["a", "b"]], np.array([[np.nan, 1.0]]), [[1, 2, -3, 0]]],
)
def test_to_keypoint_array_rejects(bad):
    with pytest.raises(ValueError):
        to_keypoint_array(bad)


def test_to_keypoint_array_error_names_accepted_forms():
    with pytest.raises(ValueError, match=r"cv2\.KeyPoint.*\(N, 2\).*\(N, 4\).*\(N, 5\)"):
        to_keypoint_array(np.zeros((4, 3)))


def test_cv_keypoints_round_trip():
    rng = np.random.default_rng(1)
    arr = np.stack(
        [rng.uniform(0, 500, 20), rng.uniform(0, 300, 20), rng.uniform(1, 40, 20), rng.uniform(0, 359, 20)]
        + [rng.uniform(0, 0.1, 20)],
        axis=1,
    ).astype(np.float32)
    kps = to_cv_keypoints(arr)
    assert len(kps) == 20 and all(isinstance(k, cv2.KeyPoint) for k in kps)
    assert kps[3].pt == pytest.approx((arr[3, 0], arr[3, 1])) and kps[3].size == pytest.approx(arr[3, 2])
    np.testing.assert_allclose(to_keypoint_array(kps), arr, rtol=1e-6, atol=1e-5)


def test_transform_keypoints_similarity_and_jacobian():
    kp = to_keypoint_array(np.array([[100.0, 50.0, 10.0, 20.0, 0.5]]))
    rot = cv2.getRotationMatrix2D((0.0, 0.0), 30.0, 2.0)  # CCW on screen by 30 deg, scale 2
    out = transform_keypoints(kp, rot)
    np.testing.assert_allclose(out[0, :2], rot[:, :2] @ kp[0, :2], rtol=1e-5)
    assert out[0, 2] == pytest.approx(20.0, rel=1e-5)
    assert out[0, 3] == pytest.approx(350.0, abs=1e-3)  # 20 - 30 (mod 360)
    assert out[0, 4] == pytest.approx(0.5)

    h = np.array([[1.1, 0.05, 3.0], [-0.02, 0.95, 5.0], [2e-4, -1e-4, 1.0]])

    def project(pt):
        v = h @ np.array([pt[0], pt[1], 1.0])
        return v[:2] / v[2]

    kp = to_keypoint_array(np.array([[60.0, 80.0, 4.0, 135.0]]))
    out = transform_keypoints(kp, h)
    np.testing.assert_allclose(out[0, :2], project(kp[0, :2]), rtol=1e-5)
    d = np.array([np.cos(np.deg2rad(135.0)), np.sin(np.deg2rad(135.0))])
    moved = project(kp[0, :2] + 1e-3 * d) - project(kp[0, :2])  # finite-difference direction
    expected = np.rad2deg(np.arctan2(moved[1], moved[0])) % 360
    assert out[0, 3] == pytest.approx(expected, abs=1e-2)
    eps = 1e-3  # size follows sqrt(area ratio)
    dx = project(kp[0, :2] + [eps, 0]) - project(kp[0, :2])
    dy = project(kp[0, :2] + [0, eps]) - project(kp[0, :2])
    area = abs(dx[0] * dy[1] - dx[1] * dy[0])
    assert out[0, 2] == pytest.approx(4.0 * np.sqrt(area) / eps, rel=1e-3)


# ----------------------------------------------------------------------------- detector


@pytest.fixture(scope="module")
def texture() -> np.ndarray:
    return textured((320, 320), sigma=3.0, seed=0)


def test_detect_max_keypoints_sorted_strongest(texture):
    all_kp = detect_keypoints(texture, max_keypoints=None)
    assert all_kp.dtype == np.float32 and all_kp.shape[1] == 5 and len(all_kp) > 100
    assert (np.diff(all_kp[:, 4]) <= 0).all()
    top = detect_keypoints(texture, max_keypoints=50)
    assert top.shape == (50, 5)
    np.testing.assert_array_equal(top, all_kp[:50])
    assert top[:, 4].min() >= np.sort(all_kp[:, 4])[-50]
    assert detect_keypoints(texture, max_keypoints=0).shape == (0, 5)
    assert ((all_kp[:, 3] >= 0) & (all_kp[:, 3] < 360)).all()
    with pytest.raises(ValueError):
        detect_keypoints(texture, max_keypoints=-1)


def test_detect_upright_removes_orientation_duplicates(texture):
    oriented = detect_keypoints(texture, max_keypoints=None)
    locations = np.unique(oriented[:, [0, 1, 2]], axis=0)
    assert len(locations) < len(oriented)  # OpenCV duplicates keypoints with several orientations
    upright = detect_keypoints(texture, max_keypoints=None, upright=True)
    assert (upright[:, 3] == 0).all()
    assert len(upright) == len(locations) == len(np.unique(upright[:, [0, 1, 2]], axis=0))
    top = detect_keypoints(texture, max_keypoints=30, upright=True)
    assert len(top) == 30 and len(np.unique(top[:, :3], axis=0)) == 30


def test_detect_inputs_mask_and_blank(texture):
    as_float = detect_keypoints(texture.astype(np.float32) / 255.0, max_keypoints=None)
    np.testing.assert_array_equal(as_float, detect_keypoints(texture, max_keypoints=None))
    mask = np.zeros_like(texture)
    mask[:, :160] = 1
    left = detect_keypoints(texture, max_keypoints=None, mask=mask)
    assert len(left) > 10 and (left[:, 0] < 165).all()
    with pytest.raises(ValueError, match="mask"):
        detect_keypoints(texture, mask=np.ones((10, 10)))
    assert detect_keypoints(np.full((64, 64), 128, np.uint8)).shape == (0, 5)
    fewer = detect_keypoints(texture, max_keypoints=None, contrast_threshold=0.15)
    assert len(fewer) < len(detect_keypoints(texture, max_keypoints=None))


def _match(kp_pred: np.ndarray, kp_found: np.ndarray, tol: float = 0.7) -> list[tuple[int, int]]:
    pairs = []
    for i, p in enumerate(kp_pred):
        d = np.hypot(kp_found[:, 0] - p[0], kp_found[:, 1] - p[1])
        close = np.flatnonzero((d < tol) & (np.abs(np.log(kp_found[:, 2] / p[2])) < 0.15))
        if close.size:
            pairs.append((i, int(close[np.argmin(d[close])])))
    return pairs


def _angle_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs((a - b + 180.0) % 360.0 - 180.0)


def test_sift_angle_convention_on_rotated_image():
    """Rotating the image counter-clockwise on screen by phi turns SIFT's angles by -phi."""
    image = textured((401, 401), sigma=3.0, seed=3)
    kp = detect_keypoints(image, max_keypoints=400, upright=False)
    centre = (200.0, 200.0)
    kp = kp[np.hypot(kp[:, 0] - centre[0], kp[:, 1] - centre[1]) < 140]
    phi = 30.0
    rot = cv2.getRotationMatrix2D(centre, phi, 1.0)
    rotated = cv2.warpAffine(image, rot, image.shape[::-1], flags=cv2.INTER_CUBIC)
    found = detect_keypoints(rotated, max_keypoints=None)
    predicted = transform_keypoints(kp, rot)
    np.testing.assert_allclose((kp[:, 3] - predicted[:, 3]) % 360, phi, atol=1e-3)
    pairs = _match(predicted, found)
    assert len(pairs) > 40
    pi, fi = np.array(pairs).T
    # A location can carry several orientations; take the best one for each predicted keypoint.
    errors, wrong = [], []
    for i in np.unique(pi):
        cand = found[fi[pi == i]]
        errors.append(_angle_error(cand[:, 3], predicted[i, 3]).min())
        wrong.append(_angle_error(cand[:, 3], kp[i, 3] + phi).min())
    errors, wrong = np.array(errors), np.array(wrong)
    assert np.median(errors) < 3.0 and np.mean(errors < 10.0) > 0.6
    assert np.median(wrong) > 40.0  # the opposite sign convention is clearly wrong


# ----------------------------------------------------------------------------- load_image


def test_load_image_values():
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (12, 10), dtype=np.uint8)
    out = load_image(gray)
    assert out.dtype == np.float32 and out.shape == (12, 10)
    np.testing.assert_array_equal(out, gray)
    np.testing.assert_array_equal(load_image(gray[:, :, None]), gray)
    np.testing.assert_allclose(load_image(gray.astype(np.uint16) * 257), gray, atol=1e-3)
    np.testing.assert_allclose(load_image(gray.astype(np.float64) / 255.0), gray, atol=1e-3)
    np.testing.assert_array_equal(load_image(gray.astype(np.float32)), gray)
    np.testing.assert_array_equal(load_image(gray.astype(np.int32)), gray)
    assert load_image(np.zeros((8, 8), np.float32)).max() == 0

    rgb = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    expected = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    np.testing.assert_allclose(load_image(rgb), expected, atol=0.51)
    np.testing.assert_allclose(load_image(rgb[:, :, ::-1], channel_order="bgr"), expected, atol=0.51)
    assert np.abs(load_image(rgb[:, :, ::-1]) - expected).max() > 5  # channel order matters
    rgba = np.concatenate([rgb, rng.integers(0, 256, (9, 11, 1), dtype=np.uint8)], axis=2)
    np.testing.assert_array_equal(load_image(rgba), load_image(rgb))  # alpha dropped


def test_load_image_rejects():
    for bad in (
        np.zeros((0, 0), np.uint8),
        np.zeros((7, 20), np.uint8),
        np.zeros((20, 20, 2), np.uint8),
        np.zeros((20, 20, 3, 1), np.uint8),
        np.zeros(400, np.uint8),
        np.zeros((20, 20), bool),
        np.full((20, 20), 1000, np.int32),
        np.full((20, 20), -5.0),
        np.full((20, 20), 300.0),
        np.zeros((20, 20), np.complex64),
    ):
        with pytest.raises(ValueError):
            load_image(bad)
    nan = np.zeros((20, 20), np.float32)
    nan[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        load_image(nan)
    with pytest.raises(ValueError, match="channel_order"):
        load_image(np.zeros((20, 20, 3), np.uint8), channel_order="gbr")


def test_load_image_files(tmp_path):
    rng = np.random.default_rng(2)
    bgr = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    path = tmp_path / "colour.png"
    assert cv2.imwrite(str(path), bgr)
    expected = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.float32)
    for arg in (path, str(path)):
        np.testing.assert_allclose(load_image(arg), expected, atol=0.51)
    np.testing.assert_array_equal(load_image(path, channel_order="rgb"), load_image(path))  # files are BGR

    deep = (rng.integers(0, 65536, (16, 16))).astype(np.uint16)
    assert cv2.imwrite(str(tmp_path / "deep.png"), deep)
    np.testing.assert_allclose(load_image(tmp_path / "deep.png"), deep / 257.0, atol=1e-3)

    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_text("not an image")
    with pytest.raises(ValueError, match="decode"):
        load_image(tmp_path / "junk.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError):
        load_image(tmp_path / "empty.png")
    with pytest.raises(ValueError):
        load_image(tmp_path)  # a directory


_DTYPES = st.sampled_from([np.uint8, np.uint16, np.int16, np.float32, np.float64])


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(8, 24),
    w=st.integers(8, 24),
    channels=st.sampled_from([None, 1, 3, 4]),
    dtype=_DTYPES,
    seed=st.integers(0, 2**16),
    unit_float=st.booleans(),
)
def test_load_image_property(h, w, channels, dtype, seed, unit_float):
    rng = np.random.default_rng(seed)
    shape = (h, w) if channels is None else (h, w, channels)
    if np.dtype(dtype).kind == "f":
        image = rng.random(shape) * (1.0 if unit_float else 255.0)
    elif dtype == np.uint16:
        image = rng.integers(0, 65536, shape)
    else:
        image = rng.integers(0, 256, shape)
    image = image.astype(dtype)
    out = load_image(image)
    assert out.shape == (h, w) and out.dtype == np.float32 and out.flags.c_contiguous
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 255.0
    if channels in (None, 1) and dtype in (np.uint8, np.int16):
        np.testing.assert_array_equal(out, image.reshape(h, w))
    ref = image.astype(np.float64)
    if dtype == np.uint16:
        ref *= 255.0 / 65535.0
    elif ref.dtype.kind == "f" and np.dtype(dtype).kind == "f" and ref.max() <= 1.0:
        ref *= 255.0
    if ref.ndim == 3:
        ref = ref[:, :, 0] if channels == 1 else ref[:, :, :3] @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(out, ref, atol=0.01)
