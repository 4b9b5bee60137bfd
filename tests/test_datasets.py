"""Dataset loaders on tiny generated data in the original layouts, and on the shared real data."""

from __future__ import annotations

import io
import json
import os
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from deepdesc.datasets import hpatches as hp
from deepdesc.datasets import phototour as pt
from deepdesc.datasets import sequences as seqs
from deepdesc.datasets.phototour import DatasetFormatError, PhotoTour
from deepdesc.eval import hpatches as hpe
from deepdesc.eval import metrics
from deepdesc.eval.phototour import evaluate_phototour
from deepdesc.utils import sha256_file

from .conftest import require_shared
from .make_fake_data import make_hpatches, make_phototour, make_sequence, write_sheets

# ------------------------------------------------------------------------------------------ PhotoTour


@pytest.fixture()
def fake_set(tmp_path):
    info = make_phototour(tmp_path / "fakeset", n_patches=300, n_pairs=40)
    return tmp_path / "fakeset", info, tmp_path / "cache"


def test_phototour_decodes_original_layout(fake_set):
    folder, info, cache = fake_set
    ds = PhotoTour(folder, cache_dir=cache)
    assert len(ds) == 300 and ds.name == "fakeset" and len(ds.sheets) == 2
    assert ds.patches.shape == (300, 64, 64) and ds.patches.dtype == np.uint8
    assert isinstance(ds.patches, np.memmap)
    np.testing.assert_array_equal(ds.patches, info["patches"])
    np.testing.assert_array_equal(ds.point_ids, info["point_ids"])
    np.testing.assert_array_equal(ds.image_ids, info["image_ids"])
    np.testing.assert_array_equal(ds[257], info["patches"][257])
    np.testing.assert_array_equal(ds[-1], info["patches"][-1])
    np.testing.assert_array_equal(ds[[3, 1]], info["patches"][[3, 1]])
    with pytest.raises(IndexError):
        ds[300]
    assert ds.interest.shape == (300, 5)
    ids1, ids2, labels = ds.pairs(info["pairs_name"])
    np.testing.assert_array_equal(ids1, info["ids1"])
    np.testing.assert_array_equal(ids2, info["ids2"])
    np.testing.assert_array_equal(labels, info["labels"])
    assert labels.dtype == bool and labels.any() and not labels.all()
    # by path and with .txt too
    np.testing.assert_array_equal(ds.pairs(folder / f"{info['pairs_name']}.txt")[0], ids1)
    np.testing.assert_array_equal(ds.pairs(info["pairs_name"] + ".txt")[1], ids2)
    assert ds.match_files() == [info["pairs_name"]]
    with pytest.raises(FileNotFoundError, match=info["pairs_name"]):
        ds.pairs("m50_100000_100000_0")


