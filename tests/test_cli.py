"""The command line on small generated images: describe (resumable HDF5), match, evaluate, colmap, export."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from deepdesc.cli import main
from deepdesc.features.image import list_images


def _camera(angle: float = 0.0, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    from skimage import data

    img = np.ascontiguousarray(data.camera()[40:360, 80:440])
    A = cv2.getRotationMatrix2D((180.0, 160.0), angle, scale)
    warped = cv2.warpAffine(img, A, (360, 320), borderMode=cv2.BORDER_REFLECT)
    return warped, np.vstack([A, [0, 0, 1]])


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    for i, (angle, scale) in enumerate([(0, 1.0), (20, 0.9), (-15, 1.1)]):
        cv2.imwrite(str(folder / f"im{i}.png"), _camera(angle, scale)[0])
    (folder / "sub").mkdir()
    cv2.imwrite(str(folder / "sub" / "im3.jpg"), _camera(5, 1.0)[0])
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_list_images(image_dir, tmp_path):
    names = [n for n, _ in list_images([str(image_dir)])]
    assert names == ["im0.png", "im1.png", "im2.png", "sub/im3.jpg"]
    with pytest.raises(FileNotFoundError):
        list_images([str(tmp_path / "missing")])


def test_describe_is_resumable(image_dir, tmp_path, t7_paths, capsys):
    from deepdesc.io.h5 import list_images as h5_images
    from deepdesc.io.h5 import read_features, write_features

    out = tmp_path / "feats.h5"
    args = ["describe", str(image_dir / "im0.png"), "-o", str(out), "--model", str(t7_paths["split4"])]
    assert main([*args, "--max-keypoints", "300"]) == 0
    first = read_features(out, "im0.png")
    assert first["descriptors"].shape == (len(first["keypoints"]), 128) and 0 < len(first["keypoints"]) <= 300
    assert tuple(first["image_size"]) == (360, 320)
    # a second run over the folder only describes the missing images
    write_features(out, "im1.png", {"keypoints": np.zeros((0, 2)), "descriptors": np.zeros((0, 128))})
    argv = ["describe", str(image_dir), "-o", str(out), "--model", str(t7_paths["split4"]), "--max-keypoints", "300"]
    assert main(argv) == 0
    assert "4 images, 2 already" in capsys.readouterr().out
    assert sorted(h5_images(out)) == ["im0.png", "im1.png", "im2.png", "sub/im3.jpg"]
    np.testing.assert_array_equal(read_features(out, "im0.png")["descriptors"], first["descriptors"])
    # the pipelined command writes what the plain extractor computes
    from deepdesc.features.extractor import Extractor

    direct = Extractor(model=str(t7_paths["split4"]), max_keypoints=300).extract(image_dir / "im2.png")
    stored = read_features(out, "im2.png")
    np.testing.assert_allclose(stored["descriptors"], direct.descriptors, atol=1e-5)
    np.testing.assert_allclose(stored["keypoints"], direct.keypoints)
    assert len(read_features(out, "im1.png")["keypoints"]) == 0  # kept, not re-described


def test_match_writes_picture_and_matches(image_dir, tmp_path, t7_paths, capsys):
    png, npz = tmp_path / "m.png", tmp_path / "m.npz"
    argv = [
        "match",
        str(image_dir / "im0.png"),
        str(image_dir / "im1.png"),
        "-o",
        str(png),
        "--save-matches",
        str(npz),
        "--model",
        str(t7_paths["split4"]),
        "--max-keypoints",
        "500",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "inliers:" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = np.load(npz)
    assert saved["inliers"].sum() >= 30
    # the estimated homography is the known warp
    A = _camera(20, 0.9)[1]
    corners = np.array([[[50.0, 50.0], [300.0, 50.0], [300.0, 270.0], [50.0, 270.0]]])
    err = cv2.perspectiveTransform(corners, saved["model"]) - cv2.perspectiveTransform(corners, A)
    assert np.abs(err).max() < 3.0


def test_match_missing_image_is_a_clear_error(tmp_path, capsys, t7_paths):
    assert main(["match", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--model", str(t7_paths["split4"])]) == 2
    err = capsys.readouterr().err
    assert "a.png" in err and "Traceback" not in err


def test_evaluate_on_a_generated_sequence(tmp_path, t7_paths):
    seq = tmp_path / "seqs" / "v_camera"
    seq.mkdir(parents=True)
    cv2.imwrite(str(seq / "1.ppm"), cv2.cvtColor(_camera()[0], cv2.COLOR_GRAY2BGR))
    for k, (angle, scale) in enumerate([(10, 1.0), (-25, 0.8)], start=2):
        img, A = _camera(angle, scale)
        cv2.imwrite(str(seq / f"{k}.ppm"), cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
        np.savetxt(seq / f"H_1_{k}", A)
    out = tmp_path / "eval"
    argv = [
        "evaluate",
        "--dataset",
        f"hpatches-seq:{tmp_path / 'seqs'}",
        "--model",
        "sift",
        "--model",
        "rootsift",
        "--model",
        "sift@12",
        "--model",
        str(t7_paths["split4"]),
        "-o",
        str(out),
        "--num-keypoints",
        "150",
    ]
    assert main(argv) == 0
    report = json.loads((out / "results.json").read_text())
    summary = report["sequences"]["summary"]
    assert set(summary) == {"sift", "rootsift", "sift@12", "CNN3_p8_n8_split4_073000"}
    for method in summary.values():
        assert method["v_camera"]["precision@1"] > 0.5 and method["v_camera"]["pairs"] == 2
        assert method["v_camera"]["h_acc@5"] == 1.0
    table = (out / "results.md").read_text()
    assert "| precision@1 |" in table and "v_camera" in table
    for name in ("precision_at_1.png", "mma.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    # a re-run is served from the descriptor cache
    cached = len(list((out / "cache").glob("*.npy")))
    assert cached > 0 and main(argv) == 0 and len(list((out / "cache").glob("*.npy"))) == cached


def test_evaluate_cache_key_follows_the_weights(tmp_path, t7_paths):
    """A model retrained at the same path must not be served the old model's cached descriptors."""
    import torch

    from deepdesc.eval.homography import Method
    from deepdesc.hub.weights import load_t7, save_safetensors

    model, path = load_t7(t7_paths["split4"]), tmp_path / "m.safetensors"
    save_safetensors(model, path)
    before = Method.parse(str(path)).key()
    assert Method.parse(str(path)).key() == before
    with torch.no_grad():
        model.conv1.bias += 1.0
    save_safetensors(model, path)
    assert Method.parse(str(path)).key() != before
    assert Method.parse("sift").key() != Method.parse("sift@16").key()


