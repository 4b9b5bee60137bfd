"""The MATLAB bridge driven by a real MATLAB-compatible client: GNU Octave (``octave-cli``).

One Octave run (module fixture) saves patches the way a user would (``save -v7`` / ``-v6``;
double, single, uint8; 64x64x1xN, 64x64xN, N=1), calls ``deepdesc describe-mat`` through
``system(...)``, ``load``s the result and saves what it saw; the tests compare that with
:func:`deepdesc.describe` run here on the same patches. The bad cases (wrong variable, wrong size,
NaN, logical, Octave's own text and HDF5 formats) check the exit status and the message Octave
gets back. Without Octave the tests are skipped (``apt-get install octave``); under ``CI=true``
they fail instead, since ``.ci/run`` installs it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io

import deepdesc

OCTAVE_FLAGS = ("--no-gui", "--no-window-system", "--norc", "--quiet")
TIMEOUT_S = 300


def octave_cli() -> str:
    """Path of ``octave-cli``; skips the test without it (fails under ``CI=true``)."""
    path = shutil.which("octave-cli")
    if path is None:
        message = "GNU Octave (octave-cli) not installed: apt-get install octave"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def octave_str(text: str) -> str:
    """``text`` as an Octave single-quoted string literal."""
    return "'" + text.replace("'", "''") + "'"


def matlab_patches(n: int) -> np.ndarray:
    """The 64x64x1xN stack Octave's ``make_patches(n)`` builds, MATLAB-indexed (m[r, c, 0, i] == P(r+1, c+1, 1, i+1)).

    Integers 0..255 (exact in uint8, single and double), not symmetric: a bright marker in the
    top-left corner (rows 1..8, columns 1..4) and a ramp that differs along rows and columns."""
    r, c = np.mgrid[0:64, 0:64]
    stack = np.empty((64, 64, 1, n))
    for i in range(n):
        p = np.mod(3 * c + 5 * r + 17 * i + np.floor(r * c / 7), 256)
        p[:8, :4] = 255
        stack[:, :, 0, i] = p
    return stack


MAKE_PATCHES = """
function P = make_patches(n)
  [c, r] = meshgrid(0:63, 0:63);   % r(r+1, c+1) == r, c(r+1, c+1) == c
  P = zeros(64, 64, 1, n);
  for i = 1:n
    p = mod(3 * c + 5 * r + 17 * (i - 1) + floor(r .* c / 7), 256);
    p(1:8, 1:4) = 255;
    P(:, :, 1, i) = p;
  end
