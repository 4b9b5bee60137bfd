"""describe/match jobs on awkward input: same names from another folder, hloc pair-key collisions, large images
(resize_max, memory refusal), options checked before any work, files held by another process, space reuse."""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from deepdesc import extract, match
from deepdesc.cli import main
from deepdesc.errors import OutputMismatchError
from deepdesc.features import image as image_mod
from deepdesc.features.extractor import Extractor
from deepdesc.features.image import ImageTooLargeError, check_image_fits, keypoints_to_original
from deepdesc.features.types import Features
from deepdesc.io import h5

REPO = Path(__file__).resolve().parent.parent
SMALL = {"extractor": "sift", "max_keypoints": 150}


def _photo(seed: int, shape: tuple[int, int] = (200, 260)) -> np.ndarray:
    from skimage import data

    img = data.camera()
    rng = np.random.default_rng(seed)
    y, x = rng.integers(0, img.shape[0] - shape[0]), rng.integers(0, img.shape[1] - shape[1])
    return np.ascontiguousarray(img[y : y + shape[0], x : x + shape[1]])


def _scene(root: Path, seeds: list[int]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(seeds):
        cv2.imwrite(str(root / f"im{i}.png"), _photo(seed))
    return root


# ------------------------------------------------------------ same names from another folder


def test_same_names_from_another_folder_are_described_and_matched_again(tmp_path, caplog):
    a, b = _scene(tmp_path / "A", [1, 2, 3]), _scene(tmp_path / "B", [11, 12, 13])
    feats, matches = tmp_path / "f.h5", tmp_path / "m.h5"
    pairs = [("im0.png", "im1.png"), ("im1.png", "im2.png")]
    extract.main(SMALL, a, feats, progress=False)
    match.main("mutual-nn", pairs, feats, matches, progress=False)
    with caplog.at_level("WARNING", logger="deepdesc"):
        summary = extract.main(SMALL, b, feats, progress=False)
    assert summary.existing == [] and summary.described == ["im0.png", "im1.png", "im2.png"]
    assert set(summary.recomputed) == {"im0.png", "im1.png", "im2.png"} and "again" in str(summary)
    assert "another file" in caplog.text
    fresh = tmp_path / "fresh.h5"
    extract.main(SMALL, b, fresh, progress=False)
    for name in ("im0.png", "im1.png", "im2.png"):
        np.testing.assert_array_equal(
            h5.read_features(feats, name)["keypoints"], h5.read_features(fresh, name)["keypoints"]
        )
    with caplog.at_level("WARNING", logger="deepdesc"):
        match.main("mutual-nn", pairs, feats, matches, progress=False)
    assert "matched 2 pair(s) again" in caplog.text
    fresh_m = match.main("mutual-nn", pairs, fresh, tmp_path / "fresh_m.h5", progress=False)
    for p in pairs:
        np.testing.assert_array_equal(h5.read_matches(matches, *p)[0], h5.read_matches(fresh_m, *p)[0])
    # the same folder again: everything reused; a file edited since: that one only
    assert extract.main(SMALL, b, feats, progress=False).existing == ["im0.png", "im1.png", "im2.png"]
    cv2.imwrite(str(b / "im1.png"), _photo(21))
    again = extract.main(SMALL, b, feats, progress=False)
    assert again.described == ["im1.png"] and "changed" in again.recomputed["im1.png"]
    with h5py.File(feats, "r") as fd:
        grp = fd["im1.png"]
        assert grp.attrs[h5.SOURCE_ATTR] == str((b / "im1.png").resolve())
        assert grp.attrs[h5.FINGERPRINT_ATTR] == h5.file_fingerprint(b / "im1.png")


def test_a_stale_image_that_is_now_unreadable_leaves_no_features(tmp_path):
    a = _scene(tmp_path / "A", [1, 2])
    b = tmp_path / "B"
    b.mkdir()
    cv2.imwrite(str(b / "im0.png"), _photo(5))
    (b / "im1.png").write_bytes(b"not a png")
    feats = tmp_path / "f.h5"
    extract.main(SMALL, a, feats, progress=False)
    summary = extract.main(SMALL, b, feats, progress=False)
    assert list(summary.skipped) == ["im1.png"]
    assert h5.list_images(feats) == ["im0.png"]  # A's im1.png must not pass for B's


# ------------------------------------------------------------ hloc pair-key collisions


def test_pair_key_collision_is_refused_naming_both_images(tmp_path):
    names = ["a-0000.jpg", "a/0000.jpg", "b.jpg"]
    with pytest.raises(h5.PairCollisionError, match=r"'a-0000.jpg'.*'a/0000.jpg'"):
        match.check_pairs(match.exhaustive_pairs(names), names)
    rng = np.random.default_rng(0)
    feats = tmp_path / "f.h5"
    h5.check_settings(feats, {"extractor": "test"})
    for name in names:
        h5.write_features(feats, name, {"keypoints": rng.random((5, 2)) * 50, "descriptors": rng.random((5, 8))})
    with pytest.raises(h5.PairCollisionError, match="a/0000.jpg"):
        match.main("mutual-nn", [("a-0000.jpg", "b.jpg"), ("a/0000.jpg", "b.jpg")], feats, tmp_path / "m.h5")
    # across runs: the file's group records whose pair it is
    path = tmp_path / "m2.h5"
    h5.write_matches(path, "a-0000.jpg", "b.jpg", np.array([[0, 1]]))
    with h5py.File(path, "r") as fd:
        grp = fd["a-0000.jpg/b.jpg"]
        assert (grp.attrs["deepdesc_name0"], grp.attrs["deepdesc_name1"]) == ("a-0000.jpg", "b.jpg")
    with pytest.raises(h5.PairCollisionError, match=r"'a-0000.jpg' and 'b.jpg'.*'a/0000.jpg', 'b.jpg'"):
        h5.read_matches(path, "a/0000.jpg", "b.jpg")
    with pytest.raises(h5.PairCollisionError):
        h5.write_matches(path, "a/0000.jpg", "b.jpg", np.array([[0, 0]]), overwrite=True)
    with pytest.raises(h5.PairCollisionError):
        h5.write_matches(path, "b.jpg", "a/0000.jpg", np.array([[0, 0]]), overwrite=True)  # hloc tries both orders
    np.testing.assert_array_equal(h5.read_matches(path, "a-0000.jpg", "b.jpg")[0], [[0, 1]])
    np.testing.assert_array_equal(h5.read_matches(path, "b.jpg", "a-0000.jpg")[0], [[1, 0]])


# ------------------------------------------------------------ large images


def test_resize_max_reports_keypoints_in_original_pixels(tmp_path):
    img = cv2.resize(_photo(4, (240, 320)), (640, 480), interpolation=cv2.INTER_CUBIC)
    small = cv2.resize(img.astype(np.float32), (320, 240), interpolation=cv2.INTER_AREA)
    sift = extract.make_extractor({**SMALL, "resize_max": 320})
    got = sift.extract(img)
    ref = extract.make_extractor(SMALL).extract(small)
    assert got.image_size == (640, 480)
    np.testing.assert_allclose(got.keypoints, (ref.keypoints + 0.5) * 2 - 0.5, atol=1e-4)
    np.testing.assert_allclose(got.scales, ref.scales * 2, rtol=1e-5)
    np.testing.assert_array_equal(got.descriptors, ref.descriptors)
    assert sift.settings()["resize_max"] == 320


def test_resize_max_in_the_deepdesc_extractor_and_the_file_settings(tmp_path, t7_paths):
    img = cv2.resize(_photo(4, (240, 320)), (640, 480), interpolation=cv2.INTER_CUBIC)
    path = tmp_path / "big.png"
    cv2.imwrite(str(path), img)
    dd = Extractor(str(t7_paths["split4"]), max_keypoints=100, resize_max=320, device="cpu")
    got = dd.extract(path)
    ref = Extractor(str(t7_paths["split4"]), max_keypoints=100, device="cpu").extract(
        cv2.resize(img.astype(np.float32), (320, 240), interpolation=cv2.INTER_AREA)
    )
    assert got.image_size == (640, 480) and len(got) == len(ref)
    np.testing.assert_allclose(got.keypoints, (ref.keypoints + 0.5) * 2 - 0.5, atol=1e-3)
    np.testing.assert_allclose(got.descriptors, ref.descriptors, atol=1e-4)
    kps, desc = dd.compute(path, got.keypoint_array()[:10])  # compute() takes original-pixel keypoints too
    np.testing.assert_allclose(desc, got.descriptors[:10], atol=1e-4)
    out = tmp_path / "f.h5"
    extract.main({"extractor": "deepdesc", "model": str(t7_paths["split4"]), "max_keypoints": 100, "resize_max": 320},
                 [path], out, progress=False)  # fmt: skip
    assert h5.read_settings(out)["resize_max"] == 320
    assert h5.read_features(out, "big.png")["keypoints"][:, 0].max() > 320  # original pixels
    with pytest.raises(OutputMismatchError, match="resize_max: 320 in the file, None now"):
        extract.main({"extractor": "deepdesc", "model": str(t7_paths["split4"]), "max_keypoints": 100}, [path], out)


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header says width x height, without pixel data (decoding it fails)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = b""
    for kind, body in ((b"IHDR", ihdr), (b"IDAT", b"\x00" * 16), (b"IEND", b"")):
        data += struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + data)


