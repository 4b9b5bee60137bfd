"""match_descriptors against a brute-force float64 numpy reference; geometric verification on synthetic scenes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from deepdesc.matching.nearest_neighbor import match_descriptors
from deepdesc.matching.verify import (
    FUNDAMENTAL_METHODS,
    HOMOGRAPHY_METHODS,
    estimate_fundamental,
    estimate_homography,
    matched_points,
)


def reference_matches(
    desc1: np.ndarray,
    desc2: np.ndarray,
    mutual: bool = True,
    ratio: float | None = None,
    max_distance: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Brute force on the full float64 distance matrix, with the documented semantics."""
    a, b = np.asarray(desc1, np.float64), np.asarray(desc2, np.float64)
    n1, n2 = len(a), len(b)
    if n1 == 0 or n2 == 0:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.float32)
    dist = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    nn12 = dist.argmin(1)  # first index on ties
    nn21 = dist.argmin(0)
    d1 = dist[np.arange(n1), nn12]
    d2 = np.sort(dist, axis=1)[:, 1] if n2 > 1 else np.full(n1, np.inf)
    keep = np.ones(n1, bool)
    if mutual:
        keep &= nn21[nn12] == np.arange(n1)
    if ratio is not None:
        keep &= d1 < ratio * d2
    if max_distance is not None:
        keep &= d1 <= max_distance
    idx = np.nonzero(keep)[0]
    return np.stack([idx, nn12[idx]], 1).astype(np.int64), d1[idx].astype(np.float32)


def small_int_descriptors(max_rows: int = 12, dim: int = 3) -> st.SearchStrategy[np.ndarray]:
    """Integer-valued float64 descriptors from a tiny range: exact distances and plenty of ties."""
    return hnp.arrays(
        np.float64,
        st.tuples(st.integers(0, max_rows), st.just(dim)),
        elements=st.integers(-2, 2).map(float),
    )


@settings(max_examples=100, deadline=None)
@given(
    desc1=small_int_descriptors(),
    desc2=small_int_descriptors(),
    mutual=st.booleans(),
    ratio=st.sampled_from([None, 0.5, 0.8, 1.0]),
    max_distance=st.sampled_from([None, 0.0, 1.5, 2.0]),
    chunk_size=st.integers(1, 5),
    col_chunk_size=st.sampled_from([None, 1, 2, 3, 7]),
)
def test_matches_reference_exactly_with_ties(desc1, desc2, mutual, ratio, max_distance, chunk_size, col_chunk_size):
    got, got_d = match_descriptors(
        desc1, desc2, mutual, ratio, max_distance, chunk_size=chunk_size, col_chunk_size=col_chunk_size
    )
    want, want_d = reference_matches(desc1, desc2, mutual, ratio, max_distance)
    assert got.dtype == np.int64 and got.shape == want.shape and got.shape[1:] == (2,)
    assert got_d.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got_d, want_d)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n1=st.integers(1, 60),
    n2=st.integers(1, 60),
    mutual=st.booleans(),
    ratio=st.sampled_from([None, 0.7, 0.9]),
    chunk_size=st.integers(1, 17),
    col_chunk_size=st.sampled_from([None, 5, 16]),
)
def test_float32_random_agrees_with_reference(seed, n1, n2, mutual, ratio, chunk_size, col_chunk_size):
    rng = np.random.default_rng(seed)
    desc1 = rng.standard_normal((n1, 16)).astype(np.float32)
    desc2 = rng.standard_normal((n2, 16)).astype(np.float32)
    got, got_d = match_descriptors(
        desc1, desc2, mutual=mutual, ratio=ratio, chunk_size=chunk_size, col_chunk_size=col_chunk_size
    )
    want, want_d = reference_matches(desc1, desc2, mutual=mutual, ratio=ratio)
    # float32 rounding may only flip decisions that the float64 reference makes by a hair.
    differ = set(map(tuple, got)) ^ set(map(tuple, want))
    assert all(_near_tie(desc1, desc2, i, ratio) for i, _ in differ), differ
    common = np.isin(got[:, 0], want[:, 0])
    np.testing.assert_allclose(got_d[common], want_d[np.isin(want[:, 0], got[:, 0])], rtol=1e-4, atol=1e-4)


