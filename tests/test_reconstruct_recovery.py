"""deepdesc reconstruct killed (SIGKILL) or interrupted (SIGINT) at each stage, then run again.

The killed runs are subprocesses that stop at a chosen point (a wrapper around the stage's writer holds
the process and writes a marker file); the test kills them there, so every kill lands in the same place.
The rerun must finish and equal an uninterrupted run: the same features.h5 and matches.h5 datasets, the same
database rows (cameras, images, keypoints, matches, two-view geometries) and the same model (registered
images and 3D points; mapping is seeded and, here, single-threaded).
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from deepdesc.cli import main

from .conftest import require_shared

pycolmap = pytest.importorskip("pycolmap")

VIEWS = ["0003.jpg", "0004.jpg", "0005.jpg"]
OPTIONS = ["--model", "sift", "--max-keypoints", "200"]

# Run by the killed subprocesses: wrap the writer of one stage so that it holds there (marker file written).
HOLD_SCRIPT = """
import os, sqlite3, sys, time
from pathlib import Path
import pycolmap
from deepdesc.io import h5
marker, stage = Path(os.environ["HOLD_MARKER"]), os.environ["HOLD_STAGE"]

def hold(*args, **kwargs):
    marker.write_text(str(os.getpid()))
    while True:
        time.sleep(1)

def hold_after(func, count):
    calls = []
    def wrapper(*args, **kwargs):
        result = func(*args, **kwargs)
        calls.append(1)
        if len(calls) == count:
            hold()
        return result
    return wrapper

if stage == "extraction":
    h5.write_features = hold_after(h5.write_features, 2)
elif stage == "matching":
    h5.write_matches = hold_after(h5.write_matches, 2)
elif stage == "verification":
    verify = pycolmap.verify_matches
    def verify_then_hold(database, *args, **kwargs):
        verify(database, *args, **kwargs)
        con = sqlite3.connect(database)  # a write-ahead log with other rows stays behind, as a killed COLMAP's does
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("DELETE FROM two_view_geometries")
        con.commit()
        hold()
    pycolmap.verify_matches = verify_then_hold
mapping = pycolmap.incremental_mapping
def single_thread_mapping(database, images, output, options, **kwargs):
    options.num_threads = 1  # seeded and single-threaded, COLMAP's mapping gives the same model every time
    if stage == "mapping":
        kwargs["next_image_callback"] = hold
    elif stage == "interrupt-mapping":  # bundle adjustment repeated without end, all inside COLMAP's C++ code
        options.ba_global_max_refinements = options.ba_local_max_refinements = 10**9
        options.ba_global_max_refinement_change = options.ba_local_max_refinement_change = 0.0
        kwargs["initial_image_pair_callback"] = lambda: marker.write_text(str(os.getpid()))
    return mapping(database, images, output, options, **kwargs)
pycolmap.incremental_mapping = single_thread_mapping

from deepdesc.cli import main
code = main(sys.argv[1:])
sys.stdout.flush()
sys.stderr.flush()
# no interpreter shutdown: COLMAP's cancelled mapping thread may still call the Python hold() above
os._exit(code)
"""


@pytest.fixture(scope="module", autouse=True)
def single_thread_mapping():
    """Mapping with one thread (as the killed runs' script sets it): seeded, it then gives the same model."""
    mapping = pycolmap.incremental_mapping

    def single_thread(database, images, output, options, **kwargs):
        options.num_threads = 1
        return mapping(database, images, output, options, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pycolmap, "incremental_mapping", single_thread)
        yield


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Three views of entry-P10 at 360 x 240 px."""
    source = require_shared("data", "eval", "strecha", "entry-P10", "images")
    folder = tmp_path_factory.mktemp("entry") / "images"
    folder.mkdir()
    for name in VIEWS:
        image = cv2.imread(str(source / name))
        cv2.imwrite(
            str(folder / name.replace(".jpg", ".png")), cv2.resize(image, (360, 240), interpolation=cv2.INTER_AREA)
        )
    return folder


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory) -> Path:
    """An uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "rec"
    assert main(["reconstruct", str(images), "-o", str(out), *OPTIONS]) == 0
    return out


def h5_content(path: Path) -> dict[str, np.ndarray]:
    content: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as fd:
        fd.visititems(lambda name, obj: content.update({name: obj[()]}) if isinstance(obj, h5py.Dataset) else None)
    return content


def database_content(path: Path) -> dict[str, list]:
    queries = {
        "cameras": "SELECT camera_id, model, width, height, params FROM cameras ORDER BY camera_id",
        "images": "SELECT image_id, name, camera_id FROM images ORDER BY image_id",
        "keypoints": "SELECT image_id, rows, cols, data FROM keypoints ORDER BY image_id",
        "matches": "SELECT pair_id, rows, data FROM matches ORDER BY pair_id",
        "geometries": "SELECT pair_id, rows, config, data FROM two_view_geometries ORDER BY pair_id",
    }
    con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True)  # read-only would leave a -wal file
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return {key: con.execute(query).fetchall() for key, query in queries.items()}
    finally:
        con.close()


