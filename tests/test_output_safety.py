"""Outputs never replace inputs or files a command did not write; options and inputs are checked up front.

``check_output_location`` itself, then ``deepdesc reconstruct`` / ``deepdesc colmap`` on a COLMAP project
folder (``project/images`` beside the user's ``database.db`` and ``sparse/``), bad options and image names.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pytest

from deepdesc.cli import main
from deepdesc.utils import check_output_location

from .conftest import require_shared

# --- check_output_location ------------------------------------------------------------------------------------


def test_output_equal_to_an_input_is_refused(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(ValueError, match="is the input"):
        check_output_location(tmp_path / "images", tmp_path / "images")
    with pytest.raises(ValueError, match="is the input"):
        check_output_location(tmp_path / "images" / ".." / "images", tmp_path / "images")


def test_output_inside_an_input_is_refused(tmp_path):
    with pytest.raises(ValueError, match="is inside the input"):
        check_output_location(tmp_path / "images" / "out", tmp_path / "images")


def test_output_containing_an_input_is_refused(tmp_path):
    with pytest.raises(ValueError, match="contains the input"):
        check_output_location(tmp_path, tmp_path / "images")
    with pytest.raises(ValueError, match="contains the input") as info:
        check_output_location(tmp_path / "out", tmp_path / "other", tmp_path / "out" / "images", what="database")
    assert str(info.value).startswith("database ")


def test_unrelated_output_is_returned_resolved(tmp_path):
    images = tmp_path / "images"
    for out in (tmp_path / "out", tmp_path / "images2", tmp_path / "imag"):  # a shared name prefix is no relation
        assert check_output_location(out, images, tmp_path / "pairs.txt") == out.resolve()
    assert check_output_location(tmp_path / "out") == (tmp_path / "out").resolve()  # no inputs


def test_relative_paths_are_compared_resolved(tmp_path, monkeypatch):
    (tmp_path / "images").mkdir()
    monkeypatch.chdir(tmp_path / "images")
    with pytest.raises(ValueError, match="is the input"):
        check_output_location(".", tmp_path / "images")
    with pytest.raises(ValueError, match="contains the input"):
        check_output_location("..", "sub")
    assert check_output_location("../out", ".") == tmp_path / "out"


def test_symlinks_are_followed(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "images", target_is_directory=True)
    with pytest.raises(ValueError, match="is the input"):
        check_output_location(tmp_path / "link", tmp_path / "images")
    with pytest.raises(ValueError, match="is inside the input"):
        check_output_location(tmp_path / "link" / "out", tmp_path / "images")
    with pytest.raises(ValueError, match="contains the input"):
        check_output_location(tmp_path, tmp_path / "link")
    assert check_output_location(tmp_path / "out", tmp_path / "link") == (tmp_path / "out").resolve()


# --- reconstruct and colmap --------------------------------------------------------------------------------------


def noise_images(folder: Path, names: list[str], size: tuple[int, int] = (160, 120)) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        noise = cv2.GaussianBlur(rng.integers(0, 256, size[::-1]).astype(np.uint8), (0, 0), 1.5)
        assert cv2.imwrite(str(folder / name), noise)
    return folder


def user_project(project: Path) -> dict[str, bytes]:
    """A COLMAP project's own files beside ``project/images``; returns their contents."""
    (project / "sparse" / "0").mkdir(parents=True)
    (project / "sparse" / "0" / "cameras.txt").write_text("# the user's model\n")
    (project / "sparse" / "notes.txt").write_text("the user's notes\n")
    con = sqlite3.connect(project / "database.db")
    con.execute("CREATE TABLE images (image_id INTEGER, name TEXT)")
    con.commit()
    con.close()
    files = [project / "sparse" / "0" / "cameras.txt", project / "sparse" / "notes.txt", project / "database.db"]
    return {str(p.relative_to(project)): p.read_bytes() for p in files}


