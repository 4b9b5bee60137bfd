"""Jobs (extract, match) and the CLI around them: recorded settings, bad images, output checks, hloc's rules."""

from __future__ import annotations

import time

import cv2
import h5py
import numpy as np
import pytest

from deepdesc import extract, match
from deepdesc.cli import main
from deepdesc.errors import OutputMismatchError
from deepdesc.io import h5


def _image(seed: int, shape: tuple[int, int] = (240, 320)) -> np.ndarray:
    from skimage import data

    img = data.camera()
    rng = np.random.default_rng(seed)
    y, x = rng.integers(0, img.shape[0] - shape[0]), rng.integers(0, img.shape[1] - shape[1])
    return np.ascontiguousarray(img[y : y + shape[0], x : x + shape[1]])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("jobimages")
    for i in range(3):
        cv2.imwrite(str(root / f"im{i}.png"), _image(i))
    return root


SMALL = {"extractor": "sift", "max_keypoints": 200}


def _hloc_list_h5_names(path) -> list[str]:
    """hloc's utils/io.py list_h5_names rule: the parent group of every dataset is a name."""
    names = []
    with h5py.File(path, "r") as fd:
        fd.visititems(
            lambda _, obj: names.append(obj.parent.name.strip("/")) if isinstance(obj, h5py.Dataset) else None
        )
    return sorted(set(names))


def test_settings_recorded_and_resume_with_other_settings_refused(folder, tmp_path):
    out = tmp_path / "f.h5"
    summary = extract.main(SMALL, folder, out, progress=False)
    assert summary.described == ["im0.png", "im1.png", "im2.png"]
    recorded = h5.read_settings(out)
    assert recorded["extractor"] == "sift" and recorded["max_keypoints"] == 200
    assert recorded["descriptor_dtype"] == "float32" and recorded["unit_norm"] is False
    assert extract.main(SMALL, folder, out, progress=False).existing == summary.described  # same settings: resume
    with pytest.raises(OutputMismatchError, match=r"max_keypoints: 200 in the file, 300 now"):
        extract.main({**SMALL, "max_keypoints": 300}, folder, out, progress=False)
    with pytest.raises(OutputMismatchError, match=r"descriptor_dtype: 'float32' in the file, 'float16' now"):
        extract.main(SMALL, folder, out, as_half=True, progress=False)
    with pytest.raises(OutputMismatchError, match="--overwrite"):
        extract.main({**SMALL, "root": True}, folder, out, progress=False)
    # --overwrite with other settings starts the file again: nothing of the old descriptor space stays
    again = extract.main({**SMALL, "max_keypoints": 50}, [folder / "im0.png"], out, overwrite=True, progress=False)
    assert again.described == ["im0.png"] and h5.list_images(out) == ["im0.png"]
    assert len(h5.read_features(out, "im0.png")["keypoints"]) <= 50


def test_cli_resume_with_another_model_says_what_differs(folder, tmp_path, t7_paths, capsys):
    out = tmp_path / "f.h5"
    assert main(["describe", str(folder / "im0.png"), "-o", str(out), "--max-keypoints", "100"]) == 0
    argv = ["describe", str(folder), "-o", str(out), "--max-keypoints", "100", "--model", str(t7_paths["split4"])]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "weights_sha256" in err and "--overwrite" in err
    assert h5.list_images(out) == ["im0.png"]  # nothing was mixed in


