"""MATLAB bridge: MAT v5 / v7.3 reading, patch orientation, descriptor files MATLAB can load."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
import scipy.io

from deepdesc.io.matlab import (
    describe_mat,
    describe_matlab_array,
    patches_from_matlab,
    read_mat_patches,
    write_mat_descriptors,
)

N = 3


def matlab_patches(n: int = N, dtype=np.uint8) -> np.ndarray:
    """A MATLAB-indexed 64x64x1xN stack (a[r, c, 0, i] == P(r+1, c+1, 1, i+1)) that is not
    symmetric: intensity grows along columns, a bright marker sits in the top-left corner
    (rows 0..7, columns 0..3) and each patch gets its own offset."""
    r, c = np.mgrid[0:64, 0:64]
    stack = np.empty((64, 64, 1, n), dtype=np.float64)
    for i in range(n):
        p = 3.0 * c + 10.0 * i + 0.5 * r
        p[:8, :4] = 255.0
        stack[:, :, 0, i] = np.clip(p, 0, 255)
    return stack.astype(dtype)


def save_v5(path, name: str, value) -> None:
    scipy.io.savemat(path, {name: value}, format="5")


def save_v73(path, name: str, value: np.ndarray) -> None:
    """Write ``value`` (MATLAB-indexed) the way MATLAB's ``save -v7.3`` does: HDF5 dimensions are
    MATLAB's reversed over the same column-major memory, plus the 512-byte MAT header."""
    matlab_class = {"f8": "double", "f4": "single", "u1": "uint8", "b1": "logical"}[value.dtype.str[1:]]
    if value.dtype == bool:
        value = value.astype(np.uint8)  # MATLAB stores logical arrays as uint8 with MATLAB_class "logical"
    with h5py.File(path, "w", userblock_size=512) as f:
        dset = f.create_dataset(name, data=np.ascontiguousarray(value.T))
        dset.attrs["MATLAB_class"] = np.bytes_(matlab_class)
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 .".ljust(116) + b"\0" * 8 + b"\x00\x02IM"
    with open(path, "r+b") as raw:
        raw.write(header)


def mattorch(value: np.ndarray) -> np.ndarray:
    """What mattorch gave Lua: dimensions reversed, column-major memory reused as row-major."""
    return value.ravel(order="F").reshape(value.shape[::-1])


FORMS = {
    "64x64x1xN": lambda p: p,
    "64x64xN": lambda p: p[:, :, 0, :],
    "64x64": lambda p: p[:, :, 0, :1].reshape(64, 64),
}


@pytest.mark.parametrize("dtype", [np.uint8, np.float64, np.float32])
@pytest.mark.parametrize("form", list(FORMS))
def test_v5_and_v73_read_identically(tmp_path, form, dtype):
    value = FORMS[form](matlab_patches(dtype=dtype))
    save_v5(tmp_path / "p5.mat", "patches", value)
    save_v73(tmp_path / "p73.mat", "patches", value)
    assert h5py.is_hdf5(tmp_path / "p73.mat") and not h5py.is_hdf5(tmp_path / "p5.mat")
    n = 1 if form == "64x64" else N
    for layout in ("original", "image"):
        a = read_mat_patches(tmp_path / "p5.mat", layout=layout)
        b = read_mat_patches(tmp_path / "p73.mat", layout=layout)
        assert a.dtype == b.dtype == np.float32
        assert a.shape == b.shape == (n, 64, 64)
        np.testing.assert_array_equal(a, b)


def test_h5py_sees_matlab_dimensions_reversed(tmp_path):
    value = matlab_patches()
    save_v73(tmp_path / "p73.mat", "patches", value)
    with h5py.File(tmp_path / "p73.mat", "r") as f:
        raw = f["patches"][()]
    assert raw.shape == (N, 1, 64, 64)
    np.testing.assert_array_equal(raw, mattorch(value))