end
"""

# name: (save flags, class, MATLAB size of the saved variable, extra describe-mat options)
GOOD = {
    "v7_double_64x64x1xN": ("'-v7'", "double", (64, 64, 1, 3), ""),
    "v7_single_64x64xN": ("'-v7'", "single", (64, 64, 3), ""),
    "v7_uint8_N1": ("'-v7'", "uint8", (64, 64, 1, 1), ""),
    "v6_uint8_64x64x1xN": ("'-v6'", "uint8", (64, 64, 1, 3), ""),
    "v6_double_64x64xN": ("'-v6'", "double", (64, 64, 3), ""),
    "v6_single_N1": ("'-v6'", "single", (64, 64, 1), ""),
    "v7_uint8_out_v73": ("'-v7'", "uint8", (64, 64, 1, 3), "--mat-version 7.3"),
    "v7_double_layout_image": ("'-v7'", "double", (64, 64, 1, 2), "--layout image"),
}

# name: (Octave code defining the variable(s) to save, save command); the file is NAME.mat
BAD = {
    "wrong_variable": ("P = make_patches(2);", "save('-v7', F, 'P');"),
    "wrong_shape": ("patches = zeros(32, 32, 1, 2);", "save('-v7', F, 'patches');"),
    "nan": ("patches = make_patches(2); patches(6, 8, 1, 2) = NaN;", "save('-v7', F, 'patches');"),
    "logical": ("patches = make_patches(2) > 128;", "save('-v7', F, 'patches');"),
    "octave_text_format": ("patches = make_patches(2);", "save(F, 'patches');"),  # Octave's default format
    "octave_hdf5": ("patches = make_patches(2);", "save('-hdf5', F, 'patches');"),
}

EXPECTED_ERRORS = {
    "wrong_variable": "wrong_variable.mat: no variable 'patches' (variables in the file: 'P'); expected a numeric "
    "64x64x1xN, 64x64xN or 64x64 array",
    "wrong_shape": "wrong_shape.mat: variable 'patches': has MATLAB size 32x32x1x2; expected a numeric 64x64x1xN",
    "nan": "nan.mat: variable 'patches': contains NaN or Inf values",
    "logical": "logical.mat: variable 'patches': holds logical data, not real numbers",
    "octave_text_format": "octave_text_format.mat: GNU Octave's text format (what Octave's save writes by default), "
    "not a MAT-file; in Octave, save a MAT-file instead: save('-v7', 'octave_text_format.mat', 'patches')",
    "octave_hdf5": "octave_hdf5.mat: GNU Octave's own HDF5 format (save -hdf5), not a MATLAB v7.3 MAT-file; "
    "in Octave, save a MAT-file instead: save('-v7', 'octave_hdf5.mat', 'patches')",
}


def _script() -> str:
    command = f"{shlex.quote(sys.executable)} -m deepdesc.cli describe-mat"
    lines = ["1;", MAKE_PATCHES, f"cmd = {octave_str(command)};", "results = struct();"]
    for name, (flags, cls, size, options) in GOOD.items():
        lines += [
            f"% {name}",
            f"patches = reshape(cast(make_patches({size[-1] if len(size) > 2 else 1}), '{cls}'), {list(size)});",
            f"save({flags}, '{name}_in.mat', 'patches');",
            f"[status, output] = system([cmd ' {name}_in.mat {name}_out.mat {options} 2>&1']);",
            "r = struct('status', status, 'output', output, 'in_size', size(patches), 'in_class', class(patches));",
            "try",
            f"  S = load('{name}_out.mat');",
            "  r.x = S.x; r.x_size = size(S.x); r.x_class = class(S.x); r.error = '';",
            "catch err",
            "  r.error = err.message;",
            "end",
            f"results.{name} = r;",
        ]
    for name, (define, save) in BAD.items():
        lines += [
            f"% {name}",
            f"F = '{name}.mat';",
            define,
            save,
            f"[status, output] = system([cmd ' {name}.mat {name}_out.mat 2>&1']);",
            f"results.{name} = struct('status', status, 'output', output, 'written', exist('{name}_out.mat', 'file'));",
        ]
    lines.append("save('-v7', 'results.mat', 'results');")
    return "\n".join(lines) + "\n"


def _text(value) -> str:
    """An Octave char row as scipy loads it (``''`` comes back as an empty array)."""
    return value if isinstance(value, str) else "".join(np.asarray(value, dtype=str).ravel())


def _octave_size(size: tuple[int, ...]) -> tuple[int, ...]:
    """``size(P)`` in Octave/MATLAB: trailing singleton dimensions beyond the second are dropped."""
    size = list(size)
    while len(size) > 2 and size[-1] == 1:
        size.pop()
    return tuple(size)


@pytest.fixture(scope="module")
def octave_results(tmp_path_factory) -> tuple[Path, dict]:
    octave = octave_cli()
    work = tmp_path_factory.mktemp("octave")
    (work / "bridge.m").write_text(_script())
    env = dict(os.environ)
    # system() runs this Python; make sure it imports the deepdesc under test.
    root = str(Path(deepdesc.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [octave, *OCTAVE_FLAGS, "bridge.m"], cwd=work, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    if proc.returncode != 0 or not (work / "results.mat").is_file():
        pytest.fail(f"octave-cli failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    loaded = scipy.io.loadmat(work / "results.mat", squeeze_me=True, struct_as_record=False)["results"]
    results = {name: getattr(loaded, name) for name in loaded._fieldnames}
    return work, results


@pytest.fixture(scope="module")
def default_model():
    return deepdesc.load_model("default", device="cpu")


@pytest.mark.parametrize("name", list(GOOD))
def test_octave_round_trip_matches_python(octave_results, default_model, name):
    work, results = octave_results
    r = results[name]
    flags, cls, size, options = GOOD[name]
    n = size[-1] if len(size) > 2 else 1
    assert r.status == 0, r.output
    assert _text(r.error) == "", r.error
    assert f"described {n} patches" in r.output
    # what Octave saved is what we meant (MATLAB drops trailing singleton dimensions)
    assert tuple(np.atleast_1d(r.in_size)) == _octave_size(size)
    assert r.in_class == cls
    # what Octave loaded: a 128xN double matrix, x(:, i) the descriptor of patches(:, :, 1, i)
    x = np.asarray(r.x, dtype=np.float64).reshape(128, n)  # squeeze_me turns 128x1 into (128,)
    assert tuple(np.atleast_1d(r.x_size)) == (128, n) and r.x_class == "double"
    m = matlab_patches(n)
    layout_image = "--layout image" in options
    patches = np.stack([m[:, :, 0, i] if layout_image else m[:, :, 0, i].T for i in range(n)])
    expected = deepdesc.describe(patches, model=default_model)
    np.testing.assert_allclose(x.T, expected, atol=1e-4, rtol=1e-4)
    # Octave loads the file exactly as Python reads it; v7.3 only when asked for
    out = work / f"{name}_out.mat"
    if "--mat-version 7.3" in options:
        assert h5py.is_hdf5(out) and out.read_bytes().startswith(b"MATLAB 7.3 MAT-file")
        with h5py.File(out, "r") as f:
            np.testing.assert_array_equal(f["x"][()].T, x)
    else:
        assert not h5py.is_hdf5(out)
        np.testing.assert_array_equal(scipy.io.loadmat(out)["x"], x)


def test_octave_layouts_differ(octave_results):
    _, results = octave_results
    assert results["v7_double_64x64x1xN"].status == results["v7_double_layout_image"].status == 0
    original = np.asarray(results["v7_double_64x64x1xN"].x)[:, :2]
    image = np.asarray(results["v7_double_layout_image"].x)
    assert not np.allclose(original, image, atol=1e-3)


@pytest.mark.parametrize("name", list(BAD))
def test_octave_bad_input_is_a_clear_error(octave_results, name):
    work, results = octave_results
    r = results[name]
    assert r.status == 2, r.output
    assert f"deepdesc describe-mat: error: {EXPECTED_ERRORS[name]}" in r.output
    assert "Traceback" not in r.output
    assert not r.written and not (work / f"{name}_out.mat").exists()


def test_octave_default_save_is_its_text_format(octave_results):
    """The case above really is Octave's default ``save`` output, not a MAT-file."""
    work, _ = octave_results
    assert (work / "octave_text_format.mat").read_bytes().startswith(b"# Created by Octave")
    assert (work / "logical.mat").read_bytes().startswith(b"MATLAB 5.0 MAT-file")
