"""bench/bench_exact_rewrites.py: the replaced code it times as "before" gives the library's bytes, and is undone."""

from __future__ import annotations

import inspect

from deepdesc.features import keypoints, patches
from deepdesc.nn import fast

from .conftest import bench_script, require_shared


def test_before_and_after_agree_and_the_library_is_restored(capsys):
    require_shared("data", "eval", "strecha", "entry-P10", "images", "0000.jpg")
    bench = bench_script("bench_exact_rewrites")
    library = {key: inspect.getattr_static(*key) for key in bench.BEFORE}
    result = bench.main(["--repeats", "1"])
    assert result["same"] is True
    stages = ("detect", "patches", "describe", "whole image")
    assert all(result["ms"][f"{s} {w}"] > 0 for s in stages for w in ("before", "after"))
    assert {key: inspect.getattr_static(*key) for key in bench.BEFORE} == library  # nothing left monkeypatched
    assert isinstance(inspect.getattr_static(fast.PreparedCompactNet, "_conv_relu"), staticmethod)
    assert keypoints._strongest is library[(keypoints, "_strongest")]
    assert (
        patches._run_tasks is library[(patches, "_run_tasks")]
        and fast._avg_pool_2x2 is library[(fast, "_avg_pool_2x2")]
    )
    assert "whole image / SIFT" in capsys.readouterr().out
