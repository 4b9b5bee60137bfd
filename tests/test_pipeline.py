"""DeepDesc on images: the OpenCV-shaped API, empty results, and recovering known transforms."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from deepdesc.features.extractor import Extractor


def _textured(size: int = 320, seed: int = 0) -> np.ndarray:
    """A natural-looking test image: scikit-image's camera, cropped."""
    from skimage import data

    img = data.camera()
    return np.ascontiguousarray(img[60 : 60 + size, 100 : 100 + size])


@pytest.fixture(scope="module")
def dd(split4_model):
    return Extractor(model=split4_model, max_keypoints=500)


def test_detect_and_compute_shapes(dd):
    img = _textured()
    kps, desc = dd.detectAndCompute(img)
    assert isinstance(kps[0], cv2.KeyPoint) and desc.shape == (len(kps), 128) and desc.dtype == np.float32
    assert 50 < len(kps) <= 500
    feats = dd.extract(img)
    assert feats.keypoints.shape == (len(feats), 2) and feats.image_size == (320, 320)
    np.testing.assert_allclose(feats.descriptors, desc, atol=1e-5)


def test_uint8_float_and_file_inputs_give_the_same_features(dd, tmp_path):
    """A uint8 grayscale array goes to the detector as it is; its float32 copy and its PNG file must give
    exactly the same keypoints and descriptors."""
    img = _textured()
    path = tmp_path / "camera.png"
    cv2.imwrite(str(path), img)
    reference = dd.extract(img).as_dict()
    for other in (img.astype(np.float32), str(path), np.ascontiguousarray(img[:, :, None])):
        for key, value in dd.extract(other).as_dict().items():
            np.testing.assert_array_equal(value, reference[key], err_msg=key)


def test_compute_accepts_every_keypoint_form(dd):
    img = _textured()
    xy = np.array([[100.0, 120.0], [200.5, 50.25]], np.float32)
    kps, d2 = dd.compute(img, xy)
    assert len(kps) == 2 and d2.shape == (2, 128)
    cv_kps = [cv2.KeyPoint(100.0, 120.0, 10.0, 0.0), cv2.KeyPoint(200.5, 50.25, 10.0, 0.0)]
    _, d_cv = dd.compute(img, cv_kps)
    np.testing.assert_allclose(d_cv, d2, atol=1e-5)
    _, d4 = dd.compute(img, np.array([[100, 120, 10, 0], [200.5, 50.25, 10, 0]], np.float32))
    np.testing.assert_allclose(d4, d2, atol=1e-5)


def test_sift_drop_in(dd):
    """Same call sites as cv2.SIFT: compute on SIFT's own keypoints keeps them all."""
    img = _textured()
    sift = cv2.SIFT_create(300)
    kps = sift.detect(img, None)
    out_kps, desc = dd.compute(img, kps)
    assert len(out_kps) == len(kps) and desc.shape == (len(kps), 128)
    assert dd.descriptorSize() == 128 and dd.defaultNorm() == cv2.NORM_L2


def test_blank_image_gives_empty_results(dd):
    kps, desc = dd.detectAndCompute(np.full((100, 100), 128, np.uint8))
    assert kps == [] and desc.shape == (0, 128)


def test_bad_images(dd, tmp_path):
    with pytest.raises(FileNotFoundError):
        dd.detectAndCompute(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(ValueError):
        dd.detectAndCompute(tmp_path / "junk.png")
    with pytest.raises(ValueError):
        dd.detectAndCompute(np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError):
        dd.detectAndCompute(np.zeros((0, 0), np.uint8))


def test_unknown_option():
    with pytest.raises(TypeError, match="unknown Extractor options"):
        Extractor(max_keypoint=10)


@pytest.mark.parametrize("angle, scale", [(30.0, 1.0), (0.0, 0.7), (-50.0, 1.3)])
def test_matching_recovers_a_known_similarity(dd, angle, scale):
    from deepdesc.matching.nearest_neighbor import match_descriptors
    from deepdesc.matching.verify import estimate_homography

    img = _textured()
    center = (160.0, 160.0)
    A = cv2.getRotationMatrix2D(center, angle, scale)
    warped = cv2.warpAffine(img, A, (320, 320), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    f1, f2 = dd.extract(img), dd.extract(warped)
    matches, _ = match_descriptors(f1.descriptors, f2.descriptors, mutual=True)
    H, inliers = estimate_homography(f1.keypoints[matches[:, 0]], f2.keypoints[matches[:, 1]], threshold_px=3.0)
    assert H is not None and inliers.sum() >= 20
    corners = np.array([[[60.0, 60.0], [260.0, 60.0], [260.0, 260.0], [60.0, 260.0]]])
    expected = cv2.transform(corners, A)[0]
    got = cv2.perspectiveTransform(corners, H)[0]
    assert np.abs(got - expected).max() < 3.0
