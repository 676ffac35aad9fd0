"""Two-view geometry (hardnet_desc.geometry): hand cases for pose error, AUC, Sampson error and
undistortion; the relative pose, homography and fundamental-matrix fits on exact and noisy points."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from hardnet_desc.geometry import (
    _usac,
    estimate_relative_pose,
    fit_geometry,
    fit_homography,
    fundamental_from_pose,
    homography_jacobian,
    pose_auc,
    pose_error_deg,
    refine_homography,
    rotation_angle_deg,
    rotation_error_deg,
    sampson_error_px,
    transfer_error,
    translation_error_deg,
    undistort_points,
)


def rot_y(deg: float) -> np.ndarray:
    return cv2.Rodrigues(np.array([0.0, math.radians(deg), 0.0]))[0]


def rot_z(deg: float) -> np.ndarray:
    return cv2.Rodrigues(np.array([0.0, 0.0, math.radians(deg)]))[0]


# ---------------------------------------------------------------- pose error, AUC, Sampson, undistortion


def test_pose_auc_hand_cases():
    # curve (0,0) -> (1,.5) -> (3,1), flat to 5: area .25 + 1.5 + 2 = 3.75 -> 0.75
    assert pose_auc([3.0, 1.0], [5.0]) == pytest.approx([0.75])
    # at t=2 the curve stays flat after the last error below 2: area .25 + .5 -> 0.375
    assert pose_auc([1.0, 3.0], [2.0]) == pytest.approx([0.375])
    # a failure (inf) only counts in n: (0,0) -> (1,.5), flat: .25 + 2 = 2.25 -> 0.45
    assert pose_auc([1.0, math.inf], [5.0]) == pytest.approx([0.45])
    assert pose_auc([0.0, 0.0, 0.0], [5, 10, 20]) == pytest.approx([1.0, 1.0, 1.0])
    assert pose_auc([30.0], [5, 10, 20]) == [0.0, 0.0, 0.0]
    assert all(math.isnan(a) for a in pose_auc([], [5, 10]))
    with pytest.raises(ValueError, match="NaN"):
        pose_auc([1.0, float("nan")])


def test_pose_auc_error_equal_to_a_threshold():
    # An error equal to the threshold is not below it: the curve counts errors e < t (SuperGlue's
    # np.searchsorted(errors, t), side="left"). (0,0) -> (1,1/3), flat to 2: area 1/6 + 1/3 -> 0.25;
    # counting the error 2.0 as well would give (0,0) -> (1,1/3) -> (2,2/3): 1/6 + 1/2 -> 1/3.
    assert pose_auc([1.0, 2.0, 4.0], [2.0]) == pytest.approx([0.25])
    # each error on a threshold: AUC@5 0; AUC@10 (5/6 + 5/3) / 10; AUC@20 (5/6 + 5/2 + 20/3) / 20
    assert pose_auc([5.0, 10.0, 20.0], [5, 10, 20]) == pytest.approx([0.0, 0.25, 0.5])

    def superglue(errors, thresholds):  # SuperGlue's / LoFTR's pose_auc, as published
        errors = np.sort(errors)
        recall = (np.arange(len(errors)) + 1) / len(errors)
        errors, recall = np.r_[0.0, errors], np.r_[0.0, recall]
        out = []
        for t in thresholds:
            last = np.searchsorted(errors, t)
            r, e = np.r_[recall[:last], recall[last - 1]], np.r_[errors[:last], t]
            out.append(np.trapezoid(r, x=e) / t if hasattr(np, "trapezoid") else np.trapz(r, x=e) / t)
        return out

    errors = [0.5, 5.0, 5.0, 7.5, 10.0, 12.0, 20.0, 30.0, math.inf]
    assert pose_auc(errors, [5, 10, 20]) == pytest.approx(superglue(errors, [5, 10, 20]))


def test_pose_error_hand_cases():
    t = np.array([1.0, 0.0, 0.0])
    assert rotation_error_deg(rot_z(10) @ rot_y(0), np.eye(3)) == pytest.approx(10.0)
    assert rotation_error_deg(rot_y(30), rot_y(20)) == pytest.approx(10.0)
    assert translation_error_deg(-3 * t, t) == pytest.approx(0.0, abs=1e-6)  # sign and scale are free
    assert translation_error_deg(rot_z(30) @ t, t) == pytest.approx(30.0)
    assert translation_error_deg(rot_z(120) @ t, t) == pytest.approx(60.0)  # = 180 - 120
    assert translation_error_deg(t, np.zeros(3)) == 0.0
    assert pose_error_deg(rot_y(4), rot_z(7) @ t, np.eye(3), t) == pytest.approx(7.0)  # max of the two
    assert pose_error_deg(rot_y(9), rot_z(7) @ t, np.eye(3), t) == pytest.approx(9.0)
    assert pose_error_deg(None, None, np.eye(3), t) == math.inf


def test_sampson_error_rectified_hand_case():
    # R = I, t along x: epipolar lines are the rows; a vertical offset dy has Sampson error |dy| / sqrt(2)
    K = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    F = fundamental_from_pose(K, K, np.eye(3), np.array([1.0, 0, 0]))
    p1 = np.array([[100.0, 50.0], [300.0, 200.0], [10.0, 400.0]])
    p2 = p1 + np.array([[40.0, 0.0], [-7.0, 2.0], [3.0, -0.5]])
    assert sampson_error_px(p1, p2, F) == pytest.approx([0.0, 2 / math.sqrt(2), 0.5 / math.sqrt(2)], abs=1e-9)


def test_undistort_inverts_colmap_radial_model():
    K = np.array([[680.0, 0, 319.5], [0, 680.0, 239.5], [0, 0, 1]])
    k1, k2 = -0.13, 0.02
    ideal = np.array([[0.0, 0.0], [0.4, -0.3], [-0.45, 0.35], [0.1, 0.2]])
    r2 = np.sum(ideal**2, axis=1, keepdims=True)
    pixels = ideal * (1 + k1 * r2 + k2 * r2**2) * 680.0 + [319.5, 239.5]
    np.testing.assert_allclose(undistort_points(pixels, K, (k1, k2)), ideal, atol=1e-9)
    np.testing.assert_allclose(undistort_points(pixels, K), (pixels - [319.5, 239.5]) / 680.0)


def test_estimate_relative_pose_on_exact_points():
    rng = np.random.default_rng(0)
    X = rng.uniform([-2, -2, 4], [2, 2, 8], size=(200, 3))  # a volume in front of both cameras
    R, t = rot_y(15) @ rot_z(5), np.array([-1.0, 0.1, 0.2])
    X2 = X @ R.T + t
    n1, n2 = X[:, :2] / X[:, 2:], X2[:, :2] / X2[:, 2:]
    n2[:40] = rng.uniform(-0.5, 0.5, size=(40, 2))  # 20% outliers
    R_est, t_est, inliers = estimate_relative_pose(n1, n2, 0.5 / 500)
    assert pose_error_deg(R_est, t_est, R, t) < 0.5  # MAGSAC++ weights a few outliers in: ~0.1 deg here
    assert inliers[40:].all() and inliers[:40].sum() < 4
    assert estimate_relative_pose(n1[:4], n2[:4], 1e-3) is None  # fewer than 5 matches



# ---------------------------------------------------------------- H and F fits


def _planar_matches(n: int = 200, outliers: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` points in a 640x480 image, their images under a known homography with 0.5 px noise, the
    first ``outliers`` of them replaced by random points."""
    rng = np.random.default_rng(seed)
    H = np.array([[1.1, 0.05, 3.0], [0.02, 0.9, -4.0], [1e-4, 2e-5, 1.0]])
    p1 = rng.uniform([0, 0], [640, 480], (n, 2))
    q = np.c_[p1, np.ones(n)] @ H.T
    p2 = q[:, :2] / q[:, 2:] + rng.normal(0, 0.5, (n, 2))
    p2[:outliers] = rng.uniform([0, 0], [640, 480], (outliers, 2))
    return p1, p2, H


