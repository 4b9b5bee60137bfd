"""MATLAB bridge: read patches from a .mat file, write descriptors MATLAB can load.

The original DeepDesc release shipped ``desc.lua``: MATLAB saved a variable ``patches``
(64x64x1xN, values 0..255) to a .mat file, Lua read it through mattorch and wrote the
descriptors back as a 128xN double matrix ``x``. mattorch reverses the order of dimensions
and copies memory unchanged, so MATLAB's column-major 64x64x1xN array became a row-major
Nx1x64x64 Torch tensor whose patches are the *transposes* of the MATLAB matrices:
``torch_patch[r][c] == P(c, r, 1, i)``. The released networks were trained and evaluated
with patches fed that way.

``layout`` chooses the orientation of the patches handed to the network:

* ``"original"`` (default) reproduces the original bridge exactly (patch transposed relative
  to how ``imshow(P(:,:,1,i))`` displays it), so descriptors match those the original
  ``desc.lua`` produced for the same .mat file.
* ``"image"`` keeps MATLAB's orientation: row r, column c of ``P(:,:,1,i)`` is row r,
  column c of the patch, the same orientation :func:`deepdesc.describe` uses for patches
  cropped from an image in Python.

Both MAT v5/v7 (``save``, read through :func:`scipy.io.loadmat`) and v7.3 (``save -v7.3``,
HDF5, read through h5py) files are supported and give identical results. GNU Octave writes MAT
files only when asked (``save -v7`` or ``-v6``); its own formats (the default text format,
``-binary``, ``-hdf5``, ``-zip``) are recognised and rejected with a message saying so.

Internally an array is first brought to *MATLAB indexing* (``m[r, c, ...] == P(r+1, c+1, ...)``,
with ``m.shape`` equal to MATLAB's ``size(P)``): scipy already returns that; h5py sees the
dimensions reversed over the same memory, so its array is fully transposed.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..utils import atomic_path

__all__ = [
    "LAYOUTS",
    "describe_mat",
    "describe_matlab_array",
    "mat_version",
    "descriptors_to_matlab",
    "patches_from_matlab",
    "read_mat_patches",
    "write_mat_descriptors",
]

PATCH = 64
LAYOUTS = ("original", "image")
_VERSIONS = ("5", "7.3")
_EXPECTED = "a numeric 64x64x1xN, 64x64xN or 64x64 array with values 0..255 (MATLAB: save(file, 'patches'))"
_NUMERIC_CLASSES = frozenset(
    {"double", "single", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"}
)
_HDF5_SPECIAL = frozenset({"#refs#", "#subsystem#"})
_OCTAVE_SAVE = "in Octave, save a MAT-file instead: save('-v7', '{file}', '{variable}')"
_DTYPE_KINDS = {"b": "logical", "c": "complex", "U": "char", "S": "char", "O": "cell/object", "V": "struct"}
_MATLAB_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,62}")


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")


def _normalize_version(version: Any) -> str:
    text = str(version).strip().lower().lstrip("-").lstrip("v")
    if text in ("5", "6", "7"):
        return "5"
    if text == "7.3":
        return "7.3"
    raise ValueError(f"MAT-file version must be '5' or '7.3'; got {version!r}")


def _non_numeric(source: str, what: str) -> ValueError:
    """The error for a variable whose class is not a real numeric one (same text for every format)."""
    hint = ""
    if what == "logical":
        hint = " (a logical mask is not an image: convert it to intensities 0..255, e.g. uint8(patches) * 255)"
    return ValueError(f"{source}: holds {what} data, not real numbers{hint}; expected {_EXPECTED}")


def patches_from_matlab(array: Any, layout: str = "original", source: str = "array") -> np.ndarray:
    """Turn an array indexed like MATLAB (``array[r, c, 0, i] == P(r+1, c+1, 1, i+1)``) into
    (N, 64, 64) float32 patches in the requested ``layout``.

    ``array`` is what scipy.io.loadmat returns, or what MATLAB's Python interface passes
    (a memoryview with MATLAB's shape and column-major strides, or ``py.numpy.array(P)``).
    Accepts 64x64x1xN, 64x64xN and 64x64 (one patch). ``source`` names the data in errors.
    """
    _check_layout(layout)
    if not isinstance(array, np.ndarray):
        try:
            array = np.asarray(array)
        except Exception as exc:  # noqa: BLE001 - anything unconvertible is "not numeric"
            raise ValueError(f"{source}: not a numeric array; expected {_EXPECTED}") from exc
    if array.dtype.kind not in "uif":
        raise _non_numeric(source, _DTYPE_KINDS.get(array.dtype.kind, str(array.dtype)))
    shape = array.shape
    ok = shape[:2] == (PATCH, PATCH) and (len(shape) == 2 or len(shape) == 3 or (len(shape) == 4 and shape[2] == 1))
    if not ok:
        size = "x".join(str(d) for d in shape) or "scalar"
        raise ValueError(f"{source}: has MATLAB size {size}; expected {_EXPECTED}")
    image = np.moveaxis(array.reshape(PATCH, PATCH, -1), 2, 0)  # image[i] == P(:, :, 1, i)
    patches = image.transpose(0, 2, 1) if layout == "original" else image
    patches = np.ascontiguousarray(patches, dtype=np.float32)
    if patches.size and not np.isfinite(patches).all():
        raise ValueError(f"{source}: contains NaN or Inf values; expected {_EXPECTED}")
    return patches


def _read_v5(path: Path, variable: str) -> np.ndarray:
    import scipy.io

    try:
        with open(path, "rb") as f:
            data = scipy.io.loadmat(f, variable_names=[variable], mat_dtype=False)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as exc:  # noqa: BLE001 - scipy raises many kinds for non-MAT input
        raise ValueError(f"{path}: not a MATLAB .mat file (v4, v5, v7 or v7.3) ({exc})") from exc
    if variable not in data:
        try:
            with open(path, "rb") as f:
                names = [name for name, _, _ in scipy.io.whosmat(f)]
        except Exception:  # noqa: BLE001
            names = []
        raise ValueError(_missing(path, variable, names))
    value = data[variable]
    if not isinstance(value, np.ndarray):  # e.g. a sparse matrix
        raise ValueError(f"{path}: variable {variable!r} is a {type(value).__name__}; expected {_EXPECTED}")
    if value.dtype == np.uint8 and _v5_class(path, variable) == "logical":
        # scipy returns MATLAB/Octave logical arrays as uint8; only the header's flag tells them apart.
        raise _non_numeric(f"{path}: variable {variable!r}", "logical")
    return value


def _v5_class(path: Path, variable: str) -> str | None:
    import scipy.io

    try:
        with open(path, "rb") as f:
            classes = {name: cls for name, _, cls in scipy.io.whosmat(f)}
    except Exception:  # noqa: BLE001 - loadmat already read the file; this is only a refinement
        return None
    return classes.get(variable)


def _octave_format(path: Path) -> str | None:
    """Which of GNU Octave's own (non-MAT) save formats ``path`` is in, if any."""
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"# Created by Octave") or head.startswith(b"# name: "):
        return "GNU Octave's text format (what Octave's save writes by default)"
    if head.startswith((b"Octave-1-L", b"Octave-1-B")):
        return "GNU Octave's binary format (save -binary)"
    if head.startswith(b"\x1f\x8b"):
        return "gzip-compressed (Octave's save -zip)"
    return None