def _near_tie(desc1: np.ndarray, desc2: np.ndarray, i: int, ratio: float | None, eps: float = 1e-4) -> bool:
    """Whether row i's nearest neighbour, its column's nearest row or its ratio test is within eps of a tie."""
    a, b = desc1.astype(np.float64), desc2.astype(np.float64)
    row = np.sqrt(((a[i] - b) ** 2).sum(1))
    j = row.argmin()
    srow = np.sort(row)
    col = np.sort(np.sqrt(((a - b[j]) ** 2).sum(1)))
    gaps = [srow[1] - srow[0] if len(srow) > 1 else np.inf, col[1] - col[0] if len(col) > 1 else np.inf]
    if ratio is not None and len(srow) > 1:
        gaps.append(abs(srow[0] - ratio * srow[1]))
    return min(gaps) < eps


def test_torch_input_mixed_dtypes_and_device():
    rng = np.random.default_rng(0)
    d1, d2 = rng.standard_normal((50, 8)), rng.standard_normal((40, 8))
    want, _ = reference_matches(d1, d2, ratio=0.9)
    inputs = [
        (torch.from_numpy(d1).float(), torch.from_numpy(d2).float()),
        (d1.astype(np.float32), d2),  # mixed: computed in float64
        (torch.from_numpy(d1), d2.astype(np.float16)),  # float16 input: promoted
        (torch.from_numpy(d1).to(torch.bfloat16), torch.from_numpy(d2).to(torch.bfloat16)),
    ]
    for k, (a, b) in enumerate(inputs):
        got, dist = match_descriptors(a, b, ratio=0.9, device="cpu")
        assert isinstance(got, np.ndarray) and got.dtype == np.int64 and dist.dtype == np.float32
        if k < 2:
            np.testing.assert_array_equal(got, want)
        else:  # rounded inputs: most matches survive
            assert len(set(map(tuple, got)) & set(map(tuple, want))) >= 0.8 * len(want)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(5)
    d1, d2 = rng.standard_normal((500, 128)), rng.standard_normal((400, 128))
    want, _ = match_descriptors(d1, d2, ratio=0.9)
    got, _ = match_descriptors(torch.from_numpy(d1).cuda(), torch.from_numpy(d2).cuda(), ratio=0.9, chunk_size=64)
    np.testing.assert_array_equal(got, want)
    got, _ = match_descriptors(d1, d2, ratio=0.9, device="cuda")
    np.testing.assert_array_equal(got, want)


def test_uint8_descriptors_accepted():
    rng = np.random.default_rng(1)
    d1 = rng.integers(0, 256, (30, 128), dtype=np.uint8)
    d2 = np.concatenate([d1[::-1], rng.integers(0, 256, (5, 128), dtype=np.uint8)])
    got, dist = match_descriptors(d1, d2)
    np.testing.assert_array_equal(got[:, 1], 29 - got[:, 0])
    assert len(got) == 30 and np.all(dist == 0)


def test_identical_sets_match_identity():
    rng = np.random.default_rng(2)
    d = rng.standard_normal((300, 128)).astype(np.float32)
    got, dist = match_descriptors(d, d, ratio=0.8, chunk_size=64, col_chunk_size=100)
    np.testing.assert_array_equal(got, np.stack([np.arange(300)] * 2, 1))
    assert np.all(dist < 1e-2)


@pytest.mark.parametrize(
    "shape1,shape2",
    [((0, 128), (10, 128)), ((10, 128), (0, 128)), ((0, 128), (0, 128)), ((0, 128), (0, 64))],
)
def test_empty_inputs(shape1, shape2):
    if shape1[1] != shape2[1]:
        with pytest.raises(ValueError, match="dimensions differ"):
            match_descriptors(np.zeros(shape1, np.float32), np.zeros(shape2, np.float32))
        return
    m, d = match_descriptors(np.zeros(shape1, np.float32), np.zeros(shape2, np.float32), ratio=0.8)
    assert m.shape == (0, 2) and m.dtype == np.int64
    assert d.shape == (0,) and d.dtype == np.float32