@pytest.mark.parametrize("estimator", ["magsac", "ransac"])
def test_fit_homography_finds_the_plane_and_its_outliers(estimator):
    p1, p2, H = _planar_matches()
    model, inliers = fit_homography(p1, p2, 3.0, estimator=estimator)
    corners = np.array([[0, 0], [639, 0], [639, 479], [0, 479]], np.float64)
    err = cv2.perspectiveTransform(corners[None], model)[0] - cv2.perspectiveTransform(corners[None], H)[0]
    assert np.abs(err).max() < 1.5
    assert inliers[60:].mean() > 0.95 and inliers[:60].sum() < 3


def test_fit_homography_estimators_are_opencvs():
    # the image-sequence benchmark's numbers were made with cv2.findHomography(p1, p2, cv2.RANSAC, 3):
    # "ransac" with OpenCV's defaults (confidence 0.995, 2000 iterations) must give the same model
    p1, p2, _ = _planar_matches(seed=1)
    expected, mask = cv2.findHomography(p1, p2, cv2.RANSAC, 3.0)
    model, inliers = fit_homography(p1, p2, 3.0, estimator="ransac", confidence=0.995, max_iters=2000)
    np.testing.assert_array_equal(model, expected)
    np.testing.assert_array_equal(inliers, mask.ravel().astype(bool))
    # least squares uses every point: on the inliers alone it is OpenCV's method 0, all of them inliers
    model, inliers = fit_homography(p1[60:], p2[60:], estimator="least_squares")
    np.testing.assert_array_equal(model, cv2.findHomography(p1[60:], p2[60:], 0)[0])
    assert inliers.all()
    # fit_geometry's homography is the MAGSAC one
    np.testing.assert_array_equal(fit_geometry(p1, p2, "homography")[0], fit_homography(p1, p2)[0])


