"""Wide-baseline matching: views and their frames, FGINN, duplicate removal, verification, and match_pair."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from hardnet_desc import HardNetDescriptor, wide_baseline
from hardnet_desc.core.image import to_grey_tensor
from hardnet_desc.data.warps import viewpoint_homography
from hardnet_desc.geometry import homography_jacobian, sampson_error_px
from hardnet_desc.pipeline import match_pair
from hardnet_desc.wide_baseline import (
    DEFAULT_VIEW_KEYPOINTS,
    RECTIFIED_TILT,
    ROTATION_STEP,
    STOP_INLIERS,
    VIEW_RATIO,
    Features,
    Neighbours,
    View,
    _rectify,
    _refine,
    align_matches,
    coherent,
    fginn_match,
    frames_agree,
    frames_to_keypoints,
    frames_to_original,
    guided_matches,
    make_views,
    match_wide,
    model_tilt,
    rectified_view,
    remove_duplicates,
    render_view,
    scattered,
    verify,
    verify_prior,
    view_angles,
    view_matrix,
)


@pytest.fixture(scope="module")
def hardnet() -> HardNetDescriptor:
    return HardNetDescriptor(device="cpu")  # the bundled weights: wide-baseline matching needs a trained net


def corner_error(model: np.ndarray, truth: np.ndarray, height: int, width: int) -> float:
    """Largest distance between image 1's corners mapped by ``model`` and by ``truth``, over image 2's diagonal
    (taken as image 1's size here: the canvases are equal)."""
    corners = np.float32([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]])[None]
    moved = cv2.perspectiveTransform(corners, model) - cv2.perspectiveTransform(corners, truth)
    return float(np.linalg.norm(moved[0], axis=1).max() / np.hypot(width, height))


# --- views and frames -------------------------------------------------------------------------


def test_view_angles_are_72_over_t_apart():
    assert view_angles(1) == [0.0]
    assert view_angles(2) == [0.0, 36.0, 72.0, 108.0, 144.0]
    assert len(view_angles(4)) == 10 and len(view_angles(8)) == 20
    assert len(make_views([2, 4], (100, 200))) == 15


def test_a_scale_step_shrinks_its_views_by_the_scale_given():
    # (8, 0.35): the views of tilt 8 of the image shrunk to 0.35, on top of the shrinking for a large image
    plain, small = make_views([8], (100, 200), scale=0.5), make_views([(8, 0.35)], (100, 200), scale=0.5)
    assert len(small) == 20 and [v.angle for v in small] == [v.angle for v in plain]
    for p, v in zip(plain, small, strict=True):
        np.testing.assert_allclose(v.matrix[:, :2], 0.35 * p.matrix[:, :2])


@pytest.mark.parametrize("steps", [((), (0.5,)), ((), ((8, 0),)), ((), ((8, 1.5),)), ((), ("8",)), ((), ((8, 1, 1),))])
def test_bad_views_fail_before_any_work(steps):
    with pytest.raises(ValueError, match="a view is a tilt >= 1 or \\(tilt, scale\\)"):
        match_wide(np.zeros((8, 8)), np.zeros((8, 8)), descriptor=object(), steps=steps)


def test_frames_mapped_back_from_a_view_equal_hand_computed_ones():
    # Tilt 2 at 0 degrees: x is halved, so a circle of radius 3 at view (10, 20) is an ellipse 6 x 3 at (20, 20).
    m = view_matrix(2, 0, (10, 20))
    np.testing.assert_allclose(m, [[0.5, 0, 0], [0, 1, 0]])
    frame = np.array([[[3.0, 0, 10], [0, 3, 20]]])
    np.testing.assert_allclose(frames_to_original(frame, m), [[[6, 0, 20], [0, 3, 20]]])
    # Tilt 2 at 90 degrees: x' = y / 2, y' = 19 - x (shifted so the 20-wide image lands at y' >= 0).
    m = view_matrix(2, 90, (10, 20))
    np.testing.assert_allclose(m, [[0, 0.5, 0], [-1, 0, 19]], atol=1e-12)
    back = frames_to_original(np.array([[[3.0, 0, 2], [0, 3, 5]]]), m)
    np.testing.assert_allclose(back, [[[0, -3, 14], [6, 0, 4]]], atol=1e-12)  # L^-1 = [[0, -1], [2, 0]]
    kp = frames_to_keypoints(back, patch_scale=6.0)[0]
    assert kp.pt == pytest.approx((14, 4)) and kp.size == pytest.approx(2 * np.sqrt(18) / 6)


@pytest.mark.parametrize("tilt, angle, scale", [(2, 0, 1), (4, 36, 1), (6, 120, 1), (2, 72, 0.5)])
def test_a_rendered_view_is_the_image_under_its_matrix(tilt, angle, scale):
    # A bright blob of the original appears in the view where the view's matrix puts its centre.
    grey = np.zeros((120, 160), np.uint8)
    cv2.circle(grey, (100, 40), 6, 255, -1)
    view = View(float(tilt), float(angle), view_matrix(tilt, angle, grey.shape, scale))
    pixels, mask = render_view(grey, view)
    expected = view.matrix @ [100, 40, 1]
    ys, xs = np.nonzero(pixels > 0.5 * pixels.max())
    weights = pixels[ys, xs].astype(float)
    found = np.array([np.average(xs, weights=weights), np.average(ys, weights=weights)])
    np.testing.assert_allclose(found, expected, atol=0.6)
    assert mask[int(round(expected[1])), int(round(expected[0]))] == 255
    if angle:
        assert mask[0, 0] == 0  # a turned image leaves empty corners, where SIFT must not look


