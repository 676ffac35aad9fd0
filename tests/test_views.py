"""Affine views: their angles and matrices, rendering, frames mapped back, rectified views."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from hardnet_desc.data.warps import viewpoint_homography
from hardnet_desc.views import (
    View,
    frames_to_keypoints,
    frames_to_original,
    make_views,
    model_tilt,
    rectified_view,
    render_view,
    view_angles,
    view_matrix,
)


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


@pytest.mark.parametrize("tilt, axis, rotation, zoom", [(1.0, 0, 0, 1.0), (3.0, 30, 60, 1.0), (6.0, 100, 200, 0.5)])
def test_model_tilt_is_the_cameras_tilt_at_the_centre(tilt, axis, rotation, zoom):
    h = viewpoint_homography((520, 800), tilt=tilt, axis_deg=axis, rotation_deg=rotation, zoom=zoom)
    assert model_tilt(h, np.array([[399.5, 259.5], [0.0, 0.0], [799.0, 519.0]])) == pytest.approx(tilt, rel=1e-6)