def test_fit_homography_needs_4_matches_and_a_known_estimator():
    p1, p2, _ = _planar_matches(n=3, outliers=0)
    model, inliers = fit_homography(p1, p2)
    assert model is None and inliers.shape == (3,) and not inliers.any()
    with pytest.raises(ValueError, match="estimator must be one of"):
        fit_homography(p1, p2, estimator="lmeds")


def _corner_gap(model: np.ndarray, H: np.ndarray, w: int = 1000, h: int = 1000) -> float:
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)[None]
    return float(np.abs(cv2.perspectiveTransform(corners, model) - cv2.perspectiveTransform(corners, H)).max())


def test_refine_homography_weighs_wrong_matches_at_the_threshold_less_than_least_squares():
    # 60 true matches (0.5 px noise) in one corner of a 1000 px image and 12 wrong ones that a loose model
    # accepts, all pushed 2.5 px the same way: least squares bends towards them, the Huber fit much less
    rng = np.random.default_rng(5)
    H = np.array([[0.6, 0.1, 80], [-0.05, 1.1, 20], [3e-4, 2e-4, 1]])
    p1 = rng.uniform(200, 450, (72, 2))
    p2 = cv2.perspectiveTransform(p1[None], H)[0] + rng.normal(0, 0.5, (72, 2))
    p2[60:] += [2.5, 0.0]
    start = cv2.findHomography(p1, p2, 0)[0]  # a model whose 3 px take in every match
    assert (transfer_error(start, p1, p2) < 3).all()
    refined = refine_homography(start, p1, p2, 3.0)
    assert refined[2, 2] == 1
    assert _corner_gap(refined, H) < 0.6 * _corner_gap(start, H)
    # the wrong ones now lie farther from the model than the true ones
    err = transfer_error(refined, p1, p2)
    assert np.median(err[60:]) > 2 * np.median(err[:60])