def test_frames_mapped_back_through_a_homography_follow_it():
    # A rectified view's matrix is a homography G (original -> view): a frame [A | c] of the view goes back to
    # [J^-1 A | G^-1 c], J being G's local affine map there, so G maps the frame's centre and, to first order,
    # its unit circle onto the view's frame.
    g = np.array([[0.8, 0.1, 30.0], [-0.05, 1.1, 12.0], [4e-4, -2e-4, 1.0]])
    frame = np.array([[[3.0, 1.0, 200.0], [-0.5, 2.0, 150.0]]])
    back = frames_to_original(frame, g)
    c = back[0, :, 2]
    moved = g @ [*c, 1.0]
    np.testing.assert_allclose(moved[:2] / moved[2], [200, 150], atol=1e-9)
    for u in ([1e-3, 0], [0, 1e-3], [7e-4, -7e-4]):
        step = g @ [*(c + back[0, :, :2] @ u), 1.0]
        np.testing.assert_allclose(step[:2] / step[2], frame[0, :, 2] + frame[0, :, :2] @ u, atol=1e-8)
    # An affine G gives what the (2, 3) form gives.
    m = view_matrix(4, 36, (120, 160))
    np.testing.assert_allclose(frames_to_original(frame, np.vstack([m, [0, 0, 1]])), frames_to_original(frame, m))


def test_a_rectified_view_draws_the_smaller_image_in_the_others_frame():
    # Image 2 shows image 1 shrunk to half: image 2 is drawn, enlarged, in image 1's frame, and a blob of image 2
    # appears where image 1 has it.
    h = np.array([[0.5, 0, 140.0], [0, 0.5, 120.0], [0, 0, 1]])  # image 1 (200, 100) -> image 2 (240, 170)
    points1 = np.array([[100.0, 50], [300, 150], [200, 100]])
    drawn, view = rectified_view(h, points1, (240, 320), (200, 260))
    assert drawn == 1 and view.size == (240, 320)
    grey2 = np.zeros((200, 260), np.uint8)
    cv2.circle(grey2, (240, 170), 3, 255, -1)
    pixels, mask = render_view(grey2, view)
    assert pixels.shape == mask.shape == (240, 320)
    ys, xs = np.nonzero(pixels > 127)
    np.testing.assert_allclose([xs.mean(), ys.mean()], [200, 100], atol=1.0)
    assert mask[100, 200] == 255 and mask[220, 300] == 0  # image 1's (300, 220) is image 2's (290, 230): outside
    # Where image 2 shows the plane larger, image 1 is drawn in image 2's frame.
    assert rectified_view(np.linalg.inv(h), points1 * 0.5 + [140, 120], (200, 260), (240, 320))[0] == 0


def test_a_rectified_view_leaves_out_what_lies_behind_the_horizon():
    # The view's pixel x shows the image at G x (G = matrix^-1); where G's w <= 0 (rows below y = 100 here), that
    # point lies behind the image's horizon, and warpPerspective would draw the image there again, mirrored
    # ((200, 200) -> (50, 50)). The mask leaves that part out.
    g = np.array([[-1.0, 0, 150], [0, -1.0, 150], [0, -0.01, 1]])
    pixels, mask = render_view(np.full((300, 300), 200, np.uint8), View(1.0, 0.0, np.linalg.inv(g), (300, 300)))
    assert mask[50, 100] == 255 and pixels[50, 100] == 200  # G: (100, 50) -> (100, 200), in front
    assert mask[200, 200] == 0 and (mask[101:] == 0).all()


# --- FGINN and duplicates ---------------------------------------------------------------------------


def test_fginn_skips_the_same_point_from_another_view_as_second_neighbour():
    # Query 0's two nearest are one point seen in two views (1 px apart): Lowe's ratio (~1) would reject it;
    # FGINN compares with the nearest one far away instead. Query 1's runner-up is far away: a plain ratio
    # test, which it fails (0.89).
    desc1 = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    desc2 = np.array([[0.98, 0.1, 0], [0.97, 0.12, 0], [0.3, 0.9, 0.2], [0.35, 0.88, 0.2]])
    c1 = np.array([[10.0, 10], [50, 50]])
    c2 = np.array([[20.0, 20], [21, 20], [60, 60], [90, 60]])
    m = fginn_match(desc1, desc2, c1, c2, ratio=0.8, radius=10)
    assert m.query_idx.tolist() == [0] and m.train_idx.tolist() == [0]
    d1, d2 = np.linalg.norm(desc1[0] - desc2[0]), np.linalg.norm(desc1[0] - desc2[3])  # 3: nearest far one
    assert m.ratios[0] == pytest.approx(d1 / d2, rel=1e-5)
    # With the duplicate moved 30 px away it is a competitor, and the ratio test rejects query 0.
    c2[1] = [50, 20]
    assert len(fginn_match(desc1, desc2, c1, c2, ratio=0.8, radius=10)) == 0


