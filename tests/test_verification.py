"""Verification: no model rather than a wrong one, the frame and coherence checks, the refinement."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from hardnet_desc.data.warps import viewpoint_homography
from hardnet_desc.evaluation.metrics import corner_error
from hardnet_desc.geometry import homography_jacobian
from hardnet_desc.verification import (
    coherent,
    frames_agree,
    refine_verified,
    scattered,
    thin,
    verify,
    verify_prior,
)


def test_verify_reports_no_model_below_min_inliers_and_the_plane_for_a_planar_f():
    rng = np.random.default_rng(0)
    p1 = rng.uniform(0, 500, (200, 2))
    H = np.array([[0.9, 0.1, 20], [-0.05, 1.1, 5], [1e-4, 2e-4, 1]])
    p2 = cv2.perspectiveTransform(p1[None], H)[0]
    model, inliers, kind = verify(p1, p2, "homography", 3.0, size1=(500, 500))
    assert kind == "homography" and inliers.all() and np.allclose(model / model[2, 2], H, rtol=1e-3, atol=1e-6)
    # All points on one plane: F is not determined by them, so the plane's homography is reported.
    model, inliers, kind = verify(p1, p2, "fundamental", 1.0)
    assert kind == "homography" and inliers.sum() > 180
    # Random correspondences: no model, whatever RANSAC finds among them.
    q2 = rng.uniform(0, 500, (200, 2))
    for geometry in ("homography", "fundamental"):
        model, inliers, _ = verify(p1, q2, geometry, 3.0)
        assert model is None and not inliers.any()
    assert verify(p1[:10], p2[:10], "homography", 3.0)[0] is None  # 10 < 15 inliers


def test_verify_states_a_homography_whose_horizon_crosses_image_1():
    """Both views oblique (as real wide pairs): the plane's horizon runs through image 1, so the true homography
    sends some of image 1's corners through image 2's horizon. Its correspondences are all in front; verify
    checks the region they cover and states the model."""
    size = (500, 500)
    first = viewpoint_homography(size, tilt=3.5, axis_deg=0)
    second = viewpoint_homography(size, tilt=5.0, axis_deg=90, rotation_deg=30)
    truth = second @ np.linalg.inv(first)
    corners = np.array([[0, 0, 1], [499, 0, 1], [0, 499, 1], [499, 499, 1]], np.float64)
    w = corners @ truth[2]
    assert (w > 0).any() and (w < 0).any()  # the case: image 1's corners on both sides of the horizon
    rng = np.random.default_rng(7)
    photo = rng.uniform(0, 499, (300, 2))  # points of the plane, seen in image 1 through ``first``
    p1 = cv2.perspectiveTransform(photo[None], first)[0]
    p2 = cv2.perspectiveTransform(p1[None], truth)[0] + rng.normal(0, 0.3, p1.shape)
    model, inliers, kind = verify(p1, p2, "homography", 3.0, size1=size)
    assert kind == "homography" and model is not None and inliers.sum() >= 290
    assert np.median(np.linalg.norm(cv2.perspectiveTransform(p1[None], model)[0] - p2, axis=1)) < 0.6


def test_frames_agree_hand_cases():
    """The frames of a true correspondence are the local affine map of the model apart; a frame twice too large,
    or turned by 45 degrees, disagrees."""
    h = np.array([[2.0, 0, 10], [0, 0.5, 5], [0, 0, 1]])  # local map diag(2, 0.5) everywhere
    a1 = np.array([[3.0, 1.0], [0.0, 2.0]])
    c1 = np.array([4.0, 6.0])
    f1 = np.concatenate([a1, c1[:, None]], axis=1)
    jac = np.diag([2.0, 0.5])
    turn45 = cv2.getRotationMatrix2D((0, 0), 45, 1.0)[:, :2]
    f2 = [np.concatenate([m @ a1, (jac @ c1 + [10, 5])[:, None]], axis=1)
          for m in (jac, jac * 1.5, jac * 2.5, jac @ turn45)]
    assert frames_agree(h, np.stack([f1] * 4), np.stack(f2)).tolist() == [True, True, False, False]


def test_thin_support_is_few_distinctive_inliers_with_disagreeing_frames():
    """A homography's support is thin when fewer than 30 of its inliers passed the ratio test (guided matches have NaN
    ratios) and fewer than 85 % of its inliers' frames agree with it; either alone is not enough."""
    h = np.array([[2.0, 0, 10], [0, 0.5, 5], [0, 0, 1]])
    a1 = np.array([[3.0, 1.0], [0.0, 2.0]])
    f1 = np.repeat(np.concatenate([a1, [[4.0], [6.0]]], axis=1)[None], 40, axis=0)
    f2 = np.repeat(np.concatenate([np.diag([2.0, 0.5]) @ a1, [[18.0], [8.0]]], axis=1)[None], 40, axis=0)
    bad = f2.copy()
    bad[:8, :, :2] *= 3  # 8 of 40 (20 %) disagree: 80 % agree
    inliers = np.ones(40, bool)
    few = np.r_[np.full(20, 0.7), np.full(20, np.nan)]  # 20 passed the ratio test, 20 are guided
    many = np.full(40, 0.7)
    assert thin(h, inliers, few, f1, bad)
    assert not thin(h, inliers, few, f1, f2)  # the frames agree
    assert not thin(h, inliers, many, f1, bad)  # 40 distinctive inliers
    outliers = inliers.copy()
    outliers[:8] = False  # the disagreeing frames are no inliers
    assert not thin(h, outliers, few, f1, bad)
    with pytest.raises(ValueError, match="inliers must be a bool array"):
        thin(h, inliers[:-1], few, f1, bad)


