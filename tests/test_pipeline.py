"""match_pair (detect, describe, match, verify) and the pieces it shares with the descriptor."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from hardnet_desc import HardNetDescriptor
from hardnet_desc.detection import detect_sift
from hardnet_desc.core.device import autocast, cpu_has_native_bf16, resolve_precision
from hardnet_desc.geometry import fit_homography, refine_homography, transfer_error
from hardnet_desc.matching import match_descriptors
from hardnet_desc.pipeline import match_pair

from conftest import make_hardnet


@pytest.fixture(scope="module")
def desc() -> HardNetDescriptor:
    return HardNetDescriptor(make_hardnet(), device="cpu")


def test_match_pair_recovers_a_known_homography(example_image, desc):
    # image2 = image1 shifted and rotated by a known H; the fitted H must map image1 onto it.
    h, w = example_image.shape[:2]
    H = cv2.getRotationMatrix2D((w / 2, h / 2), 10, 1.0)
    H = np.vstack([H, [0, 0, 1]])
    warped = cv2.warpPerspective(example_image, H, (w, h))
    r = match_pair(example_image, warped, desc, max_keypoints=500, geometry="homography")
    assert len(r.keypoints1) == len(r.keypoints2) == 500
    assert r.points1.shape == r.points2.shape == (len(r.matches), 2)
    assert r.inliers.sum() > 50 and r.threshold == 3.0
    corners = np.float32([[0, 0], [w, 0], [w, h], [0, h]])[None]
    err = np.abs(cv2.perspectiveTransform(corners, r.model) - cv2.perspectiveTransform(corners, H)).max()
    assert err < 2.0
    # the homography is MAGSAC++'s, refined on its inliers; the inliers are those of the refined model
    magsac, _ = fit_homography(r.points1, r.points2, 3.0)
    np.testing.assert_allclose(r.model, refine_homography(magsac, r.points1, r.points2, 3.0))
    assert r.model[2, 2] == 1 and not np.allclose(r.model, magsac / magsac[2, 2])
    np.testing.assert_array_equal(r.inliers, transfer_error(r.model, r.points1, r.points2) < 3.0)


def test_match_pair_is_the_sum_of_its_steps(example_pair, desc):
    # The same answer as detect -> compute -> match -> RANSAC done by hand with OpenCV.
    r = match_pair(*example_pair, desc, max_keypoints=300, ratio=0.8, geometry="fundamental")
    kps = [detect_sift(image, 300) for image in example_pair]
    d = [desc.compute(image, k)[1] for image, k in zip(example_pair, kps)]
    m = match_descriptors(d[0], d[1], ratio=0.8, mutual=True)
    assert np.array_equal(m.query_idx, r.matches.query_idx) and np.array_equal(m.train_idx, r.matches.train_idx)
    p1 = np.array([kps[0][i].pt for i in m.query_idx])
    np.testing.assert_array_equal(p1, r.points1)
    _, mask = cv2.findFundamentalMat(p1, r.points2, cv2.USAC_MAGSAC, 1.0, confidence=0.999, maxIters=10_000)
    assert np.array_equal(mask.ravel().astype(bool), r.inliers)


def test_cut_patches_then_describe_patches_equals_compute(example_image, example_keypoints, desc):
    kps = example_keypoints[:64]
    by_parts = desc.describe_patches(desc.cut_patches(example_image, kps)).cpu().numpy()
    np.testing.assert_allclose(by_parts, desc.compute(example_image, kps)[1], atol=1e-5)
    assert desc.frames(kps).shape == (64, 2, 3)


def test_detect_keeps_the_strongest(example_image, desc):
    every = desc.detect(example_image)
    strongest = desc.detect(example_image, max_keypoints=100)
    assert len(strongest) == 100 < len(every)
    responses = [k.response for k in every]
    assert responses == sorted(responses, reverse=True)
    assert [k.pt for k in strongest] == [k.pt for k in every[:100]]


def test_descriptor_settings_are_read_only(desc):
    with pytest.raises(AttributeError):
        desc.patch_scale = 3.0
    assert len(desc.weights.fingerprint) == 64
    other = HardNetDescriptor(make_hardnet(seed=1), device="cpu")
    assert other.weights.fingerprint != desc.weights.fingerprint


@pytest.mark.parametrize(("precision", "dtype"), [("fp32", torch.float32), ("bf16", torch.bfloat16),
                                                   ("auto", torch.bfloat16 if cpu_has_native_bf16() else torch.float32)])
def test_precision_table_on_cpu(precision, dtype):
    cpu = torch.device("cpu")
    assert resolve_precision(precision, cpu) == dtype
    x = torch.ones(4, 4)
    with autocast(cpu, precision):
        assert (x @ x).dtype == dtype
    with pytest.raises(ValueError, match="fp16' needs a CUDA device"):
        resolve_precision("fp16", cpu)


def test_match_pair_names_a_descriptor_of_another_type(example_pair):
    """A str stopped in "'str' object has no attribute 'detect'"."""
    with pytest.raises(TypeError, match="descriptor must be a HardNetDescriptor .* got str"):
        match_pair(*example_pair, "hardnet")
