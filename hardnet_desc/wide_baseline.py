"""Wide-baseline matching, MODS-style: affine views only when needed, FGINN, careful verification.

The idea is that of MODS (Mishkin, Matas, Perdoch, "MODS: Fast and accurate two-view matching",
CVIU 2015), written anew here around HardNet:

1. **Step 0** is the plain pipeline: SIFT on each original image, HardNet, matching, RANSAC. Most
   pairs stop here (``min_inliers`` verified inliers).
2. Otherwise each later step adds **synthesized affine views** of both images (ASIFT's views): a
   rotation by ``phi`` in the image plane, an anti-aliasing Gaussian blur along x
   (``sigma = 0.8 sqrt(t^2 - 1)``) and a compression of x by the tilt ``t``. SIFT runs on each
   view, and each keypoint goes back to the **original** image as an affine frame, described
   there by HardNet (no resampling of a resampled view).
3. The features of all views of an image are one set, matched with **FGINN** (the second
   neighbour of the ratio test is the nearest one lying more than ``fginn_radius`` pixels from
   the first; a point seen in several views is not its own competitor), a mutual check that
   accepts a reverse neighbour at the same place, and **duplicate removal** (the same point pair
   found through several views counts once).
4. **Verification** (``verify``) returns no model rather than a wrong one: too few inliers, a
   homography that sends some of its inliers through the horizon, that a stricter fit does not confirm
   where it is used, or whose inliers' affine frames mostly disagree with it (``frames_agree``), or a
   fundamental matrix that only a plane supports (DEGENSAC's concern: the plane's homography is
   reported instead). A fundamental matrix of step 0 with too few inliers to be stated guides the
   later steps (``verify_prior``).
5. **A rectified view** (``rectified_view``, ``_rectify``): a homography verified at a view step, or at step 0
   where it tilts the plane by more than ``RECTIFIED_TILT`` (``model_tilt``), draws one image in the other's
   frame, where the two look alike; that view's matches, within a gate around the model, fit it again, so
   matches the model misses by more than the threshold can correct it.
6. **Guided matching** (``guided_matches``): a verified homography adds the correspondences it predicts
   (nearest descriptor within the threshold of where it sends each feature, frames that agree), and is
   refitted on them.

Conventions: pixels with the centre of the top-left pixel at ``(0, 0)``, y down; a view's
``matrix`` ``M`` (2, 3) maps original pixels to view pixels, ``x_view = M[:, :2] @ x + M[:, 2]``
(a rectified view's is a (3, 3) homography);
affine frames ``[A | c]`` (N, 2, 3) as in ``hardnet_desc.core.patches``.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import cv2
import numpy as np
import torch

from .core.align import align_frames
from .core.image import ImageLike, to_grey_tensor, to_uint8
from .core.patches import check_integer, check_number, inside_image
from .descriptor import HardNetDescriptor
from .detection import DEFAULT_MAX_KEYPOINTS, check_max_keypoints
from .geometry import (
    check_geometry,
    fit_geometry,
    homography_jacobian,
    refine_homography,
    sampson_error_px,
    transfer_error,
)
from .matching import Matches, _sq_dist_chunks, check_ratio

#: A step's views: a tilt, or ``(tilt, scale)`` for views of the image shrunk by ``scale`` first (a scale
#: step; none by default: on the validation sets it solved as many pairs as it got wrong, docs/wide-baseline-log.md).
ViewSpec = float | tuple[float, float]
#: Views added at each step; step 0 (``()``) is the original image alone.
DEFAULT_STEPS: tuple[tuple[ViewSpec, ...], ...] = ((), (2.0, 4.0), (6.0, 8.0))
#: In-plane rotations of a view with tilt ``t`` are ``ROTATION_STEP / t`` degrees apart (ASIFT's 72 degrees).
ROTATION_STEP = 72.0
#: Verified inliers below which no model is reported.
MIN_INLIERS = {"homography": 15, "fundamental": 25}
#: Verified inliers that end the search. A fundamental matrix with fewer is kept, and the next step looks for more
#: correspondences that agree with it (``verify_prior``): on real pairs 25-50 inliers often fix the pose badly
#: (docs/wide-baseline-log.md, round 5). A homography ends it at ``MIN_INLIERS``; guided matching adds to it instead.
STOP_INLIERS = {"homography": 15, "fundamental": 50}
#: Second FGINN ratio threshold of the steps with synthesized views: when the matches passing ``ratio``
#: give no model, those passing this one are verified too. With strong viewpoint and light changes the true
#: matches' ratios are high (median 0.87-0.92 on pairs that failed at 0.8; docs/wide-baseline-log.md).
VIEW_RATIO = 0.9
#: SIFT keypoints kept per synthesized view (the strongest), one number per step with views: 800 at step 1 (tilts 2
#: and 4), 400 at step 2. On real wide pairs 800 at step 1 solved more and stated fewer wrong models than 400 on four
#: draws (on the held-out one 57 / 7 of 74 solved / wrong, against 53 / 12), at the same count on the synthetic sets;
#: 800 at step 2 too pushed the costliest pairs far past 15 s (docs/wide-baseline-log.md, round 9).
DEFAULT_VIEW_KEYPOINTS: int | tuple[int | None, ...] = (800, 400)
#: Views are synthesized from the image scaled down to at most this many pixels on its longer side.
DEFAULT_VIEW_MAX_SIDE = 1000
#: A fundamental matrix is replaced by a homography when at least this share of its inliers fits
#: the homography and fewer than ``OFF_PLANE_MIN`` lie off that plane.
PLANE_SHARE, OFF_PLANE_MIN = 0.8, 15
#: A homography is stated only if the fit with 2/3 of the threshold maps image 1's corners within this
#: share of its diagonal of the first fit's (with few inliers, far apart views can leave it undetermined).
AGREEMENT = 0.01
#: A fundamental matrix is stated only if the fit with 2/3 of the threshold keeps this share of its inliers.
AGREEMENT_SHARE = 0.8
#: Guided matching (``guided_matches``) keeps a feature's nearest descriptor within the threshold of where the
#: model sends it only if their L2 distance is below this (unit descriptors: 0 equal, 1.41 orthogonal).
GUIDED_DISTANCE = 1.0
#: A homography is stated only if this share of its inliers' matched affine frames agree with its local affine map
#: (``frames_agree``): on the validation sets the true models' shares were 0.39-1.0, the wrong ones' 0.0-0.09.
FRAME_SHARE = 0.25
#: A fundamental matrix is stated only if this share of its inliers have a neighbour inlier (within ``COHERENT_RADIUS``
#: px in image 1) that their matched frames place where it is in image 2 (``coherent``). On the real pairs the right
#: models' shares were 0.70-1.0; wrong ones of 25-33 false inliers on a camera ring 0.38-0.79
#: (docs/wide-baseline-log.md).
COHERENT_SHARE, COHERENT_RADIUS = 0.6, 60.0
#: ``match_wide(geometry="fundamental")`` states no model (nor its plane's homography) whose inliers are few (fewer
#: than ``SCATTERED_INLIERS``), a minority (below ``SCATTERED_SHARE`` of the correspondences verified) and scattered
#: (their convex hull covers more than ``SCATTERED_AREA`` of either image; ``scattered``). On 202 real pairs 21 of the
#: 57 wrong models were so, and 1 of the 112 right ones (docs/wide-baseline-log.md, round 8).
SCATTERED_INLIERS, SCATTERED_SHARE, SCATTERED_AREA = 40, 0.5, 0.08
#: A homography found with synthesized views is fitted again on a rectified view (``_rectify``): FGINN matches at this
#: ratio, within this share of image 2's diagonal of the model, this many times (each round redraws the view with the
#: model the previous one fitted).
RECTIFIED_RATIO, RECTIFIED_GATE, RECTIFIED_ROUNDS = 0.85, 0.025, 2
# step 0's homographies are rectified too where they tilt the plane by more than this between the images
RECTIFIED_TILT = 2.0


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


@dataclass
class WideMatch:
    """What ``match_wide`` found.

    Attributes:
        features1, features2: the features of each image (all views of the steps run).
        matches: indices into them, after FGINN, the mutual check and duplicate removal.
        points1, points2: ``(M, 2)`` float64, the matches' positions in each image: the frame centres, and for a
            fundamental matrix image 2's moved onto image 1's patches (``align_matches``).
        inliers: ``(M,)`` bool, the matches that agree with ``model``.
        model: ``(3, 3)`` or ``None`` (no verified model).
        geometry: the model's kind; ``"homography"`` also when a fundamental matrix was asked for and
            only a plane supports it.
        step: the step whose model was accepted, or ``None``.
        timings: seconds per stage (``features``: views, detection and description; ``match``;
            ``verify``; ``guided``: guided matching and the refit of a homography) and ``total``.
    """

    features1: Features
    features2: Features
    matches: Matches
    points1: np.ndarray
    points2: np.ndarray
    inliers: np.ndarray
    model: np.ndarray | None
    geometry: str
    step: int | None
    timings: dict[str, float]


# --- views -------------------------------------------------------------------------------------


def view_angles(tilt: float, rotation_step: float = ROTATION_STEP) -> list[float]:
    """In-plane rotations (degrees, in ``[0, 180)``) of the views with ``tilt``: ``[0]`` for tilt 1."""
    if tilt <= 1:
        return [0.0]
    step = rotation_step / tilt
    return [float(a) for a in np.arange(0.0, 180.0 - 1e-9, step)]


def view_spec(spec: ViewSpec) -> tuple[float, float]:
    """``(tilt, scale)`` of a step's entry (a tilt, or ``(tilt, scale)``); a clear error for anything else."""
    tilt, scale = (spec, 1.0) if np.ndim(spec) == 0 else tuple(spec) if len(spec) == 2 else (None, None)
    if not (isinstance(tilt, numbers.Real) and isinstance(scale, numbers.Real) and tilt >= 1 and 0 < scale <= 1):
        raise ValueError(f"a view is a tilt >= 1 or (tilt, scale) with 0 < scale <= 1, got {spec!r}")
    return float(tilt), float(scale)


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