def test_phototour_cache_reuse_and_invalidation(fake_set):
    folder, info, cache = fake_set
    ds = PhotoTour(folder, cache_dir=cache)
    first = ds.cache_path
    stamp = first.stat().st_mtime_ns
    assert PhotoTour(folder, cache_dir=cache).cache_path == first
    assert first.stat().st_mtime_ns == stamp  # reused, not rewritten
    assert not list(cache.glob(".*.tmp"))
    # replace sheet 1 with other content: a new cache, the stale one removed
    new = info["patches"].copy()
    new[256:] = 7
    write_sheets(folder, new)
    st = (folder / "patches0001.bmp").stat()
    os.utime(folder / "patches0001.bmp", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    ds2 = PhotoTour(folder, cache_dir=cache)
    assert ds2.cache_path != first and not first.exists()
    np.testing.assert_array_equal(ds2[256], np.full((64, 64), 7, np.uint8))
    # a corrupt cache is rebuilt
    ds2.cache_path.write_bytes(b"junk")
    with pytest.warns(UserWarning, match="rebuilding"):
        ds3 = PhotoTour(folder, cache_dir=cache)
    np.testing.assert_array_equal(ds3.patches, new)


def test_phototour_pickle_is_small(fake_set):
    folder, info, cache = fake_set
    ds = PhotoTour(folder, cache_dir=cache)
    blob = pickle.dumps(ds)
    assert len(blob) < 20_000
    back = pickle.loads(blob)
    np.testing.assert_array_equal(back[5], info["patches"][5])


def test_phototour_without_info_trims_padding(tmp_path):
    make_phototour(tmp_path / "s", n_patches=300, info=False, interest=False)
    ds = PhotoTour(tmp_path / "s", cache_dir=tmp_path / "c")
    assert len(ds) == 300 and ds.point_ids is None and ds.interest is None


def test_phototour_malformed_info(fake_set):
    folder, _, cache = fake_set
    lines = (folder / "info.txt").read_text().splitlines()
    lines[6] = "12 x7"
    (folder / "info.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match=r"info\.txt, line 7: 'x7' is not an integer"):
        PhotoTour(folder, cache_dir=cache)
    lines[6] = "12"
    (folder / "info.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match=r"info\.txt, line 7: expected 2 columns, got 1"):
        PhotoTour(folder, cache_dir=cache)
    lines[6] = ""
    (folder / "info.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match=r"info\.txt, line 7"):
        PhotoTour(folder, cache_dir=cache)
    (folder / "info.txt").write_text("1 2\n" * 600)
    with pytest.raises(DatasetFormatError, match=r"info\.txt: lists 600 patches but the 2 sheets"):
        PhotoTour(folder, cache_dir=cache)


def test_phototour_malformed_interest(fake_set):
    folder, _, cache = fake_set
    lines = (folder / "interest.txt").read_text().splitlines()
    lines[2] = "1 2.0 abc 0.1 1.0"
    (folder / "interest.txt").write_text("\n".join(lines) + "\n")
    ds = PhotoTour(folder, cache_dir=cache)
    with pytest.raises(DatasetFormatError, match=r"interest\.txt, line 3: 'abc' is not a number"):
        _ = ds.interest


def test_phototour_short_and_wrong_sized_sheets(fake_set):
    folder, _, cache = fake_set
    sheet = folder / "patches0001.bmp"
    data = sheet.read_bytes()
    sheet.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetFormatError, match=r"patches0001\.bmp: truncated BMP"):
        PhotoTour(folder, cache_dir=cache)
    assert not list(cache.glob("*.npy")) and not list(cache.glob(".*"))  # nothing half-written kept
    sheet.write_bytes(b"")
    with pytest.raises(DatasetFormatError, match=r"patches0001\.bmp: cannot decode"):
        PhotoTour(folder, cache_dir=cache)
    import cv2

    cv2.imwrite(str(sheet), np.zeros((512, 1024), np.uint8))
    with pytest.raises(DatasetFormatError, match=r"patches0001\.bmp: sheet is 1024x512 px, expected 1024x1024"):
        PhotoTour(folder, cache_dir=cache)
    sheet.rename(folder / "patches0002.bmp")
    with pytest.raises(DatasetFormatError, match="sheet number 1 is missing"):
        PhotoTour(folder, cache_dir=cache)


def test_phototour_match_file_out_of_range(fake_set):
    folder, info, cache = fake_set
    path = folder / f"{info['pairs_name']}.txt"
    lines = path.read_text().splitlines()
    lines[4] = "3 1 0 300 100 0 0"
    path.write_text("\n".join(lines) + "\n")
    ds = PhotoTour(folder, cache_dir=cache)
    with pytest.raises(DatasetFormatError, match=r"m50_40_40_0\.txt, line 5: patch id 300 is outside the 300 patches"):
        ds.pairs(info["pairs_name"])
    lines[4] = "3 1 0 4 1 0"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match=r"line 5: expected 7 columns, got 6"):
        ds.pairs(info["pairs_name"])
    lines[4] = "3 99 0 4 1 0 0"  # point id disagrees with info.txt
    path.write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match=r"line 5: 3D point ids disagree"):
        ds.pairs(info["pairs_name"])


def _zip_folder(folder: Path, archive: Path, prefix: str) -> None:
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, f"{prefix}{f.name}")


def test_phototour_from_archives(fake_set, tmp_path):
    folder, info, cache = fake_set
    zpath = tmp_path / "fakeset.zip"
    _zip_folder(folder, zpath, "fakeset/")
    digest = sha256_file(zpath)
    ds = PhotoTour(zpath, cache_dir=cache, sha256=digest)
    assert ds.archive == zpath and ds.name == "fakeset"
    np.testing.assert_array_equal(ds.patches, info["patches"])
    assert PhotoTour(zpath, cache_dir=cache).root == ds.root  # extraction reused
    with pytest.raises(ValueError, match="SHA-256 mismatch"):
        PhotoTour(zpath, cache_dir=tmp_path / "other", sha256="0" * 64)
    with pytest.raises(ValueError, match="sha256 checks an archive"):
        PhotoTour(folder, cache_dir=cache, sha256=digest)
    # tar.gz with the files at top level
    tpath = tmp_path / "flat.tar.gz"
    with tarfile.open(tpath, "w:gz") as tf:
        for f in sorted(folder.iterdir()):
            tf.add(f, f.name)
    ds2 = PhotoTour(tpath, cache_dir=cache)
    np.testing.assert_array_equal(ds2.pairs(info["pairs_name"])[2], info["labels"])


