"""Affine views of an image (ASIFT's), and features found in them but described from the original image.

A view of tilt ``t`` rotates the image by ``phi`` in its plane, blurs it along x with a Gaussian of
``sigma = 0.8 sqrt(t^2 - 1)`` (anti-aliasing) and compresses x by ``t``; the views of one tilt are
``ROTATION_STEP / t`` degrees apart (``make_views``, ``render_view``). SIFT runs on each view, and each keypoint's
patch frame goes back to the original image as an affine frame (``frames_to_original``) that HardNet describes from
the original pixels (``describe_views``), so no view is resampled twice. A *rectified* view (``rectified_view``)
draws one image in the other's frame by a homography.

Conventions: pixels with the centre of the top-left pixel at ``(0, 0)``, y down; a view's ``matrix`` ``M`` (2, 3)
maps original pixels to view pixels, ``x_view = M[:, :2] @ x + M[:, 2]`` (a rectified view's is a (3, 3)
homography); affine frames ``[A | c]`` (N, 2, 3) as in ``hardnet_desc.core.patches``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from .core.image import ImageLike, to_grey_tensor, to_uint8
from .core.patches import inside_image
from .descriptor import HardNetDescriptor
from .geometry import homography_jacobian

#: A step's views: a tilt, or ``(tilt, scale)`` for views of the image shrunk by ``scale`` first (a scale
#: step; none by default: on the validation sets it solved as many pairs as it got wrong, docs/wide-baseline-log.md).
ViewSpec = float | tuple[float, float]
#: In-plane rotations of a view with tilt ``t`` are ``ROTATION_STEP / t`` degrees apart (ASIFT's 72 degrees).
ROTATION_STEP = 72.0
#: The largest tilt of a view (a 1000-pixel image compressed to 16 pixels), and the most views of one step:
#: a step's cost grows with its views (the defaults make 1 + 15 + 35 per image).
MAX_TILT, MAX_STEP_VIEWS = 64.0, 500


@dataclass(frozen=True)
class View:
    """One synthesized view of an image.

    Attributes:
        tilt: compression of the view's x axis (1: none).
        angle: in-plane rotation in degrees (counter-clockwise on screen, as ``cv2.getRotationMatrix2D``).
        matrix: ``(2, 3)`` float64, original pixels -> view pixels; or ``(3, 3)``, a homography: the image drawn in
            the other image's frame by a verified model (a *rectified* view, ``rectified_view``).
        size: ``(height, width)`` of a rectified view (an affine view's size follows from ``matrix``).
    """

    tilt: float
    angle: float
    matrix: np.ndarray
    size: tuple[int, int] | None = None


@dataclass
class Features:
    """The features of one image from all its views so far.

    Attributes:
        frames: ``(N, 2, 3)`` float32 affine frames in the original image.
        descriptors: ``(N, 128)`` float32 tensor on the descriptor's device.
        view_index: ``(N,)`` int64, the view (into ``views``) each feature came from.
        views: the views described so far.
    """

    frames: torch.Tensor
    descriptors: torch.Tensor
    view_index: np.ndarray
    views: list[View] = field(default_factory=list)

    @property
    def centres(self) -> np.ndarray:
        """``(N, 2)`` float64 frame centres in the original image."""
        return self.frames[:, :, 2].double().cpu().numpy()


def view_angles(tilt: float, rotation_step: float = ROTATION_STEP) -> list[float]:
    """In-plane rotations (degrees, in ``[0, 180)``) of the views with ``tilt``: ``[0]`` for tilt 1."""
    if tilt <= 1:
        return [0.0]
    step = rotation_step / tilt
    return [float(a) for a in np.arange(0.0, 180.0 - 1e-9, step)]


def view_spec(spec: ViewSpec) -> tuple[float, float]:
    """``(tilt, scale)`` of a step's entry (a tilt, or ``(tilt, scale)``); a clear error for anything else."""
    tilt, scale = (spec, 1.0) if np.ndim(spec) == 0 else tuple(spec) if len(spec) == 2 else (None, None)
    if not (all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in (tilt, scale))
            and 1 <= tilt <= MAX_TILT and 0 < scale <= 1):
        raise ValueError(f"a view is a tilt in [1, {MAX_TILT:g}] or (tilt, scale) with 0 < scale <= 1, got {spec!r}")
    return float(tilt), float(scale)