def run(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def test_reconstruct_refuses_to_replace_a_projects_files_without_overwrite(tmp_path, capsys):
    project = tmp_path / "project"
    noise_images(project / "images", ["a.png", "b.png"])
    before = user_project(project)
    code, err = run(["reconstruct", str(project / "images"), "-o", str(project), "--model", "sift"], capsys)
    assert code == 2 and "--overwrite" in err and "database.db" in err and "sparse/0" in err
    assert {name: (project / name).read_bytes() for name in before} == before
    assert not (project / "features.h5").exists()  # refused before any work


def test_reconstruct_overwrite_replaces_only_its_own_files(tmp_path, capsys):
    source = require_shared("data", "eval", "strecha", "entry-P10", "images")
    project = tmp_path / "project"
    (project / "images").mkdir(parents=True)
    for name in ("0003.jpg", "0004.jpg", "0005.jpg"):
        image = cv2.resize(cv2.imread(str(source / name)), (480, 320), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(project / "images" / name), image)
    before = user_project(project)
    (project / "sparse" / "7").mkdir()  # another model of the user's, a number this run does not write
    argv = ["reconstruct", str(project / "images"), "-o", str(project), "--model", "sift", "--max-keypoints", "300"]
    code, err = run([*argv, "--overwrite"], capsys)
    assert code == 0, err
    assert (project / "sparse" / "notes.txt").read_bytes() == before["sparse/notes.txt"]
    assert (project / "sparse" / "7").is_dir()
    assert (project / "sparse" / "0" / "cameras.bin").is_file() and not (
        project / "sparse" / "0" / "cameras.txt"
    ).exists()
    con = sqlite3.connect(project / "database.db")
    assert con.execute("SELECT count(*) FROM images").fetchone()[0] == 3
    con.close()
    # its own files now: a rerun needs no flag
    assert run(argv, capsys)[0] == 0
    # other extraction settings: the advice names a flag that exists, and the flag starts again
    code, err = run([*argv[:-1], "200"], capsys)
    assert code == 2 and "Pass --overwrite" in err
    code, err = run([*argv[:-1], "200", "--overwrite"], capsys)
    assert code == 0, err
    assert (project / "sparse" / "notes.txt").exists() and (project / "sparse" / "7").is_dir()


@pytest.mark.parametrize("where", ["same", "inside"])
def test_reconstruct_refuses_an_output_at_or_inside_the_images(tmp_path, capsys, where):
    images = noise_images(tmp_path / "images", ["a.png", "b.png"])
    out = images if where == "same" else images / "rec"
    code, err = run(["reconstruct", str(images), "-o", str(out), "--model", "sift"], capsys)
    assert code == 2 and ("is the input" in err or "is inside the input" in err)
    assert sorted(p.name for p in images.iterdir()) == ["a.png", "b.png"]


def test_reconstruct_refuses_to_write_over_its_pairs_file_input(tmp_path, capsys):
    images = noise_images(tmp_path / "images", ["a.png", "b.png"])
    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / "pairs.txt").write_text("a.png b.png\n")
    argv = ["reconstruct", str(images), "-o", str(tmp_path / "rec"), "--pairs", str(tmp_path / "rec" / "pairs.txt")]
    code, err = run([*argv, "--model", "sift"], capsys)
    assert code == 2 and "pairs.txt" in err and "is the input" in err


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--camera-model", "FOO"], "unknown COLMAP camera model 'FOO'; expected one of SIMPLE_PINHOLE"),
        (["--ratio", "1.5"], "ratio must lie in (0, 1]"),
        (["--ratio", "0"], "ratio must lie in (0, 1]"),
    ],
)
def test_reconstruct_checks_options_before_any_work(tmp_path, capsys, option, message):
    images = noise_images(tmp_path / "images", ["a.png", "b.png"])
    code, err = run(["reconstruct", str(images), "-o", str(tmp_path / "rec"), "--model", "sift", *option], capsys)
    assert code == 2 and message in err
    assert not (tmp_path / "rec").exists()


def test_reconstruct_rejects_images_colmap_cannot_read_or_name(tmp_path, capsys):
    images = noise_images(tmp_path / "images", ["a.png", "b.webp"])
    code, err = run(["reconstruct", str(images), "-o", str(tmp_path / "rec"), "--model", "sift"], capsys)
    assert code == 2 and "cannot read 1 image(s): b.webp" in err
    assert not (tmp_path / "rec" / "features.h5").exists()
    images = noise_images(tmp_path / "spaced", ["a b.png", "c.png"])
    code, err = run(["reconstruct", str(images), "-o", str(tmp_path / "rec2"), "--model", "sift"], capsys)
    assert code == 2 and "white space" in err and "'a b.png'" in err
    assert not (tmp_path / "rec2" / "features.h5").exists()


def test_colmap_skips_unreadable_images(tmp_path, capsys, caplog):
    images = noise_images(tmp_path / "images", ["a.png", "b.png", "c.png"], size=(200, 160))
    (images / "broken.png").write_bytes(b"not a png")
    db = tmp_path / "db.db"
    with caplog.at_level(logging.WARNING, logger="deepdesc"):
        code = main(["colmap", str(images), "--database", str(db), "--model", "sift", "--max-keypoints", "100"])
    out = capsys.readouterr().out
    assert code == 1 and "3 images" in out and "1 skipped: broken.png" in out  # as describe
    assert any("skipped broken.png" in r.getMessage() for r in caplog.records)
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*) FROM images").fetchone()[0] == 3
    con.close()


def test_colmap_database_location_and_options(tmp_path, capsys):
    images = noise_images(tmp_path / "images", ["a.png", "b.png"])
    for database, message in [
        (images, "is the input"),
        (tmp_path, "contains the input"),
        (images / "a.png", "is one of the input images"),
    ]:
        code, err = run(["colmap", str(images), "--database", str(database), "--model", "sift", "--overwrite"], capsys)
        assert code == 2 and message in err, err
    (tmp_path / "notes.txt").write_text("not a database")
    code, err = run(["colmap", str(images), "--database", str(tmp_path / "notes.txt"), "--overwrite"], capsys)
    assert code == 2 and "not an SQLite database" in err
    assert (tmp_path / "notes.txt").read_text() == "not a database"
    code, err = run(["colmap", str(images), "--database", str(tmp_path / "db.db"), "--ratio", "2"], capsys)
    assert code == 2 and "ratio must lie in (0, 1]" in err
    assert sorted(os.listdir(images)) == ["a.png", "b.png"] and not (tmp_path / "db.db").exists()