def test_an_image_too_large_for_the_memory_is_refused_before_decoding(tmp_path, monkeypatch, capsys, caplog):
    with pytest.raises(ImageTooLargeError, match=r"12000x12000.*--resize-max\) \d+00 or less"):
        check_image_fits((12000, 12000), None, available=8 * 2**30)
    assert check_image_fits((12000, 12000), 1600, available=8 * 2**30) < 3 * 2**30
    assert check_image_fits((6000, 4000), None, available=8 * 2**30) > 5 * 2**30  # ~240 B/px: fits in 8 GiB
    folder = tmp_path / "imgs"
    folder.mkdir()
    _png_header_only(folder / "huge.png", 12000, 12000)
    assert image_mod.image_file_size(folder / "huge.png") == (12000, 12000)
    _png_header_only(tmp_path / "huger.png", 30000, 20000)  # beyond Pillow's decompression-bomb limit
    assert image_mod.image_file_size(tmp_path / "huger.png") == (30000, 20000)
    cv2.imwrite(str(folder / "ok.png"), _photo(1))
    monkeypatch.setattr(image_mod, "available_memory", lambda: 8 * 2**30)
    decoded = []
    original = image_mod.decode_image
    monkeypatch.setattr(
        image_mod, "decode_image", lambda data, name="": decoded.append(str(name)) or original(data, name)
    )
    with caplog.at_level("WARNING", logger="deepdesc"):
        code = main(["describe", str(folder), "-o", str(tmp_path / "f.h5"), "--model", "sift", "--max-keypoints", "50"])
    assert code == 1 and "1 skipped: huge.png" in capsys.readouterr().out
    assert "12000x12000" in caplog.text and "--resize-max" in caplog.text
    assert not any("huge" in n for n in decoded)  # refused from the header