def model_content(path: Path) -> tuple[int, np.ndarray]:
    model = pycolmap.Reconstruction(path)
    points = np.array(sorted(tuple(p.xyz) for p in model.points3D.values()))
    return model.num_reg_images(), points


def assert_same_output(out: Path, reference: Path) -> None:
    leftovers = [p.name for p in out.iterdir() if p.name.endswith((".tmp", "-wal", "-shm", "-journal"))]
    assert leftovers == [] and sorted(p.name for p in (out / "sparse").iterdir()) == ["0"]
    for name in ("features.h5", "matches.h5"):
        got, expected = h5_content(out / name), h5_content(reference / name)
        assert sorted(got) == sorted(expected), name
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key], err_msg=f"{name}: {key}")
    assert (out / "pairs.txt").read_text() == (reference / "pairs.txt").read_text()
    got_db, expected_db = database_content(out / "database.db"), database_content(reference / "database.db")
    for key in expected_db:
        assert got_db[key] == expected_db[key], key
    assert len(expected_db["geometries"]) == 3
    registered, points = model_content(out / "sparse" / "0")
    expected_registered, expected_points = model_content(reference / "sparse" / "0")
    assert registered == expected_registered == len(VIEWS)
    np.testing.assert_allclose(points, expected_points, rtol=0, atol=1e-6)