def test_refine_homography_keeps_the_model_without_4_matches_near_it():
    p1, p2, H = _planar_matches(n=40, outliers=0)
    far = p2 + 50
    assert refine_homography(H, p1, far, 3.0) is H
    assert refine_homography(H, p1[:3], p2[:3], 3.0) is H
    assert _corner_gap(refine_homography(H, p1, p2, 3.0), H, 640, 480) < 1.0  # the true model stays


def test_transfer_error_hand_cases():
    shift = np.array([[1.0, 0, 3], [0, 1, 4], [0, 0, 1]])
    np.testing.assert_allclose(transfer_error(shift, [[0, 0], [10, 10]], [[3, 4], [13, 10]]), [0, 4])
    horizon = np.array([[1.0, 0, 0], [0, 1, 0], [1, 0, 0]])  # w = x: x = 0 goes to infinity
    assert transfer_error(horizon, [[0, 5]], [[0, 0]])[0] == np.inf


def test_homography_jacobian_matches_finite_differences():
    H = np.array([[0.8, 0.2, 40], [-0.1, 1.2, 10], [2e-4, -4e-4, 1]])
    points = np.array([[10.0, 20.0], [300.0, 150.0], [640.0, 480.0]])
    J = homography_jacobian(H, points)
    step = 1e-3
    for k, d in enumerate(np.eye(2)):
        ahead = cv2.perspectiveTransform((points + step * d)[None], H)[0]
        behind = cv2.perspectiveTransform((points - step * d)[None], H)[0]
        np.testing.assert_allclose(J[:, :, k], (ahead - behind) / (2 * step), rtol=1e-6)
    np.testing.assert_allclose(homography_jacobian(np.diag([2.0, 3.0, 1.0]), [[5, 5]]), [np.diag([2.0, 3.0])])


def test_fit_geometry_needs_enough_matches_and_a_known_model():
    pts = np.random.default_rng(0).uniform(0, 100, (5, 2))
    model, inliers = fit_geometry(pts, pts, "fundamental")  # 5 < 8
    assert model is None and inliers.shape == (5,) and not inliers.any()
    with pytest.raises(ValueError, match="geometry must be one of"):
        fit_geometry(pts, pts, "affine")


#: Nine matches of a real wide pair (bm-vespasian IMG_1905-IMG_1908, match_pair's), on which OpenCV 4.10 and 5.1's
#: USAC_MAGSAC fundamental matrix fails an internal assertion (``!model.empty()``) instead of finding no model.
USAC_FAILS = (np.array([[543.46, 166.61], [211.74, 304.28], [535.84, 190.61], [561.27, 133.84], [570.11, 124.74],
                        [525.77, 220.89], [580.92, 208.04], [564.93, 212.69], [544.51, 155.13]]),
              np.array([[541.31, 505.46], [867.84, 469.0], [524.56, 525.55], [579.22, 469.99], [595.82, 460.07],
                        [504.76, 545.63], [558.99, 576.4], [541.67, 570.81], [550.74, 484.03]]))


def test_fit_geometry_reads_opencvs_usac_failure_as_no_model():
    p1, p2 = USAC_FAILS
    model, inliers = fit_geometry(p1, p2, "fundamental", 1.0)  # raised cv2.error before 2026-12-06
    assert inliers.shape == (9,) and inliers.dtype == bool
    assert model is None or model.shape[1] == 3
    if model is None:
        assert not inliers.any()

    def fails(message):
        def estimator(*args, **kwargs):
            raise cv2.error(message)
        return estimator

    assert _usac(fails("(-215:Assertion failed) !model.empty() in function 'setModelParameters'")) == (None, None)
    with pytest.raises(cv2.error, match="Bad argument"):  # any other OpenCV error is raised
        _usac(fails("(-5:Bad argument) in function 'findFundamentalMat'"))


