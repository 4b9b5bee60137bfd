"""HDF5 features/matches in hloc's layout, COLMAP database export, match plots."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from deepdesc.io import h5 as io_h5
from deepdesc.io.h5 import (
    has_image,
    has_matches,
    list_images,
    names_to_pair,
    read_features,
    read_matches,
    write_features,
    write_matches,
)

REPO = Path(__file__).resolve().parent.parent


def make_features(rng: np.random.Generator, n: int, dim: int = 128, size=(640, 480)) -> dict[str, np.ndarray]:
    kpts = np.c_[
        rng.uniform(0, size[0] - 1, n),
        rng.uniform(0, size[1] - 1, n),
        rng.uniform(2, 30, n),  # size (diameter, px)
        rng.uniform(0, 360, n),  # angle (degrees)
        rng.uniform(0, 1, n),  # response
    ].astype(np.float32)
    return {"keypoints": kpts, "descriptors": rng.random((n, dim), dtype=np.float32), "image_size": np.array(size)}


# ---------------------------------------------------------------- features


def test_features_roundtrip_hloc_layout(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "feats.h5"
    feats = make_features(rng, 50)
    write_features(path, "seq/a/img0.jpg", feats)
    write_features(path, "img1.png", make_features(rng, 0))

    assert list_images(path) == ["img1.png", "seq/a/img0.jpg"]
    assert has_image(path, "seq/a/img0.jpg") and not has_image(path, "seq/a") and not has_image(path, "nope.jpg")
    assert not has_image(tmp_path / "missing.h5", "img1.png")

    out = read_features(path, "seq/a/img0.jpg")
    np.testing.assert_array_equal(out["keypoints"], feats["keypoints"][:, :2])
    np.testing.assert_array_equal(out["descriptors"], feats["descriptors"])
    np.testing.assert_array_equal(out["scales"], feats["keypoints"][:, 2])
    np.testing.assert_array_equal(out["angles"], feats["keypoints"][:, 3])
    np.testing.assert_array_equal(out["scores"], feats["keypoints"][:, 4])
    np.testing.assert_array_equal(out["image_size"], [640, 480])
    assert out["keypoints"].dtype == out["descriptors"].dtype == np.float32
    assert out["descriptors"].flags.c_contiguous

    # Raw layout as hloc reads it: nested groups, (N, 2) keypoints, (D, N) descriptors, (w, h) image size.
    with h5py.File(path, "r") as fd:
        grp = fd["seq"]["a"]["img0.jpg"]
        assert grp["keypoints"].shape == (50, 2) and grp["keypoints"].dtype == np.float32
        assert grp["descriptors"].shape == (128, 50) and grp["descriptors"].dtype == np.float32
        assert grp["scores"].shape == grp["scales"].shape == grp["angles"].shape == (50,)
        assert tuple(grp["image_size"][()]) == (640, 480)

    empty = read_features(path, "img1.png")
    assert empty["keypoints"].shape == (0, 2) and empty["descriptors"].shape == (0, 128)


def test_features_half_and_two_column_keypoints(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "feats.h5"
    kpts = rng.uniform(0, 4000, (20, 2)).astype(np.float32)
    desc = rng.random((20, 64), dtype=np.float32)
    write_features(path, "x.jpg", {"keypoints": kpts, "descriptors": desc, "scores": np.ones(20)}, as_half=True)
    with h5py.File(path, "r") as fd:
        assert fd["x.jpg"]["descriptors"].dtype == np.float16
        assert fd["x.jpg"]["keypoints"].dtype == np.float32  # keypoints never halved
        assert set(fd["x.jpg"]) == {"keypoints", "descriptors", "scores"}
    out = read_features(path, "x.jpg")
    np.testing.assert_array_equal(out["keypoints"], kpts)
    np.testing.assert_allclose(out["descriptors"], desc, atol=1e-3)
    assert out["descriptors"].dtype == np.float32 and "image_size" not in out


def test_features_torch_input(tmp_path):
    torch = pytest.importorskip("torch")
    feats = {"keypoints": torch.rand(5, 5), "descriptors": torch.rand(5, 128)}
    write_features(tmp_path / "f.h5", "t.jpg", feats)
    np.testing.assert_allclose(read_features(tmp_path / "f.h5", "t.jpg")["descriptors"], feats["descriptors"].numpy())


def test_features_overwrite_and_errors(tmp_path):
    rng = np.random.default_rng(2)
    path = tmp_path / "feats.h5"
    write_features(path, "a.jpg", make_features(rng, 5))
    with pytest.raises(FileExistsError):
        write_features(path, "a.jpg", make_features(rng, 6))
    write_features(path, "a.jpg", make_features(rng, 7), overwrite=True)
    assert read_features(path, "a.jpg")["keypoints"].shape == (7, 2)
    with pytest.raises(KeyError, match="b.jpg"):
        read_features(path, "b.jpg")
    bad = [
        ({"keypoints": np.zeros((5, 3)), "descriptors": np.zeros((5, 8))}, "keypoints"),
        ({"keypoints": np.zeros((5, 2)), "descriptors": np.zeros((4, 8))}, "descriptors"),
        ({"keypoints": np.zeros((5, 2))}, "descriptors"),
        ({"keypoints": np.zeros((5, 2)), "descriptors": np.zeros((5, 8)), "scores": np.zeros(4)}, "scores"),
        ({"keypoints": np.zeros((5, 2)), "descriptors": np.zeros((5, 8)), "colour": np.zeros(5)}, "unknown"),
        ({"keypoints": np.zeros((5, 2)), "descriptors": np.zeros((5, 8)), "image_size": [1, 2, 3]}, "image_size"),
    ]
    for feats, match in bad:
        with pytest.raises(ValueError, match=match):
            write_features(path, "c.jpg", feats)
    for name in ["", "/abs.jpg", "a//b.jpg", "../up.jpg", "a/./b.jpg"]:
        with pytest.raises(ValueError, match="name"):
            write_features(path, name, make_features(rng, 1))
    write_features(path, "dir/img.jpg", make_features(rng, 1))
    with pytest.raises(ValueError, match="folder"):
        write_features(path, "dir", make_features(rng, 1), overwrite=True)
    assert list_images(path) == ["a.jpg", "dir/img.jpg"]


def test_incomplete_group_is_ignored_and_replaced(tmp_path):
    rng = np.random.default_rng(3)
    path = tmp_path / "feats.h5"
    write_features(path, "ok.jpg", make_features(rng, 3))
    with h5py.File(path, "a") as fd:  # what an interrupted write leaves behind
        grp = fd.create_group("dir/cut.jpg")
        grp.attrs[io_h5.COMPLETE_ATTR] = False
        grp.create_dataset("keypoints", data=np.zeros((3, 2), np.float32))
    assert not has_image(path, "dir/cut.jpg")
    assert list_images(path) == ["ok.jpg"]
    with pytest.raises(KeyError):
        read_features(path, "dir/cut.jpg")
    write_features(path, "dir/cut.jpg", make_features(rng, 4))  # no overwrite needed
    assert list_images(path) == ["dir/cut.jpg", "ok.jpg"]


def test_foreign_groups_without_marker_count_as_complete(tmp_path):
    path = tmp_path / "hloc.h5"
    with h5py.File(path, "w") as fd:  # as hloc writes it
        grp = fd.create_group("q/1.jpg")
        grp.create_dataset("keypoints", data=np.ones((4, 2), np.float16))
        grp.create_dataset("descriptors", data=np.ones((256, 4), np.float16))
    assert list_images(path) == ["q/1.jpg"] and has_image(path, "q/1.jpg")
    out = read_features(path, "q/1.jpg")
    assert out["keypoints"].dtype == np.float32 and out["descriptors"].shape == (4, 256)


_WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from deepdesc.io.h5 import write_features, has_image
    path = sys.argv[1]
    rng = np.random.default_rng(0)
    written = 0
    for i in range(400):  # bounded: at most ~0.4 GB if never killed
        name = f"seq{i % 3}/img{i:05d}.jpg"
        if has_image(path, name):
            continue
        n = 2000
        write_features(path, name, {"keypoints": rng.random((n, 5), dtype=np.float32) * 100,
                                    "descriptors": rng.random((n, 128), dtype=np.float32)})
        written += 1
        if written == 1:
            print("started", flush=True)
    """
)


