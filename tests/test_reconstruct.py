"""deepdesc reconstruct: entry-P10 end to end, camera centres against the ground truth, and failure messages."""

from __future__ import annotations

import cv2
import h5py
import numpy as np
import pytest

from deepdesc.cli import main
from deepdesc.datasets.scenes import load_colmap_scene, load_strecha_scene
from deepdesc.reconstruct import ReconstructionError
from deepdesc.reconstruct import main as reconstruct

from .conftest import require_shared


def _similarity_align(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Umeyama: the scale, rotation and translation taking src (N, 3) closest to dst (N, 3); returns aligned src."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    U, S, Vt = np.linalg.svd(b.T @ a / len(src))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    R = U @ D @ Vt
    scale = np.trace(np.diag(S) @ D) / (a**2).sum(1).mean()
    return scale * a @ R.T + mu_d


def test_similarity_alignment_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(10, 3))
    R, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    R *= np.sign(np.linalg.det(R))
    moved = 2.5 * pts @ R.T + [1.0, -2.0, 3.0]
    np.testing.assert_allclose(_similarity_align(pts, moved), moved, atol=1e-9)


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
    est = np.array([c.center for c in rec.cameras])
    ref = np.array([c.center for c in gt.cameras])
    errors = np.linalg.norm(_similarity_align(est, ref) - ref, axis=1)
    extent = np.linalg.norm(ref - ref.mean(0), axis=1).max()
    assert np.median(errors) < 0.01 * extent and errors.max() < 0.03 * extent, (errors, extent)


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
