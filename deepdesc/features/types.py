"""The result type of every extractor (DeepDesc, SIFT): :class:`Features`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Features"]


@dataclass
class Features:
    """Local features of one image (N keypoints), the fields of hloc's features file.

    - ``keypoints`` (N, 2) float32: x, y in pixels, OpenCV convention (centre of the top-left pixel at (0, 0);
      COLMAP's is at (0.5, 0.5): :mod:`deepdesc.io.colmap` adds the 0.5).
    - ``scales`` (N,) float32: OpenCV keypoint ``size``, the region's *diameter* in pixels (about 2 sigma of
      the DoG scale; hloc and pycolmap read a field of this name as a sigma-like scale, about half of it).
    - ``angles`` (N,) float32: orientation in degrees, OpenCV convention (y down: positive is clockwise).
    - ``scores`` (N,) float32: detector response.
    - ``descriptors`` (N, D) float32 (D = 128).
    - ``image_size``: (width, height) in pixels of the image as decoded (EXIF orientation ignored).
    """

    keypoints: np.ndarray
    scales: np.ndarray
    angles: np.ndarray
    scores: np.ndarray
    descriptors: np.ndarray
    image_size: tuple[int, int]

    def __len__(self) -> int:
        return len(self.keypoints)

    def as_dict(self) -> dict[str, np.ndarray]:
        return {
            "keypoints": self.keypoints,
            "scales": self.scales,
            "angles": self.angles,
            "scores": self.scores,
            "descriptors": self.descriptors,
            "image_size": np.asarray(self.image_size, dtype=np.int64),
        }

    def keypoint_array(self) -> np.ndarray:
        """(N, 5) x, y, size, angle, response."""
        return np.column_stack([self.keypoints, self.scales, self.angles, self.scores]).astype(np.float32)
