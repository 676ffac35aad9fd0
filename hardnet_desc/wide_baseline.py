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
   refitted on them; one whose support is then thin (few distinctive inliers, too many frames that disagree:
   ``thin``) is refused, and the search goes on.

The parts live in one module each: the views (``hardnet_desc.views``, with the conventions), FGINN and duplicate
removal (``hardnet_desc.fginn``), the verification (``hardnet_desc.verification``); this module holds the search
that joins them (``match_wide``), the rectified view's refit and guided matching.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from .core.align import align_frames
from .core.image import ImageLike, to_grey_tensor, to_uint8
from .core.patches import check_number
from .descriptor import HardNetDescriptor
from .detection import DEFAULT_MAX_KEYPOINTS, check_max_keypoints
from .fginn import Neighbours, fginn_match, remove_duplicates
from .geometry import check_geometry, fit_geometry, refine_homography, transfer_error
from .matching import Matches, check_ratio
from .verification import (
    MIN_INLIERS,
    check_min_inliers,
    frames_agree,
    frames_settled,
    horizon_side,
    refine_verified,
    scattered,
    thin,
    verify,
    verify_prior,
)
from .views import (
    ROTATION_STEP,
    Features,
    View,
    ViewSpec,
    check_step_views,
    describe_views,
    make_views,
    model_tilt,
    rectified_view,
    view_spec,
)

#: Views added at each step; step 0 (``()``) is the original image alone.
DEFAULT_STEPS: tuple[tuple[ViewSpec, ...], ...] = ((), (2.0, 4.0), (6.0, 8.0))
#: Verified inliers that end the search. A fundamental matrix with fewer is kept, and the next step looks for more
#: correspondences that agree with it (``verify_prior``): on real pairs 25-50 inliers often fix the pose badly
#: (docs/wide-baseline-log.md, round 5). A homography ends it at ``MIN_INLIERS``; guided matching adds to it instead
#: (100 sent the search on for 6 of 200 held-out synthetic pairs and changed none's outcome; round 12).
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
#: Guided matching (``guided_matches``) keeps a feature's nearest descriptor within the threshold of where the
#: model sends it only if their L2 distance is below this (unit descriptors: 0 equal, 1.41 orthogonal).
GUIDED_DISTANCE = 1.0
#: A homography found with synthesized views is fitted again on a rectified view (``_rectify``): FGINN matches at this
#: ratio, within this share of image 2's diagonal of the model, this many times (each round redraws the view with the
#: model the previous one fitted).
RECTIFIED_RATIO, RECTIFIED_GATE, RECTIFIED_ROUNDS = 0.85, 0.025, 2
# step 0's homographies are rectified too where they tilt the plane by more than this between the images
RECTIFIED_TILT = 2.0


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
        ratio: the FGINN ratio threshold the matches passed (``ratio``, or at a step with views the one of
            ``ratio_tries`` that verified the model, else the looser); ``None``: no ratio test.
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
    ratio: float | None
    timings: dict[str, float]


# --- matching -------------------------------------------------------------------------------------


def ratio_tries(ratio: float | None, view_ratio: float | None) -> list[float | None]:
    """The FGINN ratio thresholds a step verifies with, stricter first (``None``: no ratio test, the loosest)."""
    first, second = sorted((ratio, view_ratio), key=lambda r: math.inf if r is None else r)
    return [first] if first == second else [first, second]


def _take(m: Matches, index: np.ndarray) -> Matches:
    """The matches of ``m`` at ``index`` (a bool mask or integer positions), in that order."""
    return Matches(m.query_idx[index], m.train_idx[index], m.distances[index], m.ratios[index])


def _join(a: Matches, b: Matches) -> Matches:
    """``a``'s matches, then ``b``'s (not sorted, duplicates kept)."""
    return Matches(*(np.concatenate([x, y]) for x, y in zip(
        (a.query_idx, a.train_idx, a.distances, a.ratios), (b.query_idx, b.train_idx, b.distances, b.ratios),
        strict=True)))


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


# --- rectified view and guided matching -----------------------------------------------------------


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
    of image 2's diagonal of the model, with the verified inliers, are fitted afresh (MAGSAC++, then
    ``refine_verified``). Unlike guided matching within the threshold, this lets correspondences the model misses by
    more than the threshold correct it. The gate keeps the new model near the verified one, so ``verify``'s
    agreement check is not made again (it refused some of the better models of thin slivers); the inliers must be in
    front and ``FRAME_SHARE`` of their frames agree.

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
    if (new is None or new_inliers.sum() < max(inliers.sum(), min_inliers) or not horizon_side(new, q1[new_inliers])
            or not frames_settled(new, new_inliers, feats[0].frames.numpy()[both.query_idx],
                                   feats[1].frames.numpy()[both.train_idx])):
        return matches, inliers, model
    new, new_inliers = refine_verified(new, new_inliers, q1, q2, threshold, min_inliers)
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


# --- the iteration --------------------------------------------------------------------------------


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
    (``verify_prior``, and no other model is looked for once one has ``min_inliers``); a homography with fewer than
    ``stop_inliers`` (possible only with ``stop_inliers`` above ``min_inliers``) sends the search on to look for one
    of more inliers. If no step reaches ``stop_inliers``, the model with the most inliers is returned, unless (for a
    fundamental matrix) its inliers look like a chance fit (``scattered``: few, a minority and spread over the
    images), which gives no model.

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
            ``stop_inliers`` below 1; empty ``steps``, a view of ``steps`` that is not a tilt in
            ``[1, MAX_TILT]`` or ``(tilt, scale)`` with ``0 < scale <= 1``, or a step of more than
            ``MAX_STEP_VIEWS`` views per image (``hardnet_desc.views``).
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
        check_step_views(views, rotation_step)
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
    fallback = None  # the step's result whose model has the most inliers, fewer than stop
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
            if model is None and (fallback is None or geometry == "homography"):  # F: only the prior's, once kept
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
        thin_support = False  # a homography refused after guided matching (thin)
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
            if geometry == "homography" and thin(model, inliers, matches.ratios,
                                                 feats[0].frames.numpy()[matches.query_idx],
                                                 feats[1].frames.numpy()[matches.train_idx]):
                thin_support = int(inliers.sum())
                model, inliers = None, np.zeros(len(inliers), bool)  # as verify's refusals: the search goes on
            timings["guided"] += time.perf_counter() - t0
        result = WideMatch(feats[0], feats[1], matches, *points, inliers, model, kind,
                           None if model is None else step, r, timings)
        weak = model is not None and kind == geometry and inliers.sum() < stop and step + 1 < len(steps)
        if progress is not None:
            label = ", ".join(f"{t:g}" + (f" at scale {z:g}" if z < 1 else "") for t, z in map(view_spec, tilts))
            progress(f"step {step} (tilts {label or '1'}): {len(feats[0].views)} + "
                     f"{len(feats[1].views)} views, {len(feats[0].frames)} + {len(feats[1].frames)} features, "
                     f"{len(matches)} matches, {int(inliers.sum())} inliers"
                     + (f" (a homography of {thin_support} inliers with thin support refused)" if thin_support else
                        "" if model is None else f" -> model (fewer than {stop}: next step)" if weak else " -> model"))
        if weak:  # kept; the next step looks for a model of more inliers (F: among those that agree with it)
            if fallback is None or inliers.sum() > fallback.inliers.sum():
                fallback = result
            prior = model if kind == "fundamental" else None
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
