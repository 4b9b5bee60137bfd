"""The Ray engine: same output as the local engine, and a job that survives killed workers, drivers and merges.

One local Ray cluster (2 CPUs, no dashboard) serves every test here; it is shut down and its files removed at
the end. Under CI=true Ray must be installed (the ``dev`` extra brings it), elsewhere these tests skip without it.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from deepdesc import extract, match, reconstruct
from deepdesc.cli import main
from deepdesc.engine import ray as ray_engine
from deepdesc.engine.units import JobDir
from deepdesc.engine.verify import verify_file
from deepdesc.errors import OutputMismatchError
from deepdesc.io import h5

from .conftest import require_shared

SIFT = {"extractor": "sift", "max_keypoints": 80}


def _ray():
    try:
        import ray
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("ray is not installed: pip install -e '.[dev]' (the ray extra)")
        pytest.skip("ray is not installed (pip install 'deepdesc[ray]')")
    return ray


@pytest.fixture(scope="session")
def cluster():
    """A 2-CPU local Ray cluster shared by every test of the run; yields its GCS address."""
    ray = _ray()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must stay under 108 bytes
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
        _temp_dir=temp,
    )
    try:
        with pytest.MonkeyPatch.context() as mp:
            # Ray prints the cluster's error events (a worker the tests kill, a retried task) from a background
            # thread, outside any test's captured output: keep the test log clean
            mp.setattr(ray._private.worker, "print_to_stdstream", lambda *args, **kwargs: None, raising=False)
            yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def _image(seed: int) -> np.ndarray:
    from skimage import data

    img = data.camera()
    rng = np.random.default_rng(seed)
    y, x = rng.integers(0, img.shape[0] - 96), rng.integers(0, img.shape[1] - 128)
    return np.ascontiguousarray(img[y : y + 96, x : x + 128])


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """24 small images, a third of them in a subfolder (names with '/')."""
    root = tmp_path_factory.mktemp("rayimages")
    (root / "sub").mkdir()
    for i in range(24):
        cv2.imwrite(str(root / ("sub" if i % 3 == 0 else "") / f"im{i:02d}.png"), _image(i))
    return root


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory) -> Path:
    """The local engine's SIFT features of ``images``."""
    out = tmp_path_factory.mktemp("rayref") / "local.h5"
    extract.main(SIFT, images, out, progress=False)
    return out


def _same_file(a: Path, b: Path) -> None:
    """Same groups, datasets (values, dtypes) and attributes, and the same recorded settings."""

    def content(path: Path) -> dict:
        out = {}
        with h5py.File(path, "r") as fd:
            out["/"] = dict(fd.attrs)

            def visit(key, obj):
                if isinstance(obj, h5py.Dataset):
                    out[key] = (obj.dtype.str, obj[()].tobytes())
                else:
                    out[key + "@"] = dict(obj.attrs)

            fd.visititems(visit)
        return out

    ca, cb = content(a), content(b)
    assert sorted(ca) == sorted(cb)
    for key in ca:
        assert ca[key] == cb[key], key


def test_ray_output_equals_local_bit_for_bit(cluster, images, tmp_path, reference):
    conf = {"extractor": "deepdesc", "model": "default", "max_keypoints": 60}
    local, distributed = tmp_path / "local.h5", tmp_path / "ray.h5"
    expected = extract.main(conf, images, local, progress=False)
    summary = extract.main(conf, images, distributed, progress=False, engine="ray", workers=2, unit_size=5)
    assert summary.described == expected.described == h5.list_images(local) and not summary.skipped
    assert str(summary).replace("ray.h5", "local.h5") == str(expected)
    _same_file(local, distributed)  # keypoints, descriptors, scores, sizes, records, settings
    assert not JobDir(distributed).root.exists()  # the job folder is gone after the merge
    assert verify_file(distributed, images=[n for n in h5.list_images(local)]).ok
    # a rerun finds everything done; other settings are refused before any work, as locally
    assert extract.main(conf, images, distributed, progress=False, engine="ray").existing == summary.described
    with pytest.raises(OutputMismatchError, match="max_keypoints"):
        extract.main({**conf, "max_keypoints": 61}, images, distributed, progress=False, engine="ray")

    pairs = match.sequential_pairs(h5.list_images(reference), 3)
    match.main("mutual-nn", pairs, reference, tmp_path / "m-local.h5", progress=False)
    match.main("mutual-nn", pairs, reference, tmp_path / "m-ray.h5", progress=False, engine="ray", unit_size=20)
    _same_file(tmp_path / "m-local.h5", tmp_path / "m-ray.h5")
    assert verify_file(tmp_path / "m-ray.h5", pairs=pairs).ok


def test_a_worker_killed_mid_unit_is_restarted_and_nothing_is_lost(cluster, images, tmp_path, reference, monkeypatch):
    marker = tmp_path / "crashed"
    monkeypatch.setenv("DEEPDESC_ENGINE_TEST_CRASH", str(marker))  # the first unit's worker exits mid-unit
    out = tmp_path / "f.h5"
    summary = extract.main(SIFT, images, out, progress=False, engine="ray", workers=1, unit_size=4)
    assert marker.exists()  # a worker did die
    assert sorted(summary.described) == h5.list_images(reference) == h5.list_images(out)
    _same_file(reference, out)


