"""describe(): input forms, validation, batching, and real corresponding patches."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from deepdesc import describe
from deepdesc.hub.weights import load_t7
from deepdesc.nn.cnn3 import DeepDescNet

from .conftest import ORIGINAL_MODELS, require_shared


@pytest.fixture(scope="module")
def random_model():
    torch.manual_seed(0)
    return DeepDescNet().eval()


def test_numpy_and_torch_forms_agree(random_model):
    rng = np.random.default_rng(0)
    patches = rng.integers(0, 256, (5, 64, 64), dtype=np.uint8)
    a = describe(patches, model=random_model)
    b = describe(patches[:, None].astype(np.float64), model=random_model)
    c = describe(torch.from_numpy(patches), model=random_model)
    assert isinstance(a, np.ndarray) and a.dtype == np.float32 and a.shape == (5, 128)
    assert isinstance(c, torch.Tensor) and c.dtype == torch.float32 and c.device.type == "cpu"
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c.numpy())


def test_batching_does_not_change_results(random_model):
    patches = np.random.default_rng(1).uniform(0, 255, (7, 64, 64)).astype(np.float32)
    full = describe(patches, model=random_model, batch_size=512)
    small = describe(patches, model=random_model, batch_size=3)
    np.testing.assert_allclose(full, small, atol=1e-5)
    with torch.no_grad():
        direct = random_model(torch.from_numpy(patches)[:, None]).numpy()
    np.testing.assert_allclose(full, direct, atol=1e-5)


def test_empty_input(random_model):
    assert describe(np.zeros((0, 64, 64), np.uint8), model=random_model).shape == (0, 128)
    out = describe(torch.zeros(0, 1, 64, 64), model=random_model)
    assert isinstance(out, torch.Tensor) and out.shape == (0, 128)


def test_model_left_in_training_mode_is_restored(random_model):
    random_model.train()
    describe(np.zeros((1, 64, 64)), model=random_model)
    assert random_model.training
    random_model.eval()


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((3, 32, 32)), r"\(N, 64, 64\) or \(N, 1, 64, 64\)"),
        (np.zeros((64, 64)), "got shape"),
        (np.zeros((2, 3, 64, 64)), "got shape"),
        (np.full((1, 64, 64), np.nan), "NaN or inf"),
        (np.full((1, 64, 64), np.inf), "NaN or inf"),
        (np.full((1, 64, 64), 1000.0), "0..255"),
        (np.full((1, 64, 64), -50.0), "0..255"),
        (np.zeros((1, 64, 64), dtype=bool), "dtype bool"),
        (np.zeros((1, 64, 64), dtype=np.complex64), "dtype complex64"),
    ],
)
def test_bad_inputs_name_the_expected_form(random_model, bad, message):
    with pytest.raises(ValueError, match=message):
        describe(bad, model=random_model)


def test_unit_range_floats_warn(random_model):
    with pytest.warns(UserWarning, match="multiply by 255"):
        describe(np.random.default_rng(0).uniform(0, 1, (2, 64, 64)), model=random_model)


def test_wrong_type_and_batch_size(random_model):
    with pytest.raises(TypeError, match="numpy array or torch tensor"):
        describe([[0] * 64] * 64, model=random_model)
    with pytest.raises(ValueError, match="batch_size"):
        describe(np.zeros((1, 64, 64)), model=random_model, batch_size=0)


@settings(max_examples=40, deadline=None)
@given(
    arrays(
        dtype=st.sampled_from([np.uint8, np.uint16, np.int32, np.float32, np.float64]),
        shape=st.tuples(st.integers(0, 3), st.sampled_from([1, 2, 63, 64, 65]), st.sampled_from([63, 64])),
        elements=st.integers(0, 255),
    )
)
def test_validation_property(random_model, patches):
    if patches.shape[1:] == (64, 64):
        out = describe(patches, model=random_model)
        assert out.shape == (patches.shape[0], 128) and out.dtype == np.float32
        assert np.isfinite(out).all()
    else:
        with pytest.raises(ValueError, match="64, 64"):
            describe(patches, model=random_model)


def _corresponding_patches(sequence: str, pair: int, n: int = 150):
    """64x64 crops around SIFT keypoints of img1 and their ground-truth projections in imgN."""
    folder = require_shared("data", "eval", "oxford", sequence)
    ext = ".pgm" if sequence == "boat" else ".ppm"
    im1 = cv2.imread(str(folder / f"img1{ext}"), cv2.IMREAD_GRAYSCALE)
    im2 = cv2.imread(str(folder / f"img{pair}{ext}"), cv2.IMREAD_GRAYSCALE)
    H = np.loadtxt(folder / f"H1to{pair}p")
    kps = cv2.SIFT_create(nfeatures=2000).detect(im1)
    pts = np.array([k.pt for k in kps], np.float64)
    proj = cv2.perspectiveTransform(pts[None], H)[0]
    inside = np.all((pts > 40) & (pts < np.array(im1.shape[::-1]) - 40), axis=1)
    inside &= np.all((proj > 40) & (proj < np.array(im2.shape[::-1]) - 40), axis=1)
    idx = np.random.default_rng(0).permutation(np.flatnonzero(inside))[:n]

    def crops(im, points):
        return np.stack([cv2.getRectSubPix(im, (64, 64), (float(x), float(y))) for x, y in points])

    return crops(im1, pts[idx]), crops(im2, proj[idx])


@pytest.mark.parametrize("name", sorted(ORIGINAL_MODELS))
def test_original_models_separate_real_correspondences(name, t7_paths):
    """bikes 1->2 (blur, near-identity homography): true pairs are much closer than others."""
    p1, p2 = _corresponding_patches("bikes", 2)
    model = load_t7(t7_paths[name])
    d1, d2 = describe(p1, model=model), describe(p2, model=model)
    dist = np.linalg.norm(d1[:, None] - d2[None], axis=2)
    positives = np.diag(dist)
    negatives = dist[~np.eye(len(dist), dtype=bool)]
    assert np.median(positives) < 0.4 * np.median(negatives)  # measured 0.25-0.28
    precision_at_1 = np.mean(dist.argmin(axis=1) == np.arange(len(dist)))
    assert precision_at_1 > 0.9  # measured 0.97-0.99