def _missing(path: Path, variable: str, names: list[str]) -> str:
    listed = ", ".join(repr(n) for n in names) if names else "none"
    return f"{path}: no variable {variable!r} (variables in the file: {listed}); expected {_EXPECTED}"


def _matlab_class(obj: Any) -> str | None:
    value = obj.attrs.get("MATLAB_class")
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        value = value.item() if value.size == 1 else value.tobytes()
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return str(value)


def _read_v73(path: Path, variable: str) -> np.ndarray:
    import h5py

    source = f"{path}: variable {variable!r}"
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"{path}: not a readable MATLAB v7.3 (HDF5) file ({exc})") from exc
    with f:
        if variable not in f or variable in _HDF5_SPECIAL:
            raise ValueError(_missing(path, variable, [k for k in f if k not in _HDF5_SPECIAL]))
        obj = f[variable]
        cls = _matlab_class(obj)
        octave_group = "OCTAVE_NEW_FORMAT" in obj.attrs or (cls is None and {"type", "value"} <= set(obj))
        if isinstance(obj, h5py.Group) and octave_group:  # a MATLAB struct group has MATLAB_class "struct"
            raise ValueError(
                f"{path}: GNU Octave's own HDF5 format (save -hdf5), not a MATLAB v7.3 MAT-file; "
                + _OCTAVE_SAVE.format(file=path.name, variable=variable)
            )
        if not isinstance(obj, h5py.Dataset):
            raise ValueError(f"{source}: is a {cls or 'group'}, not a numeric array; expected {_EXPECTED}")
        if cls is not None and cls not in _NUMERIC_CLASSES:
            raise _non_numeric(source, cls)
        if obj.dtype.kind not in "uif":
            raise _non_numeric(source, _DTYPE_KINDS.get(obj.dtype.kind, str(obj.dtype)))
        if np.any(np.asarray(obj.attrs.get("MATLAB_empty", 0))):
            # MATLAB stores an empty array as its dimensions (MATLAB order), flagged MATLAB_empty.
            dims = tuple(int(d) for d in np.asarray(obj[()]).ravel())
            if dims[:2] != (PATCH, PATCH) and dims[::-1][:2] == (PATCH, PATCH):
                dims = dims[::-1]  # accept the dimensions listed in either order
            return np.zeros(dims, dtype=np.dtype(cls or "double"))
        data = obj[()]
    # h5py reads MATLAB's dimensions reversed over the same (column-major) memory: transposing
    # every axis gives the MATLAB-indexed view, m[r, c, 0, i] == P(r+1, c+1, 1, i+1).
    return np.asarray(data).T


