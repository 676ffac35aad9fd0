"""Two-view matching in one call: detect, describe, match, verify.

``match_pair`` is the pipeline behind ``hardnet-desc match`` and the examples: SIFT keypoints
(the strongest ``max_keypoints`` per image), HardNet descriptors, mutual nearest neighbours with
Lowe's ratio test, and a homography or fundamental matrix fitted with RANSAC (OpenCV's MAGSAC); a
homography is then refined on its inliers (``geometry.refine_homography``).

Example::

    result = match_pair(cv2.imread("a.jpg"), cv2.imread("b.jpg"), geometry="homography")
    H = result.model                       # (3, 3): x2 ~ H x1
    good1 = result.points1[result.inliers]  # (K, 2) pixels of image1
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from .core.image import ImageLike
from .descriptor import HardNetDescriptor
from .detection import DEFAULT_MAX_KEYPOINTS, check_max_keypoints
from .geometry import DEFAULT_THRESHOLD, GEOMETRIES, check_geometry, fit_geometry, refine_homography, transfer_error
from .matching import Matches, check_ratio, match_descriptors
from .verification import check_min_inliers
from .views import frames_to_keypoints
from .wide_baseline import DEFAULT_VIEW_KEYPOINTS, check_view_keypoints, match_wide

# GEOMETRIES (match_pair's geometry values) and fit_geometry (its RANSAC) live in geometry.py
__all__ = ["GEOMETRIES", "PairMatch", "fit_geometry", "match_pair"]


@dataclass
class PairMatch:
    """What ``match_pair`` found.

    Attributes:
        keypoints1, keypoints2: the detected ``cv2.KeyPoint`` lists, strongest first.
        matches: indices into them (``query_idx`` into image1, ``train_idx`` into image2).
        points1, points2: ``(M, 2)`` float64 pixel positions of the matched keypoints (OpenCV
            convention: the centre of the top-left pixel is ``(0, 0)``).
        inliers: ``(M,)`` bool, the matches that agree with ``model``.
        model: ``(3, 3)`` homography (``x2 ~ H x1``) or fundamental matrix (``x2^T F x1 = 0``);
            ``None`` when too few matches or RANSAC found none.
        geometry: ``"homography"`` or ``"fundamental"``.
        threshold: the RANSAC threshold used, in pixels.
        step: with ``wide_baseline=True``, the step of ``hardnet_desc.wide_baseline.match_wide`` whose
            model was accepted (0: the original images sufficed), ``None`` when no step verified one;
            0 for the plain pipeline.
        views: views described per image (1 each for the plain pipeline).
        timings: seconds per stage and ``total``.
        ratio: the ratio threshold the matches passed (with ``wide_baseline``, FGINN's: at a step with views
            ``view_ratio`` may have replaced ``ratio``); ``None``: no ratio test.
    """

    keypoints1: list[cv2.KeyPoint]
    keypoints2: list[cv2.KeyPoint]
    matches: Matches
    points1: np.ndarray
    points2: np.ndarray
    inliers: np.ndarray
    model: np.ndarray | None
    geometry: str
    threshold: float
    step: int | None = 0
    views: tuple[int, int] = (1, 1)
    timings: dict[str, float] = field(default_factory=dict)
    ratio: float | None = None


def match_pair(
    image1: ImageLike,
    image2: ImageLike,
    descriptor: HardNetDescriptor | None = None,
    *,
    max_keypoints: int | None = DEFAULT_MAX_KEYPOINTS,
    ratio: float | None = 0.8,
    geometry: str = "fundamental",
    threshold: float | None = None,
    wide_baseline: bool = False,
    min_inliers: int | None = None,
    view_keypoints: int | Sequence[int | None] | None = DEFAULT_VIEW_KEYPOINTS,
    progress: Callable[[str], None] | None = None,
) -> PairMatch:
    """Detect, describe, match and verify two images.

    Args:
        image1, image2: images as ``HardNetDescriptor.compute`` takes them (BGR or grey numpy, ...).
        descriptor: detects and describes; default ``HardNetDescriptor()`` (bundled weights, CUDA if present).
        max_keypoints: strongest keypoints per image; ``None`` (or 0) keeps all.
        ratio: Lowe's ratio threshold on top of mutual nearest neighbours (``None`` or 1: off).
        geometry: model fitted by RANSAC, see ``fit_geometry``; a homography is refined on its inliers
            (``refine_homography``), its ``inliers`` are those within ``threshold`` of the refined model.
        threshold: RANSAC inlier threshold in pixels, > 0 (default: 1 for fundamental, 3 for homography).
        wide_baseline: match views far apart (``hardnet_desc.wide_baseline.match_wide``): synthesized
            affine views only when the original images give no verified model with enough inliers, FGINN
            matching, a model only with ``min_inliers`` inliers. ``keypoints1/2`` then stand for the affine
            frames of all views (``frames_to_keypoints``).
        min_inliers: with ``wide_baseline``, the verified inliers below which the model is ``None`` (default
            ``MIN_INLIERS``: 15 for H, 25 for F); the search ends at a model with ``STOP_INLIERS`` (15 for H,
            50 for F) or ``min_inliers`` if more.
        view_keypoints: with ``wide_baseline``, the strongest keypoints of each synthesized view: one number for
            every step, or one per step with views (default ``DEFAULT_VIEW_KEYPOINTS``, 800 at step 1 and 400 at
            step 2); ``None`` or 0 keeps all. Fewer bound the cost of the hardest pairs on slow CPUs and solve
            fewer of them (docs/wide-baseline.md, "Cost").
        progress: with ``wide_baseline``, called with a line of text after each step.

    Returns:
        A ``PairMatch``.

    Raises:
        ValueError: an unknown ``geometry``, a ``threshold`` <= 0 or NaN, a negative ``max_keypoints``, a
            ``min_inliers`` below 1, a ``ratio`` outside (0, 1], a negative or empty ``view_keypoints`` (checked
            before any work); TypeError: a non-integer ``max_keypoints``, ``min_inliers`` or ``view_keypoints``, a
            ``ratio`` that is not a number.
    """
    check_geometry(geometry, threshold)
    check_max_keypoints(max_keypoints)
    check_min_inliers(min_inliers)
    check_view_keypoints(view_keypoints)
    check_ratio(ratio)
    if descriptor is not None and not isinstance(descriptor, HardNetDescriptor):
        raise TypeError("descriptor must be a HardNetDescriptor (or None: the default), got "
                        f"{type(descriptor).__name__}")
    descriptor = descriptor if descriptor is not None else HardNetDescriptor()
    if wide_baseline:
        return _match_wide(image1, image2, descriptor, max_keypoints=max_keypoints, ratio=ratio, geometry=geometry,
                           threshold=threshold or DEFAULT_THRESHOLD[geometry], min_inliers=min_inliers,
                           view_keypoints=view_keypoints, progress=progress)
    clock = time.perf_counter()
    detected = [descriptor.detect(image, max_keypoints=max_keypoints) for image in (image1, image2)]
    # Both images in shared network calls; the descriptors stay on the descriptor's device for matching.
    keypoints, descs = descriptor._describe_images([image1, image2], detected)
    points = [np.array([k.pt for k in kps], np.float64).reshape(-1, 2) for kps in keypoints]
    matches = match_descriptors(descs[0], descs[1], ratio=ratio, mutual=True)
    p1, p2 = points[0][matches.query_idx], points[1][matches.train_idx]
    model, inliers = fit_geometry(p1, p2, geometry, threshold)
    threshold = threshold or DEFAULT_THRESHOLD[geometry]
    if model is not None and geometry == "homography":  # corner errors 0.76x on average (docs/wide-baseline-log.md)
        model = refine_homography(model, p1, p2, threshold)
        inliers = transfer_error(model, p1, p2) < threshold
    return PairMatch(keypoints[0], keypoints[1], matches, p1, p2, inliers, model, geometry, threshold,
                     timings={"total": time.perf_counter() - clock}, ratio=ratio)


def _match_wide(image1: ImageLike, image2: ImageLike, descriptor: HardNetDescriptor, *, threshold: float,
                **options) -> PairMatch:
    """``match_pair(..., wide_baseline=True)``: ``match_wide``'s result as a ``PairMatch``."""
    w = match_wide(image1, image2, descriptor, threshold=threshold, **options)
    keypoints = [frames_to_keypoints(f.frames, descriptor.patch_scale) for f in (w.features1, w.features2)]
    return PairMatch(keypoints[0], keypoints[1], w.matches, w.points1, w.points2, w.inliers, w.model, w.geometry,
                     threshold, step=w.step, views=(len(w.features1.views), len(w.features2.views)), timings=w.timings,
                     ratio=w.ratio)
