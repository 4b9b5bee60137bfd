"""Multi-view training patches (deepdesc.train.multiview, ``deepdesc make-patches``).

A synthetic Strecha scene with exact geometry: two textured planes (a wall and a smaller panel in front of it)
rendered into five views with cv2.warpPerspective from the plane-induced homographies of known cameras, plus
spots that exist in one view only (distractors by construction). And a smoke run on six real views of castle-P30.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from deepdesc.cli import main
from deepdesc.datasets.phototour import PhotoTour, write_phototour
from deepdesc.datasets.scenes import Camera, Scene, fundamental_matrix, load_strecha_scene
from deepdesc.train.multiview import (
    MultiviewConfig,
    build_multiview,
    cut_patches,
    make_patches,
    split_multiview,
    symmetric_epipolar_error,
    validation_views,
)
from deepdesc.train.multiview.geometry import reprojection_errors
from deepdesc.train.multiview.writing import no_validation_reason
from deepdesc.train.sources import build_sources

from .conftest import require_shared

WIDTH, HEIGHT, FOCAL = 400, 300, 400.0
WALL_Z, WALL_HALF = 10.0, 10.0  # plane z = 10, |x|, |y| <= 10
PANEL_Z, PANEL_HALF = 6.0, 1.2  # plane z = 6 in front of it, |x|, |y| <= 1.2
SPOTS_PER_VIEW = 6


def _texture(size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tex = np.zeros((size, size), np.float32)
    for sigma, weight in ((3.0, 1.0), (6.0, 1.5), (12.0, 2.0)):
        noise = rng.normal(size=(size, size)).astype(np.float32)
        layer = cv2.GaussianBlur(noise, (0, 0), sigma)
        tex += weight * layer / (layer.std() + 1e-6)
    tex = (tex - tex.mean()) / tex.std() * 45 + 128
    return np.clip(tex, 0, 255).astype(np.uint8)


def _look_at(center: np.ndarray, target: np.ndarray, roll_deg: float) -> np.ndarray:
    z = (target - center) / np.linalg.norm(target - center)
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    c, s = np.cos(np.radians(roll_deg)), np.sin(np.radians(roll_deg))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.stack([x, y, z])


def _plane_homography(cam: Camera, z: float, half: float, tex_size: int) -> np.ndarray:
    """Texture pixel (u, v) of the square |x|, |y| <= half on the plane Z = z -> image pixel."""
    s = 2 * half / (tex_size - 1)
    A = np.array([[s, 0, -half], [0, s, -half], [0, 0, 1.0]])
    return cam.K @ np.column_stack([cam.R[:, 0], cam.R[:, 1], cam.R[:, 2] * z + cam.t]) @ A


def _write_strecha(folder: Path) -> dict:
    """Five views of the two planes in the Strecha layout; returns the cameras and each view's spots."""
    rng = np.random.default_rng(7)
    wall, panel = _texture(1024, 1), _texture(512, 2)
    K = np.array([[FOCAL, 0, (WIDTH - 1) / 2], [0, FOCAL, (HEIGHT - 1) / 2], [0, 0, 1]])
    (folder / "images").mkdir(parents=True)
    (folder / "cameras").mkdir()
    cams, spots = [], []
    for k, (x, roll) in enumerate(zip((-1.5, -0.75, 0.0, 0.75, 1.5), (0.0, 8.0, -5.0, 12.0, -10.0))):
        center = np.array([x, 0.3 * np.sin(k), 0.0])
        R = _look_at(center, np.array([0.2 * x, 0.0, WALL_Z]), roll)
        cam = Camera.from_center(K, R, center, WIDTH, HEIGHT)
        img = cv2.warpPerspective(wall, _plane_homography(cam, WALL_Z, WALL_HALF, 1024), (WIDTH, HEIGHT))
        img = img.astype(np.float32)
        H = _plane_homography(cam, PANEL_Z, PANEL_HALF, 512)
        front = cv2.warpPerspective(panel, H, (WIDTH, HEIGHT)).astype(np.float32)
        mask = cv2.warpPerspective(np.ones_like(panel, np.float32), H, (WIDTH, HEIGHT))
        img = img * (1 - mask) + front * mask
        # spots seen in this view only: bright or dark blobs on a flat background
        xy = np.stack([rng.uniform(70, WIDTH - 70, SPOTS_PER_VIEW), rng.uniform(70, HEIGHT - 70, SPOTS_PER_VIEW)], 1)
        yy, xx = np.mgrid[:HEIGHT, :WIDTH]
        for (sx, sy), sign in zip(xy, (1, -1) * SPOTS_PER_VIEW):
            blob = np.exp(-((xx - sx) ** 2 + (yy - sy) ** 2) / (2 * 2.5**2))
            img = img * (1 - blob) + (128 + sign * 110) * blob
        cv2.imwrite(str(folder / "images" / f"{k:04d}.png"), np.clip(img, 0, 255).astype(np.uint8))
        lines = [" ".join(f"{v:.10g}" for v in row) for row in K] + ["0 0 0"]
        lines += [" ".join(f"{v:.12g}" for v in row) for row in R.T] + [" ".join(f"{v:.12g}" for v in center)]
        (folder / "cameras" / f"{k:04d}.png.camera").write_text("\n".join(lines + [f"{WIDTH} {HEIGHT}"]) + "\n")
        cams.append(cam)
        spots.append(xy)
    return {"cameras": cams, "spots": spots}