@pytest.mark.parametrize("save", [save_v5, save_v73])
def test_layouts(tmp_path, save):
    value = matlab_patches()
    save(tmp_path / "p.mat", "patches", value)
    original = read_mat_patches(tmp_path / "p.mat", layout="original")
    image = read_mat_patches(tmp_path / "p.mat", layout="image")
    # (b) the two layouts are transposes of each other, and the data is not symmetric
    np.testing.assert_array_equal(original, image.transpose(0, 2, 1))
    assert not np.array_equal(original, image)
    # (c) layout="image": patch i is P(:, :, 1, i) as MATLAB displays it (marker top-left,
    # intensity growing to the right)
    from_v5 = scipy.io.loadmat(_v5(tmp_path, value))["patches"]
    assert from_v5.shape == (64, 64, 1, N)
    for i in range(N):
        np.testing.assert_array_equal(image[i], from_v5[:, :, 0, i])
    assert (image[:, :8, :4] == 255).all() and (image[:, 8:, 4:] < 255).all()
    assert (np.diff(image[:, 20, 5:60], axis=-1) > 0).all()
    # layout="original": exactly the tensor mattorch handed to the network in desc.lua
    np.testing.assert_array_equal(original, mattorch(value)[:, 0])


def _v5(tmp_path, value):
    path = tmp_path / "reference_v5.mat"
    save_v5(path, "patches", value)
    return path


def test_patches_from_matlab_accepts_column_major_memoryview():
    value = matlab_patches()
    # MATLAB's Python interface passes a memoryview with MATLAB's size and column-major strides.
    view = memoryview(np.asfortranarray(value))
    np.testing.assert_array_equal(patches_from_matlab(view, "image"), np.moveaxis(value[:, :, 0, :], -1, 0))
    np.testing.assert_array_equal(patches_from_matlab(view, "original"), mattorch(value)[:, 0])


@pytest.mark.parametrize("version", ["5", "7.3"])
def test_write_mat_descriptors_matlab_shape(tmp_path, version):
    rng = np.random.default_rng(0)
    desc = rng.standard_normal((5, 128)).astype(np.float32)
    out = tmp_path / "desc.mat"
    write_mat_descriptors(out, desc, version=version)
    assert os.listdir(tmp_path) == ["desc.mat"]  # atomic: no temporary left behind
    x = _load_matlab_view(out)
    assert x.dtype == np.float64 and x.shape == (128, 5)
    for i in range(5):
        np.testing.assert_array_equal(x[:, i], desc[i])


def test_write_v73_is_a_matlab_file(tmp_path):
    out = tmp_path / "desc.mat"
    write_mat_descriptors(out, np.ones((2, 128)), version="7.3")
    header = out.read_bytes()[:512]
    assert header.startswith(b"MATLAB 7.3 MAT-file")
    assert header[124:128] == b"\x00\x02IM"
    with h5py.File(out, "r") as f:
        assert f.userblock_size == 512
        assert f["x"].shape == (2, 128)  # MATLAB's 128x2, dimensions reversed
        assert f["x"].attrs["MATLAB_class"] == b"double"
        assert f["x"].dtype == np.float64


def test_write_mat_descriptors_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="version"):
        write_mat_descriptors(tmp_path / "d.mat", np.zeros((1, 128)), version="4")
    with pytest.raises(ValueError, match=r"\(N, 128\)"):
        write_mat_descriptors(tmp_path / "d.mat", np.zeros(128))
    assert not list(tmp_path.iterdir())


def _load_matlab_view(path) -> np.ndarray:
    """The array MATLAB's ``load`` would give, indexed like MATLAB."""
    if h5py.is_hdf5(path):
        with h5py.File(path, "r") as f:
            return f["x"][()].T
    return scipy.io.loadmat(path)["x"]


@pytest.mark.parametrize("save", [save_v5, save_v73])
def test_describe_mat(tmp_path, save, split4_model):
    from deepdesc import describe

    value = matlab_patches(dtype=np.float64)
    save(tmp_path / "patches.mat", "patches", value)
    n = describe_mat(tmp_path / "patches.mat", tmp_path / "desc.mat", model=split4_model)
    assert n == N
    assert h5py.is_hdf5(tmp_path / "desc.mat") == (save is save_v73)  # same version as the input
    x = _load_matlab_view(tmp_path / "desc.mat")
    assert x.shape == (128, N)
    by_image = describe_mat(
        tmp_path / "patches.mat", tmp_path / "desc_image.mat", model=split4_model, layout="image", version="5"
    )
    assert by_image == N
    x_image = scipy.io.loadmat(tmp_path / "desc_image.mat")["x"]
    for i in range(N):
        patch = value[:, :, 0, i]  # P(:, :, 1, i)
        np.testing.assert_allclose(x[:, i], describe(patch.T[None], model=split4_model)[0], atol=1e-5)
        np.testing.assert_allclose(x_image[:, i], describe(patch[None], model=split4_model)[0], atol=1e-5)
    assert not np.allclose(x, x_image, atol=1e-3)
    np.testing.assert_allclose(
        describe_matlab_array(memoryview(np.asfortranarray(value)), model=split4_model), x, atol=1e-6
    )