def test_load_image_converts_colour_without_a_float_copy_of_all_channels():
    import tracemalloc

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (600, 800, 3), dtype=np.uint8)
    tracemalloc.start()
    gray = image_mod.load_image(rgb)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2.5 * gray.nbytes  # the result and one float plane, not an (H, W, 3) float32 copy
    expected = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    np.testing.assert_allclose(gray, expected, atol=0.51)


def test_keypoints_to_original_inverts_the_resize():
    kpts = np.array([[0.0, 0.0, 4.0, 10.0, 0.5], [9.5, 4.25, 2.0, 0.0, 1.0]], np.float32)
    out = keypoints_to_original(kpts, (0.5, 0.25))
    np.testing.assert_allclose(out[:, 0], [0.5, 19.5])
    np.testing.assert_allclose(out[:, 1], [1.5, 18.5])
    np.testing.assert_allclose(out[:, 2], kpts[:, 2] / 0.375)
    np.testing.assert_array_equal(out[:, 3:], kpts[:, 3:])


# ------------------------------------------------------------ options checked before any work


@pytest.fixture
def no_work(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("work started before the options were checked")

    monkeypatch.setattr("deepdesc.features.extractor.load_model", refuse)
    monkeypatch.setattr(image_mod, "decode_image", refuse)
    monkeypatch.setattr(match, "match_pair", refuse)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["describe", "{img}", "-o", "{out}", "--max-keypoints", "-5"], "max_keypoints (--max-keypoints)"),
        (["describe", "{img}", "-o", "{out}", "--resize-max", "0"], "resize_max (--resize-max)"),
        (["match", "{img}", "{img}", "--threshold", "-5"], "--threshold"),
        (["match", "{img}", "{img}", "--ratio", "1.5"], "(0, 1]"),
        (["match", "{img}", "{img}", "--ratio", "0"], "(0, 1]"),
        (["match", "{img}", "{img}", "--max-keypoints", "-5", "--model", "sift"], "--max-keypoints"),
        (["match", "{img}", "{img}", "-o", "{file}/pic.png"], "cannot write into"),
        (["match", "{img}", "{img}", "-o", "{dir}"], "is a folder"),
    ],
)
def test_bad_options_are_refused_before_any_work(tmp_path, no_work, capsys, argv, message):
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), _photo(0))
    (tmp_path / "file").write_text("x")
    fields = {"img": img, "out": tmp_path / "f.h5", "file": tmp_path / "file", "dir": tmp_path}
    assert main([a.format(**fields) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_pairs_files_are_checked_before_matching(tmp_path, no_work, caplog):
    rng = np.random.default_rng(0)
    feats = tmp_path / "f.h5"
    h5.check_settings(feats, {"extractor": "test"})
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        h5.write_features(feats, name, {"keypoints": rng.random((5, 2)) * 50, "descriptors": rng.random((5, 8))})
    cases = {"empty.txt": ("# nothing\n\n", "no pairs"), "bad.txt": ("a.jpg b.jpg c.jpg\n", "line 1")}
    cases["missing.txt"] = ("a.jpg b.jpg\na.jpg x.jpg\n", "x.jpg")
    for file, (text, message) in cases.items():
        (tmp_path / file).write_text(text)
        with pytest.raises(ValueError, match=message):
            match.main("mutual-nn", tmp_path / file, feats, tmp_path / "m.h5", progress=False)
    with pytest.raises(ValueError, match="with itself"):
        match.check_pairs([("a.jpg", "a.jpg")])
    with pytest.raises(ValueError, match="white space"):
        match.check_pairs([("my photo.jpg", "b.jpg")])
    with pytest.raises(ValueError, match="white space"):
        match.write_pairs(tmp_path / "p.txt", [("my photo.jpg", "b.jpg")])
    with pytest.raises(ValueError, match="white space"):
        match.parse_pairs_option("exhaustive", ["my photo.jpg", "b.jpg"])
    with caplog.at_level("WARNING", logger="deepdesc"):
        pairs = match.check_pairs([("a.jpg", "b.jpg"), ("b.jpg", "a.jpg"), ("a.jpg", "c.jpg"), ("a.jpg", "b.jpg")])
    assert pairs == [("a.jpg", "b.jpg"), ("a.jpg", "c.jpg")] and "2 pair(s) listed twice" in caplog.text
    with pytest.raises(ValueError, match="ratio"):
        match.main({"mutual": True, "ratio": 2.0}, [("a.jpg", "b.jpg")], feats, tmp_path / "m.h5")


def test_a_file_without_any_image_does_not_block_the_corrected_rerun(tmp_path):
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), _photo(0))
    out = tmp_path / "f.h5"
    h5.check_settings(out, {**extract.make_extractor(SMALL).settings(), "descriptor_dtype": "float32"})  # a failed run
    assert extract.main({**SMALL, "max_keypoints": 60}, [img], out, progress=False).described == ["a.png"]
    assert h5.read_settings(out)["max_keypoints"] == 60