def _is_hdf5(path: Path) -> bool:
    import h5py

    return bool(h5py.is_hdf5(str(path)))


def read_mat_patches(path: str | os.PathLike, variable: str = "patches", layout: str = "original") -> np.ndarray:
    """Read 64x64 patches from a MATLAB .mat file (v4/v5/v7, or v7.3 HDF5) as (N, 64, 64) float32.

    The variable may be 64x64x1xN (the original bridge's form), 64x64xN, or one 64x64 patch,
    of class uint8, double, single (any real numeric class), values 0..255.
    ``layout="original"``: each patch transposed, exactly as the original ``desc.lua`` bridge fed
    the network; ``layout="image"``: ``patches[i]`` equals ``P(:, :, 1, i)`` as displayed by
    ``imshow``. Raises ``ValueError`` naming the file and variable for a file that is not a
    MAT-file (GNU Octave's own formats are named, with the ``save -v7`` to use instead), a missing
    variable, a wrong size, non-numeric data (logical, char, cell, struct, complex, sparse) or
    NaN/Inf values.
    """
    _check_layout(layout)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if _is_hdf5(path):
        array = _read_v73(path, variable)
    else:
        octave = _octave_format(path)
        if octave is not None:
            raise ValueError(
                f"{path}: {octave}, not a MAT-file; " + _OCTAVE_SAVE.format(file=path.name, variable=variable)
            )
        array = _read_v5(path, variable)
    return patches_from_matlab(array, layout, source=f"{path}: variable {variable!r}")


def mat_version(path: str | os.PathLike) -> str:
    """``"7.3"`` for an HDF5-based MAT-file, else ``"5"`` (v4, v5, v6, v7 are all read by scipy)."""
    return "7.3" if _is_hdf5(Path(path)) else "5"


def descriptors_to_matlab(descriptors: Any) -> np.ndarray:
    """(N, D) descriptors -> the D x N float64 array MATLAB should see (``x(:, i)`` is descriptor i)."""
    d = np.asarray(descriptors)
    if d.ndim != 2 or d.dtype.kind not in "uif":
        raise ValueError(f"expected real (N, 128) descriptors; got shape {d.shape}, dtype {d.dtype}")
    return np.asarray(d.T, dtype=np.float64)


def _v73_header() -> bytes:
    stamp = time.strftime("%a %b %d %H:%M:%S %Y", time.localtime())
    text = f"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: {stamp} HDF5 schema 1.00 .".encode("ascii")
    text = text[:116].ljust(116, b" ")
    # 8 bytes subsystem data offset (none), version 0x0200 and the endian indicator 'IM',
    # both little-endian, as MATLAB writes them; the rest of the 512-byte userblock is zero.
    return (text + b"\x00" * 8 + b"\x00\x02" + b"IM").ljust(512, b"\x00")