# --- matching ------------------------------------------------------------------------------------


class Neighbours:
    """The nearest descriptors between two growing sets: for each row of set 1 its ``candidates`` nearest rows
    of set 2 (L2, ascending), and for each row of set 2 its nearest row of set 1.

    ``update`` adds the rows appended to either set since the last call, computing only the distances that
    involve them, so ``match_wide``'s steps, which add views to both images, do not match all features again.
    The tables stay on the descriptors' device.
    """

    def __init__(self, candidates: int = 16, chunk: int = 512) -> None:
        self.candidates, self.chunk = candidates, chunk
        self.n1 = self.n2 = 0  # rows of each set seen so far
        self.dist = self.idx = None  # (N1, k): distances ascending, their rows of set 2 (on the first update's device)
        self.col_min = self.col_arg = None  # (N2,): the nearest row of set 1 to each row of set 2, its distance

    def update(self, desc1: torch.Tensor | np.ndarray, desc2: torch.Tensor | np.ndarray) -> Neighbours:
        """Take ``desc1`` ``(N1, D)`` and ``desc2`` ``(N2, D)``, which start with the rows seen so far."""
        a = torch.as_tensor(desc1).float()
        b = torch.as_tensor(desc2).float().to(a.device)
        n1, n2 = self.n1, self.n2
        if len(a) < n1 or len(b) < n2:
            raise ValueError(f"update takes the sets grown, got {len(a)} and {len(b)} rows after {n1} and {n2}")
        if self.dist is None:  # empty tables
            self.dist, self.col_min = a.new_zeros(0, 0), a.new_zeros(0)
            self.idx, self.col_arg = a.new_zeros(0, 0, dtype=torch.long), a.new_zeros(0, dtype=torch.long)
        k = min(self.candidates, len(b))
        self.col_min = torch.cat([self.col_min, torch.full((len(b) - n2,), math.inf, device=a.device)])
        self.col_arg = torch.cat([self.col_arg, torch.zeros(len(b) - n2, dtype=torch.long, device=a.device)])
        dist, idx = [self.dist], [self.idx]
        if n2 < len(b):  # the rows seen so far against the new rows of set 2
            dist, idx = [], []
            for start, d in _sq_dist_chunks(a[:n1], b[n2:], self.chunk):  # the k nearest new rows, merged with the
                v, i = self._block(d, start, n2).topk(min(k, d.shape[1]), dim=1, largest=False)  # k nearest so far
                v = torch.cat([self.dist[start : start + len(d)], v.clamp_min_(0).sqrt_()], dim=1)
                i = torch.cat([self.idx[start : start + len(d)], i + n2], dim=1)
                v, order = v.topk(k, dim=1, largest=False)
                dist.append(v)
                idx.append(i.gather(1, order))
        for start, d in _sq_dist_chunks(a[n1:], b, self.chunk):  # the new rows of set 1 against all of set 2
            v, i = self._block(d, n1 + start, 0).topk(k, dim=1, largest=False)
            dist.append(v.clamp_min_(0).sqrt_())
            idx.append(i)
        self.dist, self.idx = torch.cat(dist), torch.cat(idx)
        self.n1, self.n2 = len(a), len(b)
        return self

    def _block(self, d: torch.Tensor, row0: int, col0: int) -> torch.Tensor:
        """Update the columns' nearest rows with ``d`` (n, M), the squared distances of rows ``row0...`` of set 1 to
        rows ``col0...`` of set 2 (``_sq_dist_chunks``' reused block: its values serve until the next one); return
        ``d``."""
        if d.numel():
            cmin, carg = d.min(dim=0)
            cmin = cmin.clamp_min_(0).sqrt_()
            better = cmin < self.col_min[col0:]
            self.col_min[col0:] = torch.where(better, cmin, self.col_min[col0:])
            self.col_arg[col0:] = torch.where(better, carg + row0, self.col_arg[col0:])
        return d

    def fginn(self, centres1: np.ndarray, centres2: np.ndarray, ratio: float | None = 0.8, radius: float = 10.0,
              mutual: bool = True) -> Matches:
        """``fginn_match`` on the sets as last updated; ``centres1`` ``(N1, 2)``, ``centres2`` ``(N2, 2)``."""
        if self.n1 == 0 or self.n2 == 0:
            return Matches.empty()
        c1, c2 = np.asarray(centres1, np.float64), np.asarray(centres2, np.float64)
        if len(c1) != self.n1 or len(c2) != self.n2:
            raise ValueError(f"centres of {len(c1)} and {len(c2)} points for {self.n1} and {self.n2} rows")
        dist, idx = self.dist.cpu().numpy(), self.idx.cpu().numpy()
        n1, k = dist.shape
        nn = idx[:, 0]
        far = np.linalg.norm(c2[idx] - c2[nn][:, None], axis=2) > radius  # (N1, k)
        far[:, 0] = False
        second = np.where(far.any(axis=1), far.argmax(axis=1), k - 1)
        d1 = dist[:, 0]
        d2 = dist[np.arange(n1), second] if k > 1 else np.full(n1, np.nan, np.float32)
        ok = np.ones(n1, bool)
        if ratio is not None:
            ok &= d1.astype(np.float64) < ratio * d2.astype(np.float64)
        if mutual:
            back = self.col_arg.cpu().numpy()[nn]
            ok &= np.linalg.norm(c1[back] - c1, axis=1) <= radius
        q = np.flatnonzero(ok)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = np.where(d1[q] == d2[q], 1.0, d1[q] / d2[q]).astype(np.float32)
        return Matches(q.astype(np.int64), nn[q].astype(np.int64), d1[q].astype(np.float32), ratios)