def test_verify_refuses_a_homography_whose_frames_disagree():
    """The same correspondences twice: with the frames the true homography implies verify states the model, with
    frames of unrelated shapes (as a wrong model's chance inliers have) it states none."""
    rng = np.random.default_rng(2)
    H = np.array([[0.9, 0.1, 20], [-0.05, 1.1, 5], [1e-4, 2e-4, 1]])
    p1 = rng.uniform(0, 500, (100, 2))
    p2 = cv2.perspectiveTransform(p1[None], H)[0]
    a1 = np.eye(2) * rng.uniform(2, 8, (100, 1, 1))
    frames1 = np.concatenate([a1, p1[:, :, None]], axis=2)
    right = np.concatenate([homography_jacobian(H, p1) @ a1, p2[:, :, None]], axis=2)
    turns = np.stack([cv2.getRotationMatrix2D((0, 0), a, 1.0)[:, :2] for a in rng.uniform(60, 300, 100)])
    wrong = np.concatenate([turns @ a1, p2[:, :, None]], axis=2)
    model, inliers, _ = verify(p1, p2, "homography", 3.0, None, (500, 500), None, frames1, right)
    assert model is not None and inliers.all()
    model, inliers, _ = verify(p1, p2, "homography", 3.0, None, (500, 500), None, frames1, wrong)
    assert model is None and not inliers.any()


def test_degenerate_frames_are_refused_naming_the_array():
    """One frame with a zero 2x2 part stopped verify (and frames_agree, coherent, thin) in numpy's LinAlgError
    ("Singular matrix"), a NaN frame in "SVD did not converge"."""
    rng = np.random.default_rng(3)
    p1 = rng.uniform(0, 500, (40, 2))
    frames = np.concatenate([np.stack([np.eye(2) * 4] * 40), p1[:, :, None]], axis=2)
    for row, value, name in ((7, 0.0, "frames1"), (9, np.nan, "frames2")):
        bad = frames.copy()
        bad[row, :, :2] = value
        f1, f2 = (bad, frames) if name == "frames1" else (frames, bad)
        with pytest.raises(ValueError, match=rf"{name} holds 1 frame\(s\) with NaN or inf or a singular 2x2 part "
                                             rf"\(first: row {row}\)"):
            verify(p1, p1 + 3, "homography", 3.0, None, (500, 500), None, f1, f2)
        with pytest.raises(ValueError, match=name):
            coherent(p1, p1 + 3, f1, f2)


