"""The relative-pose protocol: paired wins, order-averaged AUC, and a run on a subset of entry-P10."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from deepdesc.cli import main
from deepdesc.datasets.scenes import load_strecha_scene
from deepdesc.eval.describers import Method
from deepdesc.eval.scenes import evaluate_scenes, pair_wins, summarize_scenes

from .conftest import require_shared


def _row(method, pair, precision, correct, errors, matcher="mnn"):
    return {
        "method": method,
        "matcher": matcher,
        "scene": "s",
        "pair": pair,
        "gap": 1,
        "num_matches": 10,
        "num_correct": correct,
        "precision": precision,
        "pose_errors": errors,
    }


def test_pair_wins_are_paired_by_pair():
    rows = [
        _row("sift", "0-1", 0.5, 5, [1.0]),
        _row("sift", "1-2", 0.6, 6, [1.0]),
        _row("net", "0-1", 0.7, 5, [1.0]),
        _row("net", "1-2", 0.4, 6, [1.0]),
        _row("net", "2-3", 0.9, 9, [1.0]),  # no SIFT row for this pair: not counted
    ]
    assert pair_wins(rows, "precision", "sift")["net"] == (1, 0, 1)
    assert pair_wins(rows, "num_correct", "sift")["net"] == (0, 2, 0)


def test_auc_is_averaged_over_orders():
    # two pairs, two orders: order 0 errors (0, 10), order 1 errors (inf, 10)
    rows = [_row("m", "0-1", 1.0, 1, [0.0, math.inf]), _row("m", "1-2", 0.5, 1, [10.0, 10.0])]
    agg = summarize_scenes(rows)["mnn"]["m"]["[all]"]
    # AUC@20, order 0: recall 1/2 on [0, 10), 1 on [10, 20) -> (0.5*10 + 1*10)/20 = 0.75 minus the ramp
    # corrections of the trapezoid from (0, 0.5) ... computed by pose_auc; order 1: 0.5 from 10 on -> 0.25
    from deepdesc.eval.pose import pose_auc

    expected = (pose_auc([0.0, 10.0], (20,))[0] + pose_auc([math.inf, 10.0], (20,))[0]) / 2
    assert agg["auc@20"] == pytest.approx(expected)
    assert agg["auc@20_std_over_orders"] > 0
    assert agg["precision"] == pytest.approx(0.75) and agg["pairs"] == 2


@pytest.fixture(scope="module")
def small_scene(tmp_path_factory):
    """The first three views of entry-P10 (symbolic links to the shared files)."""
    src = require_shared("data", "eval", "strecha", "entry-P10")
    root = tmp_path_factory.mktemp("strecha") / "entry-P10-3"
    (root / "images").mkdir(parents=True)
    (root / "cameras").mkdir()
    for image in sorted((src / "images").iterdir())[:3]:
        (root / "images" / image.name).symlink_to(image)
        (root / "cameras" / f"{image.name}.camera").symlink_to(src / "cameras" / f"{image.name}.camera")
    return root


def test_protocol_on_real_views(small_scene, tmp_path):
    scene = load_strecha_scene(small_scene)
    result = evaluate_scenes([scene], [Method.parse("sift"), Method.parse("rootsift")], orders=2, progress=False)
    assert len(result["rows"]) == 3 * 2 * 2  # pairs (0,1) (0,2) (1,2) x methods x matchers
    summary = result["summary"]
    for matcher in ("mnn", "ratio"):
        for method in ("sift", "rootsift"):
            agg = summary[matcher][method]["[all]"]
            assert 0.3 < agg["precision"] <= 1.0 and agg["num_correct"] > 50
            assert 0.0 < agg["auc@20"] <= 1.0
    # the ratio test trades matches for precision
    assert summary["ratio"]["sift"]["[all]"]["precision"] > summary["mnn"]["sift"]["[all]"]["precision"]
    assert summary["ratio"]["sift"]["[all]"]["num_matches"] < summary["mnn"]["sift"]["[all]"]["num_matches"]


def test_cli_evaluate_strecha_writes_3d_report(small_scene, tmp_path):
    out = tmp_path / "eval"
    argv = ["evaluate", "--dataset", f"strecha:{small_scene}", "--model", "sift", "--model", "default@8"]
    assert main([*argv, "--orders", "1", "--max-gap", "1", "-o", str(out)]) == 0
    report = json.loads((out / "results.json").read_text())
    assert {r["method"] for r in report["scenes"]["rows"]} == {"sift", "default@8"}
    text = (out / "results.md").read_text()
    assert "| mnn ([all]) | sift | default@8 |" in text and "pairs won/tied/lost against sift" in text
    assert (out / "pose_curve_mnn.png").stat().st_size > 1000
    np.testing.assert_equal(report["scenes"]["max_gap"], 1)
