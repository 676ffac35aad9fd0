"""FGINN matching of features seen through several views, and duplicate removal.

The features of all views of an image are one set, so the same point is often there several times with near-equal
descriptors and Lowe's second neighbour would be the point itself. First-geometrically-inconsistent
nearest-neighbour matching (FGINN, from MODS: Mishkin, Matas, Perdoch, CVIU 2015) takes as second the nearest
neighbour lying more than a radius from the first, and the mutual check accepts a reverse neighbour at the same
place (``fginn_match``). ``remove_duplicates`` then keeps one of each group of correspondences that coincide in both
images. ``Neighbours`` keeps the distance tables of two sets that grow, so that each step computes only the
distances of its new features.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .core.patches import check_integer, check_number
from .geometry import check_correspondences, check_points
from .matching import Matches, check_descriptors, check_ratio, sq_dist_chunks


class Neighbours:
    """The nearest descriptors between two growing sets: for each row of set 1 its ``candidates`` nearest rows
    of set 2 (L2, ascending), and for each row of set 2 its nearest row of set 1.

    ``update`` adds the rows appended to either set since the last call, computing only the distances that
    involve them, so ``match_wide``'s steps, which add views to both images, do not match all features again.
    The tables stay on the descriptors' device.
    """

    def __init__(self, candidates: int = 16, chunk: int = 512) -> None:
        check_integer(candidates, "candidates", 1)
        check_integer(chunk, "chunk", 1)
        self.candidates, self.chunk = candidates, chunk
        self.n1 = self.n2 = 0  # rows of each set seen so far
        self.dist = self.idx = None  # (N1, k): distances ascending, their rows of set 2 (on the first update's device)
        self.col_min = self.col_arg = None  # (N2,): the nearest row of set 1 to each row of set 2, its distance

    def update(self, desc1: torch.Tensor | np.ndarray, desc2: torch.Tensor | np.ndarray) -> Neighbours:
        """Take ``desc1`` ``(N1, D)`` and ``desc2`` ``(N2, D)``, which start with the rows seen so far (checked as
        ``match_descriptors`` checks its sets)."""
        a = check_descriptors(desc1, "desc1", desc1.device if isinstance(desc1, torch.Tensor) else "cpu")
        b = check_descriptors(desc2, "desc2", a.device if a is not None else "cpu")
        if a is None or b is None:
            raise TypeError("desc1 and desc2 must be (N, D) arrays or tensors, got None")
        if a.shape[1] != b.shape[1]:
            raise ValueError("desc1 and desc2 must be (N, D) arrays of the same D, got shapes "
                             f"{tuple(a.shape)} and {tuple(b.shape)}")
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
            for start, d in sq_dist_chunks(a[:n1], b[n2:], self.chunk):  # the k nearest new rows, merged with the
                v, i = self._block(d, start, n2).topk(min(k, d.shape[1]), dim=1, largest=False)  # k nearest so far
                v = torch.cat([self.dist[start : start + len(d)], v.clamp_min_(0).sqrt_()], dim=1)
                i = torch.cat([self.idx[start : start + len(d)], i + n2], dim=1)
                v, order = v.topk(k, dim=1, largest=False)
                dist.append(v)
                idx.append(i.gather(1, order))
        for start, d in sq_dist_chunks(a[n1:], b, self.chunk):  # the new rows of set 1 against all of set 2
            v, i = self._block(d, n1 + start, 0).topk(k, dim=1, largest=False)
            dist.append(v.clamp_min_(0).sqrt_())
            idx.append(i)
        if dist:
            self.dist, self.idx = torch.cat(dist), torch.cat(idx)
        else:  # set 1 is still empty (an image without keypoints so far): tables of no rows
            self.dist, self.idx = a.new_zeros(0, k), a.new_zeros(0, k, dtype=torch.long)
        self.n1, self.n2 = len(a), len(b)
        return self

    def _block(self, d: torch.Tensor, row0: int, col0: int) -> torch.Tensor:
        """Update the columns' nearest rows with ``d`` (n, M), the squared distances of rows ``row0...`` of set 1 to
        rows ``col0...`` of set 2 (``sq_dist_chunks``' reused block: its values serve until the next one); return
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
        check_ratio(ratio)
        check_number(radius, "radius", strict=False)
        if self.n1 == 0 or self.n2 == 0:
            return Matches.empty()
        c1, c2 = check_points(centres1, "centres1"), check_points(centres2, "centres2")
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

    Raises:
        ValueError: descriptors that are not ``(N, D)`` of one ``D`` (or hold NaN or inf), centres that are not
            ``(N, 2)`` of as many rows as the descriptors, a ``ratio`` outside (0, 1], a negative ``radius``, or
            ``candidates`` or ``chunk`` below 1.
    """
    table = Neighbours(candidates, chunk).update(desc1, desc2)
    return table.fginn(centres1, centres2, ratio=ratio, radius=radius, mutual=mutual)


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

    Raises:
        ValueError: points that are not ``(M, 2)`` of one ``M`` (``geometry.check_correspondences``), an ``order``
            that is not a permutation of them.
    """
    p1, p2 = check_correspondences(points1, points2)
    check_number(radius, "radius")  # > 0: the grid's cells are radius wide
    if not (np.isfinite(p1).all() and np.isfinite(p2).all()):
        raise ValueError("points1 and points2 must be finite pixel positions (NaN or inf found)")
    m = len(p1)
    keep = np.zeros(m, bool)
    order = np.arange(m) if order is None else np.asarray(order)
    if order.shape != (m,) or order.dtype.kind not in "iu" or not np.array_equal(np.sort(order), np.arange(m)):
        raise ValueError(f"order must be a permutation of range({m}) (the correspondences), got {order!r:.60}")
    cells: dict[tuple[int, int], list[int]] = {}
    for i in order.tolist():
        cx, cy = int(p1[i, 0] // radius), int(p1[i, 1] // radius)
        near = [j for dx in (-1, 0, 1) for dy in (-1, 0, 1) for j in cells.get((cx + dx, cy + dy), ())]
        if any(np.hypot(*(p1[j] - p1[i])) <= radius and np.hypot(*(p2[j] - p2[i])) <= radius for j in near):
            continue
        keep[i] = True
        cells.setdefault((cx, cy), []).append(i)
    return keep