# ------------------------------------------------------------ a file another process holds open

_HOLDER = textwrap.dedent(
    """
    import sys, time, h5py
    with h5py.File(sys.argv[1], sys.argv[2]):
        print("ready", flush=True)
        time.sleep(30)
    """
)


@pytest.mark.parametrize("mode", ["a", "r"])
def test_a_file_held_by_another_process_is_named(tmp_path, capsys, mode):
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), _photo(0))
    out = tmp_path / "features.h5"
    extract.main(SMALL, [img], out, progress=False)
    env = {k: v for k, v in os.environ.items() if k != "HDF5_USE_FILE_LOCKING"}
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out), mode], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        with pytest.raises(h5.FileInUseError, match="open in another process"):
            h5.write_features(out, "b.png", {"keypoints": np.zeros((1, 2)), "descriptors": np.zeros((1, 8))})
        assert main(["describe", str(img), "-o", str(out), "--model", "sift", "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert str(out) in err and "another process" in err and "Unable to synchronously" not in err
    finally:
        proc.kill()
        proc.wait()


# ------------------------------------------------------------ space and temporary files


class _FakeExtractor:
    """Stands in for the network: 4000 random 128-D features per image (2 MB), instantly."""

    def settings(self):
        return {"extractor": "fake"}

    def prepare(self, path):
        return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).shape

    def finish(self, shape):
        rng = np.random.default_rng()
        n = 4000
        return Features(
            rng.random((n, 2), dtype=np.float32) * 100, np.ones(n, np.float32), np.zeros(n, np.float32),
            np.ones(n, np.float32), rng.random((n, 128), dtype=np.float32), (shape[1], shape[0]),
        )  # fmt: skip


def test_overwrite_keeps_the_file_size_bounded_and_old_temp_files_go(tmp_path):
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), _photo(0))
    out = tmp_path / "f.h5"
    extract.main(SMALL, [img], out, extractor=_FakeExtractor(), progress=False)
    first = out.stat().st_size
    assert first > 2e6
    for _ in range(8):
        extract.main(SMALL, [img], out, extractor=_FakeExtractor(), overwrite=True, progress=False)
    assert out.stat().st_size < 2.2 * first
    assert h5.list_images(out) == ["a.png"] and len(h5.read_features(out, "a.png")["keypoints"]) == 4000
    left = tmp_path / ".f.h5.k1ll3d.tmp"
    left.write_bytes(b"half a copy")
    busy = tmp_path / ".f.h5.busy.tmp"
    busy.write_bytes(b"being written")
    with open(busy, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_SH)  # a live writer (HDF5 locks the files it has open)
        extract.main(SMALL, [img], out, extractor=_FakeExtractor(), progress=False)
    assert not left.exists() and busy.exists()


