"""Two-view geometry: every homography, fundamental and essential matrix fit, relative pose, its error,
pose AUC, Sampson error.

A leaf: numpy/OpenCV functions, no I/O. ``fit_geometry`` (MAGSAC++ H or F) serves ``hardnet_desc.pipeline``
and ``hardnet_desc.wide_baseline``; ``fit_homography`` with classic RANSAC the image-sequence benchmark
(``hardnet_desc.evaluation.metrics``); ``estimate_relative_pose`` the pose benchmark
(``hardnet_desc.evaluation.poses``); ``refine_homography`` polishes a verified homography. No other module
calls OpenCV's H/F/E estimators.

Conventions:

* Pixel coordinates are OpenCV's: pixel centres at integers, x right, y down. COLMAP puts the
  centre of the top-left pixel at ``(0.5, 0.5)``; convert with ``cx_opencv = cx_colmap - 0.5``.
* ``K`` is the ``(3, 3)`` pinhole matrix ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` mapping
  normalized camera coordinates ``(X/Z, Y/Z, 1)`` to pixels.
* Radial distortion is COLMAP's ``RADIAL`` model (``SIMPLE_RADIAL`` is ``k2 = 0``): a normalized
  point ``x`` is seen at ``x (1 + k1 r^2 + k2 r^4)``, ``r = |x|``, before ``K`` is applied.
* The relative pose ``(R, t)`` maps camera-1 coordinates to camera-2 coordinates:
  ``X2 = R X1 + t``. The essential matrix is ``E = [t]x R`` (``x2^T E x1 = 0``) and the fundamental
  matrix ``F = K2^-T E K1^-1``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import cv2
import numpy as np

from .core.patches import check_integer, check_number

#: Pose-error thresholds (degrees) of the AUC, as in SuperGlue and LoFTR.
AUC_THRESHOLDS = (5.0, 10.0, 20.0)


def _usac(estimator, *args, **kwargs) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``estimator(*args, **kwargs)`` (``cv2.findFundamentalMat``, ``findHomography`` or ``findEssentialMat``),
    with OpenCV's USAC failures read as "no model", ``(None, None)``: on a few near-degenerate matches (an assertion
    ``!model.empty()``, raised by OpenCV 4.10 and 5.1 for some 9-point inputs: opencv/opencv#19639's kind), and with a
    threshold so small that fewer points than a minimal sample pass it (``sample_size <= points_size_``, e.g. 0.01 px).
    Any other OpenCV error is raised."""
    try:
        return estimator(*args, **kwargs)
    except cv2.error as error:
        if "model.empty()" in str(error) or "sample_size <= points_size_" in str(error):
            return None, None
        raise


def skew(v: np.ndarray) -> np.ndarray:
    """``(3, 3)`` cross-product matrix ``[v]x`` of a 3-vector (``[v]x w = v x w``)."""
    x, y, z = np.asarray(v, dtype=np.float64).reshape(3)
    return np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])


