"""The report scripts in bench/ that turn results.json into the model card's tables."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _results(tmp_path: Path) -> Path:
    metrics = ("precision@1", "h_acc@3", "h_acc@5", "mma@3", "matching_score")
    # method b beats a on pairs 1-2 and 1-3, loses on 1-4 and ties on 1-5
    scores = {"a": [0.3, 0.4, 0.5, 0.6], "b": [0.35, 0.45, 0.45, 0.6]}
    rows = [
        {"method": m, "sequence": "graf", "pair": pair, **{k: v for k in metrics}}
        for m, values in scores.items()
        for pair, v in zip(("1-2", "1-3", "1-4", "1-5"), values)
    ]
    groups = ("graf", "[all]", "[viewpoint]", "[zoom+rotation]", "[blur]", "[illumination]")
    summary = {m: {g: {k: sum(v) / len(v) for k in metrics} for g in groups} for m, v in scores.items()}
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"sequences": {"rows": rows, "summary": summary}}))
    return path


def test_quality_table_counts_pairs_won_tied_lost(tmp_path, capsys):
    table = _load("quality_table")
    table.main(str(_results(tmp_path)), reference="a")
    out = capsys.readouterr().out
    assert "| matching score | viewpoint" in out
    assert "| matching_score | 2/1/1 |" in out and "| mma@3 | 2/1/1 |" in out
    with pytest.raises(SystemExit, match="--reference 'c' is not among the methods"):
        table.main(str(_results(tmp_path)), reference="c")