def test_compact_keeps_groups_attributes_and_settings(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "f.h5"
    h5.check_settings(path, {"extractor": "x"})
    for i in range(5):
        h5.write_features(
            path, f"d/im{i}.jpg", {"keypoints": rng.random((300, 2)), "descriptors": rng.random((300, 64))}
        )
    h5.write_features(
        path, "d/im0.jpg", {"keypoints": rng.random((3, 2)), "descriptors": rng.random((3, 64))}, overwrite=True
    )
    before = h5.image_records(path)
    assert h5.compact(path, min_waste=0)
    assert h5.image_records(path) == before and h5.read_settings(path) == {"extractor": "x"}
    assert h5.read_features(path, "d/im0.jpg")["keypoints"].shape == (3, 2)


# ------------------------------------------------------------ match pictures


def test_match_picture_of_float_and_16_bit_tiffs(tmp_path, capsys):
    base = _photo(3, (240, 320)).astype(np.float32)
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    cv2.imwrite(str(a), base / 255.0)  # float32 0..1
    cv2.imwrite(str(b), (base * 257).astype(np.uint16))
    pic = tmp_path / "pic.png"
    assert main(["match", str(a), str(b), "--model", "sift", "-o", str(pic)]) == 0
    assert "Traceback" not in capsys.readouterr().err
    drawn = cv2.imread(str(pic))
    assert drawn.shape[0] == 240 and drawn.shape[1] > 640
    from deepdesc.features.image import read_image

    np.testing.assert_allclose(read_image(a, "gray").astype(float), base, atol=1.01)


def test_cli_resize_max_is_recorded_and_keypoints_stay_in_original_pixels(tmp_path):
    img = tmp_path / "wide.png"
    cv2.imwrite(str(img), cv2.resize(_photo(2, (240, 320)), (640, 480), interpolation=cv2.INTER_CUBIC))
    out = tmp_path / "f.h5"
    assert main(["describe", str(img), "-o", str(out), "--model", "sift", "--resize-max", "200"]) == 0
    assert h5.read_settings(out)["resize_max"] == 200
    feats = h5.read_features(out, "wide.png")
    assert tuple(feats["image_size"]) == (640, 480) and feats["keypoints"][:, 0].max() > 400