def test_killed_writer_leaves_readable_resumable_file(tmp_path):
    path = tmp_path / "feats.h5"
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for delay in (0.3, 0.45):
        proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, env=env)
        try:
            assert proc.stdout.readline().strip() == b"started"
            time.sleep(delay)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert proc.returncode == -signal.SIGKILL, "the writer finished before it was killed"
        names = list_images(path)
        assert len(names) >= 1
        for name in names:
            feats = read_features(path, name)
            assert feats["keypoints"].shape == (2000, 2) and feats["descriptors"].shape == (2000, 128)
    # Resume: every image is written once, in order, without gaps.
    names = list_images(path)
    indices = sorted(int(n.split("img")[1][:5]) for n in names)
    assert indices == list(range(len(indices)))


# ---------------------------------------------------------------- matches


def test_names_to_pair_matches_hloc():
    assert names_to_pair("a/b.jpg", "c/d/e.jpg") == "a-b.jpg/c-d-e.jpg"
    assert names_to_pair("a/b.jpg", "c.jpg", separator="_") == "a-b.jpg_c.jpg"


def test_matches_roundtrip_and_reversed_lookup(tmp_path):
    path = tmp_path / "matches.h5"
    m = np.array([[0, 5], [3, 1], [7, 7]])
    s = np.array([0.1, 0.2, 0.3], np.float32)
    write_matches(path, "a/x.jpg", "b/y.jpg", m, s, num_keypoints0=10)
    with h5py.File(path, "r") as fd:
        grp = fd["a-x.jpg"]["b-y.jpg"]
        np.testing.assert_array_equal(grp["matches0"][()], [5, -1, -1, 1, -1, -1, -1, 7, -1, -1])
        assert grp["matching_scores0"].shape == (10,)
    got, got_s = read_matches(path, "a/x.jpg", "b/y.jpg")
    np.testing.assert_array_equal(got, m)
    np.testing.assert_array_equal(got_s, s)
    assert got.dtype == np.int64 and got_s.dtype == np.float32
    rev, rev_s = read_matches(path, "b/y.jpg", "a/x.jpg")
    np.testing.assert_array_equal(rev, [[1, 3], [5, 0], [7, 7]])
    np.testing.assert_array_equal(rev_s, s[[1, 0, 2]])
    assert has_matches(path, "b/y.jpg", "a/x.jpg") and not has_matches(path, "a/x.jpg", "c.jpg")
    with pytest.raises(FileExistsError):
        write_matches(path, "b/y.jpg", "a/x.jpg", m)
    write_matches(path, "b/y.jpg", "a/x.jpg", m[:1], overwrite=True)  # replaces the reversed entry
    got, got_s = read_matches(path, "a/x.jpg", "b/y.jpg")
    np.testing.assert_array_equal(got, [[5, 0]])
    np.testing.assert_array_equal(got_s, [1.0])
    with pytest.raises(KeyError):
        read_matches(path, "a/x.jpg", "c.jpg")


