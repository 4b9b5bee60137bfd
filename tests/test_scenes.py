"""Multi-view scenes: Strecha camera files, COLMAP models, camera geometry, and the Strecha convention on real data."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from deepdesc.datasets.scenes import (
    Camera,
    Scene,
    essential_matrix,
    fundamental_matrix,
    load_colmap_scene,
    load_strecha_scene,
    load_strecha_scenes,
    read_strecha_camera,
    relative_pose,
)
from deepdesc.errors import DatasetFormatError
from deepdesc.eval.pose import estimate_relative_pose, pose_error, symmetric_epipolar_distance

from .conftest import require_shared

K_TEST = np.array([[800.0, 0.0, 319.5], [0.0, 810.0, 239.5], [0.0, 0.0, 1.0]])


def rotation(axis, degrees: float) -> np.ndarray:
    axis = np.asarray(axis, dtype=np.float64)
    return cv2.Rodrigues(axis / np.linalg.norm(axis) * np.radians(degrees))[0]


def make_camera(seed: int = 0, K: np.ndarray = K_TEST) -> Camera:
    rng = np.random.default_rng(seed)
    R = rotation(rng.normal(size=3), rng.uniform(5, 30))
    return Camera(K, R, rng.normal(size=3), 640, 480)


def write_strecha(path: Path, cam: Camera, distortion=(0.0, 0.0, 0.0)) -> None:
    """A .camera file as Strecha writes it: K, distortion, camera-to-world R, centre C, width height."""
    rows = [*cam.K.tolist(), list(distortion), *cam.R.T.tolist(), cam.center.tolist()]
    text = "\n".join(" ".join(repr(float(v)) for v in row) for row in rows)
    path.write_text(f"{text}\n{cam.width} {cam.height}\n")


# --- Camera geometry ---------------------------------------------------------------------------------------------


def test_camera_project_center_and_P():
    cam = Camera(K_TEST, np.eye(3), [0.0, 0.0, 2.0], 640, 480)
    uv, depth = cam.project([[0.0, 0.0, 0.0], [1.0, -0.5, 2.0]])
    np.testing.assert_allclose(depth, [2.0, 4.0])
    np.testing.assert_allclose(uv, [[319.5, 239.5], [319.5 + 800 / 4, 239.5 - 810 * 0.5 / 4]])
    np.testing.assert_allclose(cam.center, [0.0, 0.0, -2.0])
    cam = make_camera(3)
    X = np.random.default_rng(1).normal(size=(20, 3)) + cam.center + 5 * cam.R[2]  # in front of the camera
    uv, depth = cam.project(X)
    assert (depth > 0).all()
    h = np.c_[X, np.ones(len(X))] @ cam.P.T
    np.testing.assert_allclose(h[:, :2] / h[:, 2:], uv, atol=1e-9)
    np.testing.assert_allclose(h[:, 2], depth, atol=1e-9)
    assert cam.P.shape == (3, 4)
    assert cam.contains([[-0.5, -0.5], [639.4, 479.4]]).all() and not cam.contains([[639.5, 0.0]]).any()


def test_camera_is_frozen_readonly_and_compares_by_value():
    cam = make_camera(0)
    with pytest.raises(AttributeError):
        cam.width = 3  # type: ignore[misc]
    with pytest.raises(ValueError):
        cam.K[0, 0] = 1.0
    assert cam == Camera(cam.K.copy(), cam.R.copy(), cam.t.copy(), 640, 480)
    assert cam != Camera(cam.K, cam.R, cam.t + 1e-3, 640, 480)
    assert cam.K.dtype == np.float64 and isinstance(cam.width, int)
    other = Camera.from_center(cam.K, cam.R, cam.center, 640, 480)
    np.testing.assert_allclose(other.t, cam.t, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"K": np.eye(2)}, "Camera.K: expected shape"),
        ({"K": np.diag([-1.0, 1.0, 1.0])}, "focal lengths must be positive"),
        ({"K": np.array([[1.0, 0, 0], [0, 1, 0], [0, 1, 1]])}, "last row"),
        ({"R": 1.1 * np.eye(3)}, "not orthonormal"),
        ({"R": np.diag([1.0, 1.0, -1.0])}, "reflection"),
        ({"t": [0.0, np.nan, 0.0]}, "non-finite"),
        ({"width": 0}, "width must be a positive integer"),
        ({"height": 10.5}, "height must be a positive integer"),
    ],
)
def test_camera_validation(kwargs, match):
    args = {"K": K_TEST, "R": np.eye(3), "t": np.zeros(3), "width": 640, "height": 480, **kwargs}
    with pytest.raises(ValueError, match=match):
        Camera(**args)


def test_relative_pose_and_fundamental_matrix_on_synthetic_points():
    cam0, cam1 = make_camera(1), make_camera(2, K=np.array([[700.0, 0, 300], [0, 700, 200], [0, 0, 1]]))
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, size=(50, 3)) + cam0.center + 8 * cam0.R[2]
    R, t = relative_pose(cam0, cam1)
    # x_cam1 = R x_cam0 + t
    np.testing.assert_allclose((X @ cam0.R.T + cam0.t) @ R.T + t, X @ cam1.R.T + cam1.t, atol=1e-10)
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
    x0, _ = cam0.project(X)
    x1, _ = cam1.project(X)
    F = fundamental_matrix(cam0, cam1)
    assert symmetric_epipolar_distance(x0, x1, F).max() < 1e-6
    # the other order gives F^T
    F10 = fundamental_matrix(cam1, cam0)
    np.testing.assert_allclose(F10 / np.linalg.norm(F10), F.T / np.linalg.norm(F), atol=1e-10)
    E = essential_matrix(R, t)
    np.testing.assert_allclose(E @ (-R.T @ t), 0, atol=1e-12)  # null vector: camera 1's centre in camera 0's frame
    assert abs(np.linalg.det(E)) < 1e-10


# --- Strecha camera files ----------------------------------------------------------------------------------------


def test_read_strecha_camera_round_trip(tmp_path):
    cam = make_camera(5)
    path = tmp_path / "0000.jpg.camera"
    write_strecha(path, cam)
    back = read_strecha_camera(path)
    np.testing.assert_array_equal(back.K, cam.K)
    np.testing.assert_allclose(back.R, cam.R, atol=1e-12)
    np.testing.assert_allclose(back.t, cam.t, atol=1e-12)
    np.testing.assert_allclose(back.center, cam.center, atol=1e-12)
    assert (back.width, back.height) == (640, 480)


def test_read_strecha_camera_rounds_R_to_a_rotation(tmp_path):
    cam = make_camera(6)
    rows = [*cam.K.tolist(), [0, 0, 0], *np.round(cam.R.T, 6).tolist(), cam.center.tolist()]
    path = tmp_path / "rounded.camera"
    path.write_text("\n".join(" ".join(f"{v:.6f}" for v in r) for r in rows) + "\n640 480\n")
    back = read_strecha_camera(path)
    np.testing.assert_allclose(back.R @ back.R.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(back.R, cam.R, atol=1e-5)


def test_read_strecha_camera_warns_on_distortion(tmp_path, caplog):
    path = tmp_path / "d.camera"
    write_strecha(path, make_camera(0), distortion=(0.1, 0.0, 0.0))
    with caplog.at_level(logging.WARNING, logger="deepdesc"):
        read_strecha_camera(path)
    assert "distortion" in caplog.text and "d.camera" in caplog.text


def _bad_files(cam: Camera) -> dict[str, tuple[str, str]]:
    good = [*cam.K.tolist(), [0, 0, 0], *cam.R.T.tolist(), cam.center.tolist()]
    lines = [" ".join(repr(float(v)) for v in row) for row in good]
    return {
        "truncated": ("\n".join(lines) + "\n640\n", "expected 26 numbers.*got 25"),
        "too_long": ("\n".join(lines) + "\n640 480 1\n", "got 27"),
        "letters": ("\n".join(lines[:4] + ["0.1 abc 0.3"] + lines[5:]) + "\n640 480\n", "line 5: not a number: 'abc'"),
        "nan": ("\n".join(lines[:-1] + ["nan 0 0"]) + "\n640 480\n", "not a finite number"),
        "bad_R": ("\n".join(lines[:4] + ["2 0 0", "0 1 0", "0 0 1"] + lines[7:]) + "\n640 480\n", "not orthonormal"),
        "reflection": ("\n".join(lines[:4] + ["-1 0 0", "0 1 0", "0 0 1"] + lines[7:]) + "\n640 480\n", "reflection"),
        "focal": ("\n".join(["-5 0 320"] + lines[1:]) + "\n640 480\n", "focal lengths must be positive"),
        "size": ("\n".join(lines) + "\n640.5 480\n", "width must be a positive integer"),
        "empty": ("", "got 0"),
    }


@pytest.mark.parametrize("case", list(_bad_files(make_camera(0))))
def test_read_strecha_camera_errors_name_the_file(tmp_path, case):
    text, match = _bad_files(make_camera(0))[case]
    path = tmp_path / f"{case}.jpg.camera"
    path.write_text(text)
    with pytest.raises(DatasetFormatError, match=match) as info:
        read_strecha_camera(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_read_strecha_camera_missing_file(tmp_path):
    with pytest.raises(DatasetFormatError, match="nope.camera"):
        read_strecha_camera(tmp_path / "nope.camera")


# --- Strecha scenes ----------------------------------------------------------------------------------------------


def make_strecha_scene(root: Path, n: int = 4, skip_camera: int | None = None) -> list[Camera]:
    (root / "images").mkdir(parents=True)
    (root / "cameras").mkdir()
    cams = [make_camera(i) for i in range(n)]
    for i, cam in enumerate(cams):
        (root / "images" / f"{i:04d}.jpg").write_bytes(b"")  # content is not read by the loader
        if i != skip_camera:
            write_strecha(root / "cameras" / f"{i:04d}.jpg.camera", cam)
    (root / "images" / "notes.txt").write_text("not an image")
    return cams


def test_load_strecha_scene(tmp_path):
    cams = make_strecha_scene(tmp_path / "fake-P4")
    scene = load_strecha_scene(tmp_path / "fake-P4")
    assert scene.name == "fake-P4" and scene.root == tmp_path / "fake-P4" and len(scene) == 4
    assert scene.image_names == ["0000.jpg", "0001.jpg", "0002.jpg", "0003.jpg"]
    assert scene.image_paths[2] == tmp_path / "fake-P4" / "images" / "0002.jpg"
    for loaded, cam in zip(scene.cameras, cams):
        np.testing.assert_allclose(loaded.P, cam.P, atol=1e-9)
    assert scene.pairs(2) == [(0, 1), (0, 2), (1, 2), (1, 3), (2, 3)]
    assert scene.pairs(1) == [(0, 1), (1, 2), (2, 3)]
    assert scene.pairs() == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    with pytest.raises(ValueError, match="max_gap"):
        scene.pairs(0)


def test_load_strecha_scene_missing_camera(tmp_path):
    make_strecha_scene(tmp_path / "s", skip_camera=2)
    with pytest.raises(DatasetFormatError, match=r"missing camera files for 1 images: 0002\.jpg\.camera"):
        load_strecha_scene(tmp_path / "s")


def test_load_strecha_scene_not_a_scene(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetFormatError, match="not a Strecha scene"):
        load_strecha_scene(tmp_path)
    (tmp_path / "cameras").mkdir()
    with pytest.raises(DatasetFormatError, match="no images"):
        load_strecha_scene(tmp_path)


def test_load_strecha_scenes(tmp_path):
    make_strecha_scene(tmp_path / "b-scene", n=2)
    make_strecha_scene(tmp_path / "a-scene", n=3)
    (tmp_path / "other").mkdir()
    scenes = load_strecha_scenes(tmp_path)
    assert [s.name for s in scenes] == ["a-scene", "b-scene"] and [len(s) for s in scenes] == [3, 2]
    assert [s.name for s in load_strecha_scenes(tmp_path / "b-scene")] == ["b-scene"]
    with pytest.raises(DatasetFormatError, match="no Strecha scenes"):
        load_strecha_scenes(tmp_path / "other")
    with pytest.raises(DatasetFormatError, match="no such folder"):
        load_strecha_scenes(tmp_path / "missing")


def test_scene_checks_parallel_lists(tmp_path):
    with pytest.raises(ValueError, match="2 names, 1 paths"):
        Scene("x", tmp_path, ["a", "b"], [tmp_path / "a"], [make_camera(0)] * 2)


# --- COLMAP models -----------------------------------------------------------------------------------------------


def quaternion_wxyz(R: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) of a rotation matrix (Hamilton convention, as COLMAP)."""
    m = R
    w = np.sqrt(max(0.0, 1 + m[0, 0] + m[1, 1] + m[2, 2])) / 2
    x = np.copysign(np.sqrt(max(0.0, 1 + m[0, 0] - m[1, 1] - m[2, 2])) / 2, m[2, 1] - m[1, 2])
    y = np.copysign(np.sqrt(max(0.0, 1 - m[0, 0] + m[1, 1] - m[2, 2])) / 2, m[0, 2] - m[2, 0])
    z = np.copysign(np.sqrt(max(0.0, 1 - m[0, 0] - m[1, 1] + m[2, 2])) / 2, m[1, 0] - m[0, 1])
    return np.array([w, x, y, z])


