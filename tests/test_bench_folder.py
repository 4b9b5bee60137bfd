"""bench/bench_folder.py: SIFT, one image after the other and the pipelined folder timed on the same files."""

from __future__ import annotations

from .conftest import bench_script, require_shared


def test_bench_folder_times_every_variant_against_sift(capsys):
    require_shared("data", "eval", "strecha", "entry-P10", "images")
    per_image = bench_script("bench_folder").main(["--images", "2", "--repeats", "1", "--max-keypoints", "300"])
    assert set(per_image) == {"sift", "sequential", "pipelined"} and all(v > 0 for v in per_image.values())
    out = capsys.readouterr().out
    assert "x1.00 SIFT" in out and "pipelined / sequential" in out
