"""bench/ship_rule.py: the default weights' ship rule on hand-made validation summaries."""

from __future__ import annotations

import json

import pytest

from .conftest import bench_script

ship_rule = bench_script("ship_rule")


def _summary(ref: dict, cand: dict) -> dict:
    """scene -> (mnn precision, ratio precision, mnn correct) for reference and candidate."""
    out: dict = {"mnn": {"ref": {}, "cand": {}}, "ratio": {"ref": {}, "cand": {}}}
    for label, table in (("ref", ref), ("cand", cand)):
        for scene, (p_mnn, p_ratio, correct) in table.items():
            out["mnn"][label][scene] = {"precision": p_mnn, "num_correct": correct}
            out["ratio"][label][scene] = {"precision": p_ratio, "num_correct": 0.0}
        out["mnn"][label]["[all]"] = {"precision": 0.0, "num_correct": 0.0}  # ignored by the rule
    return out


REF = {"a": (0.20, 0.40, 100.0), "b": (0.10, 0.30, 50.0)}


def test_better_on_average_and_nowhere_much_worse_passes():
    cand = {"a": (0.25, 0.41, 110.0), "b": (0.095, 0.30, 48.0)}  # b: -0.005 precision, -4 % matches: within slack
    ok, lines = ship_rule.apply_rule(_summary(REF, cand), "ref", "cand")
    assert ok and lines[-1].endswith("PASS")


@pytest.mark.parametrize(
    "cand, why",
    [
        ({"a": (0.25, 0.39, 100.0), "b": (0.10, 0.30, 50.0)}, "(a) ratio-test mean lower"),
        ({"a": (0.20, 0.40, 100.0), "b": (0.10, 0.30, 50.0)}, "(a) equal is not higher"),
        ({"a": (0.30, 0.50, 100.0), "b": (0.08, 0.30, 50.0)}, "(b) mnn precision 0.02 lower on b"),
        ({"a": (0.30, 0.50, 100.0), "b": (0.10, 0.30, 47.0)}, "(b) 6 % fewer correct matches on b"),
    ],
)
def test_each_clause_can_fail(cand, why):
    ok, lines = ship_rule.apply_rule(_summary(REF, cand), "ref", "cand")
    assert not ok, why
    assert lines[-1].endswith("FAIL")


def test_cli_merges_files_and_names_a_missing_method(tmp_path, capsys):
    summary = _summary(REF, {"a": (0.25, 0.41, 110.0), "b": (0.10, 0.31, 50.0)})
    for label in ("ref", "cand"):
        part = {m: {label: summary[m][label]} for m in summary}
        (tmp_path / f"{label}.json").write_text(json.dumps({"scenes": {"summary": part}}))
    files = [str(tmp_path / "ref.json"), str(tmp_path / "cand.json")]
    assert ship_rule.main([*files, "--reference", "ref", "--candidate", "cand"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("PASS")
    assert ship_rule.main([files[0], "--reference", "ref", "--candidate", "cand"]) == 1
    assert "no mnn results for 'cand'" in capsys.readouterr().err
