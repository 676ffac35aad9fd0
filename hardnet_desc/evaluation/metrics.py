"""Matching metrics for image pairs related by a known homography.

Definitions (fixed here, used by ``hardnet_desc.evaluation.sequences``):

* The **error** of a match is ``|| H(x1) - x2 ||`` in pixels of image ``k``, ``x1`` its keypoint in
  the reference image, ``x2`` its keypoint in image ``k`` and ``H`` the ground truth ``H_1_k``.
  A point that ``H`` sends to or behind infinity has error ``inf``.
* **Matching accuracy** of a pair at threshold ``t``: the fraction of its matches with
  ``error <= t``; a pair with no match scores 0.
* **MMA** (mean matching accuracy) at ``t``: the mean over pairs of that per-pair accuracy (each
  pair weighs the same, as in the HPatches evaluations of D2-Net and later papers), not the
  fraction of all matches pooled over pairs.
* **Corner error** of an estimated homography: the mean distance between the four reference
  image corners (pixel centres ``(0, 0)``, ``(w-1, 0)``, ``(w-1, h-1)``, ``(0, h-1)``) mapped by the
  estimate and by the ground truth. The estimate is classic RANSAC (``RANSAC_PX``, OpenCV's default
  confidence 0.995 and 2,000 iterations: ``hardnet_desc.geometry.fit_homography``). A pair with fewer
  than 4 matches, or where RANSAC finds no model, is a failure with corner error ``inf``.
* **Homography accuracy** at ``t``: the fraction of pairs with ``corner error <= t``.
* **Matchable** keypoints of a pair: the largest one-to-one pairing of reference and image-``k``
  keypoints with error ``<= t``. No one-to-one matcher can have more correct matches, whatever
  the descriptor; ``correct / matchable`` is a method's recall.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ..core.patches import check_number
from ..geometry import fit_homography

#: Default pixel thresholds of the MMA curve.
MMA_THRESHOLDS = tuple(range(1, 11))
#: Default corner-error thresholds of homography accuracy.
H_THRESHOLDS = (1, 3, 5)
#: A match is "correct" in the per-pair counts at this error.
CORRECT_PX = 3.0
#: RANSAC reprojection threshold for the estimated homography.
RANSAC_PX = 3.0
#: ``fit_homography`` arguments of the estimated homography: classic RANSAC with OpenCV's defaults.
H_RANSAC = {"estimator": "ransac", "confidence": 0.995, "max_iters": 2000}


def project(H: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map ``(N, 2)`` points ``(x, y)`` by the ``(3, 3)`` homography ``H``.

    ``H`` and ``-H`` are the same homography: its sign is taken such that the image origin, a corner of the
    reference image, lies in front (``H[2, 2] > 0``; where ``H[2, 2] == 0``, such that most points do).

    Returns:
        ``(N, 2)`` float64; rows with ``w <= 0`` (at or behind infinity) are ``inf``.

    Raises:
        ValueError: ``H`` is not a finite ``(3, 3)`` matrix.
    """
    H = check_homography(H)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    xyw = pts @ H[:, :2].T + H[:, 2]
    w = xyw[:, 2:] * (np.sign(H[2, 2]) or np.sign(np.sign(xyw[:, 2]).sum()) or 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = xyw[:, :2] / xyw[:, 2:]
    out[(w[:, 0] <= 0) | ~np.isfinite(out).all(axis=1)] = np.inf
    return out


def check_homography(H: np.ndarray, name: str = "H") -> np.ndarray:
    """``H`` as a float64 ``(3, 3)`` array, or ``ValueError`` naming ``name`` unless it is a finite one."""
    H = np.asarray(H, dtype=np.float64)
    if H.shape != (3, 3) or not np.isfinite(H).all():
        raise ValueError(f"{name} must be a finite (3, 3) homography, got shape {H.shape}"
                         + ("" if H.shape != (3, 3) else " with NaN or inf"))
    return H


def match_errors(points1: np.ndarray, points2: np.ndarray, H: np.ndarray) -> np.ndarray:
    """Errors ``|| H(points1) - points2 ||`` of ``M`` matches, ``(M, 2)`` each -> ``(M,)`` float64."""
    p1 = np.asarray(points1, dtype=np.float64).reshape(-1, 2)
    p2 = np.asarray(points2, dtype=np.float64).reshape(-1, 2)
    if len(p1) != len(p2):
        raise ValueError(f"points1 and points2 differ in length: {len(p1)} vs {len(p2)}")
    with np.errstate(invalid="ignore"):
        err = np.linalg.norm(project(H, p1) - p2, axis=1)
    return np.where(np.isnan(err), np.inf, err)


def matching_accuracy(errors: np.ndarray, thresholds: Iterable[float] = MMA_THRESHOLDS) -> np.ndarray:
    """Fraction of matches with ``error <= t`` for each threshold; all 0 when there is no match.

    Args:
        errors: ``(M,)`` match errors in pixels.
        thresholds: ``T`` thresholds.

    Returns:
        ``(T,)`` float64 in [0, 1].
    """
    err = np.asarray(errors, dtype=np.float64).reshape(-1)
    t = np.asarray(list(thresholds), dtype=np.float64)
    if err.size == 0:
        return np.zeros(len(t))
    return (err[None, :] <= t[:, None]).mean(axis=1)


def matchable_pairs(points1: np.ndarray, points2: np.ndarray, H: np.ndarray, threshold: float = CORRECT_PX) -> tuple[np.ndarray, np.ndarray]:
    """The largest one-to-one pairing of keypoints within ``threshold`` px under ``H``.

    Args:
        points1: ``(N1, 2)`` all keypoints of the reference image.
        points2: ``(N2, 2)`` all keypoints of image ``k``.
        H: ``(3, 3)`` ground truth reference -> image ``k``.

    Returns:
        ``(idx1, idx2)``: ``(P,)`` int64 index arrays; ``P`` is the number of matchable keypoints.
        A maximum bipartite matching, so duplicate detections (SIFT's second orientation at the same
        place) pair up with each other instead of competing for one partner.
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_bipartite_matching
    from scipy.spatial import cKDTree

    check_number(threshold, "threshold", strict=False)

    p1 = project(H, np.asarray(points1, dtype=np.float64).reshape(-1, 2))
    p2 = np.asarray(points2, dtype=np.float64).reshape(-1, 2)
    ok = np.flatnonzero(np.isfinite(p1).all(axis=1))
    if not len(ok) or not len(p2):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    near = cKDTree(p2).query_ball_point(p1[ok], r=threshold)
    rows = np.repeat(ok, [len(n) for n in near])
    cols = np.fromiter((j for n in near for j in n), np.int64, count=len(rows))
    graph = csr_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(len(p1), len(p2)))
    mate = maximum_bipartite_matching(graph, perm_type="column")  # mate[i]: column of row i, or -1
    idx1 = np.flatnonzero(mate >= 0)
    return idx1.astype(np.int64), mate[idx1].astype(np.int64)


def corner_error(H_est: np.ndarray | None, H_gt: np.ndarray, height: int, width: int) -> float:
    """Mean distance of the 4 reference corners under ``H_est`` vs ``H_gt``; ``inf`` if ``H_est`` is None."""
    if H_est is None:
        return float("inf")
    corners = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], dtype=np.float64)
    with np.errstate(invalid="ignore"):
        err = np.linalg.norm(project(H_est, corners) - project(H_gt, corners), axis=1).mean()
    return float(err) if np.isfinite(err) else float("inf")


def pair_metrics(
    points1: np.ndarray,
    points2: np.ndarray,
    H_gt: np.ndarray,
    image_shape: tuple[int, int],
    thresholds: Sequence[float] = MMA_THRESHOLDS,
) -> dict:
    """All metrics of one image pair from its matched points.

    Args:
        points1: ``(M, 2)`` matched keypoint positions in the reference image.
        points2: ``(M, 2)`` their matches in image ``k``.
        H_gt: ``(3, 3)`` ground truth reference -> image ``k``.
        image_shape: ``(height, width)`` of the reference image (for the corner error).
        thresholds: pixel thresholds of the accuracy curve.

    Returns:
        ``{'matches': M, 'correct': #errors <= 3 px, 'accuracy': [T floats], 'h_error': float (inf = failure)}``.
    """
    err = match_errors(points1, points2, H_gt)
    H_est, _ = fit_homography(points1, points2, RANSAC_PX, **H_RANSAC)
    return {
        "matches": int(len(err)),
        "correct": int(np.count_nonzero(err <= CORRECT_PX)),
        "accuracy": matching_accuracy(err, thresholds).tolist(),
        "h_error": corner_error(H_est, H_gt, *image_shape),
    }


def summarize(
    pairs: Sequence[dict],
    thresholds: Sequence[float] = MMA_THRESHOLDS,
    h_thresholds: Sequence[float] = H_THRESHOLDS,
) -> dict:
    """Average ``pair_metrics`` results over pairs (each pair weighs the same).

    Returns:
        ``{'pairs', 'mma': [T], 'mma@t' for each t, 'matches', 'correct', 'h_acc@t' for each h threshold}``;
        with no pairs every mean is NaN.
    """
    n = len(pairs)
    nan = float("nan")
    out: dict = {"pairs": n}
    if n:
        mma = np.mean([p["accuracy"] for p in pairs], axis=0)
    else:
        mma = np.full(len(thresholds), nan)
    out["mma"] = [float(x) for x in mma]
    for t, value in zip(thresholds, mma):
        out[f"mma@{t:g}"] = float(value)
    out["matches"] = float(np.mean([p["matches"] for p in pairs])) if n else nan
    out["correct"] = float(np.mean([p["correct"] for p in pairs])) if n else nan
    h_err = np.array([p["h_error"] for p in pairs], dtype=np.float64)
    for t in h_thresholds:
        out[f"h_acc@{t:g}"] = float(np.mean(h_err <= t)) if n else nan
    return out