# the settings of the synthetic runs: every second view is a validation view, everything else the defaults
CONF = MultiviewConfig(max_keypoints=1500, val_every=2, pairs=2000)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    folder = tmp_path_factory.mktemp("multiview") / "planes"
    truth = _write_strecha(folder)
    scene = load_strecha_scene(folder)
    mv = build_multiview(scene, CONF, progress=False)
    return folder, scene, truth, mv


@pytest.fixture(scope="module")
def written(synthetic, tmp_path_factory):
    """The synthetic scene through the command line (the same settings as CONF)."""
    folder = synthetic[0]
    out = tmp_path_factory.mktemp("made") / "planes-patches"
    argv = ["make-patches", str(folder), "-o", str(out), "--max-keypoints", "1500", "--val-every", "2"]
    assert main(argv + ["--pairs", "2000"]) == 0
    return out


def _ncc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a[:, 16:48, 16:48].reshape(len(a), -1).astype(np.float64)
    b = b[:, 16:48, 16:48].reshape(len(b), -1).astype(np.float64)
    a = (a - a.mean(1, keepdims=True)) / (a.std(1, keepdims=True) + 1e-6)
    b = (b - b.mean(1, keepdims=True)) / (b.std(1, keepdims=True) + 1e-6)
    return (a * b).mean(1)


def test_tracks_lie_on_the_true_surfaces(synthetic):
    _, scene, _, mv = synthetic
    lengths = mv.track_lengths()
    assert len(lengths) >= 80 and lengths.min() >= CONF.min_views and lengths.mean() >= 3.5
    assert (lengths == len(scene)).sum() >= 20  # points seen in all five views, across the whole baseline
    X = mv.points
    # (a few are T-junctions of the panel's edge with the wall's texture: phantom points that look alike)
    on_wall = np.abs(X[:, 2] - WALL_Z) < 0.3
    on_panel = (np.abs(X[:, 2] - PANEL_Z) < 0.2) & (np.abs(X[:, :2]) <= PANEL_HALF + 0.05).all(axis=1)
    assert (on_wall | on_panel).mean() >= 0.98
    assert on_panel.sum() >= 10 and on_wall.sum() >= 50
    # a wall point hidden by the panel in a view has no detection there
    for t in np.flatnonzero(on_wall):
        for v in np.flatnonzero(mv.observations[t] >= 0):
            cam = scene.cameras[v]
            ray = X[t] - cam.center
            at_panel = cam.center + ray * (PANEL_Z - cam.center[2]) / ray[2]
            assert not (np.abs(at_panel[:2]) < PANEL_HALF - 0.05).all(), (t, v)
    # detections snap to the projection of their point
    err = reprojection_errors(mv.views, X, mv.observations)
    assert np.nanmax(err) <= CONF.max_reproj_px + 1e-6


