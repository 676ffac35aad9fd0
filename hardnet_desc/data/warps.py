"""Random view changes of an image: homographies (viewpoint, zoom, in-plane rotation) and
photometric changes (brightness, contrast, gamma, uneven light, blur, noise, JPEG).

One warper for both sides: ``hardnet_desc.train.datasets.synthetic`` makes training views with it and
``hardnet_desc.evaluation.synthetic_sequences`` makes evaluation sequences with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ..geometry import homography_jacobian


@dataclass
class WarpConfig:
    """Ranges of the random view changes (uniform unless said otherwise)."""

    max_rotation_deg: float = 45.0  # in-plane rotation
    max_log2_scale: float = 1.0  # zoom in [2^-m, 2^m]
    max_perspective: float = 0.25  # corner displacement, fraction of the image side
    brightness: float = 40.0  # additive, 8-bit units
    contrast: float = 0.4  # multiplicative in [1 - c, 1 + c]
    max_log2_gamma: float = 0.6
    blur_prob: float = 0.3
    max_blur_sigma: float = 1.5
    noise_prob: float = 0.5
    max_noise_std: float = 8.0
    jpeg_prob: float = 0.5
    min_jpeg_quality: int = 30
    shading: float = 0.0  # smooth spatially varying gain, log2 amplitude (0 = off, draws nothing)


#: Views as hard as the hardest level of the evaluation sequences
#: (``hardnet_desc.evaluation.synthetic_sequences``), geometry and light together.
HARD_WARP = WarpConfig(
    max_rotation_deg=60.0, max_log2_scale=1.5, max_perspective=0.35, brightness=60.0, contrast=0.5,
    max_log2_gamma=1.2, blur_prob=0.5, max_blur_sigma=1.5, noise_prob=0.5, max_noise_std=8.0,
    jpeg_prob=0.5, min_jpeg_quality=30, shading=1.5,
)
WARP_PRESETS = {"default": WarpConfig(), "hard": HARD_WARP}


def random_homography(h: int, w: int, cfg: WarpConfig, rng: np.random.Generator) -> tuple[np.ndarray, int, int]:
    """A random homography and the (height, width) of the canvas holding the warped image."""
    corners = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    centre = corners.mean(0)
    angle = math.radians(rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg))
    scale = 2.0 ** rng.uniform(-cfg.max_log2_scale, cfg.max_log2_scale)
    rot = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    moved = (corners - centre) @ rot.T + centre
    moved += rng.uniform(-cfg.max_perspective, cfg.max_perspective, size=(4, 2)) * scale * np.float32([w, h])
    moved -= moved.min(0)
    H = cv2.getPerspectiveTransform(corners, moved.astype(np.float32))
    # keep the canvas near the source's area so views stay comparable in cost
    out_w, out_h = np.ceil(moved.max(0)).astype(int)
    limit = 1.5 * max(h, w)
    if max(out_w, out_h) > limit:
        s = limit / max(out_w, out_h)
        H = np.diag([s, s, 1.0]) @ H
        out_w, out_h = int(out_w * s), int(out_h * s)
    return H, max(out_h, 16), max(out_w, 16)


def photometric(image: np.ndarray, cfg: WarpConfig, rng: np.random.Generator) -> np.ndarray:
    """Random brightness/contrast/gamma, blur, noise and JPEG round trip of a uint8 image."""
    x = image.astype(np.float32) / 255.0
    x = np.clip(x ** (2.0 ** rng.uniform(-cfg.max_log2_gamma, cfg.max_log2_gamma)), 0, 1) * 255.0
    x = x * rng.uniform(1 - cfg.contrast, 1 + cfg.contrast) + rng.uniform(-cfg.brightness, cfg.brightness)
    if cfg.shading > 0:
        # uneven light: a 4x4 grid of random log-gains, smoothly upsampled to the image
        grid = rng.uniform(-cfg.shading, cfg.shading, size=(4, 4)).astype(np.float32)
        x = x * np.exp2(cv2.resize(grid, (x.shape[1], x.shape[0]), interpolation=cv2.INTER_CUBIC))
    if rng.random() < cfg.blur_prob:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.3, cfg.max_blur_sigma))
    if rng.random() < cfg.noise_prob:
        x = x + rng.normal(0.0, rng.uniform(0, cfg.max_noise_std), size=x.shape)
    out = np.clip(x, 0, 255).round().astype(np.uint8)
    if rng.random() < cfg.jpeg_prob:
        quality = int(rng.integers(cfg.min_jpeg_quality, 96))
        out = cv2.imdecode(cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_GRAYSCALE)
    return out


def project_keypoints(kps: np.ndarray, H: np.ndarray) -> np.ndarray:
    """Map ``(N, 4)`` keypoints ``(x, y, size, angle_deg)`` through ``H`` with its local affine map."""
    x, y = kps[:, 0], kps[:, 1]
    den = H[2, 0] * x + H[2, 1] * y + H[2, 2]
    u = (H[0, 0] * x + H[0, 1] * y + H[0, 2]) / den
    v = (H[1, 0] * x + H[1, 1] * y + H[1, 2]) / den
    j = homography_jacobian(H, kps[:, :2])
    a = np.deg2rad(kps[:, 3])
    d = np.einsum("nij,nj->ni", j, np.stack([np.cos(a), np.sin(a)], 1))
    size = kps[:, 2] * np.sqrt(np.abs(np.linalg.det(j)))
    angle = np.rad2deg(np.arctan2(d[:, 1], d[:, 0])) % 360.0
    return np.stack([u, v, size, angle], 1)


def viewpoint_homography(
    size: tuple[int, int], tilt: float, axis_deg: float = 0.0, rotation_deg: float = 0.0, zoom: float = 1.0,
    canvas: tuple[int, int] | None = None,
) -> np.ndarray:
    """The homography of a planar image seen by a second camera far off its axis (wide-baseline tests).

    Camera 1 (focal ``max(h, w)`` pixels, principal point at the centre) looks straight at the plane,
    which fills its image. Camera 2 looks at the plane's centre from the same distance, turned by
    ``acos(1 / tilt)`` about the in-plane axis at ``axis_deg`` (tilt 3: 70.5 degrees, tilt 8: 82.8).
    Its picture is then rotated by ``rotation_deg`` in the image plane and scaled so that the whole
    plane fits the ``canvas = (height, width)`` (default: ``size``), times ``zoom`` (> 1: a crop, < 1:
    smaller) about the canvas centre.

    Args:
        size: ``(height, width)`` of image 1.

    Returns:
        ``(3, 3)`` float64 ``H``, ``x2 ~ H x1`` in pixels (centre of the top-left pixel at ``(0, 0)``).
    """
    h, w = size
    ch, cw = canvas or size
    f = float(max(h, w))
    k = np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]])
    theta, a = math.acos(1.0 / tilt), math.radians(axis_deg)
    axis = np.array([math.cos(a), math.sin(a), 0.0])
    turn, _ = cv2.Rodrigues(axis * theta)
    centre2 = np.array([0, 0, 1.0]) + turn @ np.array([0, 0, -1.0])  # camera 1 turned about the plane's centre
    homography = k @ turn.T @ (np.eye(3) - np.outer(centre2, [0, 0, 1])) @ np.linalg.inv(k)
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [w - 1, h - 1, 1], [0, h - 1, 1]], np.float64)
    r = math.radians(rotation_deg)
    rot = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    moved = (rot @ homography @ corners.T).T
    moved = moved[:, :2] / moved[:, 2:]
    lo, hi = moved.min(0), moved.max(0)
    s = zoom * 0.95 * min((cw - 1) / (hi - lo)[0], (ch - 1) / (hi - lo)[1])
    mid = (lo + hi) / 2
    fit = np.array([[s, 0, (cw - 1) / 2 - s * mid[0]], [0, s, (ch - 1) / 2 - s * mid[1]], [0, 0, 1]])
    out = fit @ rot @ homography
    return out / out[2, 2]