def _write_v73(path: Path, name: str, matlab_array: np.ndarray) -> None:
    import h5py

    with h5py.File(path, "w", userblock_size=512) as f:
        if matlab_array.size == 0:
            # MATLAB's convention for an empty array: its dimensions as uint64, flagged empty.
            dset = f.create_dataset(name, data=np.array(matlab_array.shape, dtype=np.uint64))
            dset.attrs["MATLAB_empty"] = np.uint8(1)
        else:
            # HDF5 dimensions are MATLAB's reversed over the same memory: (N, D) C-order data
            # is MATLAB's D x N column-major matrix.
            dset = f.create_dataset(name, data=np.ascontiguousarray(matlab_array.T))
        dset.attrs["MATLAB_class"] = np.bytes_("double")
    with open(path, "r+b") as raw:
        raw.write(_v73_header())


def write_mat_descriptors(path: str | os.PathLike, descriptors: Any, variable: str = "x", version: str = "5") -> Path:
    """Write (N, 128) ``descriptors`` as a 128xN double matrix ``variable`` to a MAT-file, atomically.

    In MATLAB, ``load(path)`` gives ``size(x) == [128 N]`` with ``x(:, i)`` the descriptor of
    patch i, as the original ``desc.lua`` wrote it. ``version``: ``"5"`` (scipy.io.savemat;
    readable by every MATLAB and Octave) or ``"7.3"`` (HDF5 with MATLAB's 512-byte header; MATLAB
    and Octave both ``load`` it, except that Octave does not know MATLAB's convention for an empty
    array and sees N=0 descriptors as the 1x2 vector ``[128 0]``).
    """
    import scipy.io

    version = _normalize_version(version)
    if not _MATLAB_NAME.fullmatch(variable):
        raise ValueError(f"{variable!r} is not a valid MATLAB variable name")
    x = descriptors_to_matlab(descriptors)
    path = Path(path)
    with atomic_path(path) as tmp:
        if version == "5":
            with open(tmp, "wb") as f:
                scipy.io.savemat(f, {variable: x}, format="5", do_compression=False)
        else:
            _write_v73(tmp, variable, x)
    return path


def describe_mat(
    in_path: str | os.PathLike,
    out_path: str | os.PathLike,
    model: Any = "default",
    layout: str = "original",
    version: str | None = None,
    variable: str = "patches",
    out_variable: str = "x",
    batch_size: int | None = None,
    device: str | None = None,
) -> int:
    """Read ``variable`` from ``in_path``, describe it, write ``out_variable`` (128xN) to ``out_path``.

    ``model``: a registry name, a .t7/.safetensors path or a loaded model. ``version``: MAT-file
    version of the output, ``None`` for the same as the input. Returns the number of patches.
    """
    version = mat_version(in_path) if version is None else _normalize_version(version)
    patches = read_mat_patches(in_path, variable=variable, layout=layout)
    from ..features.describe import DEFAULT_BATCH_SIZE, describe  # imports torch: after the input checks

    try:
        descriptors = describe(patches, model=model, batch_size=batch_size or DEFAULT_BATCH_SIZE, device=device)
    except ValueError as exc:
        raise ValueError(f"{in_path}: variable {variable!r}: {exc}") from exc
    write_mat_descriptors(out_path, descriptors, variable=out_variable, version=version)
    return int(patches.shape[0])


def describe_matlab_array(
    patches: Any, model: Any = "default", layout: str = "original", batch_size: int | None = None
) -> np.ndarray:
    """For MATLAB's Python interface: a 64x64x1xN (or 64x64xN) MATLAB array in, 128xN double out.

    MATLAB passes ``P`` as a memoryview with MATLAB's size and column-major strides, so the
    array arrives MATLAB-indexed; ``layout`` is as in :func:`read_mat_patches`. Load the model
    once (``net = py.deepdesc.load_model("split4")``) and pass it as ``model`` for speed.
    """
    from ..features.describe import DEFAULT_BATCH_SIZE, describe

    x = patches_from_matlab(np.asarray(patches), layout, source="MATLAB array")
    return descriptors_to_matlab(describe(x, model=model, batch_size=batch_size or DEFAULT_BATCH_SIZE))
