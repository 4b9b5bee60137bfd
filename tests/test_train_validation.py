"""The fixed validation pairs: never more pairs than distinct 3D points, so no pair repeats."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepdesc.train import load_config
from deepdesc.train.sources import build_sources, validation_pairs
from deepdesc.train.synthetic import PairBatches

from .make_fake_data import make_phototour


@pytest.fixture(scope="module")
def multiview(tmp_path_factory):
    """make-patches layout: 30 training points, 20 validation points (3 patches each) in val/."""
    root = tmp_path_factory.mktemp("mv")
    make_phototour(root, n_patches=90, patches_per_point=3, seed=0, learnable=True)
    fake = make_phototour(root / "val", n_patches=60, patches_per_point=3, seed=1, learnable=True)
    return root, fake


def _conf(root, val_pairs: int, noise: bool = False) -> dict:
    sources = [f"multiview:{root}"] + (["synthetic-noise"] if noise else [])
    data = {"sources": sources, "weights": [1.0] * len(sources), "val_pairs": val_pairs, "batch_size": 16}
    return load_config(None, {"preset": "hardnet", "data": data})


def _points(anchors: torch.Tensor, fake: dict) -> np.ndarray:
    """The 3D point of each anchor patch (found by its pixels among the set's patches)."""
    flat = fake["patches"].reshape(len(fake["patches"]), -1).astype(np.float32)
    rows = anchors.reshape(len(anchors), -1).numpy()
    index = [int(np.flatnonzero((flat == row).all(1))[0]) for row in rows]
    return fake["point_ids"][index]


def test_val_pairs_beyond_the_distinct_points_are_capped_with_a_warning(multiview, caplog):
    root, fake = multiview
    with caplog.at_level("WARNING", logger="deepdesc"):
        anchors, positives = validation_pairs(_conf(root, val_pairs=64))
    assert len(anchors) == len(positives) == 20
    assert len(set(_points(anchors, fake))) == 20  # every validation point once: no repeated pair
    assert "data.val_pairs = 64" in caplog.text and "20 distinct validation pairs" in caplog.text


def test_a_capped_source_next_to_an_unbounded_one(multiview, caplog):
    root, fake = multiview
    with caplog.at_level("WARNING", logger="deepdesc"):
        anchors, _ = validation_pairs(_conf(root, val_pairs=200, noise=True))
    assert "data.val_pairs = 200" in caplog.text and "20 distinct validation pairs" in caplog.text
    from_multiview = [a for a in anchors if (fake["patches"] == a[0].numpy().astype(np.uint8)).all((1, 2)).any()]
    assert len(from_multiview) == 20 and len(anchors) > 100


def test_within_the_distinct_points_validation_is_unchanged(multiview, caplog):
    root, _ = multiview
    conf = _conf(root, val_pairs=16)
    with caplog.at_level("WARNING", logger="deepdesc"):
        anchors, positives = validation_pairs(conf)
    assert "val_pairs" not in caplog.text
    sources, weights = build_sources(conf, "val")
    a, p, valid = PairBatches(sources, 16, seed=conf["run"]["seed"] + 7919, weights=weights)[0]
    torch.testing.assert_close(anchors, a[valid])
    torch.testing.assert_close(positives, p[valid])