@pytest.mark.parametrize("member", ["../evil.txt", "/abs/evil.txt", "a/../../evil.txt"])
def test_archive_path_traversal_rejected(tmp_path, member):
    zpath = tmp_path / "bad.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("ok/patches0000.bmp", b"x")
        zf.writestr(member, b"gotcha")
    with pytest.raises(DatasetFormatError, match="unsafe member path"):
        PhotoTour(zpath, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "cache" / "evil.txt").exists()
    tpath = tmp_path / "bad.tar.gz"
    with tarfile.open(tpath, "w:gz") as tf:
        ti = tarfile.TarInfo(member)
        ti.size = 6
        tf.addfile(ti, io.BytesIO(b"gotcha"))
    with pytest.raises(DatasetFormatError, match="unsafe member path"):
        pt.extract_archive(tpath, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_archive_links_rejected(tmp_path):
    tpath = tmp_path / "link.tar"
    with tarfile.open(tpath, "w") as tf:
        ti = tarfile.TarInfo("set/patches0000.bmp")
        ti.type = tarfile.SYMTYPE
        ti.linkname = "/etc/passwd"
        tf.addfile(ti)
    with pytest.raises(DatasetFormatError, match="link or special file"):
        pt.extract_archive(tpath, tmp_path / "out")


def test_download_phototour(fake_set, tmp_path):
    folder, info, _ = fake_set
    with pytest.raises(ValueError, match="no url given.*no longer serve"):
        pt.download_phototour("fakeset", tmp_path / "dl")
    zpath = tmp_path / "src" / "fakeset.zip"
    zpath.parent.mkdir()
    _zip_folder(folder, zpath, "")
    url = zpath.as_uri()
    with pytest.raises(ValueError, match="SHA-256 mismatch"):
        pt.download_phototour("fakeset", tmp_path / "dl", url=url, sha256="1" * 64)
    assert not (tmp_path / "dl" / "fakeset.zip").exists()
    assert not [p for p in (tmp_path / "dl").iterdir() if p.name.endswith(".tmp")]
    digest = sha256_file(zpath)
    archive = pt.download_phototour("fakeset", tmp_path / "dl", url=url, sha256=digest, extract=False)
    assert archive == tmp_path / "dl" / "fakeset.zip" and sha256_file(archive) == digest
    got = pt.download_phototour("fakeset", tmp_path / "dl", url=url, sha256=digest)
    assert got == tmp_path / "dl" / "fakeset"
    np.testing.assert_array_equal(PhotoTour(got, cache_dir=tmp_path / "c").patches, info["patches"])


def test_evaluate_phototour_with_function_and_model(fake_set):
    folder, info, cache = fake_set
    calls = []

    def raw_pixels(p: np.ndarray) -> np.ndarray:
        calls.append(len(p))
        assert p.dtype == np.uint8 and p.shape[1:] == (64, 64)
        return p.reshape(len(p), -1).astype(np.float32)

    res = evaluate_phototour(raw_pixels, folder, info["pairs_name"], cache_dir=cache, batch_size=16)
    flat = info["patches"].reshape(300, -1).astype(np.float32)
    d = np.linalg.norm(flat[info["ids1"]] - flat[info["ids2"]], axis=1)
    expected = metrics.brown_protocol(d, info["labels"])
    for key in ("fpr95", "fdr95", "pr_auc", "num_pairs", "num_positives"):
        assert res[key] == pytest.approx(expected[key])
    assert res["dataset"] == "fakeset"
    assert sum(calls) == len(np.unique(np.r_[info["ids1"], info["ids2"]])) and max(calls) <= 16

    from deepdesc.nn.cnn3 import DeepDescNet

    res2 = evaluate_phototour(DeepDescNet(), PhotoTour(folder, cache_dir=cache), info["pairs_name"])
    assert 0.0 <= res2["fpr95"] <= 1.0 and res2["num_pairs"] == 40


def test_default_match_file_is_the_standard_one_or_the_only_one(fake_set):
    folder, info, cache = fake_set
    ds = PhotoTour(folder, cache_dir=cache)
    assert ds.match_files() == [info["pairs_name"]] and info["pairs_name"] != pt.DEFAULT_PAIRS
    assert ds.default_match_file() == info["pairs_name"]  # the only one (make-patches writes one)
    by_default = evaluate_phototour(lambda p: p.reshape(len(p), -1).astype(np.float32), ds)
    assert by_default["pairs_file"] == info["pairs_name"] and by_default["num_pairs"] == len(info["ids1"])
    text = (folder / f"{info['pairs_name']}.txt").read_text()
    (folder / "m50_2_2_0.txt").write_text(text)
    with pytest.raises(FileNotFoundError, match=r"several match files \(m50_2_2_0, "):
        ds.default_match_file()
    (folder / f"{pt.DEFAULT_PAIRS}.txt").write_text(text)
    assert ds.default_match_file() == pt.DEFAULT_PAIRS


def test_real_notredame_sheets_match_bmp_crops(tmp_path_factory):
    folder = require_shared("data", "train", "notredame")
    from PIL import Image

    ds = PhotoTour(folder, cache_dir=tmp_path_factory.mktemp("nd_cache"))
    n_sheets = len(ds.sheets)
    assert n_sheets >= 1 and ds.sheets[0].name == "patches0000.bmp"
    assert (n_sheets - 1) * 256 < len(ds) <= n_sheets * 256
    rng = np.random.default_rng(0)
    for sheet_no in sorted({0, n_sheets - 1, *rng.integers(0, n_sheets, 3).tolist()}):
        sheet = np.asarray(Image.open(ds.sheets[sheet_no]).convert("L"))
        assert sheet.shape == (1024, 1024)
        for local in (0, 15, 16, 255, *rng.integers(0, 256, 4).tolist()):
            index = sheet_no * 256 + local
            if index >= len(ds):
                continue
            r, c = divmod(local, 16)
            np.testing.assert_array_equal(ds[index], sheet[r * 64 : (r + 1) * 64, c * 64 : (c + 1) * 64])


# ------------------------------------------------------------------------------------------ HPatches


@pytest.fixture()
def fake_hpatches(tmp_path):
    truth = make_hpatches(tmp_path / "hpatches-release", ("i_one", "i_two", "v_three"), n_patches=(5, 6, 4))
    return tmp_path / "hpatches-release", truth


def _raw(p: np.ndarray) -> np.ndarray:
    return p.reshape(len(p), -1).astype(np.float32)


def test_hpatches_patches_and_resize(fake_hpatches):
    import cv2

    root, truth = fake_hpatches
    area = hp.load_hpatches_patches(root / "i_two")
    assert list(area) == list(hp.HPATCHES_IMAGES)
    assert area["ref"].shape == (6, 64, 64) and area["ref"].dtype == np.uint8
    np.testing.assert_array_equal(
        area["h3"][2], cv2.resize(truth["i_two"]["h3"][2], (64, 64), interpolation=cv2.INTER_AREA)
    )
    raw = hp.load_hpatches_patches(root / "i_two", resize=None)
    np.testing.assert_array_equal(raw["t5"], truth["i_two"]["t5"])
    crop = hp.load_hpatches_patches(root / "i_two", resize="crop", images=["e1"])
    np.testing.assert_array_equal(crop["e1"], truth["i_two"]["e1"][:, :64, :64])
    with pytest.raises(ValueError, match="resize"):
        hp.load_hpatches_patches(root / "i_two", resize="nearest")


def test_hpatches_malformed_stripes(fake_hpatches):
    import cv2

    root, _ = fake_hpatches
    cv2.imwrite(str(root / "i_one" / "e2.png"), np.zeros((65 * 5, 64), np.uint8))
    with pytest.raises(DatasetFormatError, match=r"i_one/e2\.png: stripe is 64x325 px"):
        hp.load_hpatches_patches(root / "i_one")
    cv2.imwrite(str(root / "i_one" / "e2.png"), np.zeros((65 * 4, 65), np.uint8))
    with pytest.raises(DatasetFormatError, match=r"e2\.png: 4 patches, but i_one has 5"):
        hp.load_hpatches_patches(root / "i_one")
    (root / "i_one" / "e2.png").unlink()
    with pytest.raises(DatasetFormatError, match=r"e2\.png: missing"):
        hp.load_hpatches_patches(root / "i_one")


def test_hpatches_splits(fake_hpatches, tmp_path):
    root, _ = fake_hpatches
    assert hp.HPatches(root).sequences == ["i_one", "i_two", "v_three"]
    assert hp.HPatches(root, "illum").sequences == ["i_one", "i_two"]
    assert hp.HPatches(root, "view").sequences == ["v_three"]
    with pytest.raises(ValueError, match="splits_file"):
        hp.HPatches(root, "a")
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps({"a": {"test": ["v_three", "i_one"], "train": ["i_two"]}, "b": {"test": ["i_zzz"]}}))
    assert hp.HPatches(root, "a", splits_file=splits).sequences == ["i_one", "v_three"]
    assert hp.HPatches(root, "a", splits_file=splits, subset="train").sequences == ["i_two"]
    with pytest.raises(ValueError, match="i_zzz"):
        hp.HPatches(root, "b", splits_file=splits)
    with pytest.raises(ValueError, match="split must be"):
        hp.HPatches(root, "d")
    ds = hp.HPatches(root, "view")
    assert len(ds) == 1 and ds[0]["ref"].shape == (4, 64, 64)
    with pytest.raises(KeyError):
        ds["i_one"]