def test_refine_homography_weighs_both_images_alike():
    """The symmetric transfer error: refining ``H`` on ``(p1, p2)`` gives the inverse of refining ``H^-1`` on
    ``(p2, p1)``. With the forward error alone (before 2026-12-06) the two differed by 0.05 px at the corners
    on these data, image 2 showing the plane about twice as large as image 1."""
    rng = np.random.default_rng(0)
    H = np.array([[2.0, 0.2, 10.0], [0.1, 1.8, 20.0], [2e-4, 1e-4, 1.0]])
    p1 = rng.uniform([0, 0], [640, 480], (100, 2))
    p2 = cv2.perspectiveTransform(p1.reshape(-1, 1, 2), H).reshape(-1, 2) + rng.normal(0, 0.3, (100, 2))
    p1 = p1 + rng.normal(0, 0.3, (100, 2))
    start = cv2.findHomography(p1, p2, 0)[0]
    forward = refine_homography(start, p1, p2, 3.0)
    backward = np.linalg.inv(refine_homography(np.linalg.inv(start), p2, p1, 3.0))
    assert _corner_gap(forward, backward / backward[2, 2], 640, 480) < 1e-3
    assert _corner_gap(forward, H, 640, 480) < 2.0  # and it is the true model


@pytest.mark.parametrize("geometry", ["homography", "fundamental"])
@pytest.mark.parametrize("threshold", [0.01, 0.001, 1e-6])
def test_a_threshold_below_the_noise_gives_no_model(geometry, threshold):
    # Matches 0.7 px off a homography: at such thresholds no minimal sample fits. Before, OpenCV's USAC returned a
    # model of 0-3 inliers, stated as found, or failed with an assertion (sample_size <= points_size_).
    rng = np.random.default_rng(0)
    p1 = rng.uniform(0, 500, (200, 2))
    H = np.array([[1.1, 0.05, 10], [0.02, 0.95, -5], [1e-4, 0, 1]])
    p2 = cv2.perspectiveTransform(p1[None], H)[0] + rng.normal(0, 0.7, (200, 2))
    model, inliers = fit_geometry(p1, p2, geometry, threshold)
    assert model is None and not inliers.any()
    assert fit_geometry(p1, p2, geometry, 3.0)[1].sum() > 180  # the same matches at a usual threshold


def test_settings_and_matrices_are_checked_naming_them():
    """Found by fuzzing: a threshold of 0 or NaN gave a pose of 0 inliers, -1 marked every point an inlier, a str
    met OpenCV's overload resolution; negative pose errors gave an AUC above 1; SIMPLE_RADIAL's one coefficient
    stopped in an IndexError; a (2, 2) rotation had an angle; a list F stopped in an AttributeError."""
    p1, p2, _ = _planar_matches(60, 0)
    for bad, error in ((0.0, ValueError), (float("nan"), ValueError), (-1.0, ValueError), ("1", TypeError)):
        with pytest.raises(error, match="threshold must be"):
            estimate_relative_pose(p1 / 500, p2 / 500, bad)
        with pytest.raises(error, match="threshold must be"):
            fit_homography(p1, p2, bad)
    with pytest.raises(TypeError, match="max_iters must be an integer"):
        fit_homography(p1, p2, max_iters=100.0)
    with pytest.raises(ValueError, match="confidence must be below 1"):
        fit_homography(p1, p2, confidence=1.0)
    with pytest.raises(ValueError, match="pose errors are angles >= 0"):
        pose_auc([-5.0, 1.0])
    K = np.array([[680.0, 0, 319.5], [0, 680.0, 239.5], [0, 0, 1]])
    np.testing.assert_array_equal(undistort_points(p1, K, (-0.1,)), undistort_points(p1, K, (-0.1, 0.0)))
    np.testing.assert_array_equal(undistort_points(p1, K, None), undistort_points(p1, K))
    with pytest.raises(ValueError, match="R must be a \\(3, 3\\) rotation matrix"):
        rotation_angle_deg(np.eye(2))
    F = fundamental_from_pose(K, K, rot_y(10), np.array([1.0, 0, 0]))
    np.testing.assert_array_equal(sampson_error_px(p1, p2, F.tolist()), sampson_error_px(p1, p2, F))
    with pytest.raises(ValueError, match="F must be a \\(3, 3\\) fundamental matrix"):
        sampson_error_px(p1, p2, np.eye(2))
