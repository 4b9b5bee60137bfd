"""bench/bench_chunks.py: every chunk size and precision timed, the library's default chunk the baseline."""

from __future__ import annotations

import json

from deepdesc.hub.registry import load_model
from deepdesc.nn.fast import default_batch_size

from .conftest import bench_script


def test_bench_chunks_times_every_variant_against_the_default(tmp_path, capsys):
    out = tmp_path / "chunks.json"
    record = bench_script("bench_chunks").main(
        ["--patches", "40", "--repeats", "1", "--chunks", "8,16", "-o", str(out)]
    )
    chunks = {(r["precision"], r["chunk"]) for r in record["rows"]}
    default = default_batch_size("cpu", load_model("default", device="cpu"))
    assert {("fp32", 8), ("fp32", 16), ("fp32", default)} <= chunks
    baseline = next(r for r in record["rows"] if r["precision"] == "fp32" and r["chunk"] == default)
    assert baseline["ratio"] == 1.0 and all(r["patches_per_s"] > 0 for r in record["rows"])
    assert json.loads(out.read_text()) == record
    assert "baseline fp32 chunk" in capsys.readouterr().out