def write_colmap_text(model: Path, images: Path, cams: list[Camera], camera_lines: list[str] | None = None) -> None:
    """A COLMAP text model of ``cams`` (one PINHOLE camera each, COLMAP pixel convention) plus empty image files."""
    model.mkdir(parents=True, exist_ok=True)
    images.mkdir(parents=True, exist_ok=True)
    if camera_lines is None:
        camera_lines = [
            " ".join([str(i + 1), "PINHOLE", str(c.width), str(c.height), *map(repr, params)])
            for i, c in enumerate(cams)
            for params in [[float(c.K[0, 0]), float(c.K[1, 1]), float(c.K[0, 2]) + 0.5, float(c.K[1, 2]) + 0.5]]
        ]
    (model / "cameras.txt").write_text("# CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n" + "\n".join(camera_lines) + "\n")
    lines = ["# IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME", "# POINTS2D[] as (X, Y, POINT3D_ID)"]
    for i, c in reversed(list(enumerate(cams))):  # file order is not name order
        q = quaternion_wxyz(c.R)
        lines.append(" ".join([str(i + 1), *map(repr, q.tolist()), *map(repr, c.t.tolist()), str(i + 1), f"im{i}.png"]))
        lines.append("")
        (images / f"im{i}.png").write_bytes(b"")
    (model / "images.txt").write_text("\n".join(lines) + "\n")
    (model / "points3D.txt").write_text("")


