"""Images to descriptors: an OpenCV-shaped DeepDesc feature extractor (a drop-in for ``cv2.SIFT``)."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from ..hub.registry import load_model
from ..utils import merge_conf
from . import patches as patch_ops
from .describe import describe, describe_extracted
from .image import keypoints_to_original, keypoints_to_resized, load_resized
from .keypoints import detect_keypoints, to_cv_keypoints, to_keypoint_array
from .types import Features

__all__ = ["Extractor", "Features", "check_extractor_options", "default_conf"]

default_conf: dict[str, Any] = {
    "model": "default",  # registry name, .t7/.safetensors path, or a loaded network (DescriptorNet)
    "max_keypoints": 2000,
    # longest image side in pixels the detector and descriptor see (None: full resolution); larger images are
    # downscaled first (hloc uses 1600, COLMAP 3200); keypoints are always reported in the original's pixels
    "resize_max": None,
    "upright": False,
    # patch side / keypoint size, and extra smoothing of the 64x64 patches in px; None: the model's own
    # (model.conf), else deepdesc.patches.DEFAULT_REGION_SCALE / DEFAULT_BLUR_SIGMA
    "region_scale": None,
    "blur_sigma": None,
    "border": "replicate",  # "replicate", "reflect" or "drop" keypoints whose region leaves the image
    "detector": {"contrast_threshold": 0.04, "edge_threshold": 10.0, "n_octave_layers": 3, "sigma": 1.6},
    "channel_order": "rgb",  # how 3-channel arrays are read; files are always decoded correctly
    "device": "auto",
    "batch_size": 512,
    "precision": "fp32",  # or "bf16" (CPU) / "fp16" (CUDA): faster, see deepdesc.fast
}


def check_extractor_options(max_keypoints: Any = None, resize_max: Any = None) -> None:
    """Raise ``ValueError`` naming the option unless ``max_keypoints`` is a whole number >= 0 (or None) and
    ``resize_max`` a whole number >= 16 (or None): checked when an extractor is made, before any image."""
    for key, value, least in (("max_keypoints", max_keypoints, 0), ("resize_max", resize_max, 16)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            flag = "--" + key.replace("_", "-")
            raise ValueError(f"{key} ({flag}) must be a whole number >= {least} (or None), got {value!r}")


class Extractor:
    """DeepDesc features on images, used like ``cv2.SIFT``.

    >>> dd = Extractor(max_keypoints=1000)
    >>> keypoints, descriptors = dd.detectAndCompute(image)   # list[cv2.KeyPoint], (N, 128) float32

    Images may be file paths or arrays: uint8, uint16 or float (0..255, or 0..1 floats), grayscale,
    RGB (``channel_order="rgb"``, default) or BGR. Keyword arguments override :data:`default_conf`.
    """

    def __init__(self, model: Any = None, **conf: Any):
        self.conf = merge_conf(default_conf, conf, "Extractor")
        if model is not None:
            self.conf["model"] = model
        if self.conf["border"] not in ("replicate", "reflect", "drop"):
            raise ValueError(f"border must be 'replicate', 'reflect' or 'drop', got {self.conf['border']!r}")
        check_extractor_options(self.conf["max_keypoints"], self.conf["resize_max"])
        self._model = None

    @property
    def model(self):
        """The descriptor network, loaded on first use."""
        if self._model is None:
            self._model = load_model(self.conf["model"], device=self.conf["device"])
        return self._model

    # -- the pieces -------------------------------------------------------------------------------
    def load(self, image: Any) -> tuple[np.ndarray, tuple[float, float], tuple[int, int]]:
        """Image path or array -> (H', W') float32 gray image as the detector sees it (downscaled to
        ``resize_max``), the scale (sx, sy) from original to that image, and the original (width, height).

        Refuses (:class:`~deepdesc.features.image.ImageTooLargeError`) an image whose description would not
        fit in memory, from the file's header before decoding where it can be read.
        """
        return load_resized(image, self.conf["resize_max"], channel_order=self.conf["channel_order"])

    def detect_array(self, image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """(H, W) image (float 0..255, or uint8) -> (N, 5) keypoints (x, y, size, angle, response)."""
        return detect_keypoints(
            image,
            max_keypoints=self.conf["max_keypoints"],
            upright=self.conf["upright"],
            mask=mask,
            **self.conf["detector"],
        )

    def patch_options(self) -> dict[str, Any]:
        """The arguments of :func:`~deepdesc.features.patches.extract_patches` this extractor uses."""
        options = {"border": self.conf["border"], "upright": self.conf["upright"]}
        defaults = {"region_scale": patch_ops.DEFAULT_REGION_SCALE, "blur_sigma": patch_ops.DEFAULT_BLUR_SIGMA}
        for key, default in defaults.items():  # explicit option, else what the model was trained for
            value = self.conf[key] if self.conf[key] is not None else self.model.conf.get(key)
            options[key] = default if value is None else value
        return options

    def cut_patches(self, image: np.ndarray, keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(H, W) image, (N, 5) keypoints -> patches (M, 64, 64) float32 and the kept keypoint indices (M,)."""
        return patch_ops.extract_patches(image, keypoints, **self.patch_options())

    def settings(self) -> dict[str, Any]:
        """What determines this extractor's descriptors (recorded in feature files, checked on resume)."""
        model = self.conf["model"]
        return {
            "extractor": "deepdesc",
            "model": model if isinstance(model, str) else str(getattr(self.model, "info", {}).get("name", "")),
            "weights_sha256": self.model.weights_sha256(),
            "patches": self.patch_options(),
            "max_keypoints": self.conf["max_keypoints"],
            "resize_max": self.conf["resize_max"],
            "detector": dict(self.conf["detector"]),
            "precision": self.conf["precision"],
        }

    def describe_patches(self, patches: np.ndarray) -> np.ndarray:
        """(M, 64, 64) patches -> (M, D) float32 descriptors with this extractor's model and precision."""
        if len(patches) == 0:
            return np.zeros((0, self.model.descriptor_size), np.float32)
        return describe(patches, model=self.model, batch_size=self.conf["batch_size"], precision=self.conf["precision"])

    def _describe_cut(self, patches: np.ndarray) -> np.ndarray:
        """:meth:`describe_patches` for patches :meth:`cut_patches` made from a checked image: values not rescanned."""
        if len(patches) == 0:
            return np.zeros((0, self.model.descriptor_size), np.float32)
        conf = self.conf
        return describe_extracted(patches, self.model, batch_size=conf["batch_size"], precision=conf["precision"])

    def describe_keypoints(self, image: np.ndarray, keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(H, W) image from :meth:`load` / :func:`load_image` (finite, 0..255), (N, 5) keypoints -> descriptors
        (M, 128) float32 and the kept keypoint indices (M,)."""
        patches, kept = self.cut_patches(image, keypoints)
        return self._describe_cut(patches), kept

    def prepare(self, image: Any, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        """The CPU-side half of :meth:`extract`: load, detect and cut patches.

        Returns (keypoints (M, 5) of the kept patches in the original image's pixels, patches (M, 64, 64), image
        size (width, height)); pass them to :meth:`finish`. Split so a caller can prepare the next image while
        the network runs. With ``resize_max``, detection and patches use the downscaled image (``mask``: the
        original's size).
        """
        img, scale, size = self.load(image)
        if mask is not None and np.shape(mask)[:2] != (size[1], size[0]):
            raise ValueError(f"mask of shape {np.shape(mask)} does not match the image's {(size[1], size[0])}")
        if mask is not None and scale != (1.0, 1.0):
            mask = (np.asarray(mask) != 0).astype(np.uint8)
            mask = cv2.resize(mask, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_NEAREST)
        # a full-size (H, W) uint8 array is what the detector would convert the float image back to
        plain = isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 2 and scale == (1.0, 1.0)
        kpts = self.detect_array(image if plain else img, mask)
        patches, kept = self.cut_patches(img, kpts)
        del img
        return keypoints_to_original(kpts[kept], scale), patches, size

    def finish(self, prepared: tuple[np.ndarray, np.ndarray, tuple[int, int]]) -> Features:
        """The network half of :meth:`extract`."""
        kpts, patches, size = prepared
        return Features(
            keypoints=kpts[:, :2].copy(),
            scales=kpts[:, 2].copy(),
            angles=kpts[:, 3].copy(),
            scores=kpts[:, 4].copy(),
            descriptors=self._describe_cut(patches),
            image_size=size,
        )

    # -- OpenCV-shaped API ------------------------------------------------------------------------
    def detect(self, image: Any, mask: np.ndarray | None = None) -> list[cv2.KeyPoint]:
        return to_cv_keypoints(self.extract(image, mask).keypoint_array())

    def compute(self, image: Any, keypoints: Any) -> tuple[list[cv2.KeyPoint], np.ndarray]:
        """Describe given keypoints (list of cv2.KeyPoint, or (N,2)/(N,4)/(N,5) arrays).

        Like ``cv2.Feature2D.compute``, returns the keypoints actually described (all of them unless
        ``border="drop"``) and their (N, 128) float32 descriptors.
        """
        kpts = to_keypoint_array(keypoints)
        if self.conf["upright"]:
            kpts[:, 3] = 0.0
        img, (sx, sy), _ = self.load(image)
        desc, kept = self.describe_keypoints(img, keypoints_to_resized(kpts, (sx, sy)))
        return to_cv_keypoints(kpts[kept]), desc

    def detectAndCompute(  # noqa: N802 - OpenCV's name
        self,
        image: Any,
        mask: np.ndarray | None = None,
        useProvidedKeypoints: bool = False,  # noqa: N803
    ) -> tuple[list[cv2.KeyPoint], np.ndarray]:
        if useProvidedKeypoints:
            raise ValueError("useProvidedKeypoints is not supported; call compute(image, keypoints)")
        features = self.extract(image, mask)
        return to_cv_keypoints(features.keypoint_array()), features.descriptors

    def extract(self, image: Any, mask: np.ndarray | None = None) -> Features:
        """Detect and describe: the richer result (positions, scales, angles, scores, descriptors)."""
        return self.finish(self.prepare(image, mask))

    def descriptorSize(self) -> int:  # noqa: N802 - OpenCV's name
        return self.model.descriptor_size

    def descriptorType(self) -> int:  # noqa: N802 - OpenCV's name
        return cv2.CV_32F

    def defaultNorm(self) -> int:  # noqa: N802 - OpenCV's name
        return cv2.NORM_L2