def test_fginn_mutual_check_accepts_the_same_point_from_another_view():
    # Both queries are one point of image 1 (two views, 2 px apart); train 0's nearest is query 1, yet query 0's
    # match is kept (its reverse neighbour is the same point). A query elsewhere is refused.
    desc1 = np.array([[1.0, 0.05, 0], [1.0, 0.0, 0], [0.9, 0, 0.3]])
    desc2 = np.array([[1.0, 0.0, 0], [0, 1.0, 0]])
    c1 = np.array([[10.0, 10], [12, 10], [80, 80]])
    c2 = np.array([[5.0, 5], [70, 70]])
    m = fginn_match(desc1, desc2, c1, c2, ratio=None, radius=5)
    assert m.query_idx.tolist() == [0, 1] and m.train_idx.tolist() == [0, 0]
    assert fginn_match(desc1, desc2, c1, c2, ratio=None, radius=1).query_idx.tolist() == [1]


def test_neighbours_grown_in_steps_match_as_all_at_once():
    # Sets grown in three steps (rows of both, then of set 2 only, then of set 1 only) give the tables and the
    # matches of one call on the whole sets; a small first step (k < candidates) is widened as set 2 grows.
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    d1, d2 = torch.randn(700, 128, generator=gen), torch.randn(900, 128, generator=gen)
    d2[::3] = d1[:300] + 0.1 * torch.randn(300, 128, generator=gen)  # a third of set 2 has a near copy in set 1
    c1, c2 = rng.uniform(0, 500, (700, 2)), rng.uniform(0, 500, (900, 2))
    table = Neighbours(candidates=16, chunk=64)
    for n1, n2 in ((5, 10), (300, 10), (300, 600), (700, 900)):
        table.update(d1[:n1], d2[:n2])
        whole = Neighbours(candidates=16).update(d1[:n1], d2[:n2])
        assert torch.equal(table.idx, whole.idx) and torch.equal(table.col_arg, whole.col_arg)
        assert torch.allclose(table.dist, whole.dist, atol=1e-4)
    exact = torch.cdist(d1.double(), d2.double())  # the tables hold the true nearest rows and their distances
    assert torch.equal(table.idx, exact.topk(16, dim=1, largest=False).indices)
    assert torch.allclose(table.dist.double(), exact.topk(16, dim=1, largest=False).values, atol=1e-4)
    assert torch.equal(table.col_arg, exact.argmin(dim=0))
    assert torch.allclose(table.col_min.double(), exact.min(dim=0).values, atol=1e-4)
    grown, once = table.fginn(c1, c2, ratio=0.9), fginn_match(d1, d2, c1, c2, ratio=0.9)
    assert len(once) >= 250 and np.array_equal(grown.query_idx, once.query_idx)
    assert np.array_equal(grown.train_idx, once.train_idx)
    with pytest.raises(ValueError, match="grown"):
        table.update(d1[:10], d2)
    with pytest.raises(ValueError, match="centres"):
        table.fginn(c1[:10], c2)