def test_load_colmap_scene(tmp_path):
    pytest.importorskip("pycolmap")
    cams = [make_camera(i) for i in range(3)]
    write_colmap_text(tmp_path / "sparse" / "0", tmp_path / "images", cams)
    scene = load_colmap_scene(tmp_path / "sparse" / "0", tmp_path / "images")
    assert scene.name == tmp_path.name and scene.root == tmp_path / "images"
    assert scene.image_names == ["im0.png", "im1.png", "im2.png"]
    assert scene.image_paths == [tmp_path / "images" / f"im{i}.png" for i in range(3)]
    for loaded, cam in zip(scene.cameras, cams):
        np.testing.assert_allclose(loaded.K, cam.K, atol=1e-12)  # principal point moved back by 0.5 px
        np.testing.assert_allclose(loaded.R, cam.R, atol=1e-12)
        np.testing.assert_allclose(loaded.t, cam.t, atol=1e-12)
        assert (loaded.width, loaded.height) == (cam.width, cam.height)
    assert load_colmap_scene(tmp_path / "sparse" / "0", tmp_path / "images", name="mine").name == "mine"


def test_load_colmap_scene_distortion_warns(tmp_path, caplog):
    pytest.importorskip("pycolmap")
    cams = [make_camera(0)]
    line = "1 SIMPLE_RADIAL 640 480 800 320 240 0.05"
    write_colmap_text(tmp_path / "m", tmp_path / "im", cams, camera_lines=[line])
    with caplog.at_level(logging.WARNING, logger="deepdesc"):
        scene = load_colmap_scene(tmp_path / "m", tmp_path / "im")
    assert "distortion [0.05] ignored" in caplog.text
    np.testing.assert_allclose(scene.cameras[0].K, [[800, 0, 319.5], [0, 800, 239.5], [0, 0, 1]])