def test_track_patches_correspond_and_distractors_do_not(synthetic):
    _, _, truth, mv = synthetic
    splits = split_multiview(mv)
    train = splits["train"]
    patches = cut_patches(mv, train, progress=False)
    tracked = train.kinds == 0
    ids = train.point_ids[tracked]
    first = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    a, b = first, first + 1  # two patches of each point (tracks have >= 2)
    assert (ids[a] == ids[b]).all()
    positive = _ncc(patches[a], patches[b])
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, len(patches), (2, 500))
    keep = train.point_ids[x] != train.point_ids[y]
    negative = _ncc(patches[x[keep]], patches[y[keep]])
    assert np.median(positive) > 0.85 and (positive > 0.5).mean() > 0.9
    assert np.median(negative) < 0.5
    # the spots exist in one view only: their detections are distractors, or (when a spot covers a tracked point's
    # projection, with a size and orientation that happen to fit) seldom in a track
    spot_dets = []
    for v, xy in enumerate(truth["spots"]):
        kp = mv.keypoints[v]
        d = np.hypot(kp[:, None, 0] - xy[None, :, 0], kp[:, None, 1] - xy[None, :, 1]).min(axis=1)
        spot_dets += [(v, int(k)) for k in np.flatnonzero(d < 2.0)]
    assert len(spot_dets) >= 10
    in_tracks = {(int(v), int(mv.observations[t, v])) for t, v in zip(*np.nonzero(mv.observations >= 0))}
    assert len(in_tracks & set(spot_dets)) <= 0.25 * len(spot_dets)
    distractors = {tuple(r) for r in mv.distractors.tolist()}
    assert len(distractors & set(spot_dets)) >= 5
    assert len(distractors) >= 10 and not distractors & in_tracks


def test_hard_negatives_are_epipolar_confusers_not_matches(synthetic):
    _, scene, _, mv = synthetic
    hard = mv.hard_negatives
    assert len(hard) >= 20
    for t, v, w, c, _ in hard.tolist():
        assert mv.observations[t, w] != c and mv.observations[t, v] >= 0
        uv, _ = scene.cameras[w].project(mv.points[t][None])
        neg = mv.keypoints[w][c, :2]
        assert np.hypot(*(neg - uv[0])) >= CONF.hard_min_px
        F = fundamental_matrix(scene.cameras[v], scene.cameras[w])
        anchor = mv.keypoints[v][mv.observations[t, v], :2]
        line = F @ np.r_[anchor, 1.0]
        assert abs(line @ np.r_[neg, 1.0]) / np.hypot(line[0], line[1]) <= CONF.hard_epipolar_px + 1e-6


def test_split_by_image_shares_no_point(synthetic):
    _, scene, _, mv = synthetic
    splits = split_multiview(mv)
    is_val = validation_views(len(scene), CONF.val_every)
    assert is_val.tolist() == [False, True, False, True, False]
    assert set(splits) == {"train", "val"}
    tracks = {}
    for name, s in splits.items():
        assert (is_val[s.views] == (name == "val")).all()  # patches come from their split's views only
        tracks[name] = set(s.track_of[s.track_of >= 0].tolist())
        assert len(set(zip(s.views.tolist(), s.detections.tolist()))) == len(s.views)  # a detection once
        pid = s.point_ids[s.kinds == 0]
        assert np.all(np.diff(pid) >= 0) and np.bincount(pid).min() >= 2  # tracks: consecutive, >= 2 patches
    assert tracks["train"] and not tracks["train"] & tracks["val"]