def test_aligned_centres_are_kept_for_the_later_steps(example_pair, hardnet, monkeypatch):
    # With a cache (match_wide keeps one across its steps) the pairs aligned before take their centres from it, and
    # only the others are aligned: the centres are those of aligning all of them at once.
    w = match_wide(*example_pair, hardnet, geometry="fundamental", threshold=1.0)
    f1 = w.features1.frames.numpy()[w.matches.query_idx]
    f2 = w.features2.frames.numpy()[w.matches.train_idx]
    pairs = np.stack([w.matches.query_idx, w.matches.train_idx], 1)
    greys = [to_grey_tensor(image) for image in example_pair]
    rows = np.ones(len(pairs), bool)
    rows[::7] = False  # not aligned: their frames stay as they are
    at_once = align_matches(greys, f1, f2, rows)
    first = rows.copy()
    first[len(rows) // 2 :] = False
    cache = {}
    align_matches(greys, f1, f2, first, pairs, cache)
    assert len(cache) == first.sum() > 30
    seen = []
    real = wide_baseline.align_frames
    monkeypatch.setattr(wide_baseline, "align_frames", lambda *a, **k: seen.append(len(a[2])) or real(*a, **k))
    later = align_matches(greys, f1, f2, rows, pairs, cache)
    assert seen == [rows.sum() - first.sum()] and len(cache) == rows.sum()
    assert np.allclose(later, at_once, atol=1e-6) and np.array_equal(later[~rows], f2[~rows])
    assert (np.linalg.norm(later[:, :, 2] - f2[:, :, 2], axis=1) > 0).sum() > 30  # some did move


def test_remove_duplicates_keeps_the_best_of_each_group():
    p1 = np.array([[10.0, 10], [11, 10.5], [10.5, 9], [10, 10], [40, 40]])
    p2 = np.array([[50.0, 50], [51, 51], [50.5, 50], [80, 80], [70, 70]])
    # 0, 1, 2 are one correspondence (within 2 px on both sides); 3 shares only image 1's point; 4 is alone.
    keep = remove_duplicates(p1, p2, order=np.array([1, 0, 2, 3, 4]), radius=2)
    assert keep.tolist() == [False, True, False, True, True]
    assert remove_duplicates(p1, p2, radius=2).tolist() == [True, False, False, True, True]


def _features(centres: list[list[float]], descriptors: np.ndarray, a: np.ndarray) -> Features:
    c = np.asarray(centres, np.float32)
    frames = np.concatenate([np.broadcast_to(a, (len(c), 2, 2)), c[:, :, None]], axis=2).astype(np.float32)
    return Features(torch.from_numpy(frames), torch.from_numpy(np.float32(descriptors)), np.zeros(len(c), np.int64))


def test_guided_matches_take_the_nearest_descriptor_where_the_model_points():
    """Image 2 is image 1 shifted by (50, 0) and scaled by 2. Feature 0's true partner has a worse descriptor than
    a decoy 20 px away, feature 1's partner is alone but its descriptor too far, feature 2's frame is turned by
    90 degrees, feature 3 has two candidates within 3 px: the nearer descriptor wins."""
    h = np.array([[2.0, 0, 50], [0, 2.0, 0], [0, 0, 1]])
    rng = np.random.default_rng(0)
    d = rng.normal(size=(4, 128))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    near = d + 0.02 * rng.normal(size=d.shape)
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    f1 = _features([[10, 10], [100, 40], [60, 80], [30, 30]], d, np.eye(2) * 3)
    image2 = [[70, 20], [90, 20], [250, 80], [170, 160], [111, 60], [109.5, 61]]
    desc2 = np.stack([near[0], d[0], -d[1], near[2], near[3] * 0.9 + d[0] * 0.1, near[3]])
    desc2 /= np.linalg.norm(desc2, axis=1, keepdims=True)
    f2 = _features(image2, desc2, np.eye(2) * 6)
    f2.frames[3, :, :2] = torch.tensor([[0.0, -6.0], [6.0, 0.0]])  # feature 2's partner turned by 90 degrees
    m = guided_matches(h, f1, f2, radius=3.0)
    assert m.pairs.tolist() == [[0, 0], [3, 5]]
    assert np.isnan(m.ratios).all() and (m.distances < 0.5).all()
    assert len(guided_matches(h, f1, _features([[0, 0]], d[:1], np.eye(2)), radius=3.0)) == 0


# --- verification -----------------------------------------------------------------------------------


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
    model, inliers = _refine(h0, within, p1, p2, 3.0, min_inliers=15)
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


# --- the whole path -------------------------------------------------------------------------------------


def test_wide_baseline_solves_an_extreme_tilt_the_plain_pipeline_misses(example_image, hardnet):
    # The photo seen at 80.4 degrees (tilt 6) about an axis at 30 degrees, turned by 60 degrees in the picture.
    h, w = example_image.shape[:2]
    truth = viewpoint_homography((h, w), tilt=6, axis_deg=30, rotation_deg=60)
    other = cv2.warpPerspective(example_image, truth, (w, h))
    plain = match_pair(example_image, other, hardnet, geometry="homography")
    assert plain.model is None or corner_error(plain.model, truth, h, w) > 0.05
    lines: list[str] = []
    wide = match_pair(example_image, other, hardnet, geometry="homography", wide_baseline=True, progress=lines.append)
    assert wide.model is not None and wide.step >= 1 and wide.inliers.sum() >= 15
    assert corner_error(wide.model, truth, h, w) < 0.01
    assert len(lines) == wide.step + 1 and lines[-1].endswith("-> model")
    assert wide.views[0] > 1 and wide.timings["total"] > 0 and len(wide.keypoints1) >= len(plain.keypoints1)
    # The inliers agree with the true homography (points are frame centres in the original images).
    moved = cv2.perspectiveTransform(wide.points1[wide.inliers][None], truth)[0]
    assert np.median(np.linalg.norm(moved - wide.points2[wide.inliers], axis=1)) < 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.cuda
def test_wide_baseline_on_cuda_finds_what_the_cpu_finds(example_pair, hardnet):
    # HardNet, the distance table and the alignment on the GPU (SIFT and verification on the host): the extreme tilt
    # solved at the CPU's step within 1 % of the truth, the descriptors kept on the device; a fundamental matrix of
    # the bundled pair (aligned positions) with about the CPU's inliers (fp16 descriptors there).
    image = example_pair[0]
    h, w = image.shape[:2]
    truth = viewpoint_homography((h, w), tilt=6, axis_deg=30, rotation_deg=60)
    other = cv2.warpPerspective(image, truth, (w, h))
    gpu = HardNetDescriptor(device="cuda")
    on_gpu, on_cpu = match_wide(image, other, gpu), match_wide(image, other, hardnet)
    assert on_gpu.model is not None and on_gpu.step == on_cpu.step and corner_error(on_gpu.model, truth, h, w) < 0.01
    assert on_gpu.features1.descriptors.device.type == "cuda"
    f_gpu = match_wide(*example_pair, gpu, geometry="fundamental", threshold=1.0)
    f_cpu = match_wide(*example_pair, hardnet, geometry="fundamental", threshold=1.0)
    assert f_gpu.geometry == f_cpu.geometry and f_gpu.step == f_cpu.step == 0
    assert abs(int(f_gpu.inliers.sum()) - int(f_cpu.inliers.sum())) <= 0.2 * f_cpu.inliers.sum()


def test_rectify_corrects_a_model_off_by_more_than_the_threshold(example_image, hardnet):
    # The tilt-6 pair above; the model handed to the rectification is the truth turned by 3 degrees in image 2, 1.5 %
    # of the diagonal off at image 1's corners, with a third of the matches within the threshold. Matched on the
    # rectified view, the new model is within 0.5 % of the truth there, and its inliers are true.
    h, w = example_image.shape[:2]
    truth = viewpoint_homography((h, w), tilt=6, axis_deg=30, rotation_deg=60)
    other = cv2.warpPerspective(example_image, truth, (w, h))
    wide = match_wide(example_image, other, hardnet, steps=((), (2.0, 4.0, 6.0)))
    assert wide.model is not None and wide.step == 1
    feats = (wide.features1, wide.features2)
    views = [len(f.views) for f in feats]
    p1, p2 = feats[0].centres[wide.matches.query_idx], feats[1].centres[wide.matches.train_idx]
    c, a = p2[wide.inliers].mean(axis=0), np.radians(3.0)  # image 2 turned by 3 degrees about the inliers' centre
    turn = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    off = np.array([[1, 0, c[0]], [0, 1, c[1]], [0, 0, 1]]) @ turn @ np.array([[1, 0, -c[0]], [0, 1, -c[1]], [0, 0, 1]])
    off = off @ truth
    inliers = cv2.perspectiveTransform(p1[None], off)[0] - p2
    inliers = np.linalg.norm(inliers, axis=1) < 3.0
    assert inliers.sum() >= 15 and corner_error(off, truth, h, w) > 0.01
    matches, new_inliers, model = _rectify(off, wide.matches, inliers, feats,
                                           [to_grey_tensor(i, hardnet.device) for i in (example_image, other)],
                                           [cv2.cvtColor(i, cv2.COLOR_BGR2GRAY) for i in (example_image, other)],
                                           hardnet, 3.0, 15, 2000, 10.0, 2.0)
    assert model is not off and corner_error(model, truth, h, w) < 0.005
    assert new_inliers.sum() > inliers.sum()
    q1, q2 = feats[0].centres[matches.query_idx], feats[1].centres[matches.train_idx]
    moved = cv2.perspectiveTransform(q1[new_inliers][None], truth)[0]
    assert np.median(np.linalg.norm(moved - q2[new_inliers], axis=1)) < 1.5
    assert sum(len(f.views) for f in feats) == sum(views) + 1  # the rectified view, of one image
    drawn = [f.views[-1].matrix.shape == (3, 3) for f in feats].index(True)
    ends = (matches.query_idx, matches.train_idx)
    rect = feats[drawn].view_index[ends[drawn]] == len(feats[drawn].views) - 1
    # the rectified view's features are matched to the other image's own (step-0) features, which are placed
    # precisely, not to those of its synthesized views
    assert (rect & new_inliers).sum() >= 15 and (feats[1 - drawn].view_index[ends[1 - drawn][rect]] == 0).all()


@pytest.mark.parametrize("tilt, axis, rotation, zoom", [(1.0, 0, 0, 1.0), (3.0, 30, 60, 1.0), (6.0, 100, 200, 0.5)])
def test_model_tilt_is_the_cameras_tilt_at_the_centre(tilt, axis, rotation, zoom):
    h = viewpoint_homography((520, 800), tilt=tilt, axis_deg=axis, rotation_deg=rotation, zoom=zoom)
    assert model_tilt(h, np.array([[399.5, 259.5], [0.0, 0.0], [799.0, 519.0]])) == pytest.approx(tilt, rel=1e-6)


@pytest.mark.parametrize("tilt, rectified", [(2.0, False), (3.0, True)])
def test_step_0_rectifies_an_oblique_homography_only(example_image, hardnet, tilt, rectified):
    # Tilt 3 about an axis at 30 degrees: the plain pipeline's model (32 inliers) is 1 % off at image 1's corners.
    # Its local tilt is above RECTIFIED_TILT, so step 0 matches a rectified view too, without synthesized views.
    # At tilt 2 the model's tilt where its inliers are is below RECTIFIED_TILT: no view is added (an easy pair costs
    # no more).
    h, w = example_image.shape[:2]
    truth = viewpoint_homography((h, w), tilt=tilt, axis_deg=30, rotation_deg=60)
    other = cv2.warpPerspective(example_image, truth, (w, h))
    wide = match_wide(example_image, other, hardnet, steps=((),))
    assert wide.step == 0 and corner_error(wide.model, truth, h, w) < 0.002
    views = [f.views for f in (wide.features1, wide.features2)]
    p1 = wide.features1.centres[wide.matches.query_idx][wide.inliers]
    if not rectified:
        assert list(map(len, views)) == [1, 1] and model_tilt(wide.model, p1) < RECTIFIED_TILT
        return
    assert wide.inliers.sum() > 100 and sorted(map(len, views))[0] == 1 and sum(map(len, views)) > 2
    assert all(v.matrix.shape == (3, 3) for v in views[0][1:] + views[1][1:])


@pytest.mark.parametrize("option, value, error", [
    ("min_inliers", 0, ValueError), ("min_inliers", -3, ValueError), ("min_inliers", 2.5, TypeError),
    ("min_inliers", "15", TypeError), ("view_keypoints", -1, ValueError), ("view_keypoints", (), ValueError),
    ("view_keypoints", (800, 2.5), TypeError),
])
@pytest.mark.parametrize("wide", [True, False])
def test_bad_wide_options_of_match_pair_fail_before_any_work(option, value, error, wide):
    # descriptor=object(): any work would fail on it; without wide_baseline the options are checked all the same
    with pytest.raises(error, match=option):
        match_pair(np.zeros((8, 8)), np.zeros((8, 8)), descriptor=object(), wide_baseline=wide, **{option: value})


def test_wide_baseline_stops_at_step_0_on_an_easy_pair(example_pair, hardnet):
    r = match_pair(*example_pair, hardnet, geometry="fundamental", wide_baseline=True)
    assert r.step == 0 and r.views == (1, 1) and r.model is not None and r.inliers.sum() >= 25


def _inlier_points(w) -> tuple[np.ndarray, np.ndarray]:
    """A ``WideMatch``'s inliers as pixel positions ``(K, 2)`` in each image."""
    return w.points1[w.inliers], w.points2[w.inliers]


def test_a_weak_fundamental_matrix_sends_the_search_on_and_guides_it(example_pair, hardnet):
    """300 keypoints per image: step 0 verifies a fundamental matrix with 25-49 inliers. Ending the search there
    (``stop_inliers=25``, the rule before) states it; by default the views are added, the correspondences that
    agree with it verified, and a model of many more inliers stated that step 0's inliers fit too."""
    options = dict(geometry="fundamental", threshold=1.0, max_keypoints=300)
    weak = match_wide(*example_pair, hardnet, stop_inliers=25, **options)
    assert weak.step == 0 and 25 <= weak.inliers.sum() < STOP_INLIERS["fundamental"]
    lines: list[str] = []
    more = match_wide(*example_pair, hardnet, progress=lines.append, **options)
    assert more.step == 1 and more.geometry == "fundamental" and more.inliers.sum() >= 10 * weak.inliers.sum()
    assert lines[0].endswith("-> model (fewer than 50: next step)") and lines[1].endswith("-> model")
    assert np.mean(sampson_error_px(*_inlier_points(weak), more.model) < 1.0) >= 0.8


def test_a_weak_fundamental_matrix_is_stated_when_no_later_step_finds_more(example_pair, hardnet, monkeypatch):
    """Once a weak model is kept, the later steps only look for correspondences that agree with it: when they
    find none, that model is the answer, with the step that found it, and no other model is fitted."""
    import hardnet_desc.wide_baseline as wb

    options = dict(geometry="fundamental", threshold=1.0, max_keypoints=300, steps=((), (2.0,)))
    weak = match_wide(*example_pair, hardnet, stop_inliers=25, **options)
    fits = []
    verify_ = wb.verify
    monkeypatch.setattr(wb, "verify", lambda *a, **k: fits.append(len(a[0])) or verify_(*a, **k))
    monkeypatch.setattr(wb, "verify_prior", lambda prior, p1, *a, **k: (None, np.zeros(len(p1), bool), "fundamental"))
    kept = match_wide(*example_pair, hardnet, **options)
    assert kept.step == 0 and len(fits) == 1  # step 0's fit alone
    assert np.array_equal(kept.model, weak.model) and np.array_equal(kept.inliers, weak.inliers)
    assert np.array_equal(kept.matches.query_idx, weak.matches.query_idx)


def test_match_wide_states_no_fundamental_matrix_of_few_scattered_inliers(example_pair, hardnet, monkeypatch):
    """300 keypoints per image, step 0 only: 25-39 inliers over a quarter of the images, but nearly all the
    matches, so the model is stated. Were they a minority (``SCATTERED_SHARE`` raised), they would look like a
    chance fit: no model, no step, the matches kept, and a line saying why."""
    import hardnet_desc.wide_baseline as wb

    options = dict(geometry="fundamental", threshold=1.0, max_keypoints=300, steps=((),))
    kept = match_wide(*example_pair, hardnet, **options)
    assert kept.model is not None and kept.step == 0 and 25 <= kept.inliers.sum() < wb.SCATTERED_INLIERS
    assert kept.inliers.mean() >= wb.SCATTERED_SHARE
    assert not scattered(kept.points1, kept.points2, kept.inliers, example_pair[0].shape[:2], example_pair[1].shape[:2])
    monkeypatch.setattr(wb, "SCATTERED_SHARE", 1.0)
    lines: list[str] = []
    refused = match_wide(*example_pair, hardnet, progress=lines.append, **options)
    assert refused.model is None and refused.step is None and not refused.inliers.any()
    assert refused.geometry == "fundamental"
    assert np.array_equal(refused.matches.query_idx, kept.matches.query_idx)
    assert lines[-1].endswith("(a chance fit): no model")


@pytest.mark.parametrize("value, error", [(0, ValueError), (2.5, TypeError)])
def test_bad_stop_inliers_fail_before_any_work(value, error):
    with pytest.raises(error, match="stop_inliers"):
        match_wide(np.zeros((8, 8)), np.zeros((8, 8)), descriptor=object(), stop_inliers=value)


def test_wide_baseline_finds_no_model_between_a_photo_and_noise(example_image, hardnet):
    small = cv2.resize(example_image, (400, 260), interpolation=cv2.INTER_AREA)
    noise = cv2.GaussianBlur(np.random.default_rng(1).integers(0, 256, (260, 400), np.uint8), (0, 0), 1.5)
    r = match_pair(small, noise, hardnet, geometry="homography", wide_baseline=True, max_keypoints=500)
    assert r.model is None and r.step is None and not r.inliers.any()
    assert r.views[0] == 1 + 15 + 35  # every step was tried


def test_view_keypoints_limit_each_step_s_views(example_image, hardnet):
    # A number limits every view; a sequence each step with views in turn, its last entry the later steps.
    small = cv2.resize(example_image, (400, 260), interpolation=cv2.INTER_AREA)
    noise = cv2.GaussianBlur(np.random.default_rng(1).integers(0, 256, (260, 400), np.uint8), (0, 0), 1.5)
    steps = ((), (2.0,), (4.0,), (6.0,))
    first = 1 + len(make_views((2.0,), small.shape[:2], ROTATION_STEP))  # views of steps 0 and 1
    second = first + len(make_views((4.0,), small.shape[:2], ROTATION_STEP))
    for limits, want in [(25, (25, 25, 25)), ((40, 12), (40, 12, 12)), ((40, 12, 30, 5), (40, 12, 30))]:
        w = match_wide(small, noise, hardnet, steps=steps, max_keypoints=60, view_keypoints=limits)
        per_view = np.bincount(w.features1.view_index, minlength=len(w.features1.views))
        assert w.step is None and per_view[0] == 60  # every step ran; step 0 keeps max_keypoints
        assert (per_view[1:first].max(), per_view[first:second].max(), per_view[second:].max()) == want


def test_match_pair_and_the_cli_pass_view_keypoints_on(example_image, hardnet, tmp_path, capsys):
    # match_pair(wide_baseline=True) and `match --view-keypoints` describe as many features per view as match_wide
    # with the same limits (the photo against noise runs every step).
    import json

    from hardnet_desc.cli import main

    small = cv2.resize(example_image, (400, 260), interpolation=cv2.INTER_AREA)
    noise = cv2.GaussianBlur(np.random.default_rng(1).integers(0, 256, (260, 400), np.uint8), (0, 0), 1.5)
    w = match_wide(small, noise, hardnet, max_keypoints=60, view_keypoints=(20, 5))
    per_view = np.bincount(w.features1.view_index, minlength=len(w.features1.views))
    assert w.step is None and per_view[0] == 60 and per_view[1:16].max() == 20 and per_view[16:].max() == 5
    r = match_pair(small, noise, hardnet, max_keypoints=60, geometry="homography", wide_baseline=True,
                   view_keypoints=(20, 5))
    assert (len(r.keypoints1), len(r.keypoints2)) == (len(w.features1.frames), len(w.features2.frames))
    paths = [tmp_path / "photo.png", tmp_path / "noise.png"]
    for path, image in zip(paths, (small, noise)):
        cv2.imwrite(str(path), image)
    args = ["match", *map(str, paths), "--out", str(tmp_path / "m.png"), "--device", "cpu", "--geometry",
            "homography", "--max-keypoints", "60", "--wide-baseline", "--json", str(tmp_path / "m.json")]
    assert main([*args, "--view-keypoints", "20,5"]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["keypoints"] == [len(r.keypoints1), len(r.keypoints2)]
    capsys.readouterr()
    assert main([*args, "--force", "--view-keypoints", "20,-1"]) == 2  # checked before any work
    assert "--view-keypoints[1] must be" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--view-keypoints", "20,x"])
    assert "expected comma-separated ints" in capsys.readouterr().err
    assert main([*args[:-3], "--view-keypoints", "20"]) == 2  # without --wide-baseline
    assert "--view-keypoints needs --wide-baseline" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["match", "--help"])
    assert f"default: {','.join(map(str, DEFAULT_VIEW_KEYPOINTS))})" in " ".join(capsys.readouterr().out.split())


def test_view_ratio_applies_to_the_view_steps_only(example_pair, example_image, hardnet):
    # Step 0 is the plain pipeline with ``ratio``: an extreme view_ratio leaves an easy pair's result as it was.
    easy = [match_wide(*example_pair, hardnet, geometry="fundamental", view_ratio=v) for v in (VIEW_RATIO, 0.05)]
    assert easy[0].step == easy[1].step == 0
    assert np.array_equal(easy[0].matches.query_idx, easy[1].matches.query_idx)
    assert np.array_equal(easy[0].inliers, easy[1].inliers)
    # The later steps match with ``view_ratio``: a stricter one keeps fewer of the same tentative matches.
    small = cv2.resize(example_image, (400, 260), interpolation=cv2.INTER_AREA)
    noise = cv2.GaussianBlur(np.random.default_rng(1).integers(0, 256, (260, 400), np.uint8), (0, 0), 1.5)
    loose, strict = [match_wide(small, noise, hardnet, steps=((), (2.0,)), max_keypoints=500, view_ratio=v)
                     for v in (None, 0.8)]
    assert loose.step is None and strict.step is None
    assert len(strict.matches) < len(loose.matches)
    assert set(strict.matches.query_idx.tolist()) <= set(loose.matches.query_idx.tolist())


# --- the command line -----------------------------------------------------------------------------------


def test_match_cli_wide_baseline_writes_json_and_keeps_foreign_files(example_files, tmp_path, capsys):
    import json

    from hardnet_desc.cli import main

    foreign = tmp_path / "mine.json"
    foreign.write_text('{"my": "data"}')
    args = ["match", *map(str, example_files), "--out", str(tmp_path / "m.png"), "--device", "cpu",
            "--max-keypoints", "800", "--wide-baseline"]
    assert main([*args, "--json", str(foreign)]) == 2  # checked before any work
    assert foreign.read_text() == '{"my": "data"}' and "--force" in capsys.readouterr().err
    out = tmp_path / "m.json"
    assert main([*args, "--json", str(out), "--verbose"]) == 0
    text = capsys.readouterr()
    assert "step 0 (tilts 1)" in text.err and "step 0 verified the model" in text.out
    data = json.loads(out.read_text())
    assert data["written_by"] == "hardnet-desc" and data["step"] == 0 and data["views"] == [1, 1]
    assert data["geometry"] == "fundamental" and len(data["model"]) == 3
    assert data["inliers"] == sum(data["matches"]["inlier"]) >= 25
    assert len(data["matches"]["points1"]) == len(data["matches"]["points2"]) == len(data["matches"]["inlier"])
    assert main([*args, "--json", str(out)]) == 0  # its own file: replaced without --force
    assert main(["match", *map(str, example_files), "--out", str(tmp_path / "n.png"), "--min-inliers", "5"]) == 2
    assert "--min-inliers needs --wide-baseline" in capsys.readouterr().err


@pytest.mark.parametrize("option, value, error", [
    ("rotation_step", 0, ValueError), ("rotation_step", float("nan"), ValueError), ("rotation_step", "72", TypeError),
    ("view_max_side", 0, ValueError), ("view_max_side", -3, ValueError), ("fginn_radius", -1, ValueError),
    ("duplicate_radius", float("nan"), ValueError), ("ratio", 2.0, ValueError), ("view_ratio", 0, ValueError),
    ("view_keypoints", -1, ValueError), ("view_keypoints", 2.5, TypeError), ("view_keypoints", (), ValueError),
    ("view_keypoints", (800, -1), ValueError), ("view_keypoints", (800, 2.5), TypeError),
    ("threshold", None, TypeError), ("threshold", -1, ValueError), ("steps", (), ValueError), ("steps", 5, ValueError),
    ("steps", ((), 2), ValueError),
    ("steps", ((), (0.5,)), ValueError), ("geometry", "affine", ValueError),
])
def test_bad_options_of_match_wide_fail_before_any_work(option, value, error):
    # descriptor=object(): any work would fail on it, so the error must come from the check, naming the option
    with pytest.raises(error, match="steps|a view is" if option == "steps" else option):
        match_wide(np.zeros((8, 8)), np.zeros((8, 8)), object(), **{option: value})


def test_a_fundamental_matrix_is_fitted_to_aligned_positions(example_pair, hardnet):
    # The correspondences' positions in image 2 are moved onto image 1's patches (align_matches): some move, by
    # less than a pixel in the median, and the pair's PairMatch carries the same positions.
    w = match_wide(*example_pair, hardnet, geometry="fundamental", threshold=1.0)
    centres = w.features2.centres[w.matches.train_idx]
    shift = np.linalg.norm(w.points2 - centres, axis=1)
    assert w.model is not None and (w.points1 == w.features1.centres[w.matches.query_idx]).all()
    assert (shift > 0).mean() > 0.3 and np.median(shift[shift > 0]) < 1.0
    r = match_pair(*example_pair, hardnet, geometry="fundamental", threshold=1.0, wide_baseline=True)
    assert np.array_equal(r.points2, w.points2) and np.array_equal(r.inliers, w.inliers)