DRIVER = textwrap.dedent(
    """
    import sys, ray
    from deepdesc import extract
    ray.init(address=sys.argv[1], log_to_driver=False, logging_level="WARNING")
    extract.main({"extractor": "sift", "max_keypoints": 80}, sys.argv[2], sys.argv[3], progress=False,
                 engine="ray", workers=1, unit_size=2)
    """
)


def test_a_killed_driver_resumes_redoing_only_units_in_flight(cluster, images, tmp_path, reference, monkeypatch):
    out = tmp_path / "f.h5"
    job = JobDir(out)
    env = {**os.environ, "DEEPDESC_ENGINE_TEST_DELAY": "0.4"}
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, cluster, str(images), str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 90
        while len(job.records()) < 3:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the driver recorded no units in time"
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    finished = sorted(job.root.glob("unit-*.h5"))
    recorded = job.records()
    assert 3 <= len(recorded) <= len(finished) < 12
    with open(finished[0], "r+b") as f:  # a damaged shard is found and computed again
        f.truncate(100)
    (out.parent / f".{out.name}.half.tmp").write_bytes(b"\x89HDF half-written merge")  # a killed merge's leftover

    reused = []
    real_collect = ray_engine._collect

    def spy(*args, **kwargs):
        done = real_collect(*args, **kwargs)
        reused.append(len(done))
        return done

    monkeypatch.setattr(ray_engine, "_collect", spy)
    summary = extract.main(SIFT, images, out, progress=False, engine="ray", workers=1, unit_size=2)
    # reused: every finished shard but the damaged one; computed again: only what was in flight or never started
    assert reused == [len(finished) - 1]
    assert sorted(summary.described) == h5.list_images(reference)
    _same_file(reference, out)
    assert not list(out.parent.glob(f".{out.name}.*.tmp")) and not job.root.exists()


def _untimed(text: str) -> str:
    return re.sub(r":\d+@[\d.]+\]", "]", text)  # OpenCV's log lines carry a thread and a time


def _warnings(caplog) -> list[str]:
    return sorted(_untimed(r.getMessage()) for r in caplog.records if r.levelno >= logging.WARNING)


def test_bad_images_are_skipped_with_the_local_warning_and_summary(cluster, tmp_path, caplog, capsys):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name in ("a.png", "c.png", "e.png"):
        cv2.imwrite(str(mixed / name), _image(3))
    (mixed / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (mixed / "d.jpg").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="deepdesc"):
        local = extract.main(SIFT, mixed, tmp_path / "local.h5", progress=False)
    local_warnings = _warnings(caplog)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="deepdesc"):
        distributed = extract.main(SIFT, mixed, tmp_path / "ray.h5", progress=False, engine="ray", unit_size=2)
    ray_warnings = _warnings(caplog)
    assert list(distributed.skipped) == ["b.png", "d.jpg"]
    for name, reason in local.skipped.items():
        assert _untimed(distributed.skipped[name]) == _untimed(reason), (distributed.skipped[name], reason)
    assert str(distributed).replace("ray.h5", "local.h5") == str(local)
    assert ray_warnings == local_warnings and len(ray_warnings) == 3  # two skipped, one "not unit-norm"
    _same_file(tmp_path / "local.h5", tmp_path / "ray.h5")
    with pytest.raises(ValueError, match="b.png"):  # strict stops the job at the first unreadable image
        extract.main(SIFT, mixed, tmp_path / "strict.h5", progress=False, strict=True, engine="ray", unit_size=2)
    argv = ["describe", str(mixed), "-o", str(tmp_path / "cli.h5"), "--model", "sift", "--engine", "ray"]
    assert main([*argv, "--workers", "1"]) == 1  # as the local command: something was skipped
    assert "3 described, 2 skipped: b.png, d.jpg" in capsys.readouterr().out
    assert h5.list_images(tmp_path / "cli.h5") == ["a.png", "c.png", "e.png"]


def test_reconstruct_on_ray_writes_the_local_features_and_matches(cluster, tmp_path):
    source = require_shared("data", "eval", "strecha", "entry-P10", "images")
    folder = tmp_path / "images"
    folder.mkdir()
    for name in sorted(p.name for p in source.iterdir())[:3]:
        image = cv2.imread(str(source / name), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(
            str(folder / name.replace(".jpg", ".png")), cv2.resize(image, (360, 240), interpolation=cv2.INTER_AREA)
        )
    conf = {"extractor": "sift", "max_keypoints": 300}
    local = reconstruct.main(folder, tmp_path / "local", extract_conf=conf, progress=False)
    distributed = reconstruct.main(
        folder, tmp_path / "ray", extract_conf=conf, progress=False, engine="ray", workers=1, unit_size=2
    )
    for name in ("features.h5", "matches.h5"):
        _same_file(tmp_path / "local" / name, tmp_path / "ray" / name)
    assert (tmp_path / "local" / "pairs.txt").read_text() == (tmp_path / "ray" / "pairs.txt").read_text()
    assert distributed.num_images == local.num_images == 3
    assert distributed.registered_images >= 2 and local.registered_images >= 2


def test_a_worker_uses_its_cpu_share_for_torch_and_opencv():
    """A Ray actor with one CPU runs the network and OpenCV (detection, patch warps) on one thread each."""
    script = textwrap.dedent(
        """
        import cv2, torch
        from deepdesc.engine.ray import UnitWorker
        cv2.setNumThreads(4)
        UnitWorker("describe", lambda *a: None, None, None, {}, threads=1)
        print(cv2.getNumThreads(), torch.get_num_threads())
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["1", "1"]
