"""OpenCV keypoints <-> COLMAP affine frames (hardnet_desc.integrations.colmap.keypoints); no pycolmap needed.

Conversions against COLMAP's own SIFT and database are tested in tests/test_sfm.py and tests/test_sfm_dataset.py.
"""

import numpy as np
import pytest

from hardnet_desc.core.patches import keypoints_to_array
from hardnet_desc.integrations.colmap.keypoints import keypoints_from_colmap, keypoints_to_colmap


def test_colmap_keypoints_round_trip(example_keypoints):
    """OpenCV keypoints -> COLMAP affine frames -> keypoints, and the frame is s * R(theta)."""
    kps = keypoints_to_array(example_keypoints)
    colmap = keypoints_to_colmap(example_keypoints)
    assert colmap.shape == (len(kps), 6) and colmap.dtype == np.float32
    np.testing.assert_allclose(colmap[:, :2], kps[:, :2] + 0.5, atol=1e-3)  # top-left corner at (0, 0)
    a = colmap[:, 2:].reshape(-1, 2, 2)
    np.testing.assert_allclose(np.sqrt(np.abs(np.linalg.det(a))), kps[:, 2] / 2, rtol=1e-5)  # scale = size / 2
    back = keypoints_from_colmap(colmap)
    np.testing.assert_allclose(back[:, :3], kps[:, :3], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose((back[:, 3] - kps[:, 3] + 180) % 360 - 180, 0, atol=1e-3)
    # COLMAP's (x, y, scale, orientation) form gives the same keypoints
    four = np.column_stack([colmap[:, :2], kps[:, 2] / 2, np.deg2rad(kps[:, 3])])
    np.testing.assert_allclose(keypoints_from_colmap(four), back, atol=1e-3)


def test_colmap_keypoints_upright_and_bad_shapes():
    upright = keypoints_to_colmap(np.array([[10.0, 20.0, 4.0, -1.0]]))
    np.testing.assert_allclose(upright, [[10.5, 20.5, 2.0, 0.0, 0.0, 2.0]])
    with pytest.raises(ValueError, match="shape"):
        keypoints_from_colmap(np.zeros((3, 5)))


def test_colmap_keypoints_to_opencv_by_hand():
    s, t = 3.0, np.deg2rad(30.0)
    row = [10.5, 20.5, s * np.cos(t), -s * np.sin(t), s * np.sin(t), s * np.cos(t)]
    np.testing.assert_allclose(keypoints_from_colmap(np.array([row])), [[10.0, 20.0, 6.0, 30.0]], atol=1e-9)
    row = [0.5, 0.5, s * np.cos(-t), -s * np.sin(-t), s * np.sin(-t), s * np.cos(-t)]
    assert keypoints_from_colmap(np.array([row]))[0, 3] == pytest.approx(330.0)
    with pytest.raises(ValueError, match=r"\(N, 6\)"):
        keypoints_from_colmap(np.zeros((3, 5)))