def test_load_colmap_scene_errors(tmp_path):
    pytest.importorskip("pycolmap")
    cams = [make_camera(0)]
    write_colmap_text(tmp_path / "fish", tmp_path / "im", cams, ["1 OPENCV_FISHEYE 640 480 800 800 320 240 0 0 0 0"])
    with pytest.raises(DatasetFormatError, match="OPENCV_FISHEYE, not a pinhole model"):
        load_colmap_scene(tmp_path / "fish", tmp_path / "im")
    write_colmap_text(tmp_path / "ok", tmp_path / "im", cams)
    with pytest.raises(DatasetFormatError, match=r"1 images of the COLMAP model are missing: im0\.png"):
        load_colmap_scene(tmp_path / "ok", tmp_path / "elsewhere")
    with pytest.raises(DatasetFormatError, match="no such COLMAP model folder"):
        load_colmap_scene(tmp_path / "none", tmp_path / "im")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "cameras.txt").write_text("1 PINHOLE 640 480 not numbers\n")
    with pytest.raises(DatasetFormatError, match="broken"):
        load_colmap_scene(tmp_path / "broken", tmp_path / "im")


def test_load_colmap_scene_without_pycolmap(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pycolmap", None)  # makes `import pycolmap` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'deepdesc\[colmap\]'"):
        load_colmap_scene(tmp_path, tmp_path)


