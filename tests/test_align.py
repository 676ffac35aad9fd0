"""Patch alignment (``hardnet_desc.core.align``): frames of a bundled photo and of its warp, placed wrongly on
purpose, are moved back to where the warp sends them."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from hardnet_desc.core.align import align_frames
from hardnet_desc.core.image import to_grey_tensor
from hardnet_desc.core.patches import keypoints_to_frames
from hardnet_desc.data.warps import viewpoint_homography
from hardnet_desc.geometry import homography_jacobian


@pytest.fixture(scope="module")
def warped_frames(example_image):
    """The photo, its view by a camera turned 60 degrees away (tilt 2), SIFT frames of the photo and their true
    frames in the view (centre through the homography, shape through its local affine map), away from borders."""
    h, w = example_image.shape[:2]
    truth = viewpoint_homography((h, w), tilt=2, axis_deg=30, rotation_deg=40)
    other = cv2.warpPerspective(example_image, truth, (w, h))
    keypoints = cv2.SIFT_create(600).detect(cv2.cvtColor(example_image, cv2.COLOR_BGR2GRAY), None)
    frames1 = keypoints_to_frames(keypoints).double().numpy()
    centres = cv2.perspectiveTransform(frames1[None, :, :, 2], truth)[0]
    frames2 = np.concatenate([homography_jacobian(truth, frames1[:, :, 2]) @ frames1[:, :, :2], centres[:, :, None]], 2)
    keep = ((centres > 40) & (centres < [w - 40, h - 40])).all(1)
    greys = to_grey_tensor(example_image, "cpu"), to_grey_tensor(other, "cpu")
    return greys, frames1[keep], frames2[keep]


def test_frames_placed_off_are_moved_back(warped_frames):
    # Centres 1 px off (standard deviation per axis) and frames turned by 15 degrees and stretched by 1.2 along
    # one axis, as a view's keypoint might be: the frames that converge (a quarter to a third here) move, and are
    # then within 0.3 px of the truth in the median and nearer to it than before for 4 in 5; the others stay.
    greys, frames1, frames2 = warped_frames
    rng = np.random.default_rng(0)
    off = frames2.copy()
    off[:, :, 2] += rng.normal(0.0, 1.0, (len(off), 2))
    a = np.radians(15)
    off[:, :, :2] = off[:, :, :2] @ (np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) @ np.diag([1.2, 1]))
    centres, moved = align_frames(*greys, torch.from_numpy(frames1), torch.from_numpy(off))
    before = np.linalg.norm(off[:, :, 2] - frames2[:, :, 2], axis=1)
    after = np.linalg.norm(centres.numpy() - frames2[:, :, 2], axis=1)
    moved = moved.numpy()
    assert len(frames1) > 200 and moved.mean() > 0.2
    assert np.median(before) > 1.0 and np.median(after[moved]) < 0.3 and (after < before)[moved].mean() > 0.8
    assert (centres.numpy()[~moved] == off[~moved, :, 2]).all()  # not moved: exactly where they were


def test_true_frames_stay_put(warped_frames):
    greys, frames1, frames2 = warped_frames
    centres, moved = align_frames(*greys, torch.from_numpy(frames1), torch.from_numpy(frames2))
    error = np.linalg.norm(centres.numpy() - frames2[:, :, 2], axis=1)
    assert moved.float().mean() > 0.5 and np.median(error) < 0.1 and np.median(error[moved.numpy()]) < 0.25


def test_a_flat_patch_is_not_moved(warped_frames):
    (grey, _), frames1, frames2 = warped_frames
    flat = torch.full_like(grey, 0.5)
    centres, moved = align_frames(grey, flat, torch.from_numpy(frames1[:5]), torch.from_numpy(frames2[:5]))
    assert not moved.any() and (centres.numpy() == frames2[:5, :, 2]).all()


def test_no_frames_and_bad_frames(warped_frames):
    greys, frames1, frames2 = warped_frames
    centres, moved = align_frames(*greys, torch.zeros(0, 2, 3), torch.zeros(0, 2, 3))
    assert centres.shape == (0, 2) and moved.shape == (0,)
    with pytest.raises(ValueError, match="frames1 and frames2 must both be"):
        align_frames(*greys, torch.from_numpy(frames1), torch.from_numpy(frames2[:-1]))
    outside = frames2[:3].copy()
    outside[0, :, 2] = [-50.0, 10.0]
    with pytest.raises(ValueError, match="outside"):
        align_frames(*greys, torch.from_numpy(frames1[:3]), torch.from_numpy(outside))
    for bad, error in ((dict(support=0), ValueError), (dict(support=float("nan")), ValueError),
                       (dict(support="1"), TypeError), (dict(iterations=0), ValueError),
                       (dict(iterations=2.5), TypeError), (dict(iterations=True), TypeError)):
        with pytest.raises(error, match=next(iter(bad))):
            align_frames(*greys, torch.from_numpy(frames1[:3]), torch.from_numpy(frames2[:3]), **bad)


def test_chunks_give_the_same_result(warped_frames, monkeypatch):
    greys, frames1, frames2 = warped_frames
    f1, f2 = torch.from_numpy(frames1[:100]), torch.from_numpy(frames2[:100])
    whole = align_frames(*greys, f1, f2)
    monkeypatch.setattr("hardnet_desc.core.align.CHUNK", 7)
    chunked = align_frames(*greys, f1, f2)
    assert torch.equal(whole[0], chunked[0]) and torch.equal(whole[1], chunked[1])
