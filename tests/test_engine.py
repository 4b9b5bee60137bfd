"""The distributed engine's parts that need no cluster: units, the job folder, shards, merge and verify."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from deepdesc import extract, match
from deepdesc.cli import main
from deepdesc.engine import ray as ray_engine
from deepdesc.engine.shards import MergeError, check_shard, merge, seal_shard
from deepdesc.engine.units import JobDir, items_digest, make_units
from deepdesc.engine.verify import verify_file
from deepdesc.io import h5

SIFT = {"extractor": "sift", "max_keypoints": 50}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from skimage import data

    root = tmp_path_factory.mktemp("engineimages")
    img = data.camera()
    for i in range(3):
        cv2.imwrite(str(root / f"im{i}.png"), img[40 * i : 40 * i + 96, 50 * i : 50 * i + 128])
    return root


@pytest.fixture(scope="module")
def features(folder, tmp_path_factory):
    path = tmp_path_factory.mktemp("enginefeatures") / "features.h5"
    extract.main(SIFT, folder, path, progress=False)
    return path


def test_units_are_deterministic_chunks():
    items = [(f"{i}.png", f"/d/{i}.png") for i in range(7)]
    units = make_units(items, 3)
    assert [len(u) for u in units] == [3, 3, 1] and [x for u in units for x in u] == items
    assert make_units(items, 3) == units and items_digest(units[0]) == items_digest(list(items[:3]))
    assert items_digest(units[0]) != items_digest(units[1])
    with pytest.raises(ValueError, match="unit_size must be a positive integer"):
        make_units(items, 0)


def test_job_folder_resumes_its_own_job_only_and_survives_a_torn_manifest(tmp_path):
    job = JobDir(tmp_path / "out.h5")
    assert job.root == tmp_path / "out.h5.parts"
    assert job.open({"kind": "features", "items_sha256": "a"}) is False
    job.record({"unit": 0, "entries": 2})
    with open(job.manifest_path, "a") as f:
        f.write('{"unit": 1, "entr')  # a driver killed mid-line
    job.record({"unit": 2, "entries": 1})
    assert sorted(job.records()) == [0, 2]
    (job.root / ".unit-000001.h5.123.tmp").write_bytes(b"half")
    assert job.open({"kind": "features", "items_sha256": "a"}) is True  # same job: kept, temp files gone
    assert sorted(job.records()) == [0, 2] and not list(job.root.glob(".*.tmp"))
    assert job.open({"kind": "features", "items_sha256": "b"}) is False  # another job: started again
    assert job.records() == {}


def _shard(features, tmp_path, unit=0, entries=("im0.png",)):
    tmp_path.mkdir(parents=True, exist_ok=True)
    tmp, shard = tmp_path / ".unit.tmp", tmp_path / f"unit-{unit:06d}.h5"
    with h5py.File(features, "r") as src, h5py.File(tmp, "w") as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        for name in entries:
            src.copy(src[name], dst, name=name)
    info = {"unit": unit, "items_sha256": "d0", "entries": list(entries), "skipped": {}}
    seal_shard(tmp, shard, info)
    return shard, info


def test_a_shard_counts_only_when_whole_and_its_own(features, tmp_path):
    settings = h5.read_settings(features)
    shard, info = _shard(features, tmp_path)
    assert check_shard(shard, "features", 0, "d0", settings) == info
    assert check_shard(shard, "features", 1, "d0", settings) is None  # another unit
    assert check_shard(shard, "features", 0, "d1", settings) is None  # other items
    assert check_shard(shard, "features", 0, "d0", {**settings, "max_keypoints": 9}) is None  # other settings
    with h5py.File(shard, "a") as fd:
        del fd["im0.png"]
    assert check_shard(shard, "features", 0, "d0", settings) is None  # an entry it lists is gone
    shard, _ = _shard(features, tmp_path)
    with open(shard, "r+b") as f:
        f.truncate(200)
    assert check_shard(shard, "features", 0, "d0", settings) is None


def test_merge_verifies_before_replacing_the_output(features, tmp_path):
    settings = h5.read_settings(features)
    shards = [_shard(features, tmp_path / "a", 0, ["im0.png", "im1.png"])[0], _shard(features, tmp_path / "b", 1)[0]]
    out = tmp_path / "merged.h5"
    merge("features", out, shards, settings, ["im0.png", "im1.png"])
    assert h5.list_images(out) == ["im0.png", "im1.png"] and h5.read_settings(out) == settings
    for name in ("im0.png", "im1.png"):
        a, b = h5.read_features(features, name), h5.read_features(out, name)
        assert all(np.array_equal(a[k], b[k]) for k in a)
    before = out.read_bytes()
    with pytest.raises(MergeError, match=r"1 image\(s\) missing: im2.png"):
        merge("features", out, shards, settings, ["im0.png", "im1.png", "im2.png"])
    assert out.read_bytes() == before and not list(tmp_path.glob(".merged.h5.*"))  # untouched, no temp left


def test_verify_lists_what_is_wrong(features, folder, tmp_path, capsys):
    assert verify_file(features, images=["im0.png", "im1.png", "im2.png"]).ok
    broken = tmp_path / "broken.h5"
    broken.write_bytes(features.read_bytes())
    with h5py.File(broken, "a") as fd:
        del fd["im1.png"]
        kpts = fd["im2.png/keypoints"][()]
        del fd["im2.png/keypoints"]
        fd["im2.png/keypoints"] = kpts[:, :1]
        fd["extra.png/keypoints"] = np.zeros((2, 2), np.float32)
        fd["extra.png/descriptors"] = np.zeros((64, 2), np.float32)  # another descriptor size, no image_size
    report = verify_file(broken, images=["im0.png", "im1.png", "im2.png"])
    text = "\n".join(report.problems)
    assert "im2.png: keypoints have shape" in text and "im1.png" in text and "unexpected image(s): extra.png" in text
    assert "extra.png: no image_size" in text and "descriptor sizes differ" in text
    assert main(["verify", str(broken), "--images", str(folder)]) == 1
    out = capsys.readouterr().out
    assert "problem(s)" in out and "missing: im1.png" in out
    assert main(["verify", str(features), "--images", str(folder)]) == 0
    assert "OK, 3 images" in capsys.readouterr().out
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(features.read_bytes()[:1000])  # a half-written file
    assert main(["verify", str(truncated)]) == 1
    assert "cannot be read as HDF5" in capsys.readouterr().out


def test_match_pairs_command_and_verify_matches(features, tmp_path, capsys):
    pairs = match.exhaustive_pairs(h5.list_images(features))
    out = tmp_path / "matches.h5"
    assert main(["match-pairs", str(features), "-o", str(out), "--pairs", "exhaustive"]) == 0
    assert "matched 3 pairs of 3 images" in capsys.readouterr().out
    assert verify_file(out, pairs=pairs).ok and verify_file(out).kind == "matches"
    with h5py.File(out, "a") as fd:
        del fd["im0.png/im1.png/matching_scores0"]
        fd["im0.png/im1.png/matching_scores0"] = np.zeros(3, np.float32)
        del fd["im0.png/im2.png"]
    problems = "\n".join(verify_file(out, pairs=pairs).problems)
    assert "matching_scores0 has shape (3,)" in problems and "pair(s) missing: im0.png/im2.png" in problems


def test_engine_options_are_checked_and_a_missing_ray_says_how_to_install(folder, tmp_path, monkeypatch, capsys):
    with pytest.raises(ValueError, match="engine must be one of local, ray"):
        extract.main(SIFT, folder, tmp_path / "f.h5", engine="spark")
    with pytest.raises(ValueError, match="options of engine='ray'"):
        extract.main(SIFT, folder, tmp_path / "f.h5", workers=2)
    with pytest.raises(TypeError, match="unknown engine options"):
        extract.main(SIFT, folder, tmp_path / "f.h5", engine="ray", wrokers=2)
    assert main(["describe", str(folder), "-o", str(tmp_path / "f.h5"), "--workers", "2"]) == 2
    assert "--workers needs --engine ray" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert main(["describe", str(folder), "-o", str(tmp_path / "f.h5"), "--engine", "ray"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'deepdesc[ray]'" in err and "Traceback" not in err
    assert not (tmp_path / "f.h5").exists()  # nothing was started or written


def test_job_description_is_json(tmp_path):
    job = JobDir(tmp_path / "x.h5")
    job.open({"kind": "matches", "settings": {"match": {"ratio": None}}, "unit_size": 4})
    assert json.loads(job.job_path.read_text())["unit_size"] == 4
    assert ray_engine.DEFAULT_UNIT_SIZE["features"] > 0


def test_a_unit_reported_done_without_its_shard_is_an_error(features, tmp_path):
    """What a worker on a machine that does not share the output's folder looks like to the driver."""
    job = JobDir(tmp_path / "out.h5")
    job.open({"kind": "features"})
    settings = h5.read_settings(features)
    with pytest.raises(RuntimeError, match="file system every worker shares"):
        ray_engine._check_written(job, "features", 0, "d0", settings)
    _shard(features, job.root, 0)
    ray_engine._check_written(job, "features", 0, "d0", settings)  # there: no error


def test_cli_passes_the_ray_options_through(folder, tmp_path, monkeypatch, capsys):
    assert main(["describe", str(folder), "-o", str(tmp_path / "f.h5"), "--unit-size", "4"]) == 2
    assert "--unit-size needs --engine ray" in capsys.readouterr().err
    seen = {}

    def fake_main(conf, images, output, **kwargs):
        seen.update(kwargs)
        return extract.ExtractSummary(Path(output))

    monkeypatch.setattr(extract, "main", fake_main)
    ray_args = ["--engine", "ray", "--workers", "3", "--unit-size", "4", "--address", "auto"]
    assert main(["describe", str(folder), "-o", str(tmp_path / "f.h5"), *ray_args]) == 0
    assert {k: seen[k] for k in ("engine", "workers", "unit_size", "address")} == {
        "engine": "ray",
        "workers": 3,
        "unit_size": 4,
        "address": "auto",
    }
