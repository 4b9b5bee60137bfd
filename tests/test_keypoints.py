"""Keypoint arrays, conversions, the SIFT detector and its angle convention."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepdesc.features.keypoints import (
    DEFAULT_KEYPOINT_SIZE,
    _strongest,
    detect_keypoints,
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


@settings(max_examples=40, deadline=None)
@given(responses=st.lists(st.sampled_from([0.0, 0.01, 0.02, 0.5, 1.0]), max_size=40), n=st.integers(0, 45))
def test_strongest_keeps_what_the_stable_sort_keeps(responses, n):
    """Detection converts only the strongest keypoints (all when there are at most ``n``): after its sort, the
    same ones in the same order (ties in input order) as sorting all of them by decreasing response and cutting."""
    kps = [cv2.KeyPoint(float(i), 0.0, 2.0, 0.0, r) for i, r in enumerate(responses)]
    everything = to_keypoint_array(kps) if kps else np.zeros((0, 5), np.float32)
    expected = everything[np.argsort(-everything[:, 4], kind="stable")[:n]]
    kept = _strongest(kps, n)
    assert len(kept) == min(n, len(kps))
    got = to_keypoint_array(list(kept)) if n and kps else np.zeros((0, 5), np.float32)
    got = got[np.argsort(-got[:, 4], kind="stable")]  # as detect_keypoints sorts what it converted
    np.testing.assert_array_equal(got, expected)
    if len(kps) > n:  # it did the cut itself, already in order
        np.testing.assert_array_equal(to_keypoint_array(list(kept)) if n else got, got)


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