def test_written_sets_read_back_and_train(written, synthetic, tmp_path, monkeypatch):
    mv = synthetic[3]
    splits = split_multiview(mv)
    monkeypatch.setenv("DEEPDESC_CACHE", str(tmp_path / "cache"))
    assert {p.name for p in written.parent.iterdir()} == {"planes-patches"}  # the temporary folder is gone
    assert (written / "summary.json").is_file() and (written / "summary.md").is_file()
    assert (written / "images.txt").read_text().splitlines()[:2] == ["0 0000.png train", "1 0001.png val"]
    for name, folder in (("train", written), ("val", written / "val")):
        s = splits[name]
        ds = PhotoTour(folder)
        assert len(ds) == len(s.views)
        np.testing.assert_array_equal(ds.point_ids, s.point_ids)
        np.testing.assert_array_equal(ds.image_ids, s.views)
        np.testing.assert_array_equal(ds.patches, cut_patches(mv, s, progress=False))  # the CLI run is the same
        kp = np.stack([mv.keypoints[v][d] for v, d in zip(s.views, s.detections)])
        np.testing.assert_allclose(ds.interest[:, 1:3], kp[:, :2], atol=1e-3)
        np.testing.assert_allclose(ds.interest[:, 4], kp[:, 2], atol=1e-3)
        (match_file,) = ds.match_files()
        ids1, ids2, labels = ds.pairs(match_file)
        n = len(ids1)
        assert match_file == f"m50_{n}_{n}_0" and labels.sum() == n // 2
        flags = np.loadtxt(folder / f"{match_file}.txt", dtype=np.int64, ndmin=2)[:, 6]
        assert not labels[flags == 1].any()  # hard negatives are negatives
        if name == "train":
            assert n == 2000 and (flags == 1).sum() == s.num_hard_negatives > 0
    # a phototour: training source reads the training set
    conf = {"data": {"sources": [f"phototour:{written}"], "weights": [1.0]}}
    (source,), _ = build_sources(conf, "train")
    a, p = source.sample(np.random.default_rng(0), 16)
    assert a.shape == p.shape == (16, 64, 64) and a.dtype == np.uint8
    # an existing output is not replaced without --overwrite
    assert main(["make-patches", str(synthetic[0]), "-o", str(written)]) == 2


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_output_that_is_holds_or_lies_in_the_scene_is_refused(synthetic, tmp_path, capsys):
    scene = tmp_path / "parent" / "planes"
    shutil.copytree(synthetic[0], scene)
    (tmp_path / "parent" / "notes.txt").write_text("unrelated")
    before = _files(tmp_path / "parent")
    # the scene itself, the folder that holds it, a folder inside it: each would have been replaced
    for out in (scene, scene.parent, scene / "patches"):
        argv = ["make-patches", str(scene), "-o", str(out), "--overwrite", "--max-keypoints", "1500"]
        assert main(argv + ["--val-every", "2", "--pairs", "2000"]) == 2
        err = capsys.readouterr().err
        assert "the input" in err and str(scene) in err
    assert _files(tmp_path / "parent") == before
    # a COLMAP model folder is an input too, and so is the image folder of a loaded scene
    with pytest.raises(ValueError, match="is inside the input"):
        make_patches(scene / "images", scene / "cameras" / "out", colmap=scene / "cameras")
    with pytest.raises(ValueError, match="contains the input"):
        make_patches(load_strecha_scene(scene), scene, overwrite=True)
    assert _files(tmp_path / "parent") == before


def test_overwrite_replaces_only_its_own_files_and_says_when_there_is_no_validation_set(
    synthetic, written, tmp_path, capsys
):
    out = tmp_path / "data"
    shutil.copytree(written, out)  # a previous run, with a validation set
    (out / "notes.txt").write_text("unrelated")
    (out / "val" / "mine.txt").write_text("unrelated")
    (out / "patches0099.bmp").write_bytes(b"stale")  # a sheet and a match file the new run does not write
    (out / "m50_10_10_0.txt").write_text("stale")
    argv = ["make-patches", str(synthetic[0]), "-o", str(out), "--overwrite", "--max-keypoints", "1500"]
    assert main(argv + ["--val-every", "0", "--pairs", "2000"]) == 0
    assert (out / "notes.txt").read_text() == "unrelated" and (out / "val" / "mine.txt").read_text() == "unrelated"
    stdout = capsys.readouterr().out
    assert "no validation set written: val_every is 0" in stdout
    assert f"wrote {out} (training set)" in stdout and f"{out}/val (validation set)" not in stdout
    assert sorted(p.name for p in (out / "val").iterdir()) == ["mine.txt"]  # the old validation set is gone
    assert not (out / "patches0099.bmp").exists() and not (out / "m50_10_10_0.txt").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["splits"]) == {"train"} and "val_every is 0" in summary["no_validation"]
    ds = PhotoTour(out, cache_dir=tmp_path / "cache")
    assert len(ds) == summary["splits"]["train"]["patches"]
    assert ds.match_files() == [summary["splits"]["train"]["match_file"]]
    assert {p.name for p in tmp_path.iterdir()} == {"data", "cache"}  # no temporary folder left


def test_no_validation_reason_names_the_cause():
    assert "--val-every 0" in no_validation_reason(30, 0, 0)
    one = no_validation_reason(5, 4, 1)
    assert "1 of 5 views" in one and "two" in one and "lower --val-every" in one
    assert "no track" in no_validation_reason(30, 4, 7)


