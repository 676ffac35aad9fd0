"""OpenCV keypoints <-> COLMAP's affine keypoint frames (conventions: ``hardnet_desc.core.patches``)."""

from __future__ import annotations

import numpy as np

from ...core.patches import KeypointsLike, _check_finite, keypoints_to_array

__all__ = ["keypoints_from_colmap", "keypoints_to_colmap"]


def keypoints_to_colmap(keypoints: KeypointsLike) -> np.ndarray:
    """Keypoints as COLMAP stores them: float32 ``(N, 6)`` rows ``(x, y, a11, a12, a21, a22)``.

    COLMAP's keypoint is an affine frame: centre ``(x, y)`` with the **top-left pixel corner** at
    ``(0, 0)`` (so ``x = kp.pt[0] + 0.5``), and ``A = [[a11, a12], [a21, a22]] = s * R(theta)``
    where ``s = kp.size / 2`` (the detection sigma; COLMAP's SIFT ``scale``) and
    ``theta = radians(kp.angle)`` in the same sense as OpenCV's angle (from x towards y, y down).
    ``angle == -1`` (upright) becomes ``theta = 0``. ``keypoints_from_colmap`` inverts it.
    """
    kps = keypoints_to_array(keypoints)
    _check_finite(kps, "keypoints")
    theta = np.where(kps[:, 3] == -1, 0.0, np.deg2rad(kps[:, 3]))
    s = kps[:, 2] / 2
    cos, sin = s * np.cos(theta), s * np.sin(theta)
    return np.stack([kps[:, 0] + 0.5, kps[:, 1] + 0.5, cos, -sin, sin, cos], axis=1).astype(np.float32)


def keypoints_from_colmap(keypoints: np.ndarray) -> np.ndarray:
    """COLMAP keypoints ``(N, 2 | 4 | 6)`` as float64 ``(N, 4)`` rows ``(x, y, size, angle_deg)``.

    Accepts what ``pycolmap.Database.read_keypoints`` returns: ``(x, y)`` (size 1, angle 0 are
    then made up), ``(x, y, scale, orientation_rad)`` or ``(x, y, a11, a12, a21, a22)``.
    For a general affine frame the size is from the mean of the two column norms of ``A``
    (COLMAP's ``compute_scale``) and the angle from its first column, as COLMAP computes them.
    The inverse of ``keypoints_to_colmap`` (conventions there).
    """
    arr = np.asarray(keypoints, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] not in (2, 4, 6):
        raise ValueError(f"COLMAP keypoints must have shape (N, 2), (N, 4) or (N, 6), got {arr.shape}")
    out = np.zeros((len(arr), 4))
    out[:, :2] = arr[:, :2] - 0.5
    if arr.shape[1] == 2:
        out[:, 2] = 1.0
    elif arr.shape[1] == 4:
        out[:, 2], out[:, 3] = 2 * arr[:, 2], np.rad2deg(arr[:, 3])
    else:
        a11, a12, a21, a22 = arr[:, 2], arr[:, 3], arr[:, 4], arr[:, 5]
        out[:, 2] = np.hypot(a11, a21) + np.hypot(a12, a22)  # 2 * mean column norm
        out[:, 3] = np.rad2deg(np.arctan2(a21, a11))
    out[:, 3] %= 360.0
    return out
