"""Describe a few 64x64 patches and compare them: the Python counterpart of DeepDesc's example.lua.

Crops patches from scikit-image's ``camera`` picture (a photographer on a lawn): two distinct
locations plus a copy of the first shifted by a few pixels, describes them with a DeepDesc model
and prints the pairwise L2 distances. The shifted copy should be much closer to its original
than the unrelated patch is.

    python examples/example.py                       # registry model split4 (downloaded once)
    python examples/example.py --model path/to/CNN3_p8_n8_split4_073000.t7
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import deepdesc

SIZE = 64


def crop(image: np.ndarray, row: int, col: int) -> np.ndarray:
    """The 64x64 patch whose top-left corner is (row, col)."""
    patch = image[row : row + SIZE, col : col + SIZE]
    if patch.shape != (SIZE, SIZE):
        raise ValueError(f"patch at ({row}, {col}) does not fit in an image of shape {image.shape}")
    return patch


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="split4", help="registry name or .t7/.safetensors path (default: split4)")
    parser.add_argument("--shift", type=int, default=3, help="pixel shift of the third patch (default: 3)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    args = parser.parse_args(argv)

    from skimage import data

    image = data.camera()  # 512x512 uint8 grayscale, values 0..255
    locations = {
        "camera": (100, 240),  # the camera and the photographer's eye
        "lawn": (330, 420),  # grass right of the tripod
        f"camera+{args.shift}px": (100 + args.shift, 240 + args.shift),
    }
    patches = np.stack([crop(image, r, c) for r, c in locations.values()])  # (3, 64, 64) uint8

    model = deepdesc.load_model(args.model, device=args.device)
    descriptors = deepdesc.describe(patches, model=model)  # (3, 128) float32
    print(f"model: {Path(args.model).name}  descriptors: {descriptors.shape} {descriptors.dtype}")

    names = list(locations)
    distances = np.linalg.norm(descriptors[:, None, :] - descriptors[None, :, :], axis=-1)
    width = max(len(n) for n in names)
    print(" " * width + "".join(f"{n:>{width + 2}}" for n in names))
    for name, row in zip(names, distances):
        print(f"{name:<{width}}" + "".join(f"{d:>{width + 2}.3f}" for d in row))


if __name__ == "__main__":
    main()
