"""Ecosystem entry points: the kornia-style descriptor module, kornia's LAF pipeline, torch.hub's hubconf."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from deepdesc import describe
from deepdesc.features.descriptor import DeepDescDescriptor
from deepdesc.hub.registry import load_model

ROOT = Path(__file__).resolve().parent.parent


def _patches(n: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 64, 64)).astype(np.uint8)


def test_input_range_is_explicit_and_matches_describe():
    """0..1 patches into the kornia-style module give describe()'s descriptors of the 0..255 patches."""
    patches = _patches()
    expected = describe(patches, model="default")
    module = DeepDescDescriptor("default")  # kornia convention: 0..1
    with torch.no_grad():
        got = module(torch.from_numpy(patches).float()[:, None] / 255.0).numpy()
        raw = DeepDescDescriptor("default", input_range=255.0)(torch.from_numpy(patches).float()[:, None]).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)
    np.testing.assert_allclose(raw, expected, atol=1e-4)
    # feeding 0..1 patches to the raw-range network is what goes wrong without the module
    with torch.no_grad():
        wrong = load_model("default", device="cpu")(torch.from_numpy(patches).float()[:, None] / 255.0).numpy()
    assert np.abs(wrong - expected).max() > 10 * np.abs(got - expected).max()


def test_descriptor_module_errors_and_gradients():
    module = DeepDescDescriptor("default")
    with pytest.raises(ValueError, match=r"\(B, 1, 64, 64\)"):
        module(torch.zeros(2, 64, 64))
    with pytest.raises(ValueError, match="input_range must be positive"):
        DeepDescDescriptor("default", input_range=0)
    x = torch.rand(2, 1, 64, 64, requires_grad=True)
    module(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert module.patch_size == 64 and module.descriptor_size == 128


@pytest.mark.skipif(importlib.util.find_spec("kornia") is None, reason="kornia not installed")
def test_plugs_into_kornia_laf_descriptor():
    """kornia.feature.LAFDescriptor cuts patches from LAFs and describes them with our module."""
    import kornia.feature as KF

    rng = np.random.default_rng(1)
    image = torch.from_numpy(rng.random((1, 1, 120, 160)).astype(np.float32))
    centers = torch.tensor([[[40.0, 50.0], [80.0, 60.0], [120.0, 70.0]]])
    lafs = KF.laf_from_center_scale_ori(centers, torch.full((1, 3, 1, 1), 12.0), torch.zeros(1, 3, 1))
    module = DeepDescDescriptor("default")
    laf_desc = KF.LAFDescriptor(module, patch_size=module.patch_size)
    with torch.no_grad():
        out = laf_desc(image, lafs)
        patches = KF.extract_patches_from_pyramid(image, lafs, module.patch_size)
        direct = module(patches[0])
    assert out.shape == (1, 3, 128) and torch.isfinite(out).all()
    torch.testing.assert_close(out[0], direct)


def test_hubconf_entry_point_loads_locally():
    """torch.hub.load(source='local') runs hubconf.py from the repository root."""
    pretrained = torch.hub.load(str(ROOT), "deepdesc", source="local", pretrained=True)
    random = torch.hub.load(str(ROOT), "deepdesc", source="local", pretrained=False)
    patches = torch.from_numpy(_patches(3)).float()[:, None] / 255.0
    with torch.no_grad():
        a, b = pretrained(patches), random(patches)
    np.testing.assert_allclose(a.numpy(), describe(_patches(3), model="default"), atol=1e-4)
    assert not torch.allclose(a, b)