def _desc(values: dict[str, list[float]]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, float)[:, None] for k, v in values.items()}


def test_matching_task_hand_computed():
    # 1-D descriptors. ref 0 -> target 0 (d=1, correct); ref 10 -> target 0 (d=9, wrong); ref 20 -> target 2 (d=1).
    target = [1, 30, 21]
    descs = {"s": _desc({"ref": [0, 10, 20], **{f"{t}{i}": target for t in "eht" for i in range(1, 6)}})}
    descs["s"]["t3"] = np.array([[0.0], [10.0], [20.0]])  # perfect
    res = hpe.matching_task(descs)
    # ranked: two correct tied at d=1 (precision 1), recall over all 3 ref patches -> AP = 2/3
    assert res["easy"] == pytest.approx(2 / 3) and res["hard"] == pytest.approx(2 / 3)
    assert res["tough"] == pytest.approx((4 * 2 / 3 + 1) / 5)
    assert res["mean"] == pytest.approx(np.mean([2 / 3, 2 / 3, (4 * 2 / 3 + 1) / 5]))
    assert res["per_sequence"]["s"]["t"][2] == 1.0
    assert res["success_rate"]["easy"] == pytest.approx(2 / 3)
    assert hpe.matching_task(descs, difficulties="e", method="trapezoid")["easy"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="difficulties"):
        hpe.matching_task(descs, difficulties="x")