def test_pairs_to_match_reads_the_file_once_and_finds_new_stale_and_reversed_pairs(tmp_path, monkeypatch, caplog):
    path = tmp_path / "m.h5"
    records = {name: {"digest": f"d-{name}"} for name in ("a", "b", "c", "d")}
    m = np.array([[0, 1]])
    write_matches(path, "a", "b", m, features_digests=("d-a", "d-b"))  # current
    write_matches(path, "c", "a", m, features_digests=("d-c", "d-a"))  # current, stored the other way round
    write_matches(path, "b", "c", m, features_digests=("old", "d-c"))  # b changed since
    pairs = [("a", "b"), ("a", "c"), ("b", "c"), ("c", "d")]
    assert io_h5.pair_records(path, pairs) == {
        ("a", "b"): ("d-a", "d-b"),
        ("a", "c"): ("d-a", "d-c"),
        ("b", "c"): ("old", "d-c"),
        ("c", "d"): None,
    }
    assert all(io_h5.pair_record(path, *pair) == io_h5.pair_records(path, [pair])[pair] for pair in pairs)
    opened = []
    real_open = io_h5.open_h5
    monkeypatch.setattr(io_h5, "open_h5", lambda *args, **kwargs: opened.append(args) or real_open(*args, **kwargs))
    with caplog.at_level("WARNING", logger="deepdesc"):
        assert io_h5.pairs_to_match(path, pairs, records, overwrite=False) == [("b", "c"), ("c", "d")]
    assert len(opened) == 1
    assert "matched 1 pair(s) again" in caplog.text
    assert io_h5.pairs_to_match(path, pairs, records, overwrite=True) == pairs
    assert io_h5.pairs_to_match(tmp_path / "none.h5", pairs, records, overwrite=False) == pairs


