"""Rollback journal: a writer killed at any write leaves the HDF5 file byte-identical to before it opened it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from deepdesc.io.h5 import FileInUseError, list_images, open_h5, read_features, write_features
from deepdesc.io.journal import journal_path, journaled, recover

REPO = Path(__file__).resolve().parents[1]

# Adds one image group through the journal; dies (os._exit(9)) at the K-th write of the file ("data": after
# writing half its bytes) or at the K-th journal record ("journal": with the record cut short).
_CHILD = textwrap.dedent(
    """
    import os, sys, h5py, numpy as np
    from deepdesc.io import journal
    path, where, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
    calls = {"data": 0, "journal": 0}
    write, save = journal.JournaledFile.write, journal.JournaledFile._save
    def dying_write(self, data):
        calls["data"] += 1
        if where == "data" and calls["data"] == k:
            view = memoryview(data).cast("B")
            write(self, view[: len(view) // 2])
            os._exit(9)
        return write(self, data)
    def dying_save(self, offset, length):
        size = os.fstat(self._jfd).st_size
        save(self, offset, length)
        if os.fstat(self._jfd).st_size == size:
            return  # a range saved before
        calls["journal"] += 1
        if where == "journal" and calls["journal"] == k:
            os.ftruncate(self._jfd, os.fstat(self._jfd).st_size - 3)
            os._exit(9)
    journal.JournaledFile.write, journal.JournaledFile._save = dying_write, dying_save
    with journal.journaled(path) as file, h5py.File(file, "a") as fd:
        grp = fd.create_group("seq1/new.jpg")
        grp.create_dataset("keypoints", data=np.arange(600, dtype=np.float32).reshape(300, 2))
        grp.create_dataset("descriptors", data=np.ones((128, 300), np.float32))
    print(calls[where])
    """
)


def _features(rng: np.random.Generator, n: int = 300) -> dict[str, np.ndarray]:
    return {"keypoints": rng.random((n, 2), dtype=np.float32) * 100, "descriptors": rng.random((n, 128), np.float32)}


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("journal") / "base.h5"
    rng = np.random.default_rng(0)
    for name in ("seq0/a.jpg", "seq0/b.jpg", "seq1/c.jpg"):
        write_features(path, name, _features(rng))
    return path


def _run_child(path: Path, where: str, k: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), where, str(k)], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("where", ["data", "journal"])
def test_writer_killed_at_every_write_rolls_back_exactly(snapshot, tmp_path, where):
    full = tmp_path / "full.h5"
    shutil.copyfile(snapshot, full)
    done = _run_child(full, where, 0)
    assert done.returncode == 0, done.stderr
    count = int(done.stdout)
    assert count >= (10 if where == "data" else 2)  # HDF5 updates its metadata in several places
    assert "seq1/new.jpg" in list_images(full) and not journal_path(full).exists()
    before = snapshot.read_bytes()
    for k in range(1, count + 1):
        path = tmp_path / f"{where}{k}.h5"
        shutil.copyfile(snapshot, path)
        died = _run_child(path, where, k)
        assert died.returncode == 9, died.stderr
        assert journal_path(path).exists()
        assert recover(path)
        assert path.read_bytes() == before, f"killed at {where} write {k}: not rolled back"
        assert not journal_path(path).exists()
    assert list_images(path) == ["seq0/a.jpg", "seq0/b.jpg", "seq1/c.jpg"]


def test_open_rolls_back_a_dead_writer_and_recovery_is_idempotent(snapshot, tmp_path):
    path = tmp_path / "f.h5"
    shutil.copyfile(snapshot, path)
    assert _run_child(path, "data", 8).returncode == 9
    saved = tmp_path / "journal.copy"
    shutil.copyfile(journal_path(path), saved)
    torn = path.read_bytes()
    assert list_images(path) == ["seq0/a.jpg", "seq0/b.jpg", "seq1/c.jpg"]  # open_h5 rolled it back
    assert path.read_bytes() == snapshot.read_bytes()
    # a recovery killed half-way is redone from the start
    path.write_bytes(torn[: len(torn) // 2] + snapshot.read_bytes()[len(torn) // 2 :])
    shutil.copyfile(saved, journal_path(path))
    assert recover(path) and path.read_bytes() == snapshot.read_bytes()
    assert not recover(path)
    write_features(path, "seq1/new.jpg", _features(np.random.default_rng(1)))
    assert read_features(path, "seq1/new.jpg")["descriptors"].shape == (300, 128)


def test_torn_header_and_created_file(tmp_path):
    path = tmp_path / "f.h5"
    write_features(path, "a.jpg", _features(np.random.default_rng(0)))
    before = path.read_bytes()
    journal_path(path).write_bytes(b"DDJRNL1\n\x01")  # died while writing the header: file untouched
    assert recover(path) and path.read_bytes() == before and not journal_path(path).exists()

    new = tmp_path / "new.h5"
    assert _run_child(new, "data", 3).returncode == 9  # died while creating the file
    assert recover(new) and not new.exists() and not journal_path(new).exists()


def test_exception_inside_a_write_rolls_back(snapshot, tmp_path):
    path = tmp_path / "f.h5"
    shutil.copyfile(snapshot, path)
    with pytest.raises(RuntimeError, match="boom"), open_h5(path, "a") as fd:
        fd.create_group("seq2/x.jpg").create_dataset("keypoints", data=np.zeros((5, 2), np.float32))
        fd.flush()
        raise RuntimeError("boom")
    assert path.read_bytes() == snapshot.read_bytes() and not journal_path(path).exists()
    with pytest.raises(ValueError), journaled(tmp_path / "fresh.h5"):
        raise ValueError
    assert not (tmp_path / "fresh.h5").exists()


def test_live_writer_keeps_its_journal(snapshot, tmp_path):
    path = tmp_path / "f.h5"
    shutil.copyfile(snapshot, path)
    with open_h5(path, "a") as fd:
        fd.attrs["x"] = 1
        assert journal_path(path).exists()
        with pytest.raises(FileInUseError, match="open in another process"), open_h5(path, "r"):
            pass
        with pytest.raises(FileInUseError), open_h5(path, "a"):
            pass
    assert not journal_path(path).exists()
    with h5py.File(path, "r") as fd:  # committed writes are plain HDF5
        assert fd.attrs["x"] == 1


def test_verify_rolls_back_before_checking(snapshot, tmp_path):
    from deepdesc.engine.verify import verify_file

    path = tmp_path / "f.h5"
    shutil.copyfile(snapshot, path)
    assert _run_child(path, "data", 5).returncode == 9
    report = verify_file(path)
    assert report.entries == 3 and not any("cannot be read" in p for p in report.problems)
    assert path.read_bytes() == snapshot.read_bytes() and not journal_path(path).exists()


def test_locking_follows_hdf5s_switch(tmp_path, monkeypatch):
    from deepdesc.io.journal import lock_exclusive

    path = tmp_path / "f.bin"
    path.write_bytes(b"x")
    first, second = os.open(path, os.O_RDWR), os.open(path, os.O_RDWR)
    try:
        assert lock_exclusive(first) and not lock_exclusive(second)
        monkeypatch.setenv("HDF5_USE_FILE_LOCKING", "FALSE")
        assert lock_exclusive(second)
    finally:
        os.close(first)
        os.close(second)