def test_write_phototour_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    patches = rng.integers(0, 256, (300, 64, 64), dtype=np.uint8)
    point_ids = np.arange(300) // 3
    image_ids = rng.integers(0, 9, 300)
    interest = rng.uniform(1, 100, (300, 4))
    pairs = np.array([[0, 1, 0], [0, 5, 1], [299, 298, 0]])
    write_phototour(tmp_path / "set", patches, point_ids, image_ids, interest, {"m50_3_3_0": pairs})
    ds = PhotoTour(tmp_path / "set", cache_dir=tmp_path / "cache")
    assert len(ds.sheets) == 2
    np.testing.assert_array_equal(ds.patches, patches)
    np.testing.assert_array_equal(ds.point_ids, point_ids)
    np.testing.assert_allclose(ds.interest[:, 1:], interest, atol=1e-3)
    ids1, ids2, labels = ds.pairs("m50_3_3_0")
    assert ids1.tolist() == [0, 0, 299] and ids2.tolist() == [1, 5, 298] and labels.tolist() == [True, False, True]
    with pytest.raises(FileExistsError):
        write_phototour(tmp_path / "set", patches, point_ids, image_ids)
    with pytest.raises(ValueError, match="outside"):
        write_phototour(tmp_path / "other", patches, point_ids, image_ids, pairs={"m50_1_1_0": [[0, 300]]})


def test_castle_tracks_are_epipolar_consistent():
    root = require_shared("data", "train", "strecha", "castle-P30")
    full = load_strecha_scene(root)
    sel = slice(1, 7)  # six neighbouring views
    scene = Scene(full.name, full.root, full.image_names[sel], full.image_paths[sel], full.cameras[sel])
    mv = build_multiview(scene, MultiviewConfig(max_keypoints=1000), progress=False)
    lengths = mv.track_lengths()
    assert len(lengths) >= 300 and lengths.mean() >= 3.5
    assert len(mv.distractors) >= 300 and len(mv.hard_negatives) >= 200
    errors = []
    for u in range(len(scene)):
        for v in range(u + 1, len(scene)):
            both = np.flatnonzero((mv.observations[:, u] >= 0) & (mv.observations[:, v] >= 0))
            F = fundamental_matrix(scene.cameras[u], scene.cameras[v])
            x0 = mv.keypoints[u][mv.observations[both, u], :2]
            x1 = mv.keypoints[v][mv.observations[both, v], :2]
            errors.append(symmetric_epipolar_error(F, x0, x1))
    errors = np.concatenate(errors)
    assert len(errors) >= 2000
    assert errors.max() < 2.0 and np.median(errors) < 0.4


def _quaternion(R: np.ndarray) -> np.ndarray:
    """(w, x, y, z) of a rotation matrix (COLMAP's order)."""
    w = np.sqrt(max(0.0, 1 + R[0, 0] + R[1, 1] + R[2, 2])) / 2
    x = np.copysign(np.sqrt(max(0.0, 1 + R[0, 0] - R[1, 1] - R[2, 2])) / 2, R[2, 1] - R[1, 2])
    y = np.copysign(np.sqrt(max(0.0, 1 - R[0, 0] + R[1, 1] - R[2, 2])) / 2, R[0, 2] - R[2, 0])
    z = np.copysign(np.sqrt(max(0.0, 1 - R[0, 0] - R[1, 1] + R[2, 2])) / 2, R[1, 0] - R[0, 1])
    return np.array([w, x, y, z])


def test_colmap_model_of_the_scene(synthetic, tmp_path):
    pytest.importorskip("pycolmap")
    folder, scene, _, mv = synthetic
    model = tmp_path / "sparse"
    model.mkdir()
    K = scene.cameras[0].K
    # COLMAP puts the first pixel's centre at (0.5, 0.5)
    (model / "cameras.txt").write_text(
        f"1 PINHOLE {WIDTH} {HEIGHT} {K[0, 0]} {K[1, 1]} {K[0, 2] + 0.5} {K[1, 2] + 0.5}\n"
    )
    lines = []
    for k, (name, cam) in enumerate(zip(scene.image_names, scene.cameras), start=1):
        q, t = _quaternion(cam.R), cam.t
        lines += [" ".join(str(v) for v in [k, *q, *t, 1, name]), ""]
    (model / "images.txt").write_text("\n".join(lines) + "\n")
    (model / "points3D.txt").write_text("")
    out = tmp_path / "out"
    argv = ["make-patches", str(folder / "images"), "--colmap", str(model), "-o", str(out), "--val-every", "2"]
    assert main(argv + ["--max-keypoints", "1500", "--pairs", "2000"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert abs(summary["tracks"] - len(mv.points)) <= 0.02 * len(mv.points)  # the same cameras, up to rounding
    assert PhotoTour(out, cache_dir=tmp_path / "cache").point_ids is not None
