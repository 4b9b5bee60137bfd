"""The documents: their tables are what the committed results produce (bench/report.py), and the project's
files describe the software, not how it was made."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import bench_script

ROOT = Path(__file__).resolve().parents[1]


report = bench_script("report")


# -- tables -----------------------------------------------------------------------------------------------


def test_every_table_in_the_readme_and_model_card_is_what_the_results_give():
    changed = report.update(check=True)
    stale = {doc: names for doc, names in changed.items() if names}
    assert not stale, f"tables differ from docs/results (run `python bench/report.py`): {stale}"


def test_the_documents_carry_their_generated_tables():
    readme = (ROOT / "README.md").read_text()
    card = (ROOT / "docs" / "model_card.md").read_text()
    assert {"headline", "speed"} <= set(re.findall(r"<!-- table:([\w-]+) -->", readme))
    assert {"model", "scenes", "scene-wins", "homography", "homography-wins"} <= set(
        re.findall(r"<!-- table:([\w-]+) -->", card)
    )
    # no hand-typed markdown table outside the markers
    for name, text in (("README.md", readme), ("docs/model_card.md", card)):
        outside = report.MARKER.sub("", text)
        assert not re.search(r"^\|.*\|\s*$", outside, re.M), f"{name} has a table outside the report's markers"


def test_check_names_a_table_that_differs_and_the_rewrite_fixes_it(tmp_path, monkeypatch):
    for doc in report.DOCUMENTS:
        (tmp_path / doc).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / doc, tmp_path / doc)
    readme = tmp_path / "README.md"
    text = readme.read_text()
    start = text.index("<!-- table:headline -->")
    edited = text[:start] + re.sub(r"\d\.\d{3}", "0.999", text[start:], count=1)
    assert edited != text
    readme.write_text(edited)
    monkeypatch.setattr(report, "ROOT", tmp_path)
    assert report.update(root=tmp_path, check=True)["README.md"] == ["headline"]
    assert report.main(["--check"]) == 1
    assert readme.read_text() == edited  # --check writes nothing
    assert report.main([]) == 0
    assert readme.read_text() == text
    assert report.main(["--check"]) == 0


def test_unknown_table_and_missing_results_are_clear_errors(tmp_path):
    with pytest.raises(report.ReportError, match="unknown table 'nope'"):
        report.render("<!-- table:nope -->\nold\n<!-- /table -->\n")
    with pytest.raises(report.ReportError, match="eval-3d.json is missing"):
        report.render("<!-- table:scenes -->\nold\n<!-- /table -->\n", results=tmp_path)


def _scene_rows() -> list[dict]:
    # default beats sift on two pairs of scene A, ties on one; loses the only pair of scene B
    values = {"sift": [0.5, 0.4, 0.3, 0.9], "default": [0.6, 0.5, 0.3, 0.8]}
    pairs = [("A", "0-1"), ("A", "1-2"), ("A", "2-3"), ("B", "0-1")]
    return [
        {
            "method": m,
            "matcher": matcher,
            "scene": scene,
            "pair": pair,
            "precision": v,
            "num_correct": int(100 * v),
            "num_matches": 100,
            "pose_errors": [1.0],
        }
        for m, vs in values.items()
        for (scene, pair), v in zip(pairs, vs)
        for matcher in ("mnn", "ratio")
    ]


def test_trim_evaluate_keeps_summaries_and_counts_pairs_won_per_scene():
    from deepdesc.eval.scenes import summarize_scenes

    rows = _scene_rows()
    report_json = {"datasets": ["strecha:x"], "scenes": {"rows": rows, "summary": summarize_scenes(rows)}}
    trimmed = report.trim_evaluate(report_json)
    wins = trimmed["scenes"]["wins"]
    a = wins["A"]["mnn:precision"]["sift"]
    assert (a["won"], a["tied"], a["lost"]) == (2, 1, 0)
    assert wins["A"]["mnn:precision"]["sift"]["mean_difference"] == pytest.approx(0.2 / 3)
    assert (wins["B"]["ratio:num_correct"]["sift"]["won"], wins["B"]["ratio:num_correct"]["sift"]["lost"]) == (0, 1)
    assert wins["[all]"]["mnn:precision"]["sift"]["won"] == 2
    assert "rows" not in trimmed["scenes"]  # the per-pair rows stay out of the committed file
    assert trimmed["scenes"]["summary"]["mnn"]["default"]["A"]["precision"] == pytest.approx(1.4 / 3)
    json.dumps(trimmed, allow_nan=False)


def test_runs_with_other_methods_merge_as_one_run():
    from deepdesc.eval.scenes import summarize_scenes

    rows = _scene_rows()
    first = [r for r in rows if r["method"] == "default"]
    second = [r for r in rows if r["method"] == "sift"]
    runs = [
        {"datasets": ["strecha:x"], "methods": [m], "scenes": {"rows": part, "summary": summarize_scenes(part)}}
        for m, part in (("default", first), ("sift", second))
    ]
    whole = {"datasets": ["strecha:x"], "scenes": {"rows": rows, "summary": summarize_scenes(rows)}}
    merged = report.merge_evaluate(runs)
    assert merged["methods"] == ["default", "sift"]
    assert report.trim_evaluate(merged)["scenes"] == report.trim_evaluate(whole)["scenes"]
    with pytest.raises(report.ReportError, match="share the methods"):
        report.merge_evaluate([runs[0], runs[0]])
    again = report.merge_evaluate([merged, runs[1]], replace=True)  # sift measured again: the later run counts
    assert sorted(again["methods"]) == ["default", "sift"]
    assert report.trim_evaluate(again)["scenes"] == report.trim_evaluate(whole)["scenes"]
    with pytest.raises(report.ReportError, match="different data"):
        report.merge_evaluate([runs[0], {**runs[1], "datasets": ["strecha:y"]}])


def test_cells_bold_the_best_value_as_rounded():
    assert report._cells([0.5, 0.7004, 0.7001, None], 3) == ["0.500", "**0.700**", "**0.700**", "-"]


# -- process words ----------------------------------------------------------------------------------------

# Words about how the project was made rather than what it is. WORD (spelled in two pieces so that this file
# passes its own scan and a plain grep) may appear only inside code identifiers: onnxruntime's
# Inference<WORD> / <WORD>Options, an attribute such as self.<word>, pytest's scope="<word>".
WORD = "".join(("ses", "sion"))
_WORD = re.compile(rf"[\w.]*{WORD}[\w]*", re.I)
_ALLOWED_CONTEXT = re.compile(rf"""scope\s*=\s*["']{WORD}["']""")
_ISSUE = re.compile(r"\bissues?\s*#?\s*\d+", re.I)


def process_words(text: str) -> list[str]:
    """The process words in ``text``: WORD used as a word (not inside an identifier), and 'issue N'."""
    found = []
    for line in _ALLOWED_CONTEXT.sub("", text).splitlines():
        found += [m.group(0) for m in _WORD.finditer(line) if m.group(0).lower() in (WORD, WORD + "s")]
        found += [m.group(0) for m in _ISSUE.finditer(line)]
    return found


def _project_files() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        files = [ROOT / line for line in out.splitlines() if line]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: every file outside the usual folders
        skip = {".git", ".venv", "runs", "__pycache__", ".pytest_cache", ".ruff_cache"}
        files = [p for p in ROOT.rglob("*") if not skip & set(p.relative_to(ROOT).parts)]
    return [p for p in files if p.is_file()]


def test_process_word_scanner_flags_words_and_allows_identifiers():
    number = 12  # the scanner's own cases must not read as process words to it
    assert process_words(f"measured in {WORD} 5 (issue {number})") == [WORD, f"issue {number}"]
    title = WORD.title()
    assert process_words(f"{title}s of training; see Issue #{number}") == [f"{title}s", f"Issue #{number}"]
    allowed = [f"ort.Inference{title}(path)", f"options = ort.{title}Options()"]
    allowed += [f"self.{WORD}.run()", f'@pytest.fixture(scope="{WORD}")']
    assert process_words("\n".join(allowed)) == []


def test_project_files_speak_of_the_software_not_of_its_making():
    offenders = []
    for path in _project_files():
        data = path.read_bytes()
        if b"\0" in data[:4096]:
            continue  # binary (weights, images)
        text = data.decode("utf-8", errors="replace")
        offenders += [f"{path.relative_to(ROOT)}: {w!r}" for w in process_words(text)]
    assert not offenders, "process words in project files:\n" + "\n".join(offenders)