def test_matches_empty_and_errors(tmp_path):
    path = tmp_path / "matches.h5"
    write_matches(path, "a.jpg", "b.jpg", np.zeros((0, 2), np.int64))
    got, scores = read_matches(path, "a.jpg", "b.jpg")
    assert got.shape == (0, 2) and scores.shape == (0,)
    with pytest.raises(ValueError, match="several"):
        write_matches(path, "c.jpg", "d.jpg", np.array([[0, 1], [0, 2]]))
    with pytest.raises(ValueError, match="num_keypoints0"):
        write_matches(path, "c.jpg", "d.jpg", np.array([[5, 1]]), num_keypoints0=3)
    with pytest.raises(ValueError, match=r"\(K, 2\)"):
        write_matches(path, "c.jpg", "d.jpg", np.array([[0.5, 1.0]]))
    with pytest.raises(ValueError, match="scores"):
        write_matches(path, "c.jpg", "d.jpg", np.array([[0, 1]]), scores=[1.0, 2.0])


def test_matches_hloc_old_separator_and_int16(tmp_path):
    path = tmp_path / "old.h5"
    with h5py.File(path, "w") as fd:  # hloc: int16 matches0, float16 scores, old "_" pair key
        grp = fd.create_group("q.jpg_r.jpg")
        grp.create_dataset("matches0", data=np.array([-1, 2, 0], np.int16))
        grp.create_dataset("matching_scores0", data=np.array([0, 0.5, 0.25], np.float16))
    got, scores = read_matches(path, "r.jpg", "q.jpg")
    np.testing.assert_array_equal(got, [[0, 2], [2, 1]])
    np.testing.assert_array_equal(scores, [0.25, 0.5])


# ---------------------------------------------------------------- COLMAP