def test_coherent_hand_cases():
    """Neighbours carried by one similarity are where each other's frames predict them; the same points in image 2
    shuffled are not, and a lone correspondence has no neighbour to agree with."""
    rng = np.random.default_rng(0)
    p1 = rng.uniform(0, 200, (40, 2))
    turn = cv2.getRotationMatrix2D((0, 0), 30, 1.5)[:, :2]
    p2 = p1 @ turn.T + [300, 40]
    frames1 = np.concatenate([np.stack([np.eye(2) * 3] * 40), p1[:, :, None]], axis=2)
    frames2 = np.concatenate([np.stack([turn * 3] * 40), p2[:, :, None]], axis=2)
    assert coherent(p1, p2, frames1, frames2).all()
    shuffled = rng.permutation(40)
    frames2[:, :, 2] = p2[shuffled]
    assert coherent(p1, p2[shuffled], frames1, frames2).mean() < 0.2
    assert not coherent(p1[:1], p2[:1], frames1[:1], frames2[:1]).any()


def _level_stereo(false: bool) -> tuple[np.ndarray, ...]:
    """Two level cameras side by side over a smooth non-planar surface: true correspondences (or, ``false``, each
    point of image 1 joined to a random place at the same height of image 2), with upright frames of one size."""
    rng = np.random.default_rng(1)
    p1 = rng.uniform(100, 700, (150, 2))
    depth = 3 + np.sin(p1[:, 0] / 150) + np.cos(p1[:, 1] / 120)
    p2 = p1 - np.c_[100 / depth, np.zeros(150)]
    if false:
        p2[:, 0] = rng.uniform(100, 700, 150)
    frames = [np.concatenate([np.stack([np.eye(2) * 4] * 150), p[:, :, None]], axis=2) for p in (p1, p2)]
    return p1, p2, *frames


def test_verify_refuses_a_fundamental_matrix_of_false_matches_at_the_same_height():
    """Level cameras: any match at the same height fits the true fundamental matrix, so RANSAC states it for false
    matches too; their frames predict no neighbour (``coherent``), so verify states none. True matches pass."""
    p1, p2, f1, f2 = _level_stereo(false=True)
    model, inliers, _ = verify(p1, p2, "fundamental", 1.0, None, (800, 800))
    assert model is not None and inliers.sum() >= 25  # without frames the chance model is stated
    model, inliers, _ = verify(p1, p2, "fundamental", 1.0, None, (800, 800), None, f1, f2)
    assert model is None and not inliers.any()
    p1, p2, f1, f2 = _level_stereo(false=False)
    model, inliers, kind = verify(p1, p2, "fundamental", 1.0, None, (800, 800), None, f1, f2)
    assert model is not None and kind == "fundamental" and inliers.mean() > 0.9


def test_refine_brings_a_minimal_sample_model_closer_at_the_corners():
    """A homography fitted to 4 of 40 noisy matches in one small patch is far off at the far corners; the
    robust refit on the matches within the threshold brings it back and keeps the outliers out."""
    rng = np.random.default_rng(3)
    H = np.array([[0.8, 0.2, 40], [-0.1, 1.2, 10], [2e-4, 4e-4, 1]])
    p1 = rng.uniform(300, 500, (40, 2))
    p2 = cv2.perspectiveTransform(p1[None], H)[0] + rng.normal(0, 0.5, (40, 2))
    p2[30:] += rng.uniform(30, 60, (10, 2))  # 10 outliers
    h0 = cv2.getPerspectiveTransform(np.float32(p1[[0, 1, 2, 3]]), np.float32(p2[[0, 1, 2, 3]]))
    within = np.linalg.norm(cv2.perspectiveTransform(p1[None], h0)[0] - p2, axis=1) < 3.0
    assert within[:30].sum() >= 20 and not within[30:].any()  # a model MAGSAC could have accepted
    model, inliers = refine_verified(h0, within, p1, p2, 3.0, min_inliers=15)
    assert corner_error(model, H, 1000, 1000) < corner_error(h0, H, 1000, 1000) / 2
    assert inliers[:30].all() and not inliers[30:].any()