def test_matching_task_on_fake_release(fake_hpatches):
    root, _ = fake_hpatches
    descs = hpe.describe_hpatches(hp.HPatches(root), _raw, batch_size=7)
    assert descs["i_two"]["e4"].shape == (6, 64 * 64)
    res = hpe.matching_task(descs)
    assert res["easy"] == 1.0  # small noise: raw pixels match exactly
    assert res["easy"] >= res["hard"] >= res["tough"] - 1e-9


def test_verification_task_hand_computed(tmp_path):
    descs = {
        "s": _desc({n: [0, 1, 2, 3] for n in hp.HPATCHES_IMAGES}),
        "o": _desc({n: [10] for n in hp.HPATCHES_IMAGES}),
    }
    descs["s"]["h1"] = np.array([[0.5], [1.0], [2.0], [3.0]])
    pos = [("s", 0, 0, "s", 1, 0), ("s", 0, 1, "s", 2, 1)]  # distances 0 (e) / 0.5 (h) and 0
    intra = [("s", 0, 0, "s", 1, 3), ("s", 0, 1, "s", 2, 2)]  # distances 3, 1
    inter = [("s", 0, 3, "o", 4, 0), ("s", 0, 0, "o", 0, 0)]  # distances 7, 10
    res = hpe.verification_task(descs, pos, intra, inter, imbalanced_ratio=0.5)
    assert res["easy"]["intra"]["balanced_ap"] == 1.0 and res["easy"]["intra"]["balanced_auc"] == 1.0
    # hard: positives at 0.5 and 0, intra negatives at 3 and 1 -> still separated
    assert res["hard"]["intra"]["balanced_ap"] == 1.0
    assert res["balanced"] == 1.0 and res["imbalanced"] == 1.0
    # an intra negative at distance 0 ties with both positives
    intra2 = [("s", 0, 2, "s", 1, 2), ("s", 0, 1, "s", 2, 2)]  # e: distances 0 and 1
    res2 = hpe.verification_task(descs, pos, intra2, inter, difficulties="e")
    # e: d_pos [0, 0], d_neg [0, 1]: one tie group of 2 TP + 1 FP -> AP 2/3; AUC (0.5 + 1) / 2
    assert res2["easy"]["intra"]["balanced_ap"] == pytest.approx(2 / 3)
    assert res2["easy"]["intra"]["balanced_auc"] == pytest.approx(0.75)
    assert list(res2) == ["easy", "balanced", "imbalanced"]
    # official CSV format
    csv_path = tmp_path / "verif_pos_split-a.csv"
    csv_path.write_text("s1,t1,idx1,s2,t2,idx2\ns,0,0,s,1,0\ns,0,1,s,2,1\n")
    assert hpe.load_verification_pairs(csv_path) == pos
    res3 = hpe.verification_task(descs, csv_path, intra, inter)
    assert res3["balanced"] == res["balanced"]
    csv_path.write_text("s1,t1,idx1,s2,t2,idx2\ns,0,0,s,1,0\ns,0,one,s,2,1\n")
    with pytest.raises(DatasetFormatError, match=r"verif_pos_split-a\.csv, line 3"):
        hpe.load_verification_pairs(csv_path)