def rotation_angle_deg(R: np.ndarray) -> float:
    """Angle in degrees of the rotation matrix ``R`` ``(3, 3)`` (0 for the identity, at most 180)."""
    R = np.asarray(R, dtype=np.float64)
    if R.shape != (3, 3):
        raise ValueError(f"R must be a (3, 3) rotation matrix, got shape {R.shape}")
    cos = (np.trace(R) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def rotation_error_deg(R_est: np.ndarray, R_gt: np.ndarray) -> float:
    """Angle in degrees of ``R_gt^T R_est``: how far the estimated rotation is from the truth."""
    return rotation_angle_deg(np.asarray(R_gt, np.float64).T @ np.asarray(R_est, np.float64))


def translation_error_deg(t_est: np.ndarray, t_gt: np.ndarray) -> float:
    """Angle in degrees between two translation *directions*, sign-blind (at most 90).

    An essential matrix fixes ``t`` up to scale and sign only, so ``t`` and ``-t`` are the same
    answer (SuperGlue and LoFTR take ``min(angle, 180 - angle)`` too). 0 if either vector is 0
    (no baseline: no direction to get wrong).
    """
    a, b = np.asarray(t_est, np.float64).reshape(3), np.asarray(t_gt, np.float64).reshape(3)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 0.0
    angle = float(np.degrees(np.arccos(np.clip(abs(a @ b) / (na * nb), 0.0, 1.0))))
    return min(angle, 180.0 - angle)


def pose_error_deg(R_est: np.ndarray | None, t_est: np.ndarray | None, R_gt: np.ndarray, t_gt: np.ndarray) -> float:
    """``max(rotation error, translation direction error)`` in degrees; ``inf`` without an estimate."""
    if R_est is None or t_est is None:
        return float("inf")
    return max(rotation_error_deg(R_est, R_gt), translation_error_deg(t_est, t_gt))


def pose_auc(errors: Sequence[float] | np.ndarray, thresholds: Sequence[float] = AUC_THRESHOLDS) -> list[float]:
    """Area under the cumulative pose-error curve up to each threshold, divided by the threshold.

    The curve is SuperGlue's and LoFTR's: with the ``n`` errors sorted, it runs straight from
    ``(0, 0)`` through ``(e_i, i / n)`` (``i = 1..n``) and stays flat after the last error. A pair
    whose pose failed has error ``inf`` and only counts in ``n``. 1.0 means every pose was exact.

    Args:
        errors: ``(n,)`` pose errors in degrees (``inf`` = failure).
        thresholds: ``T`` thresholds in degrees, each > 0.

    Returns:
        ``T`` floats in [0, 1]; NaN each when there is no error.
    """
    e = np.sort(np.asarray(errors, dtype=np.float64).reshape(-1))
    if np.isnan(e).any():
        raise ValueError("pose errors contain NaN (use inf for a failed pose)")
    if e.size and e[0] < 0:  # an AUC above 1 otherwise
        raise ValueError(f"pose errors are angles >= 0 (inf for a failed pose), got {e[0]}")
    if e.size == 0:
        return [float("nan")] * len(thresholds)
    curve_x = np.concatenate([[0.0], e])
    curve_y = np.arange(e.size + 1, dtype=np.float64) / e.size
    out = []
    for t in thresholds:
        if not t > 0:
            raise ValueError(f"AUC thresholds must be > 0, got {t}")
        inside = curve_x < t
        xs = np.append(curve_x[inside], t)
        ys = np.append(curve_y[inside], curve_y[inside][-1])  # flat from the last error below t
        # trapezoids between consecutive curve points
        out.append(float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0) / t))
    return out


def check_points(points: np.ndarray, name: str = "points") -> np.ndarray:
    """``points`` as a float64 ``(M, 2)`` array: ``(M, 2)`` or OpenCV's ``(M, 1, 2)``; an empty array is ``(0, 2)``.
    NaN rows are kept (RANSAC counts them as outliers).

    Raises:
        ValueError: any other shape, named ``name``.
    """
    p = np.asarray(points, dtype=np.float64)
    if p.size == 0:
        return p.reshape(0, 2)
    if p.ndim == 3 and p.shape[1] == 1:
        p = p[:, 0]
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"{name} must be an (M, 2) array of pixel positions, got shape {p.shape}")
    return p