def test_export_to_colmap_roundtrip(tmp_path):
    pycolmap = pytest.importorskip("pycolmap")
    import cv2

    from deepdesc.io.colmap import COLMAP_ORIGIN_SHIFT, descriptors_to_uint8, export_to_colmap

    rng = np.random.default_rng(5)
    image_dir = tmp_path / "images"
    (image_dir / "sub").mkdir(parents=True)
    names = ["sub/a.png", "b.png", "c.png"]
    sizes = {"sub/a.png": (64, 48), "b.png": (80, 60), "c.png": (64, 48)}
    features = {}
    for i, name in enumerate(names):
        w, h = sizes[name]
        feats = make_features(rng, 20 + 5 * i, size=(w, h))
        if name == "sub/a.png":  # size read from the file
            del feats["image_size"]
            cv2.imwrite(str(image_dir / name), np.zeros((h, w), np.uint8))
        features[name] = feats
    matches = {
        ("sub/a.png", "b.png"): np.array([[0, 1], [2, 3], [4, 5], [6, 7]]),
        ("c.png", "sub/a.png"): np.array([[1, 0], [3, 2]]),  # written in the reverse of image-id order
        ("b.png", "c.png"): np.zeros((0, 2), np.int64),
    }
    masks = {("sub/a.png", "b.png"): np.array([True, False, True, True])}
    db_path = tmp_path / "db" / "database.db"
    ids = export_to_colmap(db_path, image_dir, features, matches, verified=True, inlier_masks=masks)
    assert sorted(ids) == sorted(names)
    assert sorted(os.listdir(db_path.parent)) == ["database.db"]  # no temporary or WAL files left

    db = pycolmap.Database.open(db_path)
    try:
        images = {img.name: img for img in db.read_all_images()}
        assert sorted(images) == sorted(names)
        cameras = {cam.camera_id: cam for cam in db.read_all_cameras()}
        assert db.num_rigs() == db.num_frames() == 3 and len(cameras) == 3
        for name in names:
            image = images[name]
            assert ids[name] == image.image_id
            camera = cameras[image.camera_id]
            assert (camera.width, camera.height) == sizes[name]
            assert camera.model_name == "SIMPLE_RADIAL"
            assert camera.focal_length == pytest.approx(1.2 * max(sizes[name]))
            kpts = db.read_keypoints(image.image_id)
            np.testing.assert_allclose(kpts[:, :2], features[name]["keypoints"][:, :2] + COLMAP_ORIGIN_SHIFT)
            desc = db.read_descriptors(image.image_id)
            np.testing.assert_array_equal(desc.data, descriptors_to_uint8(features[name]["descriptors"]))
            assert desc.type == pycolmap.FeatureExtractorType.SIFT
        a, b, c = ids["sub/a.png"], ids["b.png"], ids["c.png"]
        np.testing.assert_array_equal(db.read_matches(a, b), matches[("sub/a.png", "b.png")])
        np.testing.assert_array_equal(db.read_matches(c, a), matches[("c.png", "sub/a.png")])
        np.testing.assert_array_equal(db.read_matches(a, c), matches[("c.png", "sub/a.png")][:, ::-1])
        geometry = db.read_two_view_geometry(a, b)
        np.testing.assert_array_equal(geometry.inlier_matches, [[0, 1], [4, 5], [6, 7]])
        assert geometry.config == pycolmap.TwoViewGeometryConfiguration.UNCALIBRATED
        np.testing.assert_array_equal(db.read_two_view_geometry(c, a).inlier_matches, [[1, 0], [3, 2]])
        assert db.num_matches() == 6 and db.num_inlier_matches() == 5
    finally:
        db.close()

    with pytest.raises(FileExistsError):
        export_to_colmap(db_path, image_dir, features, matches)
    ids = export_to_colmap(
        db_path, image_dir, features, matches, overwrite=True, descriptor_format="float32", camera_model="PINHOLE"
    )
    db = pycolmap.Database.open(db_path)
    try:
        assert db.num_inlier_matches() == 0 and db.num_matches() == 6
        raw = db.read_descriptors(ids["b.png"]).data
        np.testing.assert_array_equal(raw.view(np.float32), features["b.png"]["descriptors"])
        assert db.read_all_cameras()[0].model_name == "PINHOLE"
    finally:
        db.close()