def start_held(images: Path, out: Path, stage: str, tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """A reconstruct subprocess that holds at ``stage``; returns once it is there."""
    marker = tmp_path / f"held-{stage}"
    env = {**os.environ, "HOLD_MARKER": str(marker), "HOLD_STAGE": stage}
    argv = [sys.executable, "-c", HOLD_SCRIPT, "reconstruct", str(images), "-o", str(out), *OPTIONS]
    log = open(tmp_path / f"{stage}.log", "w+")  # noqa: SIM115 - read after the process ends
    # a runner started in the background by a non-interactive shell ignores SIGINT, and children inherit that;
    # the child gets the default disposition, as a program started from a terminal has
    proc = subprocess.Popen(
        argv,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    proc.log = log  # type: ignore[attr-defined]
    deadline = time.monotonic() + 120
    while not marker.exists():
        if proc.poll() is not None:
            log.seek(0)
            pytest.fail(f"the run ended (exit {proc.returncode}) before reaching {stage}:\n{log.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the run did not reach {stage} within 120 s")
        time.sleep(0.05)
    return proc, marker


@pytest.mark.parametrize("stage", ["extraction", "matching", "verification", "mapping"])
def test_rerun_after_a_kill_equals_an_uninterrupted_run(stage, images, reference, tmp_path):
    out = tmp_path / "rec"
    proc, _ = start_held(images, out, stage, tmp_path)
    proc.kill()
    assert proc.wait(timeout=30) == -signal.SIGKILL
    proc.log.close()
    assert main(["reconstruct", str(images), "-o", str(out), *OPTIONS]) == 0
    assert_same_output(out, reference)


def test_ctrl_c_during_mapping_stops_with_130_and_resumes(images, reference, tmp_path):
    out = tmp_path / "rec"
    proc, _ = start_held(images, out, "interrupt-mapping", tmp_path)
    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.log.seek(0)
        pytest.fail(f"no exit 60 s after Ctrl-C; the run's output:\n{proc.log.read()[-3000:]}")
    finally:
        proc.kill()
    assert code == 130
    proc.log.seek(0)
    assert "interrupted" in proc.log.read()
    proc.log.close()
    assert not (out / "sparse" / "0").exists() and not list(out.glob(".sparse.*"))
    assert main(["reconstruct", str(images), "-o", str(out), *OPTIONS]) == 0
    assert_same_output(out, reference)


def test_verification_in_chunks_gives_the_same_database(images, reference, tmp_path, monkeypatch):
    from deepdesc.io import colmap

    monkeypatch.setattr(colmap, "VERIFY_CHUNK", 1)  # one verify_matches call per pair (Ctrl-C is read in between)
    out = tmp_path / "rec"
    assert main(["reconstruct", str(images), "-o", str(out), *OPTIONS]) == 0
    assert_same_output(out, reference)


# --- the database file itself ------------------------------------------------------------------------------------


def synthetic_features(names: list[str], n: int = 20) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return {
        name: {
            "keypoints": rng.uniform(0, 300, (n, 2)).astype(np.float32),
            "descriptors": rng.random((n, 128), dtype=np.float32),
            "image_size": np.array([320, 240]),
        }
        for name in names
    }


def leave_stale_wal(database: Path) -> None:
    """What a COLMAP process killed while writing leaves: ``-wal``/``-shm`` files with committed, unmerged rows."""
    script = (
        "import os, signal, sqlite3, sys\n"
        "con = sqlite3.connect(sys.argv[1])\n"
        "con.execute('PRAGMA journal_mode=WAL')\n"
        "con.execute('PRAGMA wal_autocheckpoint=0')\n"
        "con.execute('DELETE FROM keypoints')\n"
        "con.execute('DELETE FROM images')\n"
        "con.commit()\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    assert subprocess.run([sys.executable, "-c", script, str(database)]).returncode == -signal.SIGKILL
    assert Path(f"{database}-wal").stat().st_size > 0


def test_a_killed_processs_journal_is_not_replayed_onto_the_new_database(tmp_path):
    from deepdesc.io.colmap import check_database, export_to_colmap

    database = tmp_path / "database.db"
    export_to_colmap(database, None, synthetic_features(["a.png", "b.png"]), {("a.png", "b.png"): [[0, 0], [1, 1]]})
    leave_stale_wal(database)
    names = ["a.png", "b.png", "c.png"]
    matches = {("a.png", "b.png"): [[0, 0], [1, 1]], ("b.png", "c.png"): [[2, 3]]}
    export_to_colmap(database, None, synthetic_features(names), matches, verified=True, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["database.db"]
    counts = check_database(database, num_images=3, num_pairs=2)
    assert counts["verified_pairs"] == 2
    with pycolmap.Database.open(database) as db:
        assert sorted(image.name for image in db.read_all_images()) == names
        assert db.read_keypoints(db.read_image_with_name("c.png").image_id).shape == (20, 2)


def test_an_interrupted_exports_temporaries_are_removed_and_bad_databases_detected(tmp_path):
    from deepdesc.io.colmap import DatabaseCheckError, check_database, export_to_colmap

    database = tmp_path / "database.db"
    for name in (".database.db.x1y2.tmp", ".database.db.x1y2.tmp-wal", ".database.db.x1y2.tmp-shm"):
        (tmp_path / name).write_bytes(b"left by a killed export")
    features = synthetic_features(["a.png", "b.png"])
    export_to_colmap(database, None, features, {("a.png", "b.png"): [[0, 0]]})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["database.db"]
    with pytest.raises(DatabaseCheckError, match="incomplete database: images 2 .expected 3."):
        check_database(database, num_images=3)
    data = database.read_bytes()
    (tmp_path / "cut.db").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatabaseCheckError, match="cut.db"):
        check_database(tmp_path / "cut.db", num_images=2)


def test_an_unreadable_image_is_left_out_and_the_exit_code_says_so(images, tmp_path, capsys):
    folder = tmp_path / "images"
    shutil.copytree(images, folder)
    (folder / "broken.png").write_bytes(b"not a png")
    code = main(["reconstruct", str(folder), "-o", str(tmp_path / "rec"), *OPTIONS])
    printed = capsys.readouterr().out
    assert code == 1  # as describe: the reconstruction exists, but an image was left out
    assert f"registered {len(VIEWS)}/{len(VIEWS)} images" in printed and "1 skipped: broken.png" in printed


def test_mapper_threads_reach_the_mapper_and_bad_values_stop_before_any_work(images, tmp_path, capsys, monkeypatch):
    code = main(["reconstruct", str(images), "-o", str(tmp_path / "bad"), *OPTIONS, "--mapper-threads", "0"])
    assert code == 2 and "mapper_threads must be a positive integer" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    seen = []
    mapping = pycolmap.incremental_mapping

    def recording(database, images, output, options, **kwargs):
        seen.append(options.num_threads)
        return mapping(database, images, output, options, **kwargs)

    monkeypatch.setattr(pycolmap, "incremental_mapping", recording)
    assert main(["reconstruct", str(images), "-o", str(tmp_path / "rec"), *OPTIONS, "--mapper-threads", "1"]) == 0
    assert seen == [1]


def test_ctrl_c_cancels_the_worker_and_is_raised_again():
    import _thread
    import threading

    from deepdesc.io.colmap import run_interruptible

    seen = {}
    ctrl_c = threading.Timer(0.2, _thread.interrupt_main)  # Ctrl-C while the call runs

    def endless(cancellation_token):
        ctrl_c.start()
        deadline = time.monotonic() + 30  # fail, not hang, if the interrupt never comes
        while not cancellation_token.is_cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        seen["cancelled"] = cancellation_token.is_cancelled
        return "stopped"

    start = time.monotonic()
    # a runner started in the background ignores SIGINT, and interrupt_main then does nothing
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_interruptible(endless)
    finally:
        ctrl_c.cancel()
        signal.signal(signal.SIGINT, previous)
    assert seen == {"cancelled": True} and time.monotonic() - start < 10
    assert run_interruptible(lambda x, cancellation_token: x + 1, 41) == 42
    with pytest.raises(ZeroDivisionError):
        run_interruptible(lambda cancellation_token: 1 / 0)