def fginn_match(
    desc1: torch.Tensor | np.ndarray,
    desc2: torch.Tensor | np.ndarray,
    centres1: np.ndarray,
    centres2: np.ndarray,
    *,
    ratio: float | None = 0.8,
    radius: float = 10.0,
    mutual: bool = True,
    candidates: int = 16,
    chunk: int = 512,
) -> Matches:
    """First-geometrically-inconsistent nearest-neighbour matching (FGINN) with an adapted mutual check.

    For each row ``i`` of ``desc1``: its nearest neighbour ``j`` in ``desc2`` (L2), and as "second"
    the nearest row of ``desc2`` whose centre lies more than ``radius`` pixels from ``centres2[j]``
    (among the ``candidates`` nearest; if none of them is that far, the farthest of them, which
    makes the test stricter). The match passes if ``d1 < ratio * d2``. The mutual check keeps it
    if the nearest row of ``desc1`` to ``j`` lies within ``radius`` pixels of ``centres1[i]`` (it is
    ``i`` itself, or the same point from another view).

    Args:
        desc1, desc2: ``(N1, D)``, ``(N2, D)`` descriptors (numpy or torch; computed in float32).
        centres1, centres2: ``(N1, 2)``, ``(N2, 2)`` keypoint centres in pixels of their images.
        ratio: threshold in (0, 1], or ``None`` for no ratio test.
        radius: pixels; neighbours nearer than this to the first one are the same point.
        mutual: apply the (adapted) mutual check.
        candidates: neighbours examined per row.
        chunk: rows of ``desc1`` per block (memory: ``chunk * N2`` floats).

    Returns:
        ``Matches`` sorted by ``query_idx``; ``ratios`` are ``d1 / d2`` with the FGINN ``d2``.
    """
    table = Neighbours(candidates, chunk).update(desc1, desc2)
    return table.fginn(centres1, centres2, ratio=ratio, radius=radius, mutual=mutual)


def _take(m: Matches, index: np.ndarray) -> Matches:
    """The matches of ``m`` at ``index`` (a bool mask or integer positions), in that order."""
    return Matches(m.query_idx[index], m.train_idx[index], m.distances[index], m.ratios[index])


def _join(a: Matches, b: Matches) -> Matches:
    """``a``'s matches, then ``b``'s (not sorted, duplicates kept)."""
    return Matches(*(np.concatenate([x, y]) for x, y in zip(
        (a.query_idx, a.train_idx, a.distances, a.ratios), (b.query_idx, b.train_idx, b.distances, b.ratios),
        strict=True)))