def test_describe_mat_other_version(tmp_path, split4_model):
    save_v5(tmp_path / "patches.mat", "patches", matlab_patches()[:, :, 0, :])
    describe_mat(tmp_path / "patches.mat", tmp_path / "d73.mat", model=split4_model, version="7.3")
    describe_mat(tmp_path / "patches.mat", tmp_path / "d5.mat", model=split4_model)
    np.testing.assert_allclose(_load_matlab_view(tmp_path / "d73.mat"), _load_matlab_view(tmp_path / "d5.mat"))


@pytest.mark.parametrize("save", [save_v5, save_v73])
def test_missing_variable(tmp_path, save):
    save(tmp_path / "p.mat", "P", matlab_patches())
    with pytest.raises(ValueError, match=r"p\.mat.*'patches'.*'P'.*64x64x1xN"):
        read_mat_patches(tmp_path / "p.mat")
    assert read_mat_patches(tmp_path / "p.mat", variable="P").shape == (N, 64, 64)


@pytest.mark.parametrize("save", [save_v5, save_v73])
@pytest.mark.parametrize(
    "bad", [np.zeros((32, 32, 1, 2)), np.zeros((64, 64, 2, 2)), np.zeros((64, 32)), np.zeros((2, 64, 64))]
)
def test_wrong_shape(tmp_path, save, bad):
    save(tmp_path / "p.mat", "patches", bad)
    size = "x".join(str(d) for d in bad.shape)
    with pytest.raises(ValueError, match=rf"p\.mat.*'patches'.*size {size}.*64x64x1xN"):
        read_mat_patches(tmp_path / "p.mat")


@pytest.mark.parametrize("save", [save_v5, save_v73])
def test_nan(tmp_path, save):
    value = matlab_patches(dtype=np.float64)
    value[5, 7, 0, 1] = np.nan
    save(tmp_path / "p.mat", "patches", value)
    with pytest.raises(ValueError, match=r"p\.mat.*'patches'.*NaN"):
        read_mat_patches(tmp_path / "p.mat")


def test_non_numeric(tmp_path):
    scipy.io.savemat(tmp_path / "s.mat", {"patches": "some text"})
    with pytest.raises(ValueError, match=r"s\.mat.*'patches'.*char.*64x64x1xN"):
        read_mat_patches(tmp_path / "s.mat")
    with h5py.File(tmp_path / "c.mat", "w", userblock_size=512) as f:
        f.create_dataset("patches", data=np.zeros((3, 4), dtype=np.uint16)).attrs["MATLAB_class"] = np.bytes_("char")
    with pytest.raises(ValueError, match=r"c\.mat.*'patches'.*char"):
        read_mat_patches(tmp_path / "c.mat")


def test_not_a_mat_file(tmp_path):
    (tmp_path / "notes.mat").write_text("these are not patches\n" * 20)
    with pytest.raises(ValueError, match=r"notes\.mat.*not a MATLAB \.mat file"):
        read_mat_patches(tmp_path / "notes.mat")
    (tmp_path / "empty.mat").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.mat.*not a MATLAB"):
        read_mat_patches(tmp_path / "empty.mat")
    with pytest.raises(FileNotFoundError, match="missing.mat"):
        read_mat_patches(tmp_path / "missing.mat")


def test_bad_layout(tmp_path):
    save_v5(tmp_path / "p.mat", "patches", matlab_patches())
    with pytest.raises(ValueError, match="layout"):
        read_mat_patches(tmp_path / "p.mat", layout="transposed")


def test_describe_mat_cli_matches_library(tmp_path, t7_paths):
    """`deepdesc describe-mat` writes what describe() gives for the original bridge's layout."""
    import scipy.io

    from deepdesc import describe
    from deepdesc.cli import main
    from deepdesc.hub.weights import load_t7

    rng = np.random.default_rng(5)
    patches = rng.integers(0, 256, (64, 64, 1, 3)).astype(np.float64)
    patches[:8, :4] = 255  # asymmetric marker
    scipy.io.savemat(tmp_path / "p.mat", {"patches": patches})
    for layout, view in (("original", lambda p: p.T), ("image", lambda p: p)):
        out = tmp_path / f"d_{layout}.mat"
        argv = ["describe-mat", str(tmp_path / "p.mat"), str(out), "--model", str(t7_paths["split4"])]
        assert main([*argv, "--layout", layout]) == 0
        x = scipy.io.loadmat(out)["x"]
        assert x.shape == (128, 3)
        expected = describe(np.stack([view(patches[:, :, 0, i]) for i in range(3)]), model=load_t7(t7_paths["split4"]))
        np.testing.assert_allclose(x.T, expected, atol=1e-5)


