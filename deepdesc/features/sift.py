"""OpenCV SIFT and RootSIFT descriptors at given keypoints: the baselines, with the extractor's interface.

:class:`SIFT` detects with the same DoG detector as :class:`~deepdesc.features.extractor.Extractor`
(:func:`~deepdesc.features.keypoints.detect_keypoints`), so a comparison of descriptors on one image uses
the same keypoints; ``region_scale`` optionally enlarges SIFT's measurement region to the patch side a
DeepDesc model sees (patch side = ``region_scale`` x keypoint size).
"""

from __future__ import annotations

import copy
from typing import Any

import cv2
import numpy as np

from ..utils import merge_conf
from .image import as_uint8_gray, load_image
from .keypoints import detect_keypoints, to_cv_keypoints
from .types import Features

__all__ = ["SIFT", "SIFT_REGION_SCALE", "sift_descriptors"]

# OpenCV's SIFT descriptor grid spans 4 bins x 3 sigma = 6 x the keypoint size (size = 2 sigma).
SIFT_REGION_SCALE = 6.0

default_conf: dict[str, Any] = {
    "root": False,  # RootSIFT (Arandjelovic & Zisserman, CVPR 2012): L1-normalise, then square root
    "region_scale": None,  # None: SIFT's native region (6x the size); else that many times the size
    "max_keypoints": 2000,
    "upright": False,
    "detector": {"contrast_threshold": 0.04, "edge_threshold": 10.0, "n_octave_layers": 3, "sigma": 1.6},
}


def sift_descriptors(
    image: Any, keypoints: np.ndarray, root: bool = False, region_scale: float | None = None
) -> np.ndarray:
    """OpenCV SIFT (or RootSIFT) descriptors at ``keypoints`` (N, 5). Image -> (N, 128) float32.

    Every keypoint gets a row (in order; zeros where OpenCV drops one); ``region_scale`` rescales the
    keypoint sizes so the descriptor covers ``region_scale`` x the size instead of 6x. RootSIFT rows are
    unit L2 norm; SIFT rows are OpenCV's (norm ~512).
    """
    kpts = np.asarray(keypoints, np.float32).copy()
    if region_scale is not None:
        kpts[:, 2] *= region_scale / SIFT_REGION_SCALE
    cv_kpts = to_cv_keypoints(kpts)
    for i, k in enumerate(cv_kpts):
        k.class_id = i
    gray = as_uint8_gray(image, "rgb")
    out_kpts, desc = cv2.SIFT_create().compute(gray, cv_kpts)
    full = np.zeros((len(kpts), 128), np.float32)
    if desc is not None:
        full[[k.class_id for k in out_kpts]] = desc
    if root:
        full = np.sqrt(full / (np.abs(full).sum(axis=1, keepdims=True) + 1e-7))
    return full


class SIFT:
    """SIFT/RootSIFT features on images, with :class:`~deepdesc.features.extractor.Extractor`'s interface.

    ``SIFT(root=True).extract(image) -> Features``; keyword arguments override :data:`default_conf`.
    """

    def __init__(self, **conf: Any):
        self.conf = merge_conf(default_conf, conf, "SIFT")

    @property
    def name(self) -> str:
        base = "rootsift" if self.conf["root"] else "sift"
        return base if self.conf["region_scale"] is None else f"{base}@{self.conf['region_scale']:g}"

    def describe_keypoints(self, image: Any, keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Image, (N, 5) keypoints -> descriptors (N, 128) float32 and the kept indices (all of them)."""
        desc = sift_descriptors(image, keypoints, self.conf["root"], self.conf["region_scale"])
        return desc, np.arange(len(keypoints))

    def prepare(self, image: Any, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        """Load and detect: (keypoints (N, 5), (H, W) image, (width, height)); pass it to :meth:`finish`."""
        img = load_image(image)
        kpts = detect_keypoints(
            img,
            max_keypoints=self.conf["max_keypoints"],
            upright=self.conf["upright"],
            mask=mask,
            **self.conf["detector"],
        )
        return kpts, img, (img.shape[1], img.shape[0])

    def finish(self, prepared: tuple[np.ndarray, np.ndarray, tuple[int, int]]) -> Features:
        kpts, img, size = prepared
        desc, _ = self.describe_keypoints(img, kpts)
        return Features(
            keypoints=kpts[:, :2].copy(),
            scales=kpts[:, 2].copy(),
            angles=kpts[:, 3].copy(),
            scores=kpts[:, 4].copy(),
            descriptors=desc,
            image_size=size,
        )

    def extract(self, image: Any, mask: np.ndarray | None = None) -> Features:
        """Detect and describe an image (path or array)."""
        return self.finish(self.prepare(image, mask))

    def settings(self) -> dict[str, Any]:
        """What determines this extractor's output (recorded in feature files)."""
        return {"extractor": "sift", **copy.deepcopy(self.conf)}