def _two_motions(rng: np.random.Generator, n: int, angle: float, shift: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """``n`` correspondences of random 3D points (depth 4-8) seen by ``[I | 0]`` and by a camera turned
    ``angle`` degrees about y and moved by ``shift`` (f = 500, centre (250, 250))."""
    X = rng.uniform([-2, -2, 4], [2, 2, 8], (n, 3))
    R = cv2.Rodrigues(np.array([0.0, np.radians(angle), 0.0]))[0]
    K = np.array([[500.0, 0, 250], [0, 500, 250], [0, 0, 1]])
    x1, x2 = X @ K.T, (X @ R.T + shift) @ K.T
    return x1[:, :2] / x1[:, 2:], x2[:, :2] / x2[:, 2:]


def test_verify_prior_keeps_the_original_images_model_against_a_larger_wrong_one():
    """30 correspondences of one camera motion among 60 of another (as a view step's wrong matches can outvote
    the original images' right ones): verify states the larger motion, verify_prior the one of the prior."""
    rng = np.random.default_rng(5)
    a1, a2 = _two_motions(rng, 30, 20.0, [1.0, 0.1, 0.2])
    b1, b2 = _two_motions(rng, 60, -35.0, [-0.5, 0.8, 0.1])
    p1, p2 = np.vstack([a1, b1]), np.vstack([a2, b2])
    prior, _ = cv2.findFundamentalMat(a1[:15], a2[:15], cv2.FM_8POINT)  # the weaker model: 15 matches
    _, inliers, kind = verify(p1, p2, "fundamental", 1.0)
    assert kind == "fundamental" and inliers[30:].sum() >= 55 and inliers[:30].sum() <= 5
    _, inliers, kind = verify_prior(prior, p1, p2, 1.0)
    assert kind == "fundamental" and inliers[:30].sum() >= 28 and not inliers[30:].any()
    # Too few correspondences agree with the prior: no model (verify then decides alone).
    assert verify_prior(prior, p1[20:], p2[20:], 1.0)[0] is None


def test_scattered_tells_a_few_spread_inliers_from_gathered_or_many_ones():
    rng = np.random.default_rng(2)
    p1, p2 = rng.uniform(0, 800, (100, 2)), rng.uniform(0, 800, (100, 2))
    few = np.zeros(100, bool)
    few[:30] = True  # 30 of 100 all over both images
    assert scattered(p1, p2, few, (800, 800))
    gathered = p1.copy()
    gathered[:30] = rng.uniform(300, 400, (30, 2))  # 1.6 % of image 1, but still spread in image 2
    assert scattered(gathered, p2, few, (800, 800))
    assert not scattered(gathered, gathered, few, (800, 800))
    small = gathered.copy()
    small[:30] = rng.uniform(0, 200, (30, 2))  # all over a 200 x 200 image 2: 5 % of an 800 x 800 one
    assert scattered(gathered, small, few, (800, 800), (200, 200)) and not scattered(gathered, small, few, (800, 800))
    assert not scattered(p1[:50], p2[:50], few[:50], (800, 800))  # 30 of 50: a majority
    many = np.zeros(100, bool)
    many[:45] = True
    assert not scattered(p1, p2, many, (800, 800))  # 45 inliers: enough
    assert not scattered(p1, p2, np.zeros(100, bool), (800, 800))