@pytest.mark.parametrize("save", [save_v5, save_v73])
def test_logical_rejected_in_both_formats(tmp_path, save):
    save(tmp_path / "p.mat", "patches", matlab_patches() > 128)
    with pytest.raises(ValueError) as info:
        read_mat_patches(tmp_path / "p.mat")
    assert str(info.value).startswith(
        f"{tmp_path / 'p.mat'}: variable 'patches': holds logical data, not real numbers (a logical mask is not an"
    )
    assert "64x64x1xN" in str(info.value)


def test_logical_rejected_from_matlab_array():
    with pytest.raises(ValueError, match="^array: holds logical data, not real numbers"):
        patches_from_matlab(memoryview(np.ones((64, 64, 1, 2), dtype=bool)))


OCTAVE_TEXT = b"# Created by Octave 7.3.0, Tue Dec 01 18:58:09 2026 UTC <me@host>\n# name: patches\n# type: matrix\n"


@pytest.mark.parametrize(
    ("content", "what"),
    [
        (OCTAVE_TEXT, r"GNU Octave's text format \(what Octave's save writes by default\)"),
        (b"# name: patches\n# type: matrix\n# rows: 64\n", "GNU Octave's text format"),
        (b"Octave-1-L\x00\x01\x00\x00\x00b", r"GNU Octave's binary format \(save -binary\)"),
        (b"\x1f\x8b\x08\x00" + b"\x00" * 60, r"gzip-compressed \(Octave's save -zip\)"),
    ],
)
def test_octave_native_formats_named(tmp_path, content, what):
    (tmp_path / "p.mat").write_bytes(content)
    with pytest.raises(ValueError, match=rf"p\.mat: {what}.*not a MAT-file; .*save\('-v7', 'p\.mat', 'patches'\)"):
        read_mat_patches(tmp_path / "p.mat")


def test_octave_hdf5_format_named(tmp_path):
    """Octave's ``save -hdf5`` stores each variable as a group holding ``type`` and ``value``."""
    with h5py.File(tmp_path / "p.mat", "w") as f:
        g = f.create_group("patches")
        g.attrs["OCTAVE_NEW_FORMAT"] = np.uint8(1)
        g.create_dataset("type", data=np.bytes_("uint8 matrix"))
        g.create_dataset("value", data=np.zeros((2, 1, 64, 64), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"GNU Octave's own HDF5 format \(save -hdf5\).*save\('-v7', 'p\.mat'"):
        read_mat_patches(tmp_path / "p.mat")


@pytest.mark.parametrize(
    ("save", "option", "hdf5"), [(save_v5, "7.3", True), (save_v73, "5", False), (save_v5, None, False)]
)
def test_describe_mat_cli_mat_version(tmp_path, save, option, hdf5):
    from deepdesc.cli import main

    save(tmp_path / "p.mat", "patches", matlab_patches(2))
    argv = ["describe-mat", str(tmp_path / "p.mat"), str(tmp_path / "d.mat")]
    assert main(argv + (["--mat-version", option] if option else [])) == 0
    assert h5py.is_hdf5(tmp_path / "d.mat") == hdf5
    assert _load_matlab_view(tmp_path / "d.mat").shape == (128, 2)


def test_describe_mat_cli_rejects_unknown_mat_version(tmp_path, capsys):
    from deepdesc.cli import main

    with pytest.raises(SystemExit):
        main(["describe-mat", "p.mat", "d.mat", "--mat-version", "4"])
    assert "--mat-version" in capsys.readouterr().err


def test_matlab_struct_is_not_taken_for_octave_hdf5(tmp_path):
    with h5py.File(tmp_path / "p.mat", "w", userblock_size=512) as f:
        g = f.create_group("patches")
        g.attrs["MATLAB_class"] = np.bytes_("struct")
        g.create_dataset("type", data=np.zeros(1))
        g.create_dataset("value", data=np.zeros(1))
    with pytest.raises(ValueError, match=r"p\.mat: variable 'patches': is a struct, not a numeric array"):
        read_mat_patches(tmp_path / "p.mat")