def test_export_to_colmap_single_camera_and_errors(tmp_path):
    pycolmap = pytest.importorskip("pycolmap")
    from deepdesc.io.colmap import export_to_colmap

    rng = np.random.default_rng(6)
    features = {n: make_features(rng, 10) for n in ["a.jpg", "b.jpg"]}
    matches = {("a.jpg", "b.jpg"): np.array([[0, 0]])}
    ids = export_to_colmap(tmp_path / "one.db", None, features, matches, single_camera=True, descriptor_format=None)
    db = pycolmap.Database.open(tmp_path / "one.db")
    try:
        assert db.num_cameras() == 1 and db.num_images() == 2 and db.num_descriptors() == 0
        assert db.read_keypoints(ids["a.jpg"]).shape == (10, 2)
    finally:
        db.close()
    cases = [
        ({("a.jpg", "zzz.jpg"): np.array([[0, 0]])}, {}, "without features"),
        ({("a.jpg", "b.jpg"): np.array([[0, 10]])}, {}, "out of range"),
        ({("a.jpg", "b.jpg"): np.array([[0, 1]])}, {"camera_model": "BOGUS"}, "camera model"),
        ({("a.jpg", "b.jpg"): np.array([[0, 1]])}, {"descriptor_format": "int4"}, "descriptor_format"),
        ({("a.jpg", "b.jpg"): np.array([[0, 1]])}, {"inlier_masks": {("a.jpg", "b.jpg"): [1, 0]}}, "inlier mask"),
    ]
    for bad_matches, kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            export_to_colmap(tmp_path / "bad.db", None, features, bad_matches, **kwargs)
    assert not (tmp_path / "bad.db").exists()
    no_size = {"a.jpg": {k: v for k, v in features["a.jpg"].items() if k != "image_size"}}
    with pytest.raises(FileNotFoundError):
        export_to_colmap(tmp_path / "bad.db", tmp_path, no_size, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.db"]


def test_descriptors_to_uint8():
    from deepdesc.io.colmap import descriptors_to_uint8

    x = np.array([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    np.testing.assert_array_equal(descriptors_to_uint8(x), [[255, 255, 0], [0, 0, 0], [0, 128, 128]])
    y = np.array([[0.1, 0.2, 0.05]])
    expected = np.minimum(255, np.round(512 * y / np.linalg.norm(y)))
    np.testing.assert_array_equal(descriptors_to_uint8(y), expected)


# ---------------------------------------------------------------- plots


@pytest.mark.parametrize("with_mask", [True, False])
def test_plot_matches_writes_png(tmp_path, with_mask):
    import matplotlib.image

    from deepdesc.viz import plot_matches

    rng = np.random.default_rng(7)
    image1 = rng.integers(0, 256, (60, 80), dtype=np.uint8)
    image2 = rng.random((50, 70, 3))
    k1 = rng.uniform(0, 60, (30, 5))
    k2 = rng.uniform(0, 50, (25, 2))
    matches = np.stack([np.arange(20), rng.integers(0, 25, 20)], 1)
    mask = rng.random(20) < 0.5 if with_mask else None
    path = tmp_path / "out" / "matches.png"
    fig = plot_matches(image1, image2, k1, k2, matches, inlier_mask=mask, path=path, title="test")
    assert fig is not None
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = matplotlib.image.imread(path)
    assert img.shape[:2] == (60, 80 + 10 + 70)
    assert sorted(p.name for p in path.parent.iterdir()) == ["matches.png"]
    if with_mask:  # a pure green and a pure red-ish line pixel both appear
        rgb = img[..., :3]
        assert ((rgb[..., 1] > 0.6) & (rgb[..., 0] < 0.4) & (rgb[..., 2] < 0.4)).any()
        assert ((rgb[..., 0] > 0.6) & (rgb[..., 1] < 0.4) & (rgb[..., 2] < 0.4)).any()


def test_plot_matches_no_matches_and_errors(tmp_path):
    from deepdesc.viz import plot_matches

    image = np.zeros((20, 30), np.uint8)
    plot_matches(image, image, np.zeros((0, 2)), np.zeros((0, 2)), np.zeros((0, 2), int), path=tmp_path / "e.png")
    assert (tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="out of range"):
        plot_matches(image, image, np.zeros((1, 2)), np.zeros((1, 2)), np.array([[0, 1]]))
    with pytest.raises(ValueError, match="inlier_mask"):
        plot_matches(image, image, np.zeros((1, 2)), np.zeros((1, 2)), np.array([[0, 0]]), inlier_mask=[1, 0])
    with pytest.raises(ValueError, match="image"):
        plot_matches(np.zeros((2, 3, 5)), image, np.zeros((1, 2)), np.zeros((1, 2)), np.array([[0, 0]]))