def test_single_candidate_ratio_passes():
    """With one descriptor in desc2 the second-nearest distance is +inf: the ratio test passes."""
    d1 = np.array([[0.0, 0.0], [5.0, 5.0]], np.float32)
    d2 = np.array([[1.0, 0.0]], np.float32)
    m, d = match_descriptors(d1, d2, mutual=False, ratio=0.5)
    np.testing.assert_array_equal(m, [[0, 0], [1, 0]])
    m, d = match_descriptors(d1, d2, mutual=True, ratio=0.5)
    np.testing.assert_array_equal(m, [[0, 0]])
    np.testing.assert_allclose(d, [1.0])
    m, _ = match_descriptors(d1, d2, mutual=False, ratio=0.5, max_distance=0.5)
    assert m.shape == (0, 2)


def test_exact_tie_fails_ratio_and_picks_lowest_index():
    d1 = np.array([[0.0, 0.0]], np.float32)
    d2 = np.array([[1.0, 0.0], [0.0, 1.0], [3.0, 3.0]], np.float32)
    m, _ = match_descriptors(d1, d2, ratio=1.0)
    assert m.shape == (0, 2)
    m, _ = match_descriptors(d1, d2)
    np.testing.assert_array_equal(m, [[0, 0]])


@pytest.mark.parametrize(
    "a,b,err,match",
    [
        (np.zeros((3, 4), np.float32), np.zeros((3, 5), np.float32), ValueError, "dimensions differ"),
        (np.zeros((3,), np.float32), np.zeros((3, 4), np.float32), ValueError, r"shape \(N, D\)"),
        (np.zeros((3, 4, 1), np.float32), np.zeros((3, 4), np.float32), ValueError, r"shape \(N, D\)"),
        (np.zeros((3, 4), np.complex64), np.zeros((3, 4), np.float32), ValueError, "dtype"),
        (np.zeros((3, 4), bool), np.zeros((3, 4), np.float32), ValueError, "dtype"),
        (np.zeros((3, 0), np.float32), np.zeros((3, 0), np.float32), ValueError, "D = 0"),
        (np.full((3, 4), np.nan, np.float32), np.zeros((3, 4), np.float32), ValueError, "NaN"),
        ([[1.0, 2.0]], np.zeros((3, 2), np.float32), TypeError, "numpy array or torch tensor"),
    ],
)
def test_invalid_inputs(a, b, err, match):
    with pytest.raises(err, match=match):
        match_descriptors(a, b)


@pytest.mark.parametrize(
    "kwargs",
    [{"ratio": 0.0}, {"ratio": 1.5}, {"max_distance": -1.0}, {"chunk_size": 0}, {"col_chunk_size": 0}],
)
def test_invalid_options(kwargs):
    with pytest.raises(ValueError):
        match_descriptors(np.zeros((2, 4), np.float32), np.zeros((2, 4), np.float32), **kwargs)


# ---------------------------------------------------------------- geometric verification (deepdesc.verify)


def _apply_h(h: np.ndarray, pts: np.ndarray) -> np.ndarray:
    x = np.c_[pts, np.ones(len(pts))] @ h.T
    return x[:, :2] / x[:, 2:]


def _homography_scene(seed: int, n: int = 200, outlier_rate: float = 0.3):
    rng = np.random.default_rng(seed)
    h = np.array([[1.1, 0.05, 20.0], [-0.03, 0.95, -10.0], [1e-4, -5e-5, 1.0]])
    p1 = rng.uniform(0, [640, 480], (n, 2))
    p2 = _apply_h(h, p1) + rng.normal(0, 0.3, (n, 2))
    outlier = np.zeros(n, bool)
    outlier[rng.choice(n, int(outlier_rate * n), replace=False)] = True
    # Outliers land 30..200 px away from their true position, far beyond the 3 px threshold.
    shift = rng.uniform(30, 200, (outlier.sum(), 2)) * rng.choice([-1, 1], (outlier.sum(), 2))
    p2[outlier] += shift
    return h, p1, p2, ~outlier


@pytest.mark.parametrize("method", ["usac_magsac", "ransac", "usac_accurate"])
def test_homography_recovered_with_outliers(method):
    h_true, p1, p2, inlier = _homography_scene(0)
    h, mask = estimate_homography(p1, p2, method=method, threshold_px=3.0)
    assert h is not None and h.shape == (3, 3)
    corners = np.array([[0, 0], [640, 0], [640, 480], [0, 480]], float)
    assert np.abs(_apply_h(h, corners) - _apply_h(h_true, corners)).max() < 1.0
    assert mask.dtype == bool and mask.shape == (len(p1),)
    np.testing.assert_array_equal(mask, inlier)


