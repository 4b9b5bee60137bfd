"""Value checks run on patches from users (describe) and are skipped for patches the library cut itself
(describe_extracted), with bit-identical descriptors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from deepdesc.features import describe as describe_module
from deepdesc.features.describe import as_patch_tensor, describe, describe_extracted
from deepdesc.features.patches import extract_patches
from deepdesc.nn.compact import CompactNet


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return CompactNet({"width": 8}).eval()


def _one_bad_value(value: float, n: int = 40, seed: int = 0) -> np.ndarray:
    """Valid float32 patches with a single bad value at a random place (not the first or last element)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (n, 64, 64)).astype(np.float32)
    x.reshape(-1)[rng.integers(1, x.size - 1)] = value
    return x


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(
    "value, message",
    [
        (np.nan, "NaN or inf"),
        (np.inf, "NaN or inf"),
        (-np.inf, "NaN or inf"),
        (300.0, r"span \[.*, 300\]; expected intensities in 0..255"),
        (-20.0, r"span \[-20, .*\]; expected intensities in 0..255"),
    ],
)
def test_user_patches_are_still_checked(model, value, message, seed):
    bad = _one_bad_value(value, seed=seed)
    with pytest.raises(ValueError, match=message):
        describe(bad, model=model)
    with pytest.raises(ValueError, match=message):
        describe(torch.from_numpy(bad)[:, None], model=model)
    with pytest.raises(ValueError, match=message):
        as_patch_tensor(bad.astype(np.float64))


@pytest.mark.parametrize("check", [describe, describe_extracted])
@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((3, 32, 32), np.float32), r"expected patches of shape \(N, 64, 64\) or \(N, 1, 64, 64\)"),
        (np.zeros((2, 3, 64, 64), np.float32), "got shape"),
        (np.zeros((1, 64, 64), dtype=bool), "dtype bool"),
    ],
)
def test_wrong_shape_or_dtype_is_refused_on_both_paths(model, check, bad, message):
    with pytest.raises(ValueError, match=message):
        check(bad, model=model)


def test_int_patches_out_of_range_are_checked_and_uint8_needs_no_scan(model, monkeypatch):
    with pytest.raises(ValueError, match="0..255"):
        describe(np.full((2, 64, 64), 1000, np.int16), model=model)
    ok = np.random.default_rng(0).integers(0, 256, (4, 64, 64)).astype(np.uint8)
    expected = describe(ok.astype(np.float32), model=model)
    scans, real = [], torch.aminmax
    monkeypatch.setattr(describe_module.torch, "aminmax", lambda *a: scans.append(1) or real(*a))
    np.testing.assert_array_equal(describe(ok, model=model), expected)
    assert scans == []


def _cut_patches() -> np.ndarray:
    rng = np.random.default_rng(3)
    image = cv2.GaussianBlur(rng.uniform(0, 255, (200, 240)).astype(np.float32), (0, 0), 2.0)
    keypoints = np.column_stack(
        [rng.uniform(20, 220, 50), rng.uniform(20, 180, 50), rng.uniform(2, 12, 50), rng.uniform(0, 360, 50)]
    )
    patches, kept = extract_patches(image, keypoints)
    assert patches.dtype == np.float32 and len(kept) == 50
    return patches


def test_library_cut_patches_skip_the_scans_with_identical_descriptors(model, monkeypatch):
    patches = _cut_patches()
    checked = describe(patches, model=model, batch_size=16)
    calls = []
    real = describe_module._check_values
    monkeypatch.setattr(describe_module, "_check_values", lambda *a: calls.append(1) or real(*a))
    fast = describe_extracted(patches, model=model, batch_size=16)
    assert calls == []  # no pass over the values
    assert fast.dtype == np.float32 and fast.shape == (50, model.descriptor_size)
    np.testing.assert_array_equal(fast, checked)  # bit-identical
    describe(patches, model=model)
    assert calls == [1]  # the public path still checks
    as_tensor = describe_extracted(torch.from_numpy(patches), model=model)
    assert isinstance(as_tensor, torch.Tensor)
    np.testing.assert_array_equal(as_tensor.numpy(), checked)


def test_unit_range_warning_kept(model):
    with pytest.warns(UserWarning, match="scaled to 0..1"):
        describe(np.full((2, 64, 64), 0.5, np.float32), model=model)