def test_make_verification_pairs():
    lengths = {"a": 5, "b": 7, "c": 1}
    pos, intra, inter = hpe.make_verification_pairs(lengths, n_pairs=200, seed=3)
    assert len(pos) == len(intra) == len(inter) == 200
    for p, n1, n2 in zip(pos, intra, inter):
        assert p[0] == p[3] and p[2] == p[5] and p[1] != p[4] and p[0] in ("a", "b")
        assert n1[0] == n1[3] == p[0] and n1[2] == p[2] and n1[5] != n1[2] and n1[5] < lengths[p[0]]
        assert n2[3] != n2[0] and n2[5] < lengths[n2[3]] and 0 <= n2[4] <= 5
    assert hpe.make_verification_pairs(lengths, 50, seed=3)[0] == pos[:50]


def test_verification_and_retrieval_on_fake_release(fake_hpatches):
    root, _ = fake_hpatches
    ds = hp.HPatches(root)
    descs = hpe.describe_hpatches(ds, _raw)
    lengths = {s: len(descs[s]["ref"]) for s in descs}
    res = hpe.verification_task(descs, *hpe.make_verification_pairs(lengths, n_pairs=300, seed=0))
    assert res["easy"]["inter"]["balanced_ap"] > 0.95
    assert res["easy"]["intra"]["imbalanced_ap"] >= res["tough"]["intra"]["imbalanced_ap"] - 0.05
    refs = {s: ds[s]["ref"] for s in ds}
    queries, distractors = hpe.make_retrieval_queries(refs, n_queries=6, n_distractors=100, seed=1)
    assert len(queries) == 6 and len(distractors) == 9  # 5 + 6 + 4 textured ref patches
    assert not set(queries) & set(distractors)
    out = hpe.retrieval_task(descs, queries, distractors, pool_sizes=(6, 8, 1000))
    assert set(out["easy"]) <= {6, 8} and out["easy"][6] == 1.0
    assert 0 < out["mAP"] <= 1


def test_make_retrieval_queries_skips_flat_patches():
    refs = {"s": np.stack([np.full((64, 64), 9, np.uint8), np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))])}
    q, d = hpe.make_retrieval_queries(refs, n_queries=5, n_distractors=5)
    assert q == [("s", 1)] and d == []