def check_step_views(step: Sequence[ViewSpec], rotation_step: float) -> int:
    """The number of views of one step (its tilts at their rotations), or ``ValueError`` above ``MAX_STEP_VIEWS``."""
    # len(view_angles(tilt, rotation_step)), without making them
    count = sum(1 if tilt <= 1 else math.ceil((180.0 - 1e-9) * tilt / rotation_step)
                for tilt, _ in map(view_spec, step))
    if count > MAX_STEP_VIEWS:
        raise ValueError(f"the step {list(step)} with rotation_step {rotation_step:g} makes "
                         f"{count if count <= 10**6 else 'over a million'} views per image, more than "
                         f"{MAX_STEP_VIEWS}: raise rotation_step or use fewer tilts")
    return count


def make_views(tilts: Sequence[ViewSpec], size: tuple[int, int], rotation_step: float = ROTATION_STEP,
               scale: float = 1.0) -> list[View]:
    """The views of an image of ``size = (height, width)`` for ``tilts``, each at its rotations.

    An entry ``(tilt, s)`` shrinks the image by ``s`` first; ``scale`` (<= 1) shrinks every view (views of a
    large image are synthesized from a smaller copy). The matrices place each view's content at non-negative
    pixels.
    """
    views = []
    for tilt, s in map(view_spec, tilts):
        for angle in view_angles(tilt, rotation_step):
            views.append(View(tilt, angle, view_matrix(tilt, angle, size, scale * s)))
    return views


def view_matrix(tilt: float, angle: float, size: tuple[int, int], scale: float = 1.0) -> np.ndarray:
    """``(2, 3)`` original -> view: scale, rotate by ``angle`` degrees, compress x by ``tilt``, then shift
    so that the image's corners land at non-negative pixels."""
    h, w = size
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    linear = np.diag([1.0 / tilt, 1.0]) @ np.array([[c, s], [-s, c]]) * scale  # as cv2.getRotationMatrix2D
    corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], np.float64)
    shift = -(corners @ linear.T).min(axis=0)
    return np.hstack([linear, shift[:, None]])