def test_colmap_database_from_a_folder(image_dir, tmp_path, t7_paths):
    pycolmap = pytest.importorskip("pycolmap")
    db = tmp_path / "db.db"
    argv = [
        "colmap",
        str(image_dir),
        "--database",
        str(db),
        "--model",
        str(t7_paths["split4"]),
        "--max-keypoints",
        "300",
    ]
    assert main(argv) == 0
    with pycolmap.Database.open(str(db)) as database:
        assert database.num_images() == 4 and database.num_keypoints() > 400
        assert database.num_verified_image_pairs() >= 3


def test_export_onnx(tmp_path, t7_paths):
    pytest.importorskip("onnx")
    out = tmp_path / "m.onnx"
    assert main(["export", "--format", "onnx", "--model", str(t7_paths["split4"]), "-o", str(out)]) == 0
    assert out.stat().st_size > 1_000_000


def test_evaluate_patch_benchmarks_on_generated_data(tmp_path, t7_paths, monkeypatch):
    """`deepdesc evaluate` on PhotoTour (Brown protocol) and HPatches (matching task) in their original layouts."""
    import shutil

    from .make_fake_data import make_hpatches, make_phototour

    monkeypatch.setenv("DEEPDESC_CACHE", str(tmp_path / "cache"))
    fake = make_phototour(tmp_path / "liberty", n_patches=90, n_pairs=40)
    shutil.copy(tmp_path / "liberty" / f"{fake['pairs_name']}.txt", tmp_path / "liberty" / "m50_100000_100000_0.txt")
    make_hpatches(tmp_path / "hpatches")
    out = tmp_path / "eval"
    argv = [
        "evaluate",
        "--dataset",
        f"phototour:{tmp_path / 'liberty'}",
        "--dataset",
        f"hpatches:{tmp_path / 'hpatches'}",
        "--model",
        str(t7_paths["split4"]),
        "-o",
        str(out),
    ]
    assert main(argv) == 0
    report = json.loads((out / "results.json").read_text())
    brown = report["phototour"][str(t7_paths["split4"])]
    assert 0.0 <= brown["fpr95"] <= 1.0 and 0.0 <= brown["pr_auc"] <= 1.0
    assert str(t7_paths["split4"]) in report["hpatches_matching"]
    text = (out / "results.md").read_text()
    assert "FPR95" in text and "HPatches matching" in text
