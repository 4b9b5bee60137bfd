"""Recovering the 3D-point groups of Brown-layout sheets: segmentation, metrics, info.txt, CLI and errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from deepdesc.cli import main
from deepdesc.datasets.phototour import PhotoTour, write_info, write_phototour
from deepdesc.datasets.phototour_groups import (
    group_statistics,
    grouping_metrics,
    ids_from_boundaries,
    infer_groups,
    link_distances,
    patch_descriptors,
    recover_groups,
    segment,
)
from deepdesc.errors import DatasetFormatError
from deepdesc.nn.compact import CompactNet


def _scene(seed: int = 0) -> np.ndarray:
    """A textured float32 image, 0..255."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.uniform(0, 255, (1024, 1024)).astype(np.float32), (0, 0), 4.0)
    return cv2.normalize(img, None, 10, 245, cv2.NORM_MINMAX)


def _grouped_patches(sizes: list[int], seed: int = 0, odd: dict[int, int] | None = None) -> tuple:
    """Patches of consecutive groups: group g is a crop at its own place of a textured image, each member shifted
    by up to 1 px with a little noise (views of one point). ``odd`` {group: member}: that member is a crop from
    elsewhere (an occluded view). Returns (N, 64, 64) uint8 and the true ids (N,)."""
    rng = np.random.default_rng(seed)
    img = _scene(seed)
    centres = [(x, y) for y in range(48, 980, 70) for x in range(48, 980, 70)]
    rng.shuffle(centres)
    patches, ids = [], []
    for g, size in enumerate(sizes):
        cx, cy = centres[g]
        for k in range(size):
            x, y = cx + rng.uniform(-1, 1), cy + rng.uniform(-1, 1)
            if odd and odd.get(g) == k:
                x, y = centres[-1 - g]
            crop = cv2.getRectSubPix(img, (64, 64), (float(x), float(y))) + rng.normal(0, 2, (64, 64))
            patches.append(np.clip(crop, 0, 255).astype(np.uint8))
            ids.append(g)
    return np.stack(patches), np.array(ids, np.int64)


SIZES = [2, 5, 3, 2, 7, 2, 4, 3, 2, 6, 2, 3, 9, 2, 2, 4, 3, 5, 2, 2]


def test_grouped_patches_give_exact_groups():
    patches, truth = _grouped_patches(SIZES)
    got = infer_groups(patches)
    np.testing.assert_array_equal(got, truth)
    assert grouping_metrics(truth, got)["exact"] == 1.0


def test_bridge_keeps_one_odd_view_in_its_group():
    patches, truth = _grouped_patches([3, 5, 4], seed=1, odd={1: 2})  # the middle view of group 1 is elsewhere
    np.testing.assert_array_equal(infer_groups(patches, bridge=True), truth)
    split = infer_groups(patches, bridge=False)
    assert grouping_metrics(truth, split)["wrongly_split"] > 0


def test_segment_without_and_with_the_size_prior():
    link = np.array([0.1, 0.9, 0.8, 0.1])  # plain threshold at 0.5: groups [0 1] [2] [3 4]
    np.testing.assert_array_equal(ids_from_boundaries(segment(link, 0.5, min_size=1)), [0, 0, 1, 2, 2])
    # at least 2 per group: a boundary before patch 2 costs 0.5 - 0.9, before patch 3 0.5 - 0.8: keep the first
    np.testing.assert_array_equal(ids_from_boundaries(segment(link, 0.5, min_size=2)), [0, 0, 1, 1, 1])
    assert not segment(np.array([0.9, 0.9]), 0.5, min_size=2).any()  # 3 patches: one group
    assert segment(np.zeros(0), 0.5).shape == (0,)


def test_segment_matches_brute_force_on_random_links():
    rng = np.random.default_rng(0)
    for _ in range(30):
        link = rng.uniform(0, 1, int(rng.integers(3, 11)))
        n = len(link) + 1
        best = None
        for mask in range(1 << len(link)):
            bounds = np.array([(mask >> k) & 1 for k in range(len(link))], bool)
            sizes = np.diff(np.flatnonzero(np.r_[True, bounds, True]))
            if sizes.min() < 2:
                continue
            cost = float((0.5 - link[bounds]).sum())
            if best is None or cost < best[0] - 1e-12:
                best = (cost, bounds)
        got = segment(link, 0.5, min_size=2)
        assert np.isclose(float((0.5 - link[got]).sum()), best[0]), (link, got, best)
        assert np.diff(np.flatnonzero(np.r_[True, got, True])).min() >= 2 or n < 4


def test_link_distances_bridge_takes_the_least_straddling_pair():
    d = np.array([[0.0], [1.0], [0.1], [5.0]])
    np.testing.assert_allclose(link_distances(d, bridge=False), [1.0, 0.9, 4.9])
    # b=1: (0,1) 1, (0,2) 0.1 -> 0.1; b=2: (1,2) .9, (0,2) .1, (1,3) 4 -> 0.1; b=3: (2,3) 4.9, (1,3) 4 -> 4
    np.testing.assert_allclose(link_distances(d, bridge=True), [0.1, 0.1, 4.0])