def check_correspondences(points1: np.ndarray, points2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``points1``, ``points2`` as float64 ``(M, 2)`` arrays (``check_points``), one correspondence per row.

    Raises:
        ValueError: a shape ``check_points`` refuses, or not as many rows in both.
    """
    p1, p2 = check_points(points1, "points1"), check_points(points2, "points2")
    if len(p1) != len(p2):
        raise ValueError(f"points1 and points2 must have one row per correspondence, got {len(p1)} and {len(p2)} rows")
    return p1, p2


def undistort_points(
    points: np.ndarray, K: np.ndarray, radial: Sequence[float] = (0.0, 0.0), iterations: int = 30
) -> np.ndarray:
    """Pixels ``(N, 2)`` -> undistorted normalized camera coordinates ``(N, 2)`` float64.

    Inverts the radial model of the module docstring by fixed-point iteration (converges for the
    distortion SfM estimates on ordinary lenses, ``|k1| r^2`` well below 1).
    """
    pts = check_points(points)
    K = np.asarray(K, dtype=np.float64)
    xy = (pts - K[:2, 2]) / np.array([K[0, 0], K[1, 1]])
    xy[:, 0] -= K[0, 1] / K[1, 1] * xy[:, 1]  # skew (0 for every COLMAP camera)
    radial = tuple(radial) if radial is not None else ()
    if len(radial) > 2:
        raise ValueError(f"radial must be (k1,) or (k1, k2), got {len(radial)} coefficients")
    k1, k2 = (tuple(float(k) for k in radial) + (0.0, 0.0))[:2]  # SIMPLE_RADIAL gives k1 alone
    if k1 == 0.0 and k2 == 0.0:
        return xy
    undist = xy.copy()
    for _ in range(iterations):
        r2 = np.sum(undist**2, axis=1, keepdims=True)
        undist = xy / (1.0 + k1 * r2 + k2 * r2**2)
    return undist


def sampson_error_px(points1: np.ndarray, points2: np.ndarray, F: np.ndarray) -> np.ndarray:
    """Sampson distance (first-order geometric error, pixels) of ``M`` correspondences under ``F``.

    Args:
        points1: ``(M, 2)`` undistorted pixels in image 1.
        points2: ``(M, 2)`` undistorted pixels in image 2.
        F: ``(3, 3)`` with ``x2^T F x1 = 0``.

    Returns:
        ``(M,)`` float64: ``|x2^T F x1| / sqrt((F x1)_1^2 + (F x1)_2^2 + (F^T x2)_1^2 + (F^T x2)_2^2)``.

    Raises:
        ValueError: points that are not ``(M, 2)`` of one ``M`` (``check_correspondences``).
    """
    p1, p2 = check_correspondences(points1, points2)
    F = np.asarray(F, dtype=np.float64)
    if F.shape != (3, 3):
        raise ValueError(f"F must be a (3, 3) fundamental matrix, got shape {F.shape}")
    x1, x2 = np.c_[p1, np.ones(len(p1))], np.c_[p2, np.ones(len(p2))]
    Fx1, Ftx2 = x1 @ F.T, x2 @ F
    num = np.abs(np.sum(x2 * Fx1, axis=1))
    den = np.sqrt(Fx1[:, 0] ** 2 + Fx1[:, 1] ** 2 + Ftx2[:, 0] ** 2 + Ftx2[:, 1] ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / den, np.inf)


def fundamental_from_pose(K1: np.ndarray, K2: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``F = K2^-T [t]x R K1^-1`` (``(3, 3)``, unnormalized scale)."""
    return np.linalg.inv(K2).T @ skew(t) @ np.asarray(R, np.float64) @ np.linalg.inv(K1)


def estimate_relative_pose(
    points1: np.ndarray, points2: np.ndarray, threshold: float, confidence: float = 0.99999, max_iters: int = 10_000
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Relative pose from matched normalized points: essential matrix (OpenCV USAC_MAGSAC) + cheirality.

    Args:
        points1: ``(M, 2)`` undistorted normalized coordinates in camera 1.
        points2: ``(M, 2)`` the matches in camera 2.
        threshold: RANSAC threshold in normalized units (pixels / focal length).
        confidence, max_iters: RANSAC stopping rule.

    Returns:
        ``(R (3, 3), t (3,) unit, inliers (M,) bool)``, the inliers those of the essential matrix;
        None with fewer than 5 matches or when no model is found. When OpenCV returns several
        essential matrices, the one whose ``cv2.recoverPose`` keeps the most points wins.

    Raises:
        ValueError: points that are not ``(M, 2)`` of one ``M`` (``check_correspondences``).
    """
    p1, p2 = map(np.ascontiguousarray, check_correspondences(points1, points2))
    _check_ransac(threshold, confidence, max_iters)
    if len(p1) < 5:
        return None
    E, mask = _usac(cv2.findEssentialMat, p1, p2, np.eye(3), method=cv2.USAC_MAGSAC, prob=confidence,
                    threshold=threshold, maxIters=max_iters)
    if E is None or mask is None or E.shape[0] % 3 or not np.isfinite(E).all():
        return None
    best = None
    for E_i in np.split(E, E.shape[0] // 3):
        count, R, t, _ = cv2.recoverPose(E_i, p1, p2, np.eye(3), mask=mask.copy())
        if best is None or count > best[0]:
            best = (count, R, t.reshape(3))
    return best[1], best[2], mask.ravel().astype(bool)


#: Models ``fit_geometry`` fits.
GEOMETRIES = ("fundamental", "homography")
#: RANSAC inlier threshold in pixels when none is given.
DEFAULT_THRESHOLD = {"fundamental": 1.0, "homography": 3.0}
#: Matches a model needs at least (H: 4; F: 8 for a unique model).
MIN_MATCHES = {"fundamental": 8, "homography": 4}
#: ``fit_homography``'s estimators: OpenCV's method flags (0: least squares on all points).
ESTIMATORS = {"magsac": cv2.USAC_MAGSAC, "ransac": cv2.RANSAC, "least_squares": 0}


def fit_geometry(
    points1: np.ndarray, points2: np.ndarray, geometry: str = "fundamental", threshold: float | None = None
) -> tuple[np.ndarray | None, np.ndarray]:
    """RANSAC (MAGSAC, confidence 0.999, 10,000 iterations) of a homography or fundamental matrix.

    Args:
        points1, points2: ``(M, 2)`` matched pixel positions.
        geometry: ``"homography"`` (planar scene or a turning camera) or ``"fundamental"`` (any static scene).
        threshold: inlier threshold in pixels, > 0; ``None`` uses ``DEFAULT_THRESHOLD``.

    Returns:
        ``(model (3, 3) or None, inliers (M,) bool)``: None (and no inlier) for a model with fewer inliers than
        its minimal sample (4 for a homography, 8 for a fundamental matrix).

    Raises:
        ValueError: an unknown ``geometry``, a ``threshold`` that is not a positive finite number, points that are
            not ``(M, 2)`` of one ``M`` (``check_correspondences``).
        TypeError: a ``threshold`` that is not a number.
    """
    check_geometry(geometry, threshold)
    points1, points2 = check_correspondences(points1, points2)
    threshold = threshold or DEFAULT_THRESHOLD[geometry]
    inliers = np.zeros(len(points1), bool)
    if len(points1) < MIN_MATCHES[geometry]:
        return None, inliers
    if geometry == "homography":
        return fit_homography(points1, points2, threshold)
    model, mask = _usac(cv2.findFundamentalMat, points1, points2, cv2.USAC_MAGSAC, threshold, confidence=0.999,
                        maxIters=10_000)
    if model is None or mask is None or np.count_nonzero(mask) < MIN_MATCHES[geometry]:  # no model, or one that
        return None, inliers  # fewer points than a minimal sample support (a threshold of 0.001 px: none)
    return model, mask.ravel().astype(bool)


def fit_homography(
    points1: np.ndarray,
    points2: np.ndarray,
    threshold: float = 3.0,
    *,
    estimator: str = "magsac",
    confidence: float = 0.999,
    max_iters: int = 10_000,
) -> tuple[np.ndarray | None, np.ndarray]:
    """Homography ``x2 ~ H x1`` from matched pixel positions (OpenCV's ``findHomography``).

    Args:
        points1, points2: ``(M, 2)`` matched pixel positions.
        threshold: inlier threshold in pixels (forward transfer error); unused by ``"least_squares"``.
        estimator: a key of ``ESTIMATORS``: ``"magsac"`` (MAGSAC++, ``fit_geometry``'s), ``"ransac"``
            (classic RANSAC: the image-sequence benchmark's, with OpenCV's default ``confidence=0.995,
            max_iters=2000``) or ``"least_squares"`` (all points, refined by Levenberg-Marquardt).
        confidence, max_iters: RANSAC stopping rule.

    Returns:
        ``(H (3, 3) or None, inliers (M,) bool)``: None (and no inlier) with fewer than 4 matches, or
        when OpenCV finds no finite model or one with fewer than 4 inliers. ``"least_squares"`` counts every point
        an inlier.

    Raises:
        ValueError: an unknown ``estimator``, points that are not ``(M, 2)`` of one ``M`` (``check_correspondences``).
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {tuple(ESTIMATORS)}, got {estimator!r}")
    p1, p2 = check_correspondences(points1, points2)
    _check_ransac(threshold, confidence, max_iters)
    none = np.zeros(len(p1), bool)
    if len(p1) < MIN_MATCHES["homography"]:
        return None, none
    model, mask = _usac(cv2.findHomography, p1, p2, ESTIMATORS[estimator], threshold, confidence=confidence,
                        maxIters=max_iters)
    if (model is None or mask is None or model.shape != (3, 3) or not np.isfinite(model).all()
            or np.count_nonzero(mask) < MIN_MATCHES["homography"]):  # least squares: every point, at least 4
        return None, none  # no model, or one that fewer points than a minimal sample support
    return model, mask.ravel().astype(bool)


def _check_ransac(threshold: float, confidence: float, max_iters: int) -> None:
    """``TypeError``/``ValueError`` naming the first of a RANSAC's settings that is not a number in its range (a
    threshold <= 0 marked every point, or none, an inlier; a str stopped in OpenCV's overload resolution)."""
    check_number(threshold, "threshold")
    check_number(confidence, "confidence")
    if confidence >= 1:
        raise ValueError(f"confidence must be below 1, got {confidence}")
    check_integer(max_iters, "max_iters", 1)


def transfer_error(H: np.ndarray, points1: np.ndarray, points2: np.ndarray) -> np.ndarray:
    """``(M,)`` forward transfer error in pixels: the distance between ``points1`` ``(M, 2)`` mapped by ``H``
    and ``points2`` ``(M, 2)``; ``inf`` where ``H`` sends the point to the horizon. ``ValueError`` for points of
    other shapes or row counts (``check_correspondences``)."""
    p1, p2 = check_correspondences(points1, points2)
    q = np.c_[p1, np.ones(len(p1))] @ np.asarray(H, np.float64).T
    w = q[:, 2:]
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.linalg.norm(q[:, :2] / w - p2, axis=1)
    return np.where(np.abs(w[:, 0]) > 1e-12, d, np.inf)


def homography_jacobian(H: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``(N, 2, 2)`` local affine map (the Jacobian) of homography ``H`` at ``points`` ``(N, 2)`` of image 1: a small
    step ``d`` there moves the image by ``J d`` in image 2 (pixels; ``inf``/``nan`` at the horizon)."""
    p = np.asarray(points, np.float64).reshape(-1, 2)
    H = np.asarray(H, np.float64)
    q = np.c_[p, np.ones(len(p))] @ H.T
    with np.errstate(divide="ignore", invalid="ignore"):
        moved = q[:, :2] / q[:, 2:]
        return (H[None, :2, :2] - moved[:, :, None] * H[None, 2:3, :2]) / q[:, 2, None, None]


def refine_homography(
    H: np.ndarray, points1: np.ndarray, points2: np.ndarray, threshold: float = 3.0, scale: float = 1.0
) -> np.ndarray:
    """A RANSAC homography refined on its inliers by robust non-linear least squares.

    Minimises the Huber loss (quadratic up to ``scale`` pixels, linear beyond) of the symmetric transfer
    error (``H x1 - x2`` in image 2 and ``H^-1 x2 - x1`` in image 1) over the correspondences within
    ``threshold`` pixels of ``H`` (forward; ``H[2, 2]`` fixed at 1). A minimal-sample model fits its sample
    exactly and the rest loosely, which far from the inliers (at the corners of a strongly foreshortened
    view) can be a few percent of the image off; the robust fit weighs every inlier and lets the few wrong
    ones at the threshold's edge pull less than plain least squares would. Both directions count, so a
    model is not bent where one image shows the plane much smaller than the other (where a pixel of it
    spans many of the other's); docs/wide-baseline-log.md has the measurements.

    Args:
        H: ``(3, 3)``, ``x2 ~ H x1``.
        points1, points2: ``(M, 2)`` matched pixel positions.
        threshold: pixels; the correspondences refined on.
        scale: pixels; Huber's ``f_scale``, about the keypoints' localisation noise.

    Returns:
        ``(3, 3)`` float64 with ``[2, 2] == 1``, or ``H`` itself when fewer than 4 correspondences are
        within the threshold, ``H[2, 2]`` is ~0 or the fit is not finite.

    Raises:
        ValueError: points that are not ``(M, 2)`` of one ``M`` (``check_correspondences``).
    """
    from scipy.optimize import least_squares  # here: 0.3 s of import that F-only and CLI start-up need not pay

    H = np.asarray(H, np.float64)
    p1, p2 = check_correspondences(points1, points2)
    near = transfer_error(H, p1, p2) < threshold
    if near.sum() < 4 or abs(H[2, 2]) < 1e-12 * np.abs(H).max():
        return H
    x1, x2 = np.c_[p1[near], np.ones(near.sum())], np.c_[p2[near], np.ones(near.sum())]

    def residuals(v: np.ndarray) -> np.ndarray:
        model = np.append(v, 1.0).reshape(3, 3)
        q1, q2 = x1 @ model.T, x2 @ np.linalg.inv(model).T
        forward, backward = q1[:, :2] / q1[:, 2:] - x2[:, :2], q2[:, :2] / q2[:, 2:] - x1[:, :2]
        return np.concatenate([forward.ravel(), backward.ravel()])

    try:
        with np.errstate(divide="ignore", invalid="ignore"):
            fit = least_squares(residuals, (H / H[2, 2]).ravel()[:8], loss="huber", f_scale=scale, x_scale="jac")
    except (ValueError, np.linalg.LinAlgError):  # not finite (through the horizon on the way), or singular
        return H
    refined = np.append(fit.x, 1.0).reshape(3, 3)
    return refined if np.isfinite(refined).all() else H


def check_geometry(geometry: str, threshold: float | None) -> None:
    """Raise ``ValueError`` for an unknown ``geometry`` or a ``threshold`` that is not a positive number of pixels."""
    if geometry not in GEOMETRIES:
        raise ValueError(f"geometry must be one of {GEOMETRIES}, got {geometry!r}")
    if threshold is None:
        return
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(f"threshold must be a number of pixels or None, got {type(threshold).__name__}")
    if not 0 < threshold < math.inf:
        raise ValueError(f"threshold must be a positive number of pixels or None, got {threshold}")


__all__ = [
    "AUC_THRESHOLDS",
    "DEFAULT_THRESHOLD",
    "ESTIMATORS",
    "GEOMETRIES",
    "MIN_MATCHES",
    "check_correspondences",
    "check_geometry",
    "check_points",
    "estimate_relative_pose",
    "fit_geometry",
    "fit_homography",
    "fundamental_from_pose",
    "pose_auc",
    "pose_error_deg",
    "rotation_angle_deg",
    "rotation_error_deg",
    "sampson_error_px",
    "skew",
    "translation_error_deg",
    "undistort_points",
]
