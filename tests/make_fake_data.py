"""Tiny datasets in the exact original on-disk layouts, for tests (and as format documentation).

Run as a script to write them somewhere: ``python tests/make_fake_data.py OUT_DIR``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

PATCH = 64
SHEET = 1024
PER_SHEET = 256
HP_PATCH = 65
HP_IMAGES = ("ref", *(f"{t}{i}" for t in "eht" for i in range(1, 6)))


def fake_patches(n: int, seed: int = 0) -> np.ndarray:
    """(n, 64, 64) uint8 random patches, none entirely black (black marks sheet padding)."""
    rng = np.random.default_rng(seed)
    return rng.integers(1, 256, size=(n, PATCH, PATCH), dtype=np.uint8)


def related_patches(n: int, per_point: int, seed: int = 0) -> np.ndarray:
    """(n, 64, 64) uint8: runs of ``per_point`` views of one smooth random texture per 3D point."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, PATCH, PATCH), np.uint8)
    for start in range(0, n, per_point):
        base = cv2.GaussianBlur(rng.uniform(0, 255, (PATCH + 8, PATCH + 8)).astype(np.float32), (0, 0), 2.5)
        base = (base - base.mean()) / (base.std() + 1e-6)
        for i in range(start, min(start + per_point, n)):
            dy, dx = rng.integers(0, 5, 2)
            view = base[dy : dy + PATCH, dx : dx + PATCH] * rng.uniform(30, 60) + rng.uniform(100, 150)
            view = view + rng.normal(0, 8, view.shape)
            out[i] = np.clip(view, 1, 255).astype(np.uint8)
    return out