def test_grouping_metrics_hand_computed():
    truth = [0, 0, 1, 1, 1, 2, 2]
    pred = [7, 7, 7, 3, 3, 9, 9]  # boundaries before 3 and 5; true ones before 2 and 5
    m = grouping_metrics(truth, pred)
    assert m["boundary_precision"] == 0.5 and m["boundary_recall"] == 0.5
    assert m["wrongly_merged"] == pytest.approx(3 / 7)  # patches 0, 1, 2 share a group with another point's
    assert m["wrongly_split"] == pytest.approx(1 / 3)  # point 1 spans two groups
    assert m["exact"] == pytest.approx(1 / 3)  # only point 2
    assert (m["true_groups"], m["predicted_groups"]) == (3, 3)
    perfect = grouping_metrics(truth, truth)
    assert perfect["boundary_precision"] == perfect["boundary_recall"] == perfect["exact"] == 1.0
    with pytest.raises(ValueError, match="differ in length"):
        grouping_metrics([0, 0], [0])


def test_group_statistics():
    stats = group_statistics(np.array([0, 0, 1, 1, 1, 2, 2] + [3] * 20))
    assert stats["groups"] == 4 and stats["max_size"] == 20
    assert (
        stats["size_histogram"]["2"] == 2 and stats["size_histogram"]["3"] == 1 and stats["size_histogram"][">12"] == 1
    )


@pytest.fixture()
def sheets(tmp_path):
    """A Brown-layout folder (2 sheets) of grouped patches, its info.txt removed; and the true ids."""
    patches, truth = _grouped_patches(SIZES * 4, seed=2)  # 280 patches
    folder = write_phototour(tmp_path / "set", patches, truth, np.zeros(len(truth)))
    (folder / "info.txt").unlink()
    return folder, truth


def test_recover_groups_and_info_round_trip(sheets, tmp_path):
    folder, truth = sheets
    data, ids = recover_groups(folder, cache_dir=tmp_path / "cache", progress=False)
    assert len(data) == len(truth)
    assert grouping_metrics(truth, ids)["exact"] > 0.9
    info = write_info(tmp_path / "elsewhere" / "info.txt", ids)
    loaded = PhotoTour(folder, cache_dir=tmp_path / "cache", info=info)
    np.testing.assert_array_equal(loaded.point_ids, ids)
    assert (loaded.image_ids == -1).all() and len(loaded) == len(truth)
    with pytest.raises(FileExistsError, match="overwrite"):
        write_info(info, ids)
    assert PhotoTour(folder, cache_dir=tmp_path / "cache", info=False).point_ids is None
    with pytest.raises(FileNotFoundError, match="info file not found"):
        PhotoTour(folder, cache_dir=tmp_path / "cache", info=tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="a path, or False"):
        PhotoTour(folder, cache_dir=tmp_path / "cache", info=True)
    with pytest.raises(ValueError, match="point ids but 2 image ids"):
        write_info(tmp_path / "other.txt", ids, image_ids=[0, 1])


def test_detector_ignores_an_existing_info_file_and_deepdesc_method(sheets, tmp_path):
    folder, truth = sheets
    write_info(folder / "info.txt", np.zeros(len(truth), np.int64))  # wrong labels: must not be used
    _, ids = recover_groups(folder, cache_dir=tmp_path / "cache", progress=False)
    assert grouping_metrics(truth, ids)["exact"] > 0.9
    torch.manual_seed(0)
    desc = patch_descriptors(np.asarray(PhotoTour(folder, cache_dir=tmp_path / "cache").patches[:20]), "deepdesc",
                             model=CompactNet({"width": 8}).eval())  # fmt: skip
    assert desc.shape == (20, 128) and np.allclose(np.linalg.norm(desc, axis=1), 1.0, atol=1e-5)


def test_cli_writes_refuses_and_overwrites(sheets, tmp_path, monkeypatch, capsys):
    folder, truth = sheets
    monkeypatch.setenv("DEEPDESC_CACHE", str(tmp_path / "cache"))
    assert main(["phototour-groups", str(folder)]) == 0
    ids = PhotoTour(folder).point_ids
    assert ids is not None and grouping_metrics(truth, ids)["exact"] > 0.9
    assert '"groups"' in capsys.readouterr().out
    before = (folder / "info.txt").read_text()
    assert main(["phototour-groups", str(folder), "--threshold", "1.5"]) == 2
    err = capsys.readouterr().err
    assert "info.txt exists" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert (folder / "info.txt").read_text() == before
    assert main(["phototour-groups", str(folder), "--threshold", "1.5", "--overwrite"]) == 0
    assert (folder / "info.txt").read_text() != before  # one point per two or more patches
    # a folder output: info.txt plus links to the sheets, a complete set for phototour:OUT
    out = tmp_path / "groups"
    assert main(["phototour-groups", str(folder), "-o", str(out)]) == 0
    np.testing.assert_array_equal(PhotoTour(out).point_ids, ids)


def test_clear_errors_for_no_sheets_and_wrong_size(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DEEPDESC_CACHE", str(tmp_path / "cache"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetFormatError, match="no patchesNNNN.bmp sheets"):
        recover_groups(empty, progress=False)
    assert main(["phototour-groups", str(empty)]) == 2
    assert "no patchesNNNN.bmp sheets" in capsys.readouterr().err
    small = tmp_path / "small"
    small.mkdir()
    cv2.imwrite(str(small / "patches0000.bmp"), np.zeros((512, 512), np.uint8))
    assert main(["phototour-groups", str(small)]) == 2
    assert "expected 1024x1024" in capsys.readouterr().err
    with pytest.raises(ValueError, match="method must be one of"):
        recover_groups(small, method="sift")
    with pytest.raises(ValueError, match=r"expected patches of shape \(N, 64, 64\)"):
        infer_groups(np.zeros((3, 32, 32), np.uint8))
