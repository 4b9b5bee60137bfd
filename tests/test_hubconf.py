"""torch.hub entry point: the weights are chosen by ``weights=`` (``model`` is torch.hub.load's own argument)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from deepdesc.features.describe import describe
from deepdesc.hub.weights import save_safetensors
from deepdesc.nn.factory import build_net

ROOT = Path(__file__).resolve().parent.parent


def _patches(n: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 64, 64)).astype(np.uint8)


@pytest.fixture(scope="module")
def other_weights(tmp_path_factory) -> Path:
    """A compact network with random weights: anything but the packaged default."""
    torch.manual_seed(3)
    net = build_net({"arch": "compact"}).eval()
    path = tmp_path_factory.mktemp("hub") / "other.safetensors"
    save_safetensors(net, path, {"license": "MIT"})
    return path


def _outputs(module: torch.nn.Module, n: int = 3) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(_patches(n)).float()[:, None] / 255.0).numpy()


def test_weights_argument_through_torch_hub_load(other_weights):
    net = torch.hub.load(str(ROOT), "deepdesc", source="local", weights=str(other_weights))
    np.testing.assert_allclose(_outputs(net), describe(_patches(3), model=other_weights), atol=1e-4)
    default = torch.hub.load(str(ROOT), "deepdesc", source="local", weights="default")
    assert not np.allclose(_outputs(net), _outputs(default), atol=1e-3)


def test_name_alias_and_old_keyword_still_select_the_weights(other_weights):
    by_name = torch.hub.load(str(ROOT), "deepdesc", source="local", name=str(other_weights))
    np.testing.assert_allclose(_outputs(by_name), describe(_patches(3), model=other_weights), atol=1e-4)
    import hubconf  # direct calls (not through torch.hub.load) may still say model=

    old = hubconf.deepdesc(model=str(other_weights))
    np.testing.assert_allclose(_outputs(old), _outputs(by_name), atol=1e-6)


def test_conflicting_weight_arguments_are_refused(other_weights):
    with pytest.raises(ValueError, match="weights="):
        torch.hub.load(str(ROOT), "deepdesc", source="local", weights="default", name=str(other_weights))
