"""``deepdesc evaluate`` / ``evaluate.main``: method labels, input checks before any work, patch baselines."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from deepdesc import evaluate
from deepdesc.cli import main
from deepdesc.eval.describers import parse_methods, sift_patch_descriptors
from deepdesc.hub.weights import save_safetensors
from deepdesc.nn.factory import build_net

from .make_fake_data import make_hpatches, make_phototour


def _camera(angle: float = 0.0, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    from skimage import data

    img = np.ascontiguousarray(data.camera()[40:360, 80:440])
    A = cv2.getRotationMatrix2D((180.0, 160.0), angle, scale)
    return cv2.warpAffine(img, A, (360, 320), borderMode=cv2.BORDER_REFLECT), np.vstack([A, [0, 0, 1]])


def _sequence(folder: Path, homographies: dict[int, np.ndarray] | None = None, views: int = 3) -> Path:
    """An Oxford-layout sequence of the camera photo rotated and scaled (img1..imgN.pgm, H1toKp)."""
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / "img1.pgm"), _camera()[0])
    for k, (angle, scale) in enumerate([(8, 1.0), (-15, 0.9), (4, 1.1)][: views - 1], start=2):
        img, A = _camera(angle, scale)
        cv2.imwrite(str(folder / f"img{k}.pgm"), img)
        np.savetxt(folder / f"H1to{k}p", (homographies or {}).get(k, A))
    return folder


@pytest.fixture(scope="module")
def sequences(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("oxford")
    _sequence(root / "camera")
    return root


@pytest.fixture(scope="module")
def same_named_models(tmp_path_factory) -> list[Path]:
    """Two different random compact networks, both saved as ``model.safetensors`` (as ``runs/*/best.safetensors``)."""
    root = tmp_path_factory.mktemp("models")
    paths = []
    for seed, run in ((1, "run-a"), (2, "run-b")):
        torch.manual_seed(seed)
        (root / run).mkdir()
        save_safetensors(build_net({"arch": "compact", "width": 8}).eval(), root / run / "model.safetensors")
        paths.append(root / run / "model.safetensors")
    return paths


def _precision(datasets, methods, out) -> dict[str, float]:
    report, _ = evaluate.main(datasets, methods, out, protocols=("patch",), num_keypoints=60)
    return {m: v["[all]"]["precision@1"] for m, v in report["sequences"]["summary"].items()}


def test_models_sharing_a_file_name_get_their_own_columns(sequences, same_named_models, tmp_path):
    a, b = (str(p) for p in same_named_models)
    both = _precision([f"oxford:{sequences}"], [a, b], tmp_path / "both")
    assert list(both) == ["run-a/model", "run-b/model"]
    alone_a = _precision([f"oxford:{sequences}"], [a], tmp_path / "a")
    alone_b = _precision([f"oxford:{sequences}"], [b], tmp_path / "b")
    assert both["run-a/model"] == alone_a["model"] and both["run-b/model"] == alone_b["model"]
    assert alone_a["model"] != alone_b["model"]  # two different networks: the merged column hid one of them


def test_label_syntax_and_clashes(same_named_models, monkeypatch):
    a, b = (str(p) for p in same_named_models)
    methods = parse_methods([f"first={a}", f"second={b}@12", "sift", "rootsift@16"])
    assert [m.name for m in methods] == ["first", "second", "sift", "rootsift@16"]
    assert methods[0].model == a and methods[1].model == b and methods[1].patch_options == {"region_scale": 12.0}
    assert [m.name for m in parse_methods([str(Path(a).parent / ".." / "run-a" / "model.safetensors"), b])] == [
        "run-a/model",
        "run-b/model",
    ]
    shutil.copy(a, Path(a).parent / "lr=0.1.safetensors")  # a file name with "=" is a path, not LABEL=SPEC
    monkeypatch.chdir(Path(a).parent)
    assert [(m.name, m.model) for m in parse_methods(["lr=0.1.safetensors"])] == [("lr=0.1", "lr=0.1.safetensors")]
    with pytest.raises(ValueError, match=r"both labelled 'sift'"):
        parse_methods(["sift", f"sift={a}"])
    with pytest.raises(ValueError, match=r"given twice"):
        parse_methods([a, a])


def _cli_error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--protocol", "patch,homograpy"], "--protocol 'homograpy'"),
        (["--protocol", ""], "--protocol"),
        (["--num-keypoints", "0"], "--num-keypoints = 0"),
        (["--scene-keypoints", "-5"], "--scene-keypoints = -5"),
        (["--max-gap", "0"], "--max-gap = 0"),
        (["--orders", "0"], "--orders = 0"),
    ],
)
def test_bad_options_are_refused_before_any_work(sequences, tmp_path, capsys, option, message):
    out = tmp_path / "eval"
    err = _cli_error(
        ["evaluate", "--dataset", f"oxford:{sequences}", "--model", "sift", "-o", str(out), *option], capsys
    )
    assert message in err
    assert not out.exists()


def test_sequence_folders_without_pairs_are_refused(tmp_path, capsys):
    bare = tmp_path / "bare"
    (bare / "graf").mkdir(parents=True)
    cv2.imwrite(str(bare / "graf" / "img1.pgm"), _camera()[0])
    cv2.imwrite(str(bare / "graf" / "img2.pgm"), _camera(5)[0])
    err = _cli_error(
        ["evaluate", "--dataset", f"oxford:{bare / 'graf'}", "--model", "sift", "-o", str(tmp_path / "o")], capsys
    )
    assert "homography" in err and "graf" in err
    (bare / "empty").mkdir()
    err = _cli_error(
        ["evaluate", "--dataset", f"oxford:{bare / 'empty'}", "--model", "sift", "-o", str(tmp_path / "o")], capsys
    )
    assert "no homography sequence" in err
    single = _sequence(tmp_path / "single" / "boat", views=1)
    err = _cli_error(
        ["evaluate", "--dataset", f"oxford:{single}", "--model", "sift", "-o", str(tmp_path / "o")], capsys
    )
    assert "boat" in err and "one image" in err
    assert not (tmp_path / "o").exists()


def test_a_singular_homography_is_dropped_with_a_warning(tmp_path, caplog):
    singular = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [0.0, 0.0, 1.0]])
    seq = _sequence(tmp_path / "seqs" / "camera", homographies={3: singular})
    with caplog.at_level(logging.WARNING, logger="deepdesc"):
        report, _ = evaluate.main([f"oxford:{seq}"], ["sift"], tmp_path / "out", num_keypoints=60)
    assert "H1to3p" in caplog.text and "singular" in caplog.text
    assert [r["pair"] for r in report["sequences"]["rows"]] == ["1-2"]
    assert report["sequences"]["summary"]["sift"]["camera"]["pairs"] == 1


def test_one_image_scene_is_a_clear_error(tmp_path, capsys):
    scene = tmp_path / "strecha" / "solo"
    (scene / "images").mkdir(parents=True)
    (scene / "cameras").mkdir()
    cv2.imwrite(str(scene / "images" / "0000.png"), _camera()[0])
    K, R, C = "300 0 180\n0 300 160\n0 0 1\n", "1 0 0\n0 1 0\n0 0 1\n", "0 0 0\n"
    (scene / "cameras" / "0000.png.camera").write_text(f"{K}0 0 0\n{R}{C}360 320\n")
    err = _cli_error(
        ["evaluate", "--dataset", f"strecha:{scene}", "--model", "sift", "-o", str(tmp_path / "o")], capsys
    )
    assert "solo" in err and "1 image" in err
    assert not (tmp_path / "o").exists()


def test_sift_describes_whole_patches():
    patches = np.random.default_rng(0).integers(0, 256, (5, 64, 64)).astype(np.uint8)
    patches[3] = cv2.GaussianBlur(patches[3], (0, 0), 3)
    desc = sift_patch_descriptors(patches)
    assert desc.shape == (5, 128) and desc.dtype == np.float32 and (np.linalg.norm(desc, axis=1) > 100).all()
    alone = sift_patch_descriptors(patches[3:4])  # a patch's descriptor does not depend on its neighbours
    np.testing.assert_allclose(desc[3], alone[0], atol=1e-4)
    flipped = sift_patch_descriptors(patches[:, ::-1].copy())
    assert not np.allclose(desc, flipped)
    root = sift_patch_descriptors(patches, root=True)
    np.testing.assert_allclose(np.linalg.norm(root, axis=1), 1.0, atol=1e-4)


def test_patch_benchmarks_accept_sift(tmp_path):
    fake = make_phototour(tmp_path / "liberty", n_patches=90, n_pairs=40, learnable=True)
    shutil.copy(tmp_path / "liberty" / f"{fake['pairs_name']}.txt", tmp_path / "liberty" / "m50_100000_100000_0.txt")
    make_hpatches(tmp_path / "hpatches")
    datasets = [f"phototour:{tmp_path / 'liberty'}", f"hpatches:{tmp_path / 'hpatches'}"]
    report, text = evaluate.main(datasets, ["sift", "rootsift"], tmp_path / "out")
    for method in ("sift", "rootsift"):
        assert report["phototour"][method]["fpr95"] < 0.9  # related patches: better than chance
        assert 0.0 <= report["hpatches_matching"][method]["mean"] <= 1.0
    assert "phototour liberty sift: FPR95" in text
    with pytest.raises(ValueError, match=r"phototour.*sift@12.*fixes the measured region"):
        evaluate.main(datasets[:1], ["sift@12"], tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


def test_patch_options_on_patch_data_sets_alone_are_said_to_be_ignored(tmp_path, caplog):
    make_phototour(tmp_path / "liberty", n_patches=30, n_pairs=10)
    with caplog.at_level("WARNING", logger="deepdesc"):
        evaluate.main([f"phototour:{tmp_path / 'liberty'}"], ["sift"], tmp_path / "out", region_scale=12.0)
    assert "--region-scale/--blur-sigma apply where patches are cut from images" in caplog.text


def test_precision_reaches_the_networks_and_keeps_the_float32_cache(sequences, same_named_models, tmp_path):
    from deepdesc.nn.fast import _cpu_has_bf16

    a = str(same_named_models[0])
    default = _precision([f"oxford:{sequences}"], [a], tmp_path / "out")
    explicit, _ = evaluate.main(
        [f"oxford:{sequences}"], [a], tmp_path / "fp32", protocols=("patch",), num_keypoints=60, precision="fp32"
    )
    assert explicit["sequences"]["summary"]["model"]["[all]"]["precision@1"] == default["model"]
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16, got 'int8'"):
        evaluate.main([f"oxford:{sequences}"], [a], tmp_path / "x", precision="int8")
    if _cpu_has_bf16():  # bf16 descriptors differ from float32 ones, so the cache must not serve them
        out = tmp_path / "out"
        cached = len(list((out / "cache").rglob("*.npy")))
        evaluate.main([f"oxford:{sequences}"], [a], out, protocols=("patch",), num_keypoints=60, precision="bf16")
        assert len(list((out / "cache").rglob("*.npy"))) == 2 * cached


def test_precision_reaches_patch_benchmarks(same_named_models, tmp_path, monkeypatch):
    make_phototour(tmp_path / "liberty", n_patches=30, n_pairs=10)
    seen, real = [], evaluate.describe

    def spy(patches, **kwargs):
        seen.append(kwargs["precision"])
        return real(patches, **kwargs)

    monkeypatch.setattr(evaluate, "describe", spy)
    data = [f"phototour:{tmp_path / 'liberty'}"]
    report, _ = evaluate.main(data, [str(same_named_models[0])], tmp_path / "out", precision="fp32")
    assert seen and set(seen) == {"fp32"} and 0.0 <= next(iter(report["phototour"].values()))["fpr95"] <= 1.0
