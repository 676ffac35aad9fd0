"""Verification that answers "no model" rather than a wrong one: MAGSAC++ and the checks around it.

``verify`` fits a homography or fundamental matrix with OpenCV's MAGSAC++ (``geometry.fit_geometry``) and states it
only if it has enough inliers and passes checks that RANSAC on points does not make: a homography's inliers on one
side of its horizon and a stricter fit that agrees with it where it is used (``_settled``), their matched affine
frames agreeing with its local affine map (``frames_agree``); a fundamental matrix confirmed by a stricter fit, its
inliers coherent with their neighbours (``coherent``), and its plane's homography instead where one plane holds its
inliers (DEGENSAC's point). ``verify_prior`` verifies the correspondences that agree with an earlier model first;
``scattered`` tells a chance fit of a few false matches; ``thin``, a homography whose support after guided matching is
few distinctive inliers with too many disagreeing frames. The thresholds are measured on the validation sets
(docs/wide-baseline-log.md).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .core.patches import check_integer
from .geometry import (
    check_correspondences,
    check_geometry,
    fit_geometry,
    homography_jacobian,
    refine_homography,
    sampson_error_px,
    transfer_error,
)

#: Verified inliers below which no model is reported.
MIN_INLIERS = {"homography": 15, "fundamental": 25}
#: A fundamental matrix is replaced by a homography when at least this share of its inliers fits
#: the homography and fewer than ``OFF_PLANE_MIN`` lie off that plane.
PLANE_SHARE, OFF_PLANE_MIN = 0.8, 15
#: A homography is stated only if the fit with 2/3 of the threshold maps image 1's corners within this
#: share of its diagonal of the first fit's (with few inliers, far apart views can leave it undetermined).
AGREEMENT = 0.01
#: A fundamental matrix is stated only if the fit with 2/3 of the threshold keeps this share of its inliers.
AGREEMENT_SHARE = 0.8
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
#: ``match_wide(geometry="homography")`` states no model whose support is thin (``thin``): fewer than
#: ``THIN_RATIO_INLIERS`` of its final inliers passed the ratio test (the others came from guided matching) and fewer
#: than ``THIN_FRAME_SHARE`` of its final inliers' frames agree with it (docs/wide-baseline-log.md, round 12).
THIN_RATIO_INLIERS, THIN_FRAME_SHARE = 30, 0.85


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

    A homography that passes is refined on its inliers by robust least squares (``refine_verified``); the checks
    above are made on MAGSAC++'s model, so the refinement never turns "no model" into a model.

    Returns:
        ``(model (3, 3) or None, inliers (M,) bool, geometry)``; ``inliers`` is all False without a model.

    Raises:
        ValueError: an unknown ``geometry`` or a ``threshold`` that is not a positive number; points that are not
            ``(M, 2)`` of one ``M`` (``geometry.check_correspondences``); frames that are not ``(M, 2, 3)`` of that
            ``M``.
    """
    check_geometry(geometry, threshold)
    p1, p2 = check_correspondences(points1, points2)
    _check_frames(frames1, frames2, len(p1))
    min_inliers = MIN_INLIERS[geometry] if min_inliers is None else min_inliers
    none = np.zeros(len(p1), bool)
    if len(p1) < max(min_inliers, 8 if geometry == "fundamental" else 4):
        return None, none, geometry
    if geometry == "homography":
        model, inliers = fit_geometry(p1, p2, "homography", threshold)
        if (model is None or inliers.sum() < min_inliers
                or (size1 and not _settled(model, inliers, p1, p2, threshold, size1, size2))
                or not frames_settled(model, inliers, frames1, frames2)):
            return None, none, geometry
        return (*refine_verified(model, inliers, p1, p2, threshold, min_inliers), geometry)
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
                or not frames_settled(h, plane, frames1, frames2)):
            return None, none, geometry
        h, plane = refine_verified(h, plane, p1, p2, max(threshold, 2.0), min_inliers)
        return h, plane, "homography"
    return model, inliers, geometry


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

    Raises:
        ValueError: points or frames as ``verify`` refuses them.
    """
    p1, p2 = check_correspondences(points1, points2)
    f1, f2 = _check_frames(frames1, frames2, len(p1))
    none = np.zeros(len(p1), bool)
    if len(p1) == 0:
        return None, none, "fundamental"
    near = sampson_error_px(p1, p2, prior) < threshold
    need = MIN_INLIERS["fundamental"] if min_inliers is None else min_inliers
    if near.sum() < need:
        return None, none, "fundamental"
    model, inliers, kind = verify(p1[near], p2[near], "fundamental", threshold, min_inliers, size1, size2,
                                   *(None if f is None else f[near] for f in (f1, f2)))
    if model is None:
        return None, none, "fundamental"
    full = none.copy()
    full[np.flatnonzero(near)[inliers]] = True
    return model, full, kind


def frames_agree(h: np.ndarray, frames1: np.ndarray, frames2: np.ndarray, scale: float = 2.0,
                 angle: float = 30.0) -> np.ndarray:
    """``(M,)`` bool: whether each matched pair of affine frames agrees with homography ``h``.

    A true correspondence's frames ``[A1 | c1]``, ``[A2 | c2]`` (``(M, 2, 3)``, as in ``hardnet_desc.core.patches``)
    cover the same patch, so ``A2 ~ J A1`` with ``J`` the local affine map of ``h`` at ``c1``. They agree when
    ``D = J^-1 A2 A1^-1`` stretches by less than ``scale`` and shrinks by less than ``1 / scale`` in every
    direction (its singular values) and turns by less than ``angle`` degrees. ``ValueError`` for frames that are not
    ``(M, 2, 3)`` of one ``M``.
    """
    f1, f2 = _check_frames(frames1, frames2)
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
    ``ValueError`` for points or frames of other shapes or row counts.
    """
    from scipy.spatial import cKDTree  # here, as geometry.refine_homography imports scipy

    p1, p2 = check_correspondences(points1, points2)
    f1, f2 = _check_frames(frames1, frames2, len(p1))
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
    pairs the right models with fewer than 40 inliers covered 4-7 % of the image, one 44 %). ``ValueError`` for points
    of other shapes or row counts, or ``inliers`` that is not a bool mask over them.
    """
    points1, points2 = check_correspondences(points1, points2)
    inliers = _check_mask(inliers, len(points1))
    n = int(np.count_nonzero(inliers))
    if n >= SCATTERED_INLIERS or n >= SCATTERED_SHARE * len(inliers) or n < 3:
        return False
    areas = [cv2.contourArea(cv2.convexHull(np.float32(p[inliers]))) / (h * w)
             for p, (h, w) in ((points1, size1), (points2, size2 or size1))]
    return max(areas) > SCATTERED_AREA


def thin(h: np.ndarray, inliers: np.ndarray, ratios: np.ndarray, frames1: np.ndarray, frames2: np.ndarray) -> bool:
    """Whether a homography's final support is thin: fewer than ``THIN_RATIO_INLIERS`` of its ``inliers`` (bool
    ``(M,)``) passed the ratio test (``ratios`` ``(M,)``, NaN for guided matches) and fewer than ``THIN_FRAME_SHARE``
    of the inliers' frames (``(M, 2, 3)``) agree with ``h`` (``frames_agree``).

    A homography verified from a few dozen distinctive matches is right when the frames of nearly all its inliers
    agree with it; on the validation sets the wrong ones among such models had more disagreeing frames.
    """
    inliers = _check_mask(inliers, len(ratios))
    f1, f2 = _check_frames(frames1, frames2, len(inliers))
    distinctive = int(np.count_nonzero(inliers & ~np.isnan(np.asarray(ratios, np.float64))))
    if distinctive >= THIN_RATIO_INLIERS or not inliers.any():
        return False
    return bool(frames_agree(h, f1[inliers], f2[inliers]).mean() < THIN_FRAME_SHARE)


def frames_settled(h: np.ndarray, inliers: np.ndarray, frames1: np.ndarray | None,
                   frames2: np.ndarray | None) -> bool:
    """Whether ``FRAME_SHARE`` of the ``inliers`` (bool ``(M,)``) have frames (``(M, 2, 3)``, the matched
    features' affine frames in the original images) that agree with homography ``h`` (``frames_agree``); True
    without frames."""
    if frames1 is None or frames2 is None:
        return True
    return bool(frames_agree(h, np.asarray(frames1)[inliers], np.asarray(frames2)[inliers]).mean() >= FRAME_SHARE)


def _coherent_settled(p1: np.ndarray, p2: np.ndarray, inliers: np.ndarray, frames1: np.ndarray | None,
                      frames2: np.ndarray | None) -> bool:
    """Whether ``COHERENT_SHARE`` of the ``inliers`` are ``coherent`` (as ``frames_settled`` for homographies);
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


def refine_verified(h: np.ndarray, inliers: np.ndarray, p1: np.ndarray, p2: np.ndarray, threshold: float,
                    min_inliers: int) -> tuple[np.ndarray, np.ndarray]:
    """An accepted homography refined on its inliers (``geometry.refine_homography``: the Huber loss, 1 px, of
    the symmetric transfer error); ``h`` and its ``inliers`` are kept when the refined model has fewer than
    ``min_inliers`` within ``threshold``.

    Args:
        h: ``(3, 3)``, image 1 -> image 2, as verified.
        inliers: ``(M,)`` bool, its inliers among the correspondences ``p1``, ``p2`` (``(M, 2)`` pixels).
        threshold: pixels.
        min_inliers: the fewest inliers a stated model may have.

    Returns:
        ``(model (3, 3), inliers (M,) bool)``, inliers within ``threshold`` (forward transfer error, px).
    """
    refined = refine_homography(h, p1, p2, threshold)
    within = transfer_error(refined, p1, p2) < threshold
    if refined is h or within.sum() < min_inliers:
        return h, inliers
    return refined, within


def horizon_side(h: np.ndarray, points: np.ndarray) -> int:
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
    side = horizon_side(h, support)
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


def _check_frames(frames1: np.ndarray | None, frames2: np.ndarray | None,
                  rows: int | None = None) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
    """Both frame arrays as float64 ``(M, 2, 3)`` of as many rows (and ``rows``, the correspondences', if given);
    ``(None, None)`` if either is None. ``ValueError`` naming the array otherwise."""
    if frames1 is None or frames2 is None:
        return None, None
    f1, f2 = np.asarray(frames1, np.float64), np.asarray(frames2, np.float64)
    for name, f in (("frames1", f1), ("frames2", f2)):
        if f.ndim != 3 or f.shape[1:] != (2, 3):
            raise ValueError(f"{name} must be an (M, 2, 3) array of affine frames, got shape {f.shape}")
    if len(f1) != len(f2) or (rows is not None and len(f1) != rows):
        each = "" if rows is None else f" ({rows})"
        raise ValueError(f"frames1 and frames2 must have one row per correspondence{each}, got {len(f1)} and {len(f2)}")
    for name, f in (("frames1", f1), ("frames2", f2)):
        finite = np.isfinite(f).all(axis=(1, 2))
        bad = np.flatnonzero(~finite | (np.linalg.det(np.where(finite[:, None, None], f[:, :, :2], 1.0)) == 0))
        if bad.size:  # the local maps between matched frames need their 2x2 parts' inverses
            raise ValueError(f"{name} holds {bad.size} frame(s) with NaN or inf or a singular 2x2 part "
                             f"(first: row {bad[0]})")
    return f1, f2


def _check_mask(inliers: np.ndarray, rows: int) -> np.ndarray:
    """``inliers`` as a bool ``(M,)`` array over ``rows`` correspondences; ``ValueError`` otherwise."""
    mask = np.asarray(inliers)
    if mask.dtype != bool or mask.shape != (rows,):
        raise ValueError(f"inliers must be a bool array of shape ({rows},), got {mask.dtype} {mask.shape}")
    return mask


def check_min_inliers(value: int | None, name: str = "min_inliers") -> None:
    """Raise unless ``value`` (the argument ``name``) is ``None`` or an integer >= 1."""
    check_integer(value, name, 1, "None: the default")