def test_retrieval_hand_computed():
    descs = {
        "s": _desc({"ref": [0, 100], **{f"{t}{i}": [i, 100] for t in "eht" for i in range(1, 6)}}),
        "o": _desc({n: [2.5, 4.0, 50] for n in hp.HPATCHES_IMAGES}),
    }
    # query s/0: positives at 1..5; distractors (from o) at 2.5, 4, 50
    out = hpe.retrieval_task(descs, [("s", 0)], [("o", 0), ("o", 1), ("o", 2), ("s", 1)], pool_sizes=(6, 7, 8))
    # pool 6: 1, 2, [2.5 neg], 3, 4, 5 -> precisions 1, 1, 3/4, 4/5, 5/6
    ap6 = np.mean([1, 1, 3 / 4, 4 / 5, 5 / 6])
    # pool 7: + neg at 4 ties with positive 4 -> 1, 1, 3/4, 4/6, 5/7
    ap7 = np.mean([1, 1, 3 / 4, 4 / 6, 5 / 7])
    assert out["easy"][6] == pytest.approx(ap6) and out["easy"][7] == pytest.approx(ap7)
    assert out["easy"][8] == pytest.approx(ap7)  # the distractor at 50 comes last
    assert out["mAP"] == pytest.approx(np.mean([ap6, ap7, ap7]))


def test_ap_few_positives_matches_average_precision():
    rng = np.random.default_rng(0)
    for _ in range(50):
        pos = rng.integers(0, 6, 5).astype(float)
        neg = rng.integers(0, 6, rng.integers(0, 30)).astype(float)
        expected = metrics.average_precision(np.r_[pos, neg], np.r_[np.ones(5), np.zeros(len(neg))])
        assert hpe._ap_few_positives(pos, neg) == pytest.approx(expected)


# ----------------------------------------------------------------------------------- image sequences


@pytest.mark.parametrize("layout,gray", [("hpatches", False), ("oxford", True), ("oxford", False)])
def test_load_sequence_generated(tmp_path, layout, gray):
    images, homs = make_sequence(tmp_path / "seq", layout, gray=gray)
    seq = seqs.load_hpatches_sequence(tmp_path / "seq")
    assert len(seq) == 6 and seq.name == "seq"
    for got, want in zip(seq.images, images):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(seq.homographies[0], np.eye(3))
    for got, want in zip(seq.homographies[1:], homs):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    gray_seq = seqs.load_hpatches_sequence(tmp_path / "seq", grayscale=True)
    assert gray_seq.images[3].ndim == 2


def test_load_sequence_errors(tmp_path):
    make_sequence(tmp_path / "seq", "hpatches")
    (tmp_path / "seq" / "H_1_4").write_text("1 0 0\n0 1 0\n")
    with pytest.raises(DatasetFormatError, match=r"H_1_4: expected a 3x3"):
        seqs.load_hpatches_sequence(tmp_path / "seq")
    (tmp_path / "seq" / "H_1_4").write_text("1 0 0\n0 1 zero\n0 0 1\n")
    with pytest.raises(DatasetFormatError, match=r"H_1_4, line 2: 'zero' is not a number"):
        seqs.load_hpatches_sequence(tmp_path / "seq")
    (tmp_path / "seq" / "H_1_4").unlink()
    with pytest.raises(DatasetFormatError, match="homography for image 4 missing"):
        seqs.load_hpatches_sequence(tmp_path / "seq")
    with pytest.raises(DatasetFormatError, match="no image 1"):
        seqs.load_hpatches_sequence(tmp_path)


@pytest.mark.parametrize("where", ["oxford/boat", "oxford/graf", "oxford/bikes", "hpatches/v_churchill"])
def test_load_sequence_shared(where):
    folder = require_shared("data", "eval", *where.split("/"))
    seq = seqs.load_hpatches_sequence(folder)
    assert len(seq) == 6 and len(seq.homographies) == 6
    assert all(img.dtype == np.uint8 and img.ndim in (2, 3) for img in seq.images)
    hname = "H_1_3" if where.startswith("hpatches") else "H1to3p"
    np.testing.assert_allclose(seq.homographies[2], np.loadtxt(folder / hname))
    if where == "oxford/boat":
        assert seq.images[0].shape == (680, 850)  # stored as .pgm gray
    if where == "hpatches/v_churchill":
        assert seq.images[0].shape[2] == 3


def test_extract_archive_never_overwrites_foreign_folders(tmp_path):
    zpath = tmp_path / "a.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("set/patches0000.bmp", b"x")
    user = tmp_path / "mine"
    user.mkdir()
    (user / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not made by extract_archive"):
        pt.extract_archive(zpath, user)
    assert (user / "keep.txt").read_text() == "precious"
    out = pt.extract_archive(zpath, tmp_path / "out")
    assert (out / "set" / "patches0000.bmp").read_bytes() == b"x"
    assert pt.extract_archive(zpath, out) == out  # reused