def render_view(grey: np.ndarray, view: View) -> tuple[np.ndarray, np.ndarray]:
    """The view's pixels and its mask of valid pixels (uint8, borders eroded).

    A rectified view (``(3, 3)`` matrix) is the image under that homography. Otherwise the image is scaled
    (blurred first with ``sigma = 0.8 sqrt(1 / s^2 - 1)`` if shrunk by ``s``) and rotated, then blurred along x
    with ``sigma = 0.8 sqrt(t^2 - 1)`` and compressed by ``t`` (the anti-aliasing of ASIFT); the result is the
    image under ``view.matrix``.
    """
    h, w = grey.shape
    if view.matrix.shape == (3, 3):  # rectified: the other image's frame, enlarged there (no anti-aliasing needed)
        out = (view.size[1], view.size[0])
        pixels = cv2.warpPerspective(grey, view.matrix, out, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        mask = cv2.warpPerspective(np.full_like(grey, 255), view.matrix, out, flags=cv2.INTER_NEAREST)
        w_back = np.linalg.inv(view.matrix)[2]  # > 0 where the pixel shows the image's front (rectified_view's sign)
        mask[w_back[0] * np.arange(out[0])[None] + w_back[1] * np.arange(out[1])[:, None] + w_back[2] <= 0] = 0
        return pixels, cv2.erode(mask, np.ones((5, 5), np.uint8))
    linear, shift = view.matrix[:, :2], view.matrix[:, 2]
    rotation = linear * np.array([[view.tilt], [1.0]])  # undo the compression: scale and rotation only
    scale = math.sqrt(abs(np.linalg.det(rotation)))
    if scale < 0.99:
        grey = cv2.GaussianBlur(grey, (0, 0), 0.8 * math.sqrt(1 / scale**2 - 1))
    corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], np.float64) @ rotation.T
    rot_shift = -corners.min(axis=0)
    rw, rh = (np.ceil(corners.max(axis=0) + rot_shift) + 1).astype(int)
    first = np.hstack([rotation, rot_shift[:, None]])
    rotated = cv2.warpAffine(grey, first, (int(rw), int(rh)), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    mask = cv2.warpAffine(np.full_like(grey, 255), first, (int(rw), int(rh)), flags=cv2.INTER_NEAREST)
    if view.tilt > 1:
        sigma = 0.8 * math.sqrt(view.tilt**2 - 1)
        kernel = cv2.getGaussianKernel(2 * math.ceil(3 * sigma) + 1, sigma)
        rotated = cv2.sepFilter2D(rotated, -1, kernel, np.ones((1, 1)), borderType=cv2.BORDER_REPLICATE)
    # second map: x / tilt, and the rotation's shift replaced by the view's
    second = np.array([[1.0 / view.tilt, 0, shift[0] - rot_shift[0] / view.tilt], [0, 1.0, shift[1] - rot_shift[1]]])
    out_w, out_h = int(np.ceil((rw - 1) / view.tilt)) + 1, int(rh)
    pixels = cv2.warpAffine(rotated, second, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    mask = cv2.warpAffine(mask, second, (out_w, out_h), flags=cv2.INTER_NEAREST)
    return pixels, cv2.erode(mask, np.ones((5, 5), np.uint8))


def frames_to_original(frames: np.ndarray | torch.Tensor, matrix: np.ndarray) -> np.ndarray:
    """Affine frames ``(N, 2, 3)`` of a view mapped back to the original image: ``[L^-1 A | L^-1 (c - b)]``
    for the view matrix ``[L | b]`` (original -> view); for a homography ``(3, 3)`` the centre goes through its
    inverse ``G`` and ``A`` through ``G``'s local affine map there. Returns float64 ``(N, 2, 3)``."""
    frames = np.asarray(frames.cpu() if isinstance(frames, torch.Tensor) else frames, np.float64)
    if matrix.shape == (3, 3):
        back = np.linalg.inv(matrix)
        c = np.c_[frames[:, :, 2], np.ones(len(frames))] @ back.T
        with np.errstate(divide="ignore", invalid="ignore"):
            centres = c[:, :2] / c[:, 2:]
        return np.concatenate([homography_jacobian(back, frames[:, :, 2]) @ frames[:, :, :2], centres[:, :, None]], 2)
    inv = np.linalg.inv(matrix[:, :2])
    a = inv @ frames[:, :, :2]
    c = (frames[:, :, 2] - matrix[:, 2]) @ inv.T
    return np.concatenate([a, c[:, :, None]], axis=2)


def frames_to_keypoints(frames: np.ndarray | torch.Tensor, patch_scale: float) -> list[cv2.KeyPoint]:
    """``cv2.KeyPoint`` stand-ins of affine frames: the centre, ``size = 2 sqrt|det A| / patch_scale``
    (the size of the circular keypoint with the patch's area) and the angle of ``A``'s first column."""
    f = np.asarray(frames.cpu() if isinstance(frames, torch.Tensor) else frames, np.float64)
    det = np.abs(f[:, 0, 0] * f[:, 1, 1] - f[:, 0, 1] * f[:, 1, 0])
    sizes = 2 * np.sqrt(det) / patch_scale
    angles = np.degrees(np.arctan2(f[:, 1, 0], f[:, 0, 0])) % 360
    return [cv2.KeyPoint(float(x), float(y), float(s), float(a))
            for (x, y), s, a in zip(f[:, :, 2], sizes, angles, strict=True)]


def describe_views(
    descriptor: HardNetDescriptor, image: ImageLike, views: Sequence[View], max_keypoints: int | None,
    grey: np.ndarray | None = None, tensor: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """SIFT in each view, the keypoints' frames mapped back, described from the original image.

    Args:
        descriptor: detects (its detector) and describes.
        image: the original image.
        views: views of it (``make_views``); the identity view is the original without resampling.
        max_keypoints: strongest keypoints kept per view (``None``: all).
        grey: the 8-bit grey image if already made.
        tensor: its grey tensor on the descriptor's device (``to_grey_tensor``) if already made.

    Returns:
        ``(frames (N, 2, 3) float32, descriptors (N, 128) on the descriptor's device, view (N,) int64)``,
        index into ``views``.
    """
    grey = to_uint8(image) if grey is None else grey
    h, w = grey.shape
    frames, which = [], []
    for k, view in enumerate(views):
        if view.matrix.shape == (2, 3) and np.allclose(view.matrix, np.eye(2, 3)):
            kps, mask_view = descriptor.detect(grey, max_keypoints=max_keypoints), np.eye(2, 3)
        else:
            pixels, mask = render_view(grey, view)
            kps, mask_view = descriptor.detect(pixels, mask, max_keypoints=max_keypoints), view.matrix
        if not kps:
            continue
        f = frames_to_original(descriptor.frames(kps), mask_view)
        frames.append(f)
        which.append(np.full(len(f), k, np.int64))
    if not frames:
        return torch.zeros(0, 2, 3), torch.zeros(0, 128, device=descriptor.device), np.zeros(0, np.int64)
    f = torch.from_numpy(np.concatenate(frames)).float()
    keep = inside_image(f, h, w) & torch.isfinite(f).all(dim=2).all(dim=1)
    f, which = f[keep], np.concatenate(which)[keep.numpy()]
    tensor = to_grey_tensor(image, descriptor.device) if tensor is None else tensor
    desc = descriptor.describe_many([tensor], [f])[0]
    return f, desc, which


def rectified_view(
    h: np.ndarray, points1: np.ndarray, size1: tuple[int, int], size2: tuple[int, int],
) -> tuple[int, View]:
    """The view that draws one image in the other's frame by homography ``h`` (image 1 -> image 2).

    The image that shows the plane smaller around ``points1`` (``(M, 2)``, e.g. the inliers; ``|det J| < 1``) is
    drawn enlarged in the other's frame, so no view loses detail to resampling.

    Returns:
        ``(index of the image drawn (0 or 1), View)``; the view's matrix maps that image's pixels to the other's,
        signed so that the ``points1`` side of the horizon has ``w > 0``.
    """
    h = np.asarray(h, np.float64)
    centre = np.median(np.asarray(points1, np.float64), axis=0)
    if abs(np.linalg.det(homography_jacobian(h, centre[None])[0])) <= 1:
        drawn, matrix, size = 1, np.linalg.inv(h), size1
    else:
        drawn, matrix, size = 0, h, size2
    front = np.sign(h[2] @ [*centre, 1.0])  # w of centre under h; inv(h) has the same sign at centre's image
    return drawn, View(1.0, 0.0, matrix * front, (int(size[0]), int(size[1])))


def model_tilt(h: np.ndarray, points1: np.ndarray) -> float:
    """The tilt homography ``h`` makes at the median of ``points1`` (``(M, 2)``): the ratio of its local affine
    map's singular values (1: a similarity there; ASIFT's "transition tilt")."""
    s = np.linalg.svd(homography_jacobian(h, np.median(np.asarray(points1, np.float64), axis=0)[None])[0],
                      compute_uv=False)
    return float(s[0] / max(s[1], 1e-12))