def test_bad_images_are_skipped_with_a_summary(folder, tmp_path, capsys):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name in ("a.png", "c.png"):
        cv2.imwrite(str(mixed / name), _image(3))
    (mixed / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (mixed / "d.jpg").write_bytes(b"")
    out = tmp_path / "f.h5"
    code = main(["describe", str(mixed), "-o", str(out), "--model", "sift", "--max-keypoints", "50"])
    text = capsys.readouterr()
    assert code == 1  # something was skipped
    assert "4 images, 0 already in" in text.out and "2 described, 2 skipped: b.png, d.jpg" in text.out
    assert h5.list_images(out) == ["a.png", "c.png"]
    strict = ["describe", str(mixed), "-o", str(tmp_path / "g.h5"), "--model", "sift", "--strict"]
    assert main(strict) == 2
    assert "b.png" in capsys.readouterr().err


def test_output_problems_are_reported_before_any_work(folder, tmp_path, capsys, monkeypatch):
    not_hdf5 = tmp_path / "notes.h5"
    not_hdf5.write_text("plain text")

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr("deepdesc.features.extractor.load_model", no_model)
    start = time.perf_counter()
    assert main(["describe", str(folder), "-o", str(not_hdf5)]) == 2
    err = capsys.readouterr().err
    assert f"output {not_hdf5}" in err and "not HDF5" in err and "Traceback" not in err
    assert main(["describe", str(folder), "-o", str(not_hdf5 / "x.h5")]) == 2
    assert "cannot be created" in capsys.readouterr().err
    assert time.perf_counter() - start < 5


def test_half_written_image_is_invisible_to_hloc(tmp_path, monkeypatch):
    out = tmp_path / "f.h5"
    feats = {"keypoints": np.zeros((3, 2)), "descriptors": np.ones((3, 4)), "image_size": (10, 10)}
    h5.write_features(out, "a/ok.jpg", feats)
    original = h5py.Group.create_dataset

    def crash(self, name, *args, **kwargs):
        if name == "descriptors":
            raise KeyboardInterrupt  # killed mid-write
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", crash)
    with pytest.raises(KeyboardInterrupt):
        h5.write_features(out, "a/half.jpg", feats)
    monkeypatch.setattr(h5py.Group, "create_dataset", original)
    assert _hloc_list_h5_names(out) == ["a/ok.jpg"]
    assert h5.list_images(out) == ["a/ok.jpg"]
    h5.write_features(out, "a/half.jpg", feats)  # the next run writes it
    assert _hloc_list_h5_names(out) == ["a/half.jpg", "a/ok.jpg"]


def test_hloc_reading_rules_and_unit_norm(folder, tmp_path, t7_paths, caplog):
    """hloc reads keypoints (N, 2), descriptors (D, N), image_size; its NN matcher needs unit descriptors."""
    conf = {"extractor": "deepdesc", "model": str(t7_paths["split4"]), "max_keypoints": 100}
    raw = tmp_path / "raw.h5"
    with caplog.at_level("WARNING", logger="deepdesc"):
        extract.main(conf, [folder / "im0.png"], raw, progress=False)
    assert "not unit-norm" in caplog.text
    unit = tmp_path / "unit.h5"
    extract.main({**conf, "unit_norm": True}, [folder / "im0.png"], unit, progress=False)
    with h5py.File(unit, "r") as fd:
        grp = fd["im0.png"]
        n = grp["keypoints"].shape[0]
        assert grp["keypoints"].shape == (n, 2) and grp["descriptors"].shape == (128, n)
        assert tuple(grp["image_size"][()]) == (320, 240)
        np.testing.assert_allclose(np.linalg.norm(grp["descriptors"][()], axis=0), 1.0, atol=1e-5)
    assert h5.read_settings(unit)["unit_norm"] is True


def test_match_job_pairs_and_hloc_matches0(folder, tmp_path):
    feats = tmp_path / "f.h5"
    extract.main(SMALL, folder, feats, progress=False)
    names = h5.list_images(feats)
    assert match.exhaustive_pairs(names) == [("im0.png", "im1.png"), ("im0.png", "im2.png"), ("im1.png", "im2.png")]
    assert match.sequential_pairs(names, 1) == [("im0.png", "im1.png"), ("im1.png", "im2.png")]
    pairs_file = match.write_pairs(tmp_path / "pairs.txt", match.exhaustive_pairs(names))
    assert match.parse_pairs_option(str(pairs_file), names) == match.exhaustive_pairs(names)
    with pytest.raises(ValueError, match="sequential:K"):
        match.parse_pairs_option("sequential:x", names)
    matches_path = match.main("mutual-nn", pairs_file, feats, tmp_path / "m.h5", progress=False)
    with h5py.File(matches_path, "r") as fd:
        m0 = fd["im0.png/im1.png/matches0"][()]
    assert len(m0) == len(h5.read_features(feats, "im0.png")["keypoints"])  # hloc: one entry per keypoint
    assert (m0 >= 0).sum() > 0
    with pytest.raises(OutputMismatchError):
        match.main("ratio", pairs_file, feats, matches_path, progress=False)


def test_match_warns_when_verification_is_unreliable(tmp_path, capsys):
    rng = np.random.default_rng(0)
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    cv2.imwrite(str(a), cv2.GaussianBlur(rng.integers(0, 256, (240, 320)).astype(np.uint8), (0, 0), 2))
    cv2.imwrite(str(b), cv2.GaussianBlur(rng.integers(0, 256, (240, 320)).astype(np.uint8), (0, 0), 2))
    assert main(["match", str(a), str(b), "--model", "sift"]) == 0
    assert "unreliable" in capsys.readouterr().err
    assert main(["match", str(a), str(a), "--model", "sift"]) == 0
    assert "unreliable" not in capsys.readouterr().err


def test_small_input_errors_are_clear():
    from deepdesc import describe, detect_keypoints, load_image

    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        describe(np.zeros((1, 64, 64), np.uint8), device="gpu")
    with pytest.raises(ValueError, match="max_keypoints must be a whole number"):
        detect_keypoints(np.zeros((32, 32), np.uint8), max_keypoints=10.5)
    twelve_bit = (np.arange(64 * 64).reshape(64, 64) % 4096).astype(np.uint16)
    with pytest.warns(UserWarning, match="12-bit"):
        out = load_image(twelve_bit)
    assert out.max() == pytest.approx(255.0, abs=0.1)


def test_keypoints_outside_the_image_warn():
    from deepdesc import extract_patches

    image = _image(0)
    with pytest.warns(UserWarning, match="1 keypoint"):
        patches, kept = extract_patches(image, np.array([[10.0, 10.0, 5.0, 0.0], [5000.0, 10.0, 5.0, 0.0]]))
    assert len(kept) == 2
