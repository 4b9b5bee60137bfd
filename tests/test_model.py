"""The PyTorch CNN3 against hand-computed cases and an independent float64 reference."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from deepdesc.hub.t7 import read_t7
from deepdesc.hub.weights import load_t7
from deepdesc.nn.cnn3 import DeepDescNet
from deepdesc.nn.layers import LPPool2d, SubtractiveNorm2d, gaussian_kernel

from .conftest import ORIGINAL_MODELS, require_shared
from .reference import reference_forward, subtractive_norm


def test_lp_pool_hand_computed():
    x = torch.tensor([[[[1.0, 2.0, 7.0], [2.0, 4.0, 7.0], [7.0, 7.0, 7.0]]]])
    # 2x2 window (the trailing row/column are dropped): sqrt(1 + 4 + 4 + 16) = 5
    assert LPPool2d(2)(x).item() == pytest.approx(5.0)
    assert LPPool2d(2, scale=1.0)(x).item() == pytest.approx(2.5)  # sqrt of the window mean


def test_subtractive_norm_across_planes_hand_computed():
    # 1x1 kernel: subtract the mean across planes at each pixel.
    norm = SubtractiveNorm2d(2, torch.ones(1, 1))
    x = torch.tensor([[[[1.0]], [[3.0]]]])
    assert norm(x).flatten().tolist() == pytest.approx([-1.0, 1.0])


def test_subtractive_norm_border_correction_hand_computed():
    # 3x3 box kernel on a 3x3 single-plane map: the corner's mean is over its 4 in-bounds
    # neighbours (zero padding corrected by coef), the centre's over all 9.
    x = torch.tensor([[[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 10.0]]]])
    out = SubtractiveNorm2d(1, torch.ones(3, 3))(x)[0, 0]
    assert out[0, 0].item() == pytest.approx(1.0 - (1 + 2 + 4 + 5) / 4)
    assert out[1, 1].item() == pytest.approx(5.0 - 46 / 9)
    assert out[0, 1].item() == pytest.approx(2.0 - (1 + 2 + 3 + 4 + 5 + 6) / 6)
    assert out[2, 2].item() == pytest.approx(10.0 - (5 + 6 + 8 + 10) / 4)
    coef = SubtractiveNorm2d(1, torch.ones(3, 3)).border_coef(3, 3, x)[0, 0]
    assert coef[0, 0].item() == pytest.approx(4 / 9) and coef[1, 1].item() == pytest.approx(1.0)


def test_subtractive_norm_matches_reference_gaussian():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 9, 11))
    kernel = gaussian_kernel(5).double().numpy()
    norm = SubtractiveNorm2d(3, torch.from_numpy(kernel).float())
    got = norm(torch.from_numpy(x).float()[None])[0].double().numpy()
    expected = subtractive_norm(x, kernel / (kernel.sum() * 3))
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_gaussian_kernel_is_torch_image_gaussian():
    k = gaussian_kernel(5)
    assert k[2, 2] == 1.0 and k.shape == (5, 5)
    # sigma = 0.25 * 5 = 1.25 px
    assert k[2, 3].item() == pytest.approx(np.exp(-0.5 / 1.25**2), rel=1e-6)


def test_layer_shapes_and_flops():
    model = DeepDescNet()
    x = torch.rand(2, 1, 64, 64) * 255
    assert model(x).shape == (2, 128)
    assert 100e6 < model.num_flops() < 105e6  # ~102 MFLOP per patch
    with pytest.raises(ValueError, match="64x64"):
        DeepDescNet({"pool_sizes": [2, 2, 2]})


def _natural_patches(n: int) -> np.ndarray:
    sheet = cv2.imread(str(require_shared("data", "train", "notredame", "patches0000.bmp")), cv2.IMREAD_GRAYSCALE)
    return np.stack([sheet[r * 64 : r * 64 + 64, c * 64 : c * 64 + 64] for r in range(4) for c in range(4)])[:n]


@pytest.mark.parametrize("name", sorted(ORIGINAL_MODELS))
def test_original_models_match_float64_reference(name, t7_paths):
    tree = read_t7(t7_paths[name])
    model = load_t7(t7_paths[name])
    rng = np.random.default_rng(1)
    patches = np.concatenate([_natural_patches(6), rng.integers(0, 256, size=(2, 64, 64))]).astype(np.float32)
    with torch.no_grad():
        got = model(torch.from_numpy(patches)[:, None]).double().numpy()
        got64 = model.double()(torch.from_numpy(patches).double()[:, None]).numpy()
    expected = reference_forward(tree, patches)
    assert got.shape == expected.shape == (8, 128)
    # Same semantics: the module run in float64 agrees to float64 rounding ...
    assert np.abs(got64 - expected).max() < 1e-9
    # ... and in float32 to float32 rounding (descriptor entries are ~1-4).
    assert np.abs(got - expected).max() < 3e-4
    assert np.abs(expected).max() > 1.0  # descriptors are not trivially small