# --- real data: the Strecha convention ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def entry_p10() -> Scene:
    return load_strecha_scene(require_shared("data", "eval", "strecha", "entry-P10"))


def test_entry_p10_cameras_fit_the_images(entry_p10):
    scene = entry_p10
    assert scene.name == "entry-P10" and len(scene) == 10
    assert scene.image_names == [f"{i:04d}.jpg" for i in range(10)]
    for path, cam in zip(scene.image_paths, scene.cameras):
        image = cv2.imread(str(path), cv2.IMREAD_REDUCED_GRAYSCALE_8)  # header-sized read: 1/8 of each side
        assert image is not None, path
        assert image.shape == (-(-cam.height // 8), -(-cam.width // 8)), path
    # the scene centre: the point closest to all optical axes (least squares); it must be seen by every camera
    A, b = np.zeros((3, 3)), np.zeros(3)
    for cam in scene.cameras:
        d = cam.R[2]  # viewing direction in world coordinates
        P = np.eye(3) - np.outer(d, d)
        A += P
        b += P @ cam.center
    centre = np.linalg.solve(A, b)
    for cam in scene.cameras:
        uv, depth = cam.project(centre[None])
        assert depth[0] > 0
        assert cam.contains(uv)[0], uv
        # and near the middle of the image, as for a set of views of one facade
        assert abs(uv[0, 0] - cam.width / 2) < cam.width / 4 and abs(uv[0, 1] - cam.height / 2) < cam.height / 4


def test_entry_p10_epipolar_convention_with_sift(entry_p10):
    """SIFT matches (ratio 0.8) between views 0 and 1 agree with the ground-truth geometry to ~0.1 px.

    With R read the other way round (as world-to-camera) the median error is ~35 px; this is the check that
    ``x ~ K R^T (X - C)`` is the file's convention and that relative_pose/fundamental_matrix keep it.
    """
    sift = cv2.SIFT_create(nfeatures=4000)
    feats = []
    for path in entry_p10.image_paths[:2]:
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        keypoints, descriptors = sift.detectAndCompute(image, None)
        feats.append((np.float64([k.pt for k in keypoints]), descriptors))
    (k0, d0), (k1, d1) = feats
    knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(d0, d1, k=2)
    good = [m for m, n in (p for p in knn if len(p) == 2) if m.distance < 0.8 * n.distance]
    assert len(good) > 500
    p0, p1 = k0[[m.queryIdx for m in good]], k1[[m.trainIdx for m in good]]
    cam0, cam1 = entry_p10.cameras[:2]
    d = symmetric_epipolar_distance(p0, p1, fundamental_matrix(cam0, cam1))
    assert np.median(d) < 1.5
    assert np.mean(d < 2.0) > 0.6
    # the relative pose itself (rotation and direction of translation) agrees with the matches
    R, t = relative_pose(cam0, cam1)
    estimate = estimate_relative_pose(p0, p1, cam0.K, cam1.K)
    assert estimate is not None
    err_R, err_t = pose_error(estimate[0], estimate[1], R, t)
    assert err_R < 1.0 and err_t < 3.0


def test_castle_p30_loads():
    scenes = load_strecha_scenes(require_shared("data", "train", "strecha"))
    assert [s.name for s in scenes] == ["castle-P30"] and len(scenes[0]) == 30
    assert len(scenes[0].pairs(3)) == 3 * 30 - 6
