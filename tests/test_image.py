"""Image reading and array conventions: load_image, read_image (one decoder, EXIF orientation ignored)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepdesc.features.image import MIN_IMAGE_SIZE, as_uint8_gray, load_image, read_image

# ----------------------------------------------------------------------------- load_image


def test_load_image_values():
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (12, 10), dtype=np.uint8)
    out = load_image(gray)
    assert out.dtype == np.float32 and out.shape == (12, 10)
    np.testing.assert_array_equal(out, gray)
    np.testing.assert_array_equal(load_image(gray[:, :, None]), gray)
    np.testing.assert_allclose(load_image(gray.astype(np.uint16) * 257), gray, atol=1e-3)
    np.testing.assert_allclose(load_image(gray.astype(np.float64) / 255.0), gray, atol=1e-3)
    np.testing.assert_array_equal(load_image(gray.astype(np.float32)), gray)
    np.testing.assert_array_equal(load_image(gray.astype(np.int32)), gray)
    assert load_image(np.zeros((8, 8), np.float32)).max() == 0

    rgb = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    expected = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    np.testing.assert_allclose(load_image(rgb), expected, atol=0.51)
    np.testing.assert_allclose(load_image(rgb[:, :, ::-1], channel_order="bgr"), expected, atol=0.51)
    assert np.abs(load_image(rgb[:, :, ::-1]) - expected).max() > 5  # channel order matters
    rgba = np.concatenate([rgb, rng.integers(0, 256, (9, 11, 1), dtype=np.uint8)], axis=2)
    np.testing.assert_array_equal(load_image(rgba), load_image(rgb))  # alpha dropped


def test_load_image_rejects():
    for bad in (
        np.zeros((0, 0), np.uint8),
        np.zeros((7, 20), np.uint8),
        np.zeros((20, 20, 2), np.uint8),
        np.zeros((20, 20, 3, 1), np.uint8),
        np.zeros(400, np.uint8),
        np.zeros((20, 20), bool),
        np.full((20, 20), 1000, np.int32),
        np.full((20, 20), -5.0),
        np.full((20, 20), 300.0),
        np.zeros((20, 20), np.complex64),
    ):
        with pytest.raises(ValueError):
            load_image(bad)
    nan = np.zeros((20, 20), np.float32)
    nan[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        load_image(nan)
    with pytest.raises(ValueError, match="channel_order"):
        load_image(np.zeros((20, 20, 3), np.uint8), channel_order="gbr")


def test_load_image_files(tmp_path):
    rng = np.random.default_rng(2)
    bgr = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    path = tmp_path / "colour.png"
    assert cv2.imwrite(str(path), bgr)
    expected = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.float32)
    for arg in (path, str(path)):
        np.testing.assert_allclose(load_image(arg), expected, atol=0.51)
    np.testing.assert_array_equal(load_image(path, channel_order="rgb"), load_image(path))  # files are BGR

    deep = (rng.integers(0, 65536, (16, 16))).astype(np.uint16)
    assert cv2.imwrite(str(tmp_path / "deep.png"), deep)
    np.testing.assert_allclose(load_image(tmp_path / "deep.png"), deep / 257.0, atol=1e-3)

    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_text("not an image")
    with pytest.raises(ValueError, match="decode"):
        load_image(tmp_path / "junk.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError):
        load_image(tmp_path / "empty.png")
    with pytest.raises(ValueError):
        load_image(tmp_path)  # a directory


_DTYPES = st.sampled_from([np.uint8, np.uint16, np.int16, np.float32, np.float64])


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(8, 24),
    w=st.integers(8, 24),
    channels=st.sampled_from([None, 1, 3, 4]),
    dtype=_DTYPES,
    seed=st.integers(0, 2**16),
    unit_float=st.booleans(),
)
def test_load_image_property(h, w, channels, dtype, seed, unit_float):
    rng = np.random.default_rng(seed)
    shape = (h, w) if channels is None else (h, w, channels)
    if np.dtype(dtype).kind == "f":
        image = rng.random(shape) * (1.0 if unit_float else 255.0)
    elif dtype == np.uint16:
        image = rng.integers(0, 65536, shape)
    else:
        image = rng.integers(0, 256, shape)
    image = image.astype(dtype)
    out = load_image(image)
    assert out.shape == (h, w) and out.dtype == np.float32 and out.flags.c_contiguous
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 255.0
    if channels in (None, 1) and dtype in (np.uint8, np.int16):
        np.testing.assert_array_equal(out, image.reshape(h, w))
    ref = image.astype(np.float64)
    if dtype == np.uint16:
        ref *= 255.0 / 65535.0
    elif ref.dtype.kind == "f" and np.dtype(dtype).kind == "f" and ref.max() <= 1.0:
        ref *= 255.0
    if ref.ndim == 3:
        ref = ref[:, :, 0] if channels == 1 else ref[:, :, :3] @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(out, ref, atol=0.01)


def _jpeg_with_orientation(image: np.ndarray, orientation: int) -> bytes:
    """A JPEG with an EXIF APP1 segment holding only the Orientation tag (0x0112)."""
    import struct

    data = cv2.imencode(".jpg", image)[1].tobytes()
    ifd = struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    app1 = b"Exif\x00\x00" + b"II*\x00" + struct.pack("<I", 8) + ifd
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:]


def test_one_decoding_for_every_reader_exif_orientation_ignored(tmp_path):
    """Keypoints, pictures and sizes use the same pixels: EXIF orientation is ignored, as COLMAP and hloc do."""
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 256, (40, 64, 3)).astype(np.uint8), (0, 0), 1)
    path = tmp_path / "rotated.jpg"
    path.write_bytes(_jpeg_with_orientation(image, 6))  # "rotate 90 degrees to display"
    assert cv2.imread(str(path)).shape[:2] == (64, 40)  # OpenCV's default applies it: the old mismatch
    assert read_image(path, "rgb").shape == (40, 64, 3)
    assert read_image(path, "gray").shape == load_image(path).shape == (40, 64)
    assert read_image(path, "raw").shape == (40, 64, 3)
    np.testing.assert_allclose(read_image(path, "gray"), np.rint(load_image(path)), atol=1)
    with pytest.raises(ValueError, match="mode must be one of"):
        read_image(path, "bgr")


def test_codec_messages_go_into_the_error_not_before_it(tmp_path, capfd):
    """libpng prints its own complaints to stderr; they belong in our message, after nothing else."""
    good = cv2.imencode(".png", np.full((32, 32), 100, np.uint8))[1].tobytes()
    broken = good[:60] + bytes(b ^ 0x5A for b in good[60:])  # valid signature and header, corrupt data
    path = tmp_path / "broken.png"
    path.write_bytes(broken)
    with pytest.raises(ValueError, match=r"could not decode image file .*broken\.png") as info:
        read_image(path)
    assert capfd.readouterr().err == ""  # nothing printed before the real message
    assert "libpng" in str(info.value) or "not an image format" in str(info.value)
    ok = tmp_path / "ok.png"
    ok.write_bytes(good)
    assert read_image(ok).shape == (32, 32) and capfd.readouterr().err == ""


@settings(max_examples=30, deadline=None)
@given(
    h=st.integers(MIN_IMAGE_SIZE, 40),
    w=st.integers(MIN_IMAGE_SIZE, 40),
    seed=st.integers(0, 2**31 - 1),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_as_uint8_gray_rounds_half_to_even_and_saturates(h, w, seed, dtype):
    """The detector's uint8 image is np.rint of the loaded one, clipped: ties included (x.5 and its neighbours)."""
    rng = np.random.default_rng(seed)
    ties = rng.integers(0, 256, (h, w)) + rng.choice([0.5, 0.49999997, 0.50000006, 0.0, -0.3], (h, w))
    image = np.clip(ties, -0.9, 255.9).astype(dtype)  # floats within 1 of the range are clipped by load_image
    expected = np.clip(np.rint(load_image(image)), 0, 255).astype(np.uint8)
    got = as_uint8_gray(image, "rgb")
    assert got.dtype == np.uint8 and got.shape == (h, w)
    assert np.array_equal(got, expected)
