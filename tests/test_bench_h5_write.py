"""bench/bench_h5_write.py: plain h5py, the journal and write_features timed on the same images."""

from __future__ import annotations

from .conftest import bench_script


def test_bench_h5_write_times_every_variant(capsys):
    per_image = bench_script("bench_h5_write").main(["--images", "3", "--keypoints", "50", "--repeats", "1"])
    assert set(per_image) == {"plain", "journal", "write_features"} and all(v > 0 for v in per_image.values())
    out = capsys.readouterr().out
    assert "x1.00" in out and "write_features" in out