def test_fundamental_on_two_view_scene():
    rng = np.random.default_rng(1)
    n = 150
    k = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    world = np.c_[rng.uniform(-2, 2, (n, 2)), rng.uniform(4, 8, n)]  # a non-planar cloud in front
    angle = np.deg2rad(10)
    r = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    t = np.array([-1.0, 0.1, 0.2])

    def project(x):
        y = x @ k.T
        return y[:, :2] / y[:, 2:]

    p1 = project(world) + rng.normal(0, 0.2, (n, 2))
    p2 = project(world @ r.T + t) + rng.normal(0, 0.2, (n, 2))
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    f_true = np.linalg.inv(k).T @ tx @ r @ np.linalg.inv(k)

    def epipolar_distance(f, a, b):
        a_h, b_h = np.c_[a, np.ones(len(a))], np.c_[b, np.ones(len(b))]
        lines = a_h @ f.T  # epipolar lines in image 2
        return np.abs((b_h * lines).sum(1)) / np.linalg.norm(lines[:, :2], axis=1)

    outlier = np.zeros(n, bool)
    outlier[rng.choice(n, 45, replace=False)] = True
    p2[outlier] = rng.uniform(0, [640, 480], (outlier.sum(), 2))
    # Keep only outliers clearly off their epipolar line, so the expected mask is unambiguous.
    keep = ~outlier | (epipolar_distance(f_true, p1, p2) > 10.0)
    p1, p2, inlier = p1[keep], p2[keep], ~outlier[keep]

    f, mask = estimate_fundamental(p1, p2, threshold_px=1.0)
    assert f is not None and f.shape == (3, 3)
    np.testing.assert_array_equal(mask, inlier)
    assert np.median(epipolar_distance(f, p1[inlier], p2[inlier])) < 0.5
    # Same F up to scale and sign.
    fa, fb = f / np.linalg.norm(f), f_true / np.linalg.norm(f_true)
    assert min(np.abs(fa - fb).max(), np.abs(fa + fb).max()) < 0.05


@pytest.mark.parametrize("k", [0, 1, 3, 7])
def test_too_few_matches_give_none(k):
    pts = np.random.default_rng(2).uniform(0, 100, (k, 2))
    h, mask = estimate_homography(pts, pts + 1)
    assert (h is None) == (k < 4) and mask.shape == (k,) and mask.dtype == bool
    f, mask = estimate_fundamental(pts, pts + 1)
    assert f is None and mask.shape == (k,) and not mask.any()


def test_degenerate_points_never_raise():
    pts = np.zeros((20, 2))
    for method in HOMOGRAPHY_METHODS:
        h, mask = estimate_homography(pts, pts, method=method)
        assert h is None and not mask.any()
    for method in FUNDAMENTAL_METHODS:
        f, mask = estimate_fundamental(pts, pts, method=method)
        assert f is None and not mask.any()


def test_verify_input_errors():
    pts = np.zeros((10, 2))
    with pytest.raises(ValueError, match="unknown method"):
        estimate_homography(pts, pts, method="magic")
    with pytest.raises(ValueError, match="same shape"):
        estimate_homography(pts, pts[:5])
    with pytest.raises(ValueError, match="same shape"):
        estimate_fundamental(np.zeros((10, 3)), np.zeros((10, 3)))


def test_matched_points_pipeline():
    h_true, p1, p2, inlier = _homography_scene(3, n=100)
    kpts1 = np.c_[p1, np.ones((100, 3))].astype(np.float32)  # (N, 5) keypoint layout
    kpts2 = np.c_[p2, np.ones((100, 3))].astype(np.float32)
    order = np.random.default_rng(4).permutation(100)
    matches = np.stack([np.arange(100), order], 1)
    a, b = matched_points(kpts1, kpts2[np.argsort(order)], matches)
    assert a.shape == b.shape == (100, 2)
    h, mask = estimate_homography(a, b)
    np.testing.assert_array_equal(mask, inlier)
