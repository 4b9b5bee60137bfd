"""deepdesc reconstruct: entry-P10 end to end, camera centres against the ground truth, and failure messages."""

from __future__ import annotations

import cv2
import h5py
import numpy as np
import pytest

from deepdesc.cli import main
from deepdesc.datasets.scenes import load_colmap_scene, load_strecha_scene
from deepdesc.eval.reconstruction import align_similarity, camera_center_errors
from deepdesc.reconstruct import ReconstructionError
from deepdesc.reconstruct import main as reconstruct

from .conftest import require_shared


def test_similarity_alignment_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(10, 3))
    R, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    R *= np.sign(np.linalg.det(R))
    moved = 2.5 * pts @ R.T + [1.0, -2.0, 3.0]
    np.testing.assert_allclose(align_similarity(pts, moved), moved, atol=1e-9)
    with pytest.raises(ValueError, match="N >= 3"):
        align_similarity(pts[:2], moved[:2])


def test_reconstruct_entry_p10_matches_ground_truth_cameras(tmp_path, capsys):
    scene_dir = require_shared("data", "eval", "strecha", "entry-P10")
    out = tmp_path / "rec"
    assert main(["reconstruct", str(scene_dir / "images"), "-o", str(out), "--text"]) == 0
    printed = capsys.readouterr().out
    assert "registered 10/10 images" in printed and "mean reprojection error" in printed
    for name in ("features.h5", "matches.h5", "pairs.txt", "database.db"):
        assert (out / name).is_file()
    assert len((out / "pairs.txt").read_text().splitlines()) == 45
    with h5py.File(out / "features.h5", "r") as fd:
        assert all("image_size" in fd[name] for name in fd)
    gt = load_strecha_scene(scene_dir)
    rec = load_colmap_scene(out / "sparse" / "0", scene_dir / "images")
    assert rec.image_names == gt.image_names
    err = camera_center_errors(rec, gt)
    assert err["registered"] == 10
    # a working pipeline registers these views to within a few percent of the scene's extent (median); a broken
    # one (wrong keypoint convention, mixed-up images) gives tens of percent
    assert err["median"] < 0.05 * err["extent"] and err["max"] < 0.10 * err["extent"], err


def test_nothing_registers_gives_a_clear_error(tmp_path):
    rng = np.random.default_rng(0)
    images = tmp_path / "noise"
    images.mkdir()
    for i in range(2):
        noise = cv2.GaussianBlur(rng.integers(0, 256, (200, 260)).astype(np.uint8), (0, 0), 1.5)
        cv2.imwrite(str(images / f"{i}.png"), noise)
    with pytest.raises(ReconstructionError, match="no images registered"):
        reconstruct(images, tmp_path / "rec", extract_conf="sift", progress=False)
    with pytest.raises(ValueError, match="at least 2"):
        reconstruct(images / "0.png", tmp_path / "rec2", progress=False)