def write_sheets(folder: Path, patches: np.ndarray) -> list[Path]:
    """Write ``patchesNNNN.bmp`` 1024x1024 8-bit sheets, 16x16 patches row-major, black padding."""
    folder.mkdir(parents=True, exist_ok=True)
    n_sheets = -(-len(patches) // PER_SHEET)
    padded = np.zeros((n_sheets * PER_SHEET, PATCH, PATCH), np.uint8)
    padded[: len(patches)] = patches
    paths = []
    for k in range(n_sheets):
        block = padded[k * PER_SHEET : (k + 1) * PER_SHEET].reshape(16, 16, PATCH, PATCH)
        sheet = block.transpose(0, 2, 1, 3).reshape(SHEET, SHEET)
        path = folder / f"patches{k:04d}.bmp"
        if not cv2.imwrite(str(path), sheet):
            raise OSError(f"cannot write {path}")
        paths.append(path)
    return paths


def make_phototour(
    folder: str | Path,
    n_patches: int = 300,
    patches_per_point: int = 3,
    n_pairs: int = 40,
    seed: int = 0,
    info: bool = True,
    interest: bool = True,
    learnable: bool = False,
) -> dict:
    """A PhotoTour set: sheets, ``info.txt``, ``interest.txt`` and ``m50_{n}_{n}_0.txt``.

    Consecutive runs of ``patches_per_point`` patches share a 3D point id (as in the real data).
    Half the pairs are positive. Returns patches, point_ids, image_ids and the pairs written.
    ``learnable``: the patches of one point are views of one smooth texture (shifted, rescaled in
    contrast, noisy) instead of unrelated noise, so a descriptor can be trained on them.
    """
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    patches = related_patches(n_patches, patches_per_point, seed) if learnable else fake_patches(n_patches, seed)
    write_sheets(folder, patches)
    point_ids = np.arange(n_patches) // patches_per_point
    image_ids = rng.integers(0, 1000, n_patches)
    if info:
        (folder / "info.txt").write_text("".join(f"{p} {i}\n" for p, i in zip(point_ids, image_ids)))
    if interest:
        rows = [
            f"{i} {rng.uniform(0, 800):.2f} {rng.uniform(0, 600):.2f} {rng.uniform(-3, 3):.4f} {rng.uniform(0, 4):.4f}"
            for i in image_ids
        ]
        (folder / "interest.txt").write_text("\n".join(rows) + "\n")
    ids1 = rng.integers(0, n_patches, n_pairs)
    ids2 = rng.integers(0, n_patches, n_pairs)
    # make every even pair positive: another patch of the same point
    for k in range(0, n_pairs, 2):
        base = point_ids[ids1[k]] * patches_per_point
        ids2[k] = min(base + (ids1[k] - base + 1) % patches_per_point, n_patches - 1)
    labels = point_ids[ids1] == point_ids[ids2]
    name = f"m50_{n_pairs}_{n_pairs}_0"
    lines = [f"{a} {point_ids[a]} 0 {b} {point_ids[b]} 0 0\n" for a, b in zip(ids1, ids2)]
    (folder / f"{name}.txt").write_text("".join(lines))
    return {
        "patches": patches,
        "point_ids": point_ids,
        "image_ids": image_ids,
        "pairs_name": name,
        "ids1": ids1,
        "ids2": ids2,
        "labels": labels,
    }


def make_hpatches(
    root: str | Path, sequences: tuple[str, ...] = ("i_fake", "v_fake"), n_patches: int = 6, seed: int = 0
):
    """HPatches release layout: ``root/<seq>/{ref,e1..e5,h1..h5,t1..t5}.png``, stripes of 65x65 patches.

    Each image is (65 * n, 65) uint8. Target patches are the reference plus noise growing with the
    difficulty (e < h < t). Returns {seq: {image: (n, 65, 65) uint8}}.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, np.ndarray]] = {}
    for s, seq in enumerate(sequences):
        n = n_patches if isinstance(n_patches, int) else n_patches[s]
        ref = rng.integers(0, 256, (n, HP_PATCH, HP_PATCH)).astype(np.float64)
        images = {"ref": ref}
        for level, sigma in zip("eht", (4.0, 12.0, 30.0)):
            for i in range(1, 6):
                images[f"{level}{i}"] = ref + rng.normal(0, sigma, ref.shape)
        folder = root / seq
        folder.mkdir(parents=True, exist_ok=True)
        out[seq] = {}
        for name, stack in images.items():
            stack = np.clip(np.rint(stack), 0, 255).astype(np.uint8)
            cv2.imwrite(str(folder / f"{name}.png"), stack.reshape(n * HP_PATCH, HP_PATCH))
            out[seq][name] = stack
    return out


def make_sequence(folder: str | Path, layout: str = "hpatches", size: tuple[int, int] = (48, 64), gray: bool = False):
    """A full-image sequence: HPatches (``1..6.ppm``, ``H_1_2..H_1_6``) or Oxford
    (``img1..6.ppm``/``.pgm``, ``H1to2p..H1to6p``) layout. Returns (images, homographies 1->k)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    h, w = size
    images, homs = [], []
    ext = ".pgm" if gray else ".ppm"
    for k in range(1, 7):
        img = rng.integers(0, 256, (h, w) if gray else (h, w, 3), dtype=np.uint8)
        name = f"{k}{ext}" if layout == "hpatches" else f"img{k}{ext}"
        cv2.imwrite(str(folder / name), img)
        images.append(img if gray else cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
        if k > 1:
            H = np.array([[1.0 + 0.01 * k, 0.02, k], [0.0, 1.0, -k], [1e-4 * k, 0.0, 1.0]])
            hname = f"H_1_{k}" if layout == "hpatches" else f"H1to{k}p"
            np.savetxt(folder / hname, H, fmt="%.10g" if layout == "hpatches" else "%15.7e")
            homs.append(H)
    return images, homs


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "fake_data")
    make_phototour(out / "phototour" / "fakeset")
    make_hpatches(out / "hpatches-release")
    make_sequence(out / "hpatches-sequences" / "v_fake", "hpatches")
    make_sequence(out / "oxford" / "fake", "oxford", gray=True)
    print(f"wrote fake datasets under {out}")