def remove_duplicates(points1: np.ndarray, points2: np.ndarray, order: np.ndarray | None = None,
                      radius: float = 2.0) -> np.ndarray:
    """Which correspondences to keep: one of each group that lies within ``radius`` pixels on both sides.

    Greedy in ``order`` (best first, e.g. by ratio; default: as given): a correspondence is dropped
    if an already kept one is within ``radius`` of it in image 1 **and** in image 2.

    Args:
        points1, points2: ``(M, 2)`` pixel positions.
        order: ``(M,)`` permutation, best first.
        radius: pixels.

    Returns:
        ``(M,)`` bool mask of the kept ones.
    """
    m = len(points1)
    keep = np.zeros(m, bool)
    order = np.arange(m) if order is None else np.asarray(order)
    cells: dict[tuple[int, int], list[int]] = {}
    p1, p2 = np.asarray(points1, np.float64), np.asarray(points2, np.float64)
    for i in order.tolist():
        cx, cy = int(p1[i, 0] // radius), int(p1[i, 1] // radius)
        near = [j for dx in (-1, 0, 1) for dy in (-1, 0, 1) for j in cells.get((cx + dx, cy + dy), ())]
        if any(np.hypot(*(p1[j] - p1[i])) <= radius and np.hypot(*(p2[j] - p2[i])) <= radius for j in near):
            continue
        keep[i] = True
        cells.setdefault((cx, cy), []).append(i)
    return keep


# --- verification --------------------------------------------------------------------------------


def align_matches(greys: Sequence[torch.Tensor], frames1: np.ndarray, frames2: np.ndarray,
                  rows: np.ndarray, pairs: np.ndarray | None = None,
                  cache: dict[tuple[int, int], np.ndarray] | None = None) -> np.ndarray:
    """``frames2`` (M, 2, 3) with the centres of ``rows`` (bool (M,)) moved so that their patches match those of
    ``frames1`` in image 1 (``hardnet_desc.core.align.align_frames``; ``greys``: the two grey tensors).

    A feature of a view of tilt ``t`` is placed up to ``t`` times less precisely along one axis than one of the
    original image; aligned, the correspondences fit a fundamental matrix at 1 px as the true ones should. On 122
    real wide pairs the relative pose from ``match_wide``'s inliers was more precise (pose AUC@5 0.40 -> 0.44; "Real
    wide pairs, round 7" in docs/wide-baseline-log.md).

    With ``pairs`` (M, 2), the features' rows in the two images, and a ``cache`` dict, a pair already in ``cache``
    takes its centre from there and the others are added to it (each row is aligned on its own, so the centres are
    those of aligning them again: ``match_wide`` keeps the pairs of earlier steps).
    """
    out = frames2.copy()
    index = np.flatnonzero(rows)
    if cache is not None:  # the pairs aligned before take their centres from the cache
        keys = [tuple(k) for k in np.asarray(pairs)[index].tolist()]
        for i, key in zip(index, keys, strict=True):
            if key in cache:
                out[i, :, 2] = cache[key]
        new = np.array([key not in cache for key in keys], bool)
        index, keys = index[new], [key for key, n in zip(keys, new, strict=True) if n]
    if len(index):
        centres, _ = align_frames(*greys, torch.from_numpy(frames1[index]), torch.from_numpy(frames2[index]))
        out[index, :, 2] = centres.cpu().numpy()
    if cache is not None:
        cache.update(zip(keys, out[index, :, 2], strict=True))
    return out


def verify(
    points1: np.ndarray,
    points2: np.ndarray,
    geometry: str = "homography",
    threshold: float = 3.0,
    min_inliers: int | None = None,
    size1: tuple[int, int] | None = None,
    size2: tuple[int, int] | None = None,
    frames1: np.ndarray | None = None,
    frames2: np.ndarray | None = None,
) -> tuple[np.ndarray | None, np.ndarray, str]:
    """MAGSAC++ (OpenCV's USAC) of a homography or fundamental matrix, with the checks that make
    "no model" the answer rather than a wrong one.

    * fewer than ``min_inliers`` inliers (default ``MIN_INLIERS[geometry]``): no model;
    * a homography that sends some of its inliers through the horizon (the plane would be seen from
      behind), or one that the fit with 2/3 of the threshold does not confirm (they land more than
      ``AGREEMENT`` of image 1's diagonal apart somewhere in the part of image 1 (``size1 = (height,
      width)``) that the model shows in image 2 (``size2``), see ``_settled``; only with ``size1``): no model;
    * a homography whose inliers' affine frames (``frames1``, ``frames2`` (M, 2, 3), the matched features'
      frames in the original images, if given) mostly disagree with it: fewer than ``FRAME_SHARE`` of them
      agree with its local affine map (``frames_agree``): no model. RANSAC fits frame centres only, so the
      frames are evidence it has not used;
    * a fundamental matrix that the fit with 2/3 of the threshold does not confirm (it keeps fewer
      than ``AGREEMENT_SHARE`` of the inliers within the threshold): no model;
    * a fundamental matrix of which fewer than ``COHERENT_SHARE`` of the inliers have a neighbour inlier where
      their frames predict it (``coherent``; only with frames): no model. Evidence against false matches that
      a fundamental matrix fits by chance, e.g. at the same height of level cameras;
    * a fundamental matrix whose inliers lie mostly on one plane (``PLANE_SHARE`` of them fit a
      homography and fewer than ``OFF_PLANE_MIN`` lie off it) is not determined by them: the
      homography is reported instead (geometry ``"homography"``), as DEGENSAC advises.

    A homography that passes is refined on its inliers by robust least squares (``_refine``); the checks
    above are made on MAGSAC++'s model, so the refinement never turns "no model" into a model.

    Returns:
        ``(model (3, 3) or None, inliers (M,) bool, geometry)``; ``inliers`` is all False without a model.
    """
    min_inliers = MIN_INLIERS[geometry] if min_inliers is None else min_inliers
    none = np.zeros(len(points1), bool)
    if len(points1) < max(min_inliers, 8 if geometry == "fundamental" else 4):
        return None, none, geometry
    p1, p2 = np.float64(points1), np.float64(points2)
    if geometry == "homography":
        model, inliers = fit_geometry(p1, p2, "homography", threshold)
        if (model is None or inliers.sum() < min_inliers
                or (size1 and not _settled(model, inliers, p1, p2, threshold, size1, size2))
                or not _frames_settled(model, inliers, frames1, frames2)):
            return None, none, geometry
        return (*_refine(model, inliers, p1, p2, threshold, min_inliers), geometry)
    model, inliers = fit_geometry(p1, p2, "fundamental", threshold)
    if model is None or model.shape != (3, 3):
        return None, none, geometry
    if (inliers.sum() < min_inliers or not _f_settled(p1, p2, inliers, threshold)
            or not _coherent_settled(p1, p2, inliers, frames1, frames2)):
        return None, none, geometry
    h, on_plane = fit_geometry(p1[inliers], p2[inliers], "homography", max(threshold, 2.0))
    if h is not None and on_plane.sum() >= PLANE_SHARE * inliers.sum() and (~on_plane).sum() < OFF_PLANE_MIN:
        plane = np.zeros(len(p1), bool)
        plane[np.flatnonzero(inliers)[on_plane]] = True
        if ((size1 and not _settled(h, on_plane, p1[inliers], p2[inliers], max(threshold, 2.0), size1, size2))
                or not _frames_settled(h, plane, frames1, frames2)):
            return None, none, geometry
        h, plane = _refine(h, plane, p1, p2, max(threshold, 2.0), min_inliers)
        return h, plane, "homography"
    return model, inliers, geometry


def frames_agree(h: np.ndarray, frames1: np.ndarray, frames2: np.ndarray, scale: float = 2.0,
                 angle: float = 30.0) -> np.ndarray:
    """``(M,)`` bool: whether each matched pair of affine frames agrees with homography ``h``.

    A true correspondence's frames ``[A1 | c1]``, ``[A2 | c2]`` (``(M, 2, 3)``, as in ``hardnet_desc.core.patches``)
    cover the same patch, so ``A2 ~ J A1`` with ``J`` the local affine map of ``h`` at ``c1``. They agree when
    ``D = J^-1 A2 A1^-1`` stretches by less than ``scale`` and shrinks by less than ``1 / scale`` in every
    direction (its singular values) and turns by less than ``angle`` degrees.
    """
    f1, f2 = np.asarray(frames1, np.float64), np.asarray(frames2, np.float64)
    if len(f1) == 0:
        return np.zeros(0, bool)
    j = homography_jacobian(h, f1[:, :, 2])
    with np.errstate(divide="ignore", invalid="ignore"):
        good = np.isfinite(j).all(axis=(1, 2)) & (np.abs(np.linalg.det(j)) > 1e-12)
        d = np.full((len(f1), 2, 2), np.nan)
        d[good] = np.linalg.solve(j[good], f2[good, :, :2] @ np.linalg.inv(f1[good, :, :2]))
        sv = np.full((len(f1), 2), np.nan)
        sv[good] = np.linalg.svd(d[good], compute_uv=False)
        turn = np.degrees(np.abs(np.arctan2(d[:, 1, 0] - d[:, 0, 1], d[:, 0, 0] + d[:, 1, 1])))
        return good & (sv[:, 0] < scale) & (sv[:, 1] > 1 / scale) & (turn < angle)


def coherent(points1: np.ndarray, points2: np.ndarray, frames1: np.ndarray, frames2: np.ndarray,
             radius: float = COHERENT_RADIUS, tolerance: float = 0.3, floor: float = 8.0) -> np.ndarray:
    """``(M,)`` bool: whether each correspondence has a neighbour that its affine frames predict.

    Correspondence ``i`` (``points1/2`` ``(M, 2)``, frames ``(M, 2, 3)`` as in ``hardnet_desc.core.patches``)
    maps a nearby point ``x`` of image 1 to about ``points2[i] + A (x - points1[i])``, ``A = A2 A1^-1`` of its
    frames. It is coherent when some other correspondence ``j`` within ``radius`` px of it in image 1 lands
    there in image 2, within ``max(floor, tolerance * distance)`` px. A true match on a surface has true
    neighbours; a false match that a model happens to fit rarely does, which RANSAC on points cannot see.
    """
    from scipy.spatial import cKDTree  # here, as geometry.refine_homography imports scipy

    p1, p2 = np.asarray(points1, np.float64), np.asarray(points2, np.float64)
    f1, f2 = np.asarray(frames1, np.float64), np.asarray(frames2, np.float64)
    out = np.zeros(len(p1), bool)
    if len(p1) < 2:
        return out
    pairs = cKDTree(p1).query_pairs(radius, output_type="ndarray")  # (P, 2), i < j: memory grows with P, not M^2
    if len(pairs) == 0:
        return out
    a = f2[:, :, :2] @ np.linalg.inv(f1[:, :, :2])  # each correspondence's local map, once
    i, j = np.concatenate([pairs, pairs[:, ::-1]]).T  # both directions: i predicts j
    d1 = p1[j] - p1[i]
    err = np.linalg.norm(p2[i] + np.einsum("nkl,nl->nk", a[i], d1) - p2[j], axis=1)
    good = err < np.maximum(floor, tolerance * np.linalg.norm(d1, axis=1))
    out[i[good]] = True
    return out


def scattered(points1: np.ndarray, points2: np.ndarray, inliers: np.ndarray, size1: tuple[int, int],
              size2: tuple[int, int] | None = None) -> bool:
    """Whether a model's ``inliers`` (bool (M,) over ``points1/2`` (M, 2)) look like a chance fit: fewer than
    ``SCATTERED_INLIERS``, below ``SCATTERED_SHARE`` of the M correspondences, and their convex hull covers more than
    ``SCATTERED_AREA`` of image 1 (``size1 = (height, width)``) or of image 2 (``size2``, default ``size1``).

    False matches that a fundamental matrix fits by chance are a random few of the correspondences, so they lie all
    over the images; the true matches of a wide pair gather on the part of the scene that both images show (on real
    pairs the right models with fewer than 40 inliers covered 4-7 % of the image, one 44 %).
    """
    n = int(np.count_nonzero(inliers))
    if n >= SCATTERED_INLIERS or n >= SCATTERED_SHARE * len(inliers) or n < 3:
        return False
    areas = [cv2.contourArea(cv2.convexHull(np.float32(p[inliers]))) / (h * w)
             for p, (h, w) in ((points1, size1), (points2, size2 or size1))]
    return max(areas) > SCATTERED_AREA


def _frames_settled(h: np.ndarray, inliers: np.ndarray, frames1: np.ndarray | None,
                    frames2: np.ndarray | None) -> bool:
    """Whether ``FRAME_SHARE`` of the ``inliers``' frames agree with ``h`` (``frames_agree``); True without frames."""
    if frames1 is None or frames2 is None:
        return True
    return bool(frames_agree(h, np.asarray(frames1)[inliers], np.asarray(frames2)[inliers]).mean() >= FRAME_SHARE)


def _coherent_settled(p1: np.ndarray, p2: np.ndarray, inliers: np.ndarray, frames1: np.ndarray | None,
                      frames2: np.ndarray | None) -> bool:
    """Whether ``COHERENT_SHARE`` of the ``inliers`` are ``coherent`` (as ``_frames_settled`` for homographies);
    True without frames."""
    if frames1 is None or frames2 is None:
        return True
    f1, f2 = np.asarray(frames1)[inliers], np.asarray(frames2)[inliers]
    return bool(coherent(p1[inliers], p2[inliers], f1, f2).mean() >= COHERENT_SHARE)


def _f_settled(p1: np.ndarray, p2: np.ndarray, inliers: np.ndarray, threshold: float) -> bool:
    """Whether the fundamental matrix fitted with 2/3 of ``threshold`` keeps ``AGREEMENT_SHARE`` of the first
    fit's ``inliers`` within ``threshold`` (Sampson distance): a model many correspondences determine."""
    check, _ = fit_geometry(p1, p2, "fundamental", threshold * 2 / 3)
    if check is None or check.shape != (3, 3):
        return False
    return bool(np.mean(sampson_error_px(p1[inliers], p2[inliers], check) < threshold) >= AGREEMENT_SHARE)


def _refine(h: np.ndarray, inliers: np.ndarray, p1: np.ndarray, p2: np.ndarray, threshold: float,
            min_inliers: int) -> tuple[np.ndarray, np.ndarray]:
    """An accepted homography refined on its inliers (``geometry.refine_homography``: the Huber loss, 1 px, of
    the symmetric transfer error); ``h`` and its ``inliers`` are kept when the refined model has fewer than
    ``min_inliers`` within ``threshold``.

    Returns:
        ``(model (3, 3), inliers (M,) bool)``, inliers within ``threshold`` (forward transfer error, px).
    """
    refined = refine_homography(h, p1, p2, threshold)
    within = transfer_error(refined, p1, p2) < threshold
    if refined is h or within.sum() < min_inliers:
        return h, inliers
    return refined, within


def _side(h: np.ndarray, points: np.ndarray) -> int:
    """``1`` or ``-1``: the sign of ``w`` of homography ``h`` at all ``points`` (``(M, 2)``, image 1); ``0`` if the
    horizon runs between them (some would be seen from behind)."""
    side = np.sign(np.hstack([points, np.ones((len(points), 1))]) @ h[2])
    return int(side[0]) if len(side) and ((side > 0).all() or (side < 0).all()) else 0


def _settled(h: np.ndarray, inliers: np.ndarray, p1: np.ndarray, p2: np.ndarray, threshold: float,
             size1: tuple[int, int], size2: tuple[int, int] | None = None) -> bool:
    """Whether homography ``h`` keeps its ``inliers`` on one side of the horizon (all ``w`` of one sign) and the fit
    with 2/3 of ``threshold`` agrees with it within ``AGREEMENT`` of image 1's diagonal over the part of image 1
    that ``h`` shows in image 2 (``size1``, ``size2 = (height, width)``; image 2 as large as image 1 if
    ``None``): a grid of 16 x 16 points of image 1 that ``h`` maps in front of image 2's camera and inside
    image 2, and the corners of the inliers' convex hull.

    The region checked is the one the model is used in, not image 1's corners: where image 1 is oblique too,
    the plane's horizon can run through image 1, and the true homography then sends some of its corners
    through the horizon of image 2 or far outside it.
    """
    support = p1[inliers]
    side = _side(h, support)
    if side == 0:
        return False
    check, _ = fit_geometry(p1, p2, "homography", threshold * 2 / 3)
    if check is None:
        return False
    rows, cols = size1
    rows2, cols2 = size2 or size1
    gx, gy = np.meshgrid(np.linspace(0, cols - 1, 16), np.linspace(0, rows - 1, 16))
    grid = np.stack([gx.ravel(), gy.ravel(), np.ones(gx.size)], axis=1)
    moved = grid @ h.T
    front = moved[:, 2] * side > 1e-12
    xy = moved[front, :2] / moved[front, 2:]
    shown = grid[front][(xy[:, 0] >= 0) & (xy[:, 0] <= cols2 - 1) & (xy[:, 1] >= 0) & (xy[:, 1] <= rows2 - 1)]
    hull = cv2.convexHull(support.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    points = np.vstack([shown, np.hstack([hull, np.ones((len(hull), 1))])])
    a, b = points @ h.T, points @ check.T
    if not (b[:, 2] * side > 1e-12).all():
        return False
    gap = np.linalg.norm(a[:, :2] / a[:, 2:] - b[:, :2] / b[:, 2:], axis=1).max()
    return bool(gap <= AGREEMENT * math.hypot(rows, cols))


def verify_prior(
    prior: np.ndarray,
    points1: np.ndarray,
    points2: np.ndarray,
    threshold: float = 1.0,
    min_inliers: int | None = None,
    size1: tuple[int, int] | None = None,
    size2: tuple[int, int] | None = None,
    frames1: np.ndarray | None = None,
    frames2: np.ndarray | None = None,
) -> tuple[np.ndarray | None, np.ndarray, str]:
    """``verify`` (fundamental) of the correspondences that agree with ``prior``, the model of the original
    images that had too few inliers to be stated.

    A view step sees the original images' matches again among many new ones; on real wide pairs a wrong
    fundamental matrix of the new ones can outvote a right one of the originals (docs/wide-baseline-log.md). So
    the view steps first verify the correspondences within ``threshold`` (Sampson) of ``prior``: if at least
    ``min_inliers`` (default ``MIN_INLIERS["fundamental"]``) agree and pass ``verify``, that model is stated.

    Returns:
        as ``verify``, with ``inliers`` (M,) over all the correspondences.
    """
    none = np.zeros(len(points1), bool)
    if len(points1) == 0:
        return None, none, "fundamental"
    p1, p2 = np.float64(points1), np.float64(points2)
    near = sampson_error_px(p1, p2, prior) < threshold
    need = MIN_INLIERS["fundamental"] if min_inliers is None else min_inliers
    if near.sum() < need:
        return None, none, "fundamental"
    model, inliers, kind = verify(p1[near], p2[near], "fundamental", threshold, min_inliers, size1, size2,
                                   *(None if f is None else np.asarray(f)[near] for f in (frames1, frames2)))
    if model is None:
        return None, none, "fundamental"
    full = none.copy()
    full[np.flatnonzero(near)[inliers]] = True
    return model, full, kind


def ratio_tries(ratio: float | None, view_ratio: float | None) -> list[float | None]:
    """The FGINN ratio thresholds a step verifies with, stricter first (``None``: no ratio test, the loosest)."""
    first, second = sorted((ratio, view_ratio), key=lambda r: math.inf if r is None else r)
    return [first] if first == second else [first, second]


def check_min_inliers(value: int | None, name: str = "min_inliers") -> None:
    """Raise unless ``value`` (the argument ``name``) is ``None`` or an integer >= 1."""
    check_integer(value, name, 1, "None: the default")


# --- rectified view and guided matching -------------------------------------------------------------


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


def _rectify(
    model: np.ndarray, matches: Matches, inliers: np.ndarray, feats: Sequence[Features],
    tensors: Sequence[torch.Tensor], greys: Sequence[np.ndarray], descriptor: HardNetDescriptor, threshold: float,
    min_inliers: int, max_keypoints: int | None, fginn_radius: float, duplicate_radius: float,
) -> tuple[Matches, np.ndarray, np.ndarray]:
    """A verified homography found with synthesized views, fitted again on the matches of a rectified view.

    The image that shows the plane smaller is drawn in the other's frame by the model (``rectified_view``); there
    the two look alike, up to the model's error, so SIFT finds the same points in both and their descriptors
    agree. Its features (frames mapped back, described from the original) are appended to ``feats`` and matched
    with FGINN (ratio ``RECTIFIED_RATIO``) to the other image's step-0 features (those of the synthesized views
    are placed less precisely, by up to the view's tilt along one axis); those within ``RECTIFIED_GATE``
    of image 2's diagonal of the model, with the verified inliers, are fitted afresh (MAGSAC++, then ``_refine``).
    Unlike guided matching within the threshold, this lets correspondences the model misses by more than the
    threshold correct it. The gate keeps the new model near the verified one, so ``verify``'s agreement check
    is not made again (it refused some of the better models of thin slivers); the inliers must be in front and
    ``FRAME_SHARE`` of their frames agree.

    Returns:
        ``(matches, inliers, model)``: the new ones if the new model has at least as many inliers as the old,
        else the inputs.
    """
    sizes = (greys[0].shape, greys[1].shape)
    p1 = feats[0].centres[matches.query_idx[inliers]]
    drawn, view = rectified_view(model, p1, *sizes)
    frames, desc, _ = describe_views(descriptor, tensors[drawn], [view], max_keypoints, greys[drawn], tensors[drawn])
    f = feats[drawn]
    offset = len(f.frames)
    f.frames, f.descriptors = torch.cat([f.frames, frames]), torch.cat([f.descriptors, desc])
    f.view_index = np.concatenate([f.view_index, np.full(len(frames), len(f.views), np.int64)])
    f.views.append(view)
    other = feats[1 - drawn]
    plain = np.flatnonzero(other.view_index == 0)
    m = fginn_match(other.descriptors[torch.from_numpy(plain)], desc, other.centres[plain],
                    frames[:, :, 2].double().numpy(), ratio=RECTIFIED_RATIO, radius=fginn_radius)
    idx = (plain[m.query_idx], m.train_idx + offset) if drawn == 1 else (m.train_idx + offset, plain[m.query_idx])
    found = Matches(*idx, m.distances, m.ratios)
    gate = transfer_error(model, feats[0].centres[found.query_idx], feats[1].centres[found.train_idx])
    both = _join(_take(matches, inliers), _take(found, gate < RECTIFIED_GATE * math.hypot(*sizes[1])))
    q1, q2 = feats[0].centres[both.query_idx], feats[1].centres[both.train_idx]
    keep = np.flatnonzero(remove_duplicates(q1, q2, None, duplicate_radius))  # the verified inliers first
    both = _take(both, keep[np.argsort(both.query_idx[keep], kind="stable")])
    q1, q2 = feats[0].centres[both.query_idx], feats[1].centres[both.train_idx]
    new, new_inliers = fit_geometry(q1, q2, "homography", threshold)
    if (new is None or new_inliers.sum() < max(inliers.sum(), min_inliers) or not _side(new, q1[new_inliers])
            or not _frames_settled(new, new_inliers, feats[0].frames.numpy()[both.query_idx],
                                   feats[1].frames.numpy()[both.train_idx])):
        return matches, inliers, model
    new, new_inliers = _refine(new, new_inliers, q1, q2, threshold, min_inliers)
    return both, new_inliers, new


def guided_matches(h: np.ndarray, features1: Features, features2: Features, radius: float = 3.0,
                   max_distance: float = GUIDED_DISTANCE, duplicate_radius: float = 2.0) -> Matches:
    """The correspondences a homography predicts: each feature of image 1 with the nearest descriptor among the
    features of image 2 within ``radius`` pixels of where ``h`` sends its centre.

    A pair is kept if the descriptors are nearer than ``max_distance`` (L2) and the frames agree with ``h``
    (``frames_agree``); then duplicates are removed (``remove_duplicates``, by distance). No ratio test: the
    model has already ruled out every other place, which is what gives wide pairs, whose true matches have high
    ratios, more correspondences and a better spread over the image.

    Returns:
        ``Matches`` sorted by ``query_idx``; ``ratios`` are NaN (no second neighbour is looked at).
    """
    from scipy.spatial import cKDTree  # here, as geometry.refine_homography imports scipy

    c1, c2 = features1.centres, features2.centres
    if len(c1) == 0 or len(c2) == 0:
        return Matches.empty()
    moved = np.c_[c1, np.ones(len(c1))] @ np.asarray(h, np.float64).T
    front = np.flatnonzero(moved[:, 2] * np.sign(np.median(moved[:, 2])) > 1e-12)
    near = cKDTree(c2).query_ball_point(moved[front, :2] / moved[front, 2:], radius)
    counts = np.fromiter(map(len, near), np.int64, len(near))
    if counts.sum() == 0:
        return Matches.empty()
    rows = np.repeat(front, counts)
    cols = np.concatenate([np.asarray(n, np.int64) for n in near if n])
    d1, d2 = features1.descriptors, features2.descriptors
    dist = (d1[torch.from_numpy(rows).to(d1.device)] - d2[torch.from_numpy(cols).to(d2.device)]).norm(dim=1)
    dist = dist.float().cpu().numpy()
    order = np.lexsort((dist, rows))  # by row, nearest first
    best = order[np.r_[True, rows[order][1:] != rows[order][:-1]]]
    i, j, dist = rows[best], cols[best], dist[best]
    keep = dist < max_distance
    keep[keep] = frames_agree(h, features1.frames.numpy()[i[keep]], features2.frames.numpy()[j[keep]])
    i, j, dist = i[keep], j[keep], dist[keep]
    unique = remove_duplicates(c1[i], c2[j], np.argsort(dist, kind="stable"), duplicate_radius)
    return Matches(i[unique], j[unique], dist[unique].astype(np.float32), np.full(unique.sum(), np.nan, np.float32))


def _densify(
    model: np.ndarray, matches: Matches, inliers: np.ndarray, feats: Sequence[Features], threshold: float,
    min_inliers: int, duplicate_radius: float,
) -> tuple[Matches, np.ndarray, np.ndarray]:
    """A verified homography's matches with the guided ones added (``guided_matches``), the model refined on those
    of them whose frames agree with it (``frames_agree``, ``geometry.refine_homography``) and the inliers within
    ``threshold`` of the refined model; the inputs as they were if fewer than ``min_inliers`` would remain.

    The frames leave out most of the near-misses that fit a model within the threshold but not the plane
    (on the validation sets the refit on all of them left two pairs 1.0-1.3 % off at the corners, this one
    0.9 %; docs/wide-baseline-log.md).

    Returns:
        ``(matches sorted by query_idx, inliers (M,) bool, model (3, 3))``.
    """
    guided = guided_matches(model, feats[0], feats[1], threshold, duplicate_radius=duplicate_radius)
    known = set(zip(matches.query_idx.tolist(), matches.train_idx.tolist(), strict=True))
    new = np.array([(q, t) not in known for q, t in zip(guided.query_idx.tolist(), guided.train_idx.tolist(),
                                                          strict=True)], bool)
    guided = _take(guided, new)
    both = _join(matches, guided)
    p1, p2 = feats[0].centres[both.query_idx], feats[1].centres[both.train_idx]
    first = np.argsort(matches.ratios, kind="stable")  # the matches that verified first, then the guided ones
    order = np.r_[first, len(matches) + np.argsort(guided.distances, kind="stable")]
    keep = remove_duplicates(p1, p2, order, duplicate_radius)
    both = _take(both, np.flatnonzero(keep)[np.argsort(both.query_idx[keep], kind="stable")])
    p1, p2 = feats[0].centres[both.query_idx], feats[1].centres[both.train_idx]
    agree = frames_agree(model, feats[0].frames.numpy()[both.query_idx], feats[1].frames.numpy()[both.train_idx])
    refined = refine_homography(model, p1[agree], p2[agree], threshold)
    within = transfer_error(refined, p1, p2) < threshold
    if within.sum() < min_inliers:
        return matches, inliers, model
    return both, within, refined


# --- the iteration -------------------------------------------------------------------------------


def check_view_keypoints(view_keypoints: int | Sequence[int | None] | None,
                         name: str = "view_keypoints") -> list[int | None]:
    """``match_wide``'s ``view_keypoints`` as one entry per step with views (the last serves any later step).

    Raises:
        ValueError: an empty sequence, a negative number; TypeError: a number that is not an integer. The
            message names the value ``name``.
    """
    if isinstance(view_keypoints, Sequence) and not isinstance(view_keypoints, (str, bytes)):
        if not view_keypoints:
            raise ValueError(f"{name} must be a number or a non-empty sequence (one per step with views), "
                             "got an empty sequence")
        for k, n in enumerate(view_keypoints):
            check_max_keypoints(n, f"{name}[{k}]")
        return list(view_keypoints)
    check_max_keypoints(view_keypoints, name)
    return [view_keypoints]


def _step_keypoints(max_keypoints: int | None, view_keypoints: int | Sequence[int | None] | None,
                    steps: Sequence[Sequence[ViewSpec]]) -> list[int | None]:
    """Each step's keypoints per view: ``max_keypoints`` at a step without views, else ``view_keypoints``' entry for
    it (``match_wide``); raises as ``match_wide`` states."""
    per_view_step = check_view_keypoints(view_keypoints)
    limits, k = [], 0
    for views in steps:
        limits.append(per_view_step[min(k, len(per_view_step) - 1)] if views else max_keypoints)
        k += bool(views)
    return limits


def match_wide(
    image1: ImageLike,
    image2: ImageLike,
    descriptor: HardNetDescriptor,
    *,
    geometry: str = "homography",
    threshold: float = 3.0,
    ratio: float | None = 0.8,
    view_ratio: float | None = VIEW_RATIO,
    max_keypoints: int | None = DEFAULT_MAX_KEYPOINTS,
    view_keypoints: int | Sequence[int | None] | None = DEFAULT_VIEW_KEYPOINTS,
    steps: Sequence[Sequence[ViewSpec]] = DEFAULT_STEPS,
    rotation_step: float = ROTATION_STEP,
    view_max_side: int = DEFAULT_VIEW_MAX_SIDE,
    min_inliers: int | None = None,
    fginn_radius: float = 10.0,
    duplicate_radius: float = 2.0,
    stop_inliers: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> WideMatch:
    """Match two images, adding synthesized views step by step until a model is verified.

    Step 0 describes each original image (``max_keypoints`` strongest SIFT keypoints); step ``s``
    adds the views of tilts ``steps[s]`` at their rotations (``view_keypoints`` per view). After
    each step all features so far are matched (``fginn_match``; the distances computed at earlier steps are
    kept, ``Neighbours``), duplicates are removed and the
    model is verified (``verify``; at the view steps with ``ratio``, then with ``view_ratio`` if that
    found nothing); the search stops at the first step whose model has ``stop_inliers`` inliers. With
    ``geometry="fundamental"`` a step-0 model with at least half of ``min_inliers``, and any model with fewer
    than ``stop_inliers``, is verified first at each later step on the correspondences that agree with it
    (``verify_prior``, and no other model is looked for once one has ``min_inliers``); if no step reaches
    ``stop_inliers``, the model with the most inliers is returned, unless its inliers look like a chance fit
    (``scattered``: few, a minority and spread over the images), which gives no model.

    Args:
        image1, image2: as ``HardNetDescriptor.compute`` takes them.
        descriptor: detects and describes.
        geometry: ``"homography"`` or ``"fundamental"``.
        threshold: RANSAC inlier threshold in pixels.
        ratio: FGINN ratio threshold (``None``: off); step 0 uses it alone.
        view_ratio: the steps with views verify the matches passing the stricter of ``ratio`` and
            ``view_ratio`` first and, if they give no model, those passing the looser one (``None``: no test).
        max_keypoints: keypoints of the original image (step 0).
        view_keypoints: keypoints of each synthesized view: one number for every step, or a sequence whose
            ``k``-th entry serves the ``k``-th step with views (its last entry any later one; entries beyond the
            steps are unused). ``None`` or 0: all.
        steps: the views of each step (``DEFAULT_STEPS``): tilts, or ``(tilt, scale)`` for views of the image
            shrunk by ``scale``; the first entry should be ``()``.
        rotation_step: views of tilt ``t`` are ``rotation_step / t`` degrees apart.
        view_max_side: views are made from the image scaled to at most this long side (memory and time).
        min_inliers: no model with fewer; default ``MIN_INLIERS[geometry]``.
        fginn_radius, duplicate_radius: pixels, see ``fginn_match`` and ``remove_duplicates``.
        stop_inliers: a model with as many ends the search; default ``STOP_INLIERS[geometry]``, at least
            ``min_inliers``.
        progress: called with a line of text after each step (e.g. ``print``).

    Returns:
        A ``WideMatch``.

    Raises:
        ValueError: checked before any work: an unknown ``geometry``; a ``threshold`` or ``rotation_step`` that is
            not a positive finite number; a ``view_max_side`` below 16 or ``fginn_radius``, ``duplicate_radius``
            below 0 (or NaN, inf); a ``ratio`` or ``view_ratio`` outside (0, 1]; a negative ``max_keypoints`` or
            ``view_keypoints`` (or entry of it), an empty ``view_keypoints`` sequence; a ``min_inliers`` or
            ``stop_inliers`` below 1; empty ``steps``, or a view of ``steps`` that is not a tilt >= 1 or
            ``(tilt, scale)`` with ``0 < scale <= 1``.
        TypeError: one of these that is not a number (an integer for the counts), or ``threshold=None``.
    """
    check_geometry(geometry, threshold)
    if threshold is None:
        raise TypeError("threshold must be a number of pixels, got None")
    check_ratio(ratio)
    check_ratio(view_ratio, "view_ratio")
    check_max_keypoints(max_keypoints)
    check_number(rotation_step, "rotation_step")
    check_number(view_max_side, "view_max_side", 16, strict=False)
    check_number(fginn_radius, "fginn_radius", strict=False)
    check_number(duplicate_radius, "duplicate_radius", strict=False)
    check_min_inliers(min_inliers)
    check_min_inliers(stop_inliers, "stop_inliers")
    if isinstance(steps, (str, bytes)) or not isinstance(steps, Sequence) or not steps:
        raise ValueError(f"steps must be a non-empty sequence of steps (each a sequence of views), got {steps!r}")
    for views in steps:
        if isinstance(views, (str, bytes)) or not isinstance(views, Sequence):
            raise ValueError(f"a step of steps is a sequence of views (tilts or (tilt, scale)), got {views!r}")
        list(map(view_spec, views))
    limits = _step_keypoints(max_keypoints, view_keypoints, steps)
    clock = time.perf_counter()
    timings = {"features": 0.0, "match": 0.0, "verify": 0.0, "guided": 0.0}
    greys = [to_uint8(image1), to_uint8(image2)]
    sizes = (greys[0].shape, greys[1].shape)
    feats = [Features(torch.zeros(0, 2, 3), torch.zeros(0, 128, device=descriptor.device), np.zeros(0, np.int64))
             for _ in greys]
    tensors = [to_grey_tensor(im, descriptor.device) for im in (image1, image2)]
    table = Neighbours()  # descriptor distances, extended by each step's views
    aligned = {}  # fundamental: (row in image 1, row in image 2) -> the aligned centre in image 2 (align_matches)
    prior = None  # fundamental: the model that guides the next step (verify_prior): a weak one of step 0 or the last
    need = MIN_INLIERS[geometry] if min_inliers is None else min_inliers
    stop = max(STOP_INLIERS[geometry] if stop_inliers is None else stop_inliers, need)
    fallback = None  # fundamental: the step's result whose model has the most inliers, fewer than stop
    for step, tilts in enumerate(steps):
        for g, (grey, f) in enumerate(zip(greys, feats, strict=True)):
            t0 = time.perf_counter()
            scale = min(1.0, view_max_side / max(grey.shape))
            views = ([View(1.0, 0.0, np.eye(2, 3))] if not tilts else
                     make_views(tilts, grey.shape, rotation_step, scale))
            frames, desc, which = describe_views(descriptor, (image1, image2)[g], views, limits[step], grey,
                                                 tensors[g])
            timings["features"] += time.perf_counter() - t0
            f.frames = torch.cat([f.frames, frames])
            f.descriptors = torch.cat([f.descriptors, desc])
            f.view_index = np.concatenate([f.view_index, which + len(f.views)])
            f.views += views
        t0 = time.perf_counter()
        c1, c2 = feats[0].centres, feats[1].centres
        tries = ratio_tries(ratio, view_ratio if tilts else ratio)
        table.update(feats[0].descriptors, feats[1].descriptors)
        matches = table.fginn(c1, c2, ratio=tries[-1], radius=fginn_radius)
        p1, p2 = c1[matches.query_idx], c2[matches.train_idx]
        f1, f2 = feats[0].frames.numpy()[matches.query_idx], feats[1].frames.numpy()[matches.train_idx]
        keep = remove_duplicates(p1, p2, np.argsort(matches.ratios, kind="stable"), duplicate_radius)
        if geometry == "fundamental":  # image 2's centres moved onto image 1's patches (views place them less well)
            f2 = align_matches(tensors, f1, f2, keep, np.stack([matches.query_idx, matches.train_idx], 1), aligned)
            p2 = f2[:, :, 2].astype(np.float64)
        timings["match"] += time.perf_counter() - t0
        for r in tries:  # the stricter ratio first; the looser one only if that finds no model
            t0 = time.perf_counter()
            # the matches passing r are a prefix of the ratio order, so their duplicate removal is keep's
            use = keep & (matches.ratios < r) if r is not None else keep
            model, inliers, kind = (None, None, geometry) if prior is None else verify_prior(
                prior, p1[use], p2[use], threshold, min_inliers, *sizes, f1[use], f2[use])
            if model is None and fallback is None:
                model, inliers, kind = verify(p1[use], p2[use], geometry, threshold, min_inliers, *sizes,
                                              f1[use], f2[use])
            timings["verify"] += time.perf_counter() - t0
            if model is not None:
                break
        if model is None and not tilts and geometry == "fundamental":  # step 0's weaker model guides the views'
            # no frames: with a dozen inliers their coherence says little, and verify_prior checks what it yields
            prior, _, kind = verify(p1[use], p2[use], geometry, threshold, max(8, need // 2), *sizes)
            prior = prior if kind == "fundamental" else None
            kind = geometry
        points = (p1[use], p2[use])
        matches = _take(matches, use)
        if model is not None and kind == "homography":  # more and better spread inliers, a better fit
            t0 = time.perf_counter()
            need_h = MIN_INLIERS[kind] if min_inliers is None else min_inliers
            oblique = tilts or model_tilt(model, p1[use][inliers]) > RECTIFIED_TILT
            for _ in range(RECTIFIED_ROUNDS if oblique else 0):
                old = model
                matches, inliers, model = _rectify(model, matches, inliers, feats, tensors, greys, descriptor,
                                                   threshold, need_h, max_keypoints, fginn_radius, duplicate_radius)
                if model is old:  # refused: another round would draw the same view
                    break
            matches, inliers, model = _densify(model, matches, inliers, feats, threshold, need_h, duplicate_radius)
            points = (feats[0].centres[matches.query_idx], feats[1].centres[matches.train_idx])
            timings["guided"] += time.perf_counter() - t0
        result = WideMatch(feats[0], feats[1], matches, *points, inliers, model, kind,
                           None if model is None else step, timings)
        weak = model is not None and kind == "fundamental" and inliers.sum() < stop and step + 1 < len(steps)
        if progress is not None:
            label = ", ".join(f"{t:g}" + (f" at scale {z:g}" if z < 1 else "") for t, z in map(view_spec, tilts))
            progress(f"step {step} (tilts {label or '1'}): {len(feats[0].views)} + "
                     f"{len(feats[1].views)} views, {len(feats[0].frames)} + {len(feats[1].frames)} features, "
                     f"{len(matches)} matches, {int(inliers.sum())} inliers"
                     + ("" if model is None else f" -> model (fewer than {stop}: next step)" if weak else " -> model"))
        if weak:  # kept; the next step looks for more correspondences that agree with it (verify_prior)
            if fallback is None or inliers.sum() > fallback.inliers.sum():
                fallback = result
            prior = model
            continue
        if model is not None:
            break
    # (a search that ends without a model ends with the last step's result: a weak one sends the search on)
    if fallback is not None and (result.model is None or result.inliers.sum() < fallback.inliers.sum()):
        result = fallback  # the weak model with the most inliers
    # The answer only: refused during the search, such a model no longer guided the later steps (verify_prior), which
    # then fitted larger chance models (docs/wide-baseline-log.md, round 8).
    if geometry == "fundamental" and result.model is not None and scattered(  # or its plane's homography
            result.points1, result.points2, result.inliers, *sizes):
        if progress is not None:
            progress(f"the model's {int(result.inliers.sum())} inliers are few, a minority of the "
                     f"{len(result.inliers)} matches and scattered over the images (a chance fit): no model")
        # as with no model
        result = replace(result, inliers=np.zeros(len(result.inliers), bool), model=None, geometry=geometry, step=None)
    timings["total"] = time.perf_counter() - clock
    return result
