"""Nearest-neighbour matching of local descriptors (L2 distance).

A torch replacement for ``cv2.BFMatcher(cv2.NORM_L2)`` + Lowe's ratio test:
a chunked matrix product proposes a few candidates per row and exact distances
decide, so large sets are matched in bounded memory, on the GPU when the
descriptors live there, with the same results on every device.

Conventions, as in OpenCV:

* ``desc1`` is the *query* set (N1, D), ``desc2`` the *train* set (N2, D).
* A match is a pair ``(query_idx, train_idx)`` with ``distance = ||d1 - d2||``.
* "Nearest" is by exact squared distance (float64 sums of the squared float32
  differences, in a fixed order); exact ties go to the lowest index, like ``BFMatcher``.

On a CPU shared with other busy processes, torch's OpenMP threads spin while
waiting for each other and matching can get several times slower; there,
``torch.set_num_threads(1)`` (or ``OMP_WAIT_POLICY=PASSIVE``) helps.

Example::

    matches = match_descriptors(desc1, desc2, ratio=0.8, mutual=True)
    pts1 = kpts1[matches.query_idx]
    pts2 = kpts2[matches.train_idx]
    img = cv2.drawMatches(img1, kp1, img2, kp2, matches.to_dmatches(), None)
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from .core.device import resolve_device
from .core.image import native_order
from .core.patches import check_integer, check_number

__all__ = ["DescriptorMatcher", "Matches", "match_descriptors"]

ArrayLike = np.ndarray | torch.Tensor

# Default chunk size: rows of desc1 per block such that one block of squared
# distances holds about this many floats (64 MiB on CPU, 512 MiB on GPU).
_CHUNK_ELEMS = {"cpu": 1 << 24, "cuda": 1 << 27}
# Columns per block in the candidate search (see _candidates).
_BLOCK = 128


@dataclass(frozen=True)
class Matches:
    """Putative correspondences, as numpy arrays of length M.

    Attributes:
        query_idx: (M,) int64, row of ``desc1`` (OpenCV's ``queryIdx``), ascending.
        train_idx: (M,) int64, row of ``desc2`` (OpenCV's ``trainIdx``).
        distances: (M,) float32, L2 distance to the nearest neighbour.
        ratios: (M,) float32, ``distance / second_nearest_distance``; NaN when
            ``desc2`` has a single row (no second neighbour), 1.0 on exact ties.
    """

    query_idx: np.ndarray
    train_idx: np.ndarray
    distances: np.ndarray
    ratios: np.ndarray

    def __len__(self) -> int:
        return len(self.query_idx)

    @property
    def pairs(self) -> np.ndarray:
        """(M, 2) int64 array of ``[query_idx, train_idx]`` rows."""
        return np.stack([self.query_idx, self.train_idx], axis=1)

    def to_dmatches(self) -> list[cv2.DMatch]:
        """Convert to ``cv2.DMatch`` objects (e.g. for ``cv2.drawMatches``)."""
        return [
            cv2.DMatch(q, t, 0, d)  # imgIdx=0, like BFMatcher
            for q, t, d in zip(self.query_idx.tolist(), self.train_idx.tolist(), self.distances.tolist(), strict=True)
        ]

    @classmethod
    def empty(cls) -> Matches:
        i, f = np.empty(0, np.int64), np.empty(0, np.float32)
        return cls(i, i.copy(), f, f.copy())


def match_descriptors(
    desc1: ArrayLike | None,
    desc2: ArrayLike | None,
    *,
    ratio: float | None = 0.8,
    mutual: bool = True,
    max_distance: float | None = None,
    device: str | torch.device | None = None,
    chunk_size: int | None = None,
) -> Matches:
    """Match each row of ``desc1`` to its nearest neighbour (L2) in ``desc2``.

    The filters are applied together (a match must pass all that are enabled):

    * ``ratio``: Lowe's ratio test ``d1 < ratio * d2`` (strict), ``d2`` being the
      distance to the second nearest neighbour. When ``desc2`` has one row there
      is no second neighbour and nothing passes, as with the usual
      ``knnMatch(k=2)`` loop, where OpenCV returns a single neighbour.
    * ``mutual``: keep ``(i, j)`` only if ``i`` is also the nearest neighbour of
      ``j`` in ``desc1`` (``BFMatcher(crossCheck=True)``). If several rows of
      ``desc1`` are equally near to ``j``, only the lowest of them can match ``j``.
    * ``max_distance``: keep matches with ``d1 <= max_distance``.

    Args:
        desc1: (N1, D) query descriptors, numpy array or torch tensor of any
            real dtype (computed in float32). ``None`` (what
            ``cv2.Feature2D.compute`` returns for no keypoints) counts as empty.
        desc2: (N2, D) train descriptors.
        ratio: ratio-test threshold in (0, 1], or None to disable.
        mutual: require mutual nearest neighbours.
        max_distance: maximum L2 distance, or None.
        device: where to compute; defaults to the device of ``desc1`` if it is a
            tensor, else the CPU (numpy input is matched on the CPU unless ``device`` says otherwise).
        chunk_size: rows of ``desc1`` per block (with ``mutual``, rounded down to a multiple of 32).
            The peak extra memory is about ``chunk_size * N2`` floats, plus a few KiB a row of the
            block for the exact re-ranking; the default picks it from ``N2`` (about 64 MiB of
            distances per block on the CPU, 512 MiB on CUDA, at most 16384 rows).

    Returns:
        ``Matches`` sorted by ``query_idx``, as numpy arrays on every device. Every decision is
        taken on exact squared distances (float64 sums of the squared float32 differences, in a
        fixed order): the nearest and second nearest row of ``desc2`` of each query, the nearest
        row of ``desc1`` of its match for ``mutual``, lowest index first on exact ties. The matrix
        product ``|a|^2 + |b|^2 - 2 a.b`` only proposes candidates; a bound on its rounding error
        tells when a near-tie may lie beyond them, and then that row (or column) is searched
        exactly. Distances and ratios come from the same exact sums, rounded to float32. So the
        results are the same bits on every device (CPU, CUDA, with or without TF32 matmuls, which
        only widen the bound; MPS, without float64, sums in float32) and for every ``chunk_size``,
        and agree with OpenCV's but where two distances differ by less than OpenCV's float32
        rounding (~1e-7 relative), which ours order exactly.

    Raises:
        ValueError: for bad shapes, mismatched dimensions, non-finite values, float64
            values beyond or below float32's range, or out-of-range parameters.
        TypeError: descriptors that are not real arrays or tensors, or a ``ratio`` that is not a number.
    """
    check_ratio(ratio)
    if max_distance is not None:
        check_number(max_distance, "max_distance", strict=False)
    check_integer(chunk_size, "chunk_size", 1, "None: from N2")
    a, b, scale = _prepare(desc1, desc2, device)
    if len(a) == 0 or len(b) == 0:
        return Matches.empty()

    n1, n2 = len(a), len(b)
    chunk = _chunk_rows(chunk_size, n2, a.device)
    nn, mutual_nn = _neighbours(a, b, chunk, reverse=mutual)
    q = torch.arange(n1, device=a.device)
    if mutual_nn is not None:  # cross-check: i is the nearest row of desc1 (the lowest on ties) to its match
        q = q[mutual_nn]
    t = nn[q, 0]
    d1 = _exact_distances(a[q], b[t]) * scale
    d2 = _exact_distances(a[q], b[nn[q, 1]]) * scale if n2 > 1 else torch.full_like(d1, float("nan"))
    # Compare in float64, like `m.distance < 0.8 * n.distance` in Python.
    ok = torch.ones(len(q), dtype=torch.bool, device=a.device)
    if ratio is not None:
        ok &= d1.double() < ratio * d2.double()  # NaN (no 2nd neighbour) fails
    if max_distance is not None:
        ok &= d1.double() <= max_distance
    q, t, d1, d2 = q[ok], t[ok], d1[ok], d2[ok]
    ratios = torch.where(d1 == d2, torch.ones_like(d1), d1 / d2)
    q, t, d1, ratios = (x.cpu().numpy() for x in (q, t, d1, ratios))
    return Matches(q.astype(np.int64), t.astype(np.int64), d1.astype(np.float32), ratios.astype(np.float32))


class DescriptorMatcher:
    """Drop-in for ``cv2.BFMatcher(cv2.NORM_L2, crossCheck=mutual)``.

    ``match`` and ``knnMatch`` take the same arguments and return the same
    ``cv2.DMatch`` lists as OpenCV, computed with ``match_descriptors``.

    Args:
        ratio: optional ratio test applied by ``match`` (OpenCV has none).
        mutual: cross-check, like ``BFMatcher``'s ``crossCheck``.
        device: compute device, see ``match_descriptors``.
        chunk_size: rows per block, see ``match_descriptors``.
    """

    def __init__(
        self,
        ratio: float | None = None,
        mutual: bool = False,
        device: str | torch.device | None = None,
        chunk_size: int | None = None,
    ) -> None:
        check_ratio(ratio)
        self.ratio = ratio
        self.mutual = mutual
        self.device = device
        self.chunk_size = chunk_size

    def __repr__(self) -> str:
        return f"{type(self).__name__}(ratio={self.ratio}, mutual={self.mutual}, device={self.device})"

    def match(self, query: ArrayLike, train: ArrayLike) -> list[cv2.DMatch]:
        """Best match of each query row, filtered by ``mutual`` and ``ratio``."""
        return match_descriptors(
            query, train, ratio=self.ratio, mutual=self.mutual, device=self.device, chunk_size=self.chunk_size
        ).to_dmatches()

    def knnMatch(self, query: ArrayLike, train: ArrayLike, k: int = 2) -> list[list[cv2.DMatch]]:
        """The ``k`` nearest train rows of every query row, nearest first.

        Returns N1 lists of ``min(k, N2)`` matches. ``ratio`` is not applied
        (apply the ratio test to the result, as with OpenCV). With
        ``mutual=True`` only ``k=1`` is allowed and, like OpenCV's crossCheck,
        the list of a row without a mutual match is empty. For ``k <= 2`` the
        neighbours are ``match_descriptors``' (exact nearest and second nearest,
        the lowest train index first on ties); for larger ``k`` they are the
        product's ``k`` nearest (a near-tie at the k-th place may differ from
        OpenCV's), ordered by exact distance, then train index. Distances are
        ``match_descriptors``'.
        """
        check_integer(k, "k", 1)
        if self.mutual:
            if k != 1:
                raise ValueError("mutual (crossCheck) matching supports only k=1")
            n1 = 0 if query is None else len(query)
            out: list[list[cv2.DMatch]] = [[] for _ in range(n1)]
            matches = match_descriptors(
                query, train, ratio=None, mutual=True, device=self.device, chunk_size=self.chunk_size
            )
            for m in matches.to_dmatches():
                out[m.queryIdx].append(m)
            return out

        a, b, scale = _prepare(query, train, self.device)
        if len(a) == 0 or len(b) == 0:
            return [[] for _ in range(len(a))]
        k = min(k, len(b))
        chunk = _chunk_rows(self.chunk_size, len(b), a.device)
        if k <= 2:  # the usual ratio-test case: match_descriptors' neighbours
            nn, _ = _neighbours(a, b, chunk, reverse=False)
            blocks = ((start, nn[start : start + chunk, :k]) for start in range(0, len(a), chunk))
        else:  # the product's k nearest, in the order of their exact distances (then of train index)
            blocks = (
                (start, d.topk(k, dim=1, largest=False).indices.sort(dim=1).values)
                for start, d in sq_dist_chunks(a, b, chunk)
            )
        out = []
        for start, idx in blocks:
            sq = _exact_sq(a[start : start + len(idx), None], b[idx])  # (n, k), as match_descriptors'
            sq, order = torch.sort(sq, dim=1, stable=True)
            idx, dist = idx.gather(1, order), sq.sqrt().float() * scale
            for q, (ts, ds) in enumerate(zip(idx.tolist(), dist.tolist(), strict=True), start):
                out.append([cv2.DMatch(q, t, 0, dd) for t, dd in zip(ts, ds, strict=True)])
        return out


def check_ratio(ratio: float | None, name: str = "ratio") -> None:
    """Raise unless ``ratio`` (the argument ``name``) is ``None`` or a number in (0, 1]."""
    if ratio is None:
        return
    if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real):
        raise TypeError(f"{name} must be a number in (0, 1] or None, got {type(ratio).__name__} {ratio!r}")
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"{name} must be in (0, 1] or None, got {ratio}")


def _prepare(
    desc1: ArrayLike | None, desc2: ArrayLike | None, device: str | torch.device | None
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Validate both sets and return them as float32 tensors on one device, and their scale.

    Sets whose largest magnitude lies outside ``[2^-30, 2^30]`` are divided by a power of two
    (exact) so that ``|a|^2`` neither overflows nor underflows in float32; distances computed
    from the returned tensors are multiplied by ``scale`` to get back to the input's units.
    """
    if device is None:
        device = desc1.device if isinstance(desc1, torch.Tensor) else torch.device("cpu")
    else:
        device = resolve_device(device)
    a = check_descriptors(desc1, "desc1", device)
    b = check_descriptors(desc2, "desc2", device)
    # None (no keypoints) has no dimension: take the other set's.
    if a is None:
        a = torch.empty(0, 0 if b is None else b.shape[1], device=device)
    if b is None:
        b = torch.empty(0, a.shape[1], device=device)
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"descriptor dimensions differ: desc1 has shape {tuple(a.shape)}, desc2 has shape {tuple(b.shape)}"
        )
    peak = max(float(x.abs().max()) if x.numel() else 0.0 for x in (a, b))
    if peak == 0.0 or 2.0**-30 <= peak <= 2.0**30:
        return a, b, 1.0
    exponent = math.frexp(peak)[1]
    return torch.ldexp(a, torch.tensor(-exponent)), torch.ldexp(b, torch.tensor(-exponent)), 2.0**exponent


def check_descriptors(x: ArrayLike | None, name: str, device: str | torch.device) -> torch.Tensor | None:
    """Descriptors ``(N, D)`` (numpy or torch, any real dtype) as a float32 tensor on ``device``; ``None`` stays
    ``None``. ``TypeError``/``ValueError`` naming ``name`` for another type or shape, NaN or inf, or float64
    values outside float32's range."""
    if x is None:
        return None
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "fiu":
            raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(native_order(x)))
    elif not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
    elif x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
    x = x.detach()  # matching is not differentiable
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (N, D), got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf")
    peak = float(x.abs().max()) if x.dtype == torch.float64 and x.numel() else 0.0
    f32 = torch.finfo(torch.float32)
    if peak > f32.max or 0 < peak < f32.tiny:  # distances are float32: they would be inf, or 0 and misordered
        raise ValueError(f"{name} holds values up to {peak:.3g}, {'beyond' if peak > 1 else 'below'} float32's "
                         f"range (descriptors are matched in float32): scale them {'down' if peak > 1 else 'up'}")
    x = x.to(device=device, dtype=torch.float32).contiguous()
    return x


def _chunk_rows(chunk_size: int | None, n2: int, device: torch.device) -> int:
    if chunk_size is None:  # at most _EXACT_ROWS: that bounds the re-ranking's memory too
        return min(_EXACT_ROWS, max(1, _CHUNK_ELEMS.get(device.type, _CHUNK_ELEMS["cpu"]) // max(n2, 1)))
    return int(chunk_size)


def sq_dist_chunks(a: torch.Tensor, b: torch.Tensor, chunk: int, pad_to: int = 1):
    """Yield ``(start, d)``, ``d`` (n, N2') holding the squared distances of rows
    ``a[start:start + n]`` to all of ``b``.

    ``N2'`` is ``N2`` rounded up to a multiple of ``pad_to``, the extra columns
    being +inf. ``d`` is a reused buffer, overwritten by the next step. One
    matmul of augmented vectors ``[a, |a|^2, 1] . [-2b, 1, |b|^2]`` gives
    ``|a|^2 + |b|^2 - 2ab`` with no extra pass over the block. Fast but not exact
    (``_neighbours`` re-ranks its candidates by exact distance); ``fginn.Neighbours``
    builds its tables on it too.
    """
    n2 = -(-len(b) // pad_to) * pad_to
    a_aug = torch.cat([a, a.square().sum(1, keepdim=True), a.new_ones(len(a), 1)], dim=1)  # (N1, D+2)
    b_aug = b.new_zeros(n2, b.shape[1] + 2)  # (N2', D+2); padding rows give 1 * inf
    torch.cat([-2 * b, b.new_ones(len(b), 1), b.square().sum(1, keepdim=True)], dim=1, out=b_aug[: len(b)])
    b_aug[len(b) :, -1] = float("inf")
    buf = a.new_empty(min(chunk, len(a)), n2)  # reused: allocating each block is slow on CPU
    for start in range(0, len(a), chunk):
        d = buf[: min(chunk, len(a) - start)]
        torch.mm(a_aug[start : start + chunk], b_aug.T, out=d)
        yield start, d


# Candidates per row that the matrix product proposes for re-ranking by exact distance (see _neighbours),
# and the most rows per block by default (re-ranking their candidates takes a few KiB a row).
_CANDIDATES = 4
_EXACT_ROWS = 1 << 14
# Rows per block in the cross-check (see _reverse_check).
_ROW_BLOCK = 32
# Pairs per block in the exact search over all of the other set (_search_exactly).
_EXACT_PAIRS = 1 << 17
# Relative error of a product of two matmul inputs rounded (or truncated) to TF32 or bfloat16, by
# torch.get_float32_matmul_precision(), with margin.
_INPUT_ROUNDING = {"highest": 0.0, "high": 3 * 2.0**-10, "medium": 3 * 2.0**-7}


def _neighbours(
    a: torch.Tensor, b: torch.Tensor, chunk: int, *, reverse: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Nearest neighbours by exact distance, whatever the rounding of the matrix product.

    Returns ``nn`` (N1, min(2, N2)) int64, the nearest and second nearest row of ``b`` of each row of
    ``a``, and with ``reverse`` ``mutual`` (N1,) bool: row ``i`` is the nearest row of ``a`` to
    ``b[nn[i, 0]]`` (else None). "Nearest" is by ``_exact_sq``, the lowest index first on exact ties.

    The product (``sq_dist_chunks``, in blocks of ``chunk`` rows) only proposes ``_CANDIDATES``
    candidates per row, whose exact distances decide; for ``reverse`` it gives the two smallest minima
    of blocks of ``_ROW_BLOCK`` rows per column (see ``_reverse_check``). ``_product_slack`` bounds the
    product's rounding error: where a row or column outside those looked at exactly could be as near
    (near-ties beyond the candidates, such as many duplicate descriptors), all of the other set is
    searched exactly. So the result is the same on every device.
    """
    n1, n2 = len(a), len(b)
    k = min(_CANDIDATES, n2)
    slack_a, slack_b = _product_slack(a, b)
    nn = torch.empty(n1, min(2, n2), dtype=torch.long, device=a.device)
    sure = torch.empty(n1, dtype=torch.bool, device=a.device)
    if reverse:  # per column: the smallest row-block minimum, its block, and the second smallest
        chunk = max(_ROW_BLOCK, chunk // _ROW_BLOCK * _ROW_BLOCK)  # no block of rows across two chunks
        m1 = torch.full((n2,), float("inf"), device=a.device)
        m2, blk1 = m1.clone(), torch.zeros(n2, dtype=torch.long, device=a.device)
        near = torch.empty(n1, device=a.device)  # the product's least value of nn[i, 0] over i's block but i
    for start, d in sq_dist_chunks(a, b, chunk, pad_to=_BLOCK):
        stop = start + len(d)
        vals, cols = _candidates(d, k, _BLOCK)
        nn[start:stop], sure[start:stop] = _rerank(a[start:stop], b, cols, vals, slack_a[start:stop], k == n2)
        if reverse:
            _merge_block_minima(d[:, :n2], start // _ROW_BLOCK, m1, m2, blk1)
            near[start:stop] = _block_others(d, nn[start:stop, 0])
    unsure = (~sure).nonzero()[:, 0]  # one host sync, not one per block
    _search_exactly(a, b, unsure, nn)
    if not reverse:
        return nn, None
    near[unsure] = float("nan")  # taken for another column than the one the exact search chose
    return nn, _reverse_check(a, b, nn[:, 0], near, m1, m2, blk1, slack_b)


def _merge_block_minima(
    d: torch.Tensor, first: int, m1: torch.Tensor, m2: torch.Tensor, blk1: torch.Tensor
) -> None:
    """Fold the blocks of ``_ROW_BLOCK`` rows of ``d`` (n, N2), the first being block ``first``, into the
    running smallest block minimum ``m1`` (N2,) of each column, its block ``blk1`` and the second smallest
    ``m2`` (in place)."""
    full = len(d) // _ROW_BLOCK * _ROW_BLOCK
    bmin = d[:full].unflatten(0, (-1, _ROW_BLOCK)).amin(dim=1)  # (nb, N2)
    if full < len(d):  # the last, shorter block of the last chunk
        bmin = torch.cat([bmin, d[full:].amin(dim=0, keepdim=True)])
    c1, b1 = bmin.min(dim=0)  # (nb, N2) is small: the index search is cheap here
    c2 = bmin.scatter(0, b1[None], float("inf")).amin(dim=0)
    new = c1 < m1
    m2.copy_(torch.where(new, torch.minimum(m1, c2), torch.minimum(m2, c1)))
    blk1.copy_(torch.where(new, b1 + first, blk1))
    m1.copy_(torch.minimum(m1, c1))


def _block_others(d: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """(n,): for each row ``r`` of ``d`` (n, N2'), the least of ``d[:, cols[r]]`` over the other rows of
    its block of ``_ROW_BLOCK`` (inf if none); ``d``'s first row starts a block."""
    r = torch.arange(len(d), device=d.device)
    rows = (r // _ROW_BLOCK * _ROW_BLOCK)[:, None] + torch.arange(_ROW_BLOCK, device=d.device)  # (n, _ROW_BLOCK)
    vals = d[rows.clamp(max=len(d) - 1), cols[:, None]]
    return vals.masked_fill((rows >= len(d)) | (rows == r[:, None]), float("inf")).amin(dim=1)


def _reverse_check(
    a: torch.Tensor,
    b: torch.Tensor,
    nn1: torch.Tensor,
    near: torch.Tensor,
    m1: torch.Tensor,
    m2: torch.Tensor,
    blk1: torch.Tensor,
    slack: torch.Tensor,
) -> torch.Tensor:
    """(N1,) bool: row ``i`` of ``a`` is the nearest (lowest index on exact ties) to ``b[nn1[i]]``.

    The product's least value of column ``j = nn1[i]`` over the rows but ``i`` is the least of
    ``near[i]`` (the rest of ``i``'s block of ``_ROW_BLOCK`` rows; NaN: unknown) and of the smallest
    block minimum of the column outside that block (``m1[j]``, or ``m2[j]`` when ``m1[j]`` is that block's). Within
    ``slack[j]`` of ``i``'s exact distance, it leaves a doubt, and the column is searched exactly.
    """
    j = nn1
    own = _exact_sq(a, b[j])  # (N1,)
    blk = torch.arange(len(a), device=a.device) // _ROW_BLOCK
    others = torch.minimum(near, torch.where(blk1[j] == blk, m2[j], m1[j])).to(own.dtype)
    keep = others - slack[j] > own  # every other row is farther (False for NaN)
    doubt = ~keep & ~(others + slack[j] < own)  # else some row is nearer (a doubt for NaN)
    q = doubt.nonzero()[:, 0]
    cols, inverse = j[q].unique(return_inverse=True)
    rev = torch.empty(len(cols), 1, dtype=torch.long, device=a.device)
    _search_exactly(b[cols], a, torch.arange(len(cols), device=a.device), rev)
    keep[q] = rev[inverse, 0] == q
    return keep


def _candidates(d: torch.Tensor, k: int, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` smallest values of each row of ``d`` (n, nb * block) and their columns, (n, k) each, in no
    particular order: every other value of the row is at least the largest of them.

    Reductions that also return indices are several times slower on CPU than amin, so the one pass over
    ``d`` is an amin per block of columns; the ``k`` smallest values lie in the ``k`` blocks with the
    smallest minima, searched next.
    """
    blocks = d.unflatten(1, (-1, block))  # (n, nb, block) view
    kb = min(k, blocks.shape[1])
    chosen = blocks.amin(dim=2).topk(kb, dim=1, largest=False, sorted=False).indices  # (n, kb)
    values = blocks.gather(1, chosen[:, :, None].expand(-1, -1, block)).flatten(1)  # (n, kb * block)
    cols = (chosen[:, :, None] * block + torch.arange(block, device=d.device)).flatten(1)
    vals, best = values.topk(k, dim=1, largest=False, sorted=False)
    return vals, cols.gather(1, best)


def _rerank(
    q: torch.Tensor,
    db: torch.Tensor,
    cols: torch.Tensor,
    vals: torch.Tensor,
    slack: torch.Tensor,
    complete: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two nearest of the candidates ``cols`` (n, k), rows of ``db``, of each row of ``q`` (n, D).

    ``vals`` (n, k) are the candidates' values in the matrix product, every other column's being at
    least their largest, and ``slack`` (n,) bounds the product's error. Returns the picks (n, min(2, k)),
    nearest first by exact distance, the lowest index first on ties, and ``sure`` (n,) bool: no other
    column can be as near as the last pick (always true when ``complete``: the candidates are all of ``db``).
    """
    cols = cols.sort(dim=1).values  # the stable sort below then keeps the lowest index first on ties
    exact = _exact_sq(q[:, None], db[cols])  # (n, k)
    best = torch.sort(exact, dim=1, stable=True).indices[:, :2]
    pick = cols.gather(1, best)
    if complete:
        return pick, torch.ones(len(q), dtype=torch.bool, device=q.device)
    floor = vals.amax(dim=1).to(exact.dtype) - slack  # every other column's exact value is at least this
    return pick, floor > exact.gather(1, best[:, -1:])[:, 0]


def _search_exactly(q: torch.Tensor, db: torch.Tensor, rows: torch.Tensor, out: torch.Tensor) -> None:
    """Write into ``out[rows]`` (R, m) the ``m`` nearest rows of ``db`` (N, D) of ``q[rows]`` by exact
    distance, the lowest index first on ties: all of ``db`` searched, in blocks of ``_EXACT_PAIRS`` pairs."""
    m, n = out.shape[1], len(db)
    group = max(1, _EXACT_PAIRS // n)
    step = max(m, _EXACT_PAIRS // group)
    for g in rows.split(group):
        best = torch.empty(len(g), 0, dtype=_exact_dtype(q.device), device=q.device)
        idx = torch.empty(len(g), 0, dtype=torch.long, device=q.device)
        for start in range(0, n, step):
            stop = min(start + step, n)
            exact = _exact_sq(q[g, None], db[None, start:stop])  # (R, step)
            cols = torch.arange(start, stop, device=q.device).expand(len(g), -1)
            best, order = torch.sort(torch.cat([best, exact], dim=1), dim=1, stable=True)  # earlier columns first
            best, idx = best[:, :m], torch.cat([idx, cols], dim=1).gather(1, order[:, :m])
        out[g] = idx


def _product_slack(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds on the error of ``sq_dist_chunks``'s values, (N1,) for the rows of ``a``, (N2,) for ``b``.

    A float32 dot product of n terms is off by at most about ``n * 2^-24`` times the sum of the terms'
    magnitudes, whatever the summation order (so on every device); here that sum, and that of the
    squared norms it adds, are at most ``(|a_i| + |b_j|)^2``. The bound taken is twice that, plus the
    rounding of the inputs when matmuls may use TF32 or bfloat16 (``torch.set_float32_matmul_precision``).
    """
    dtype = _exact_dtype(a.device)
    na, nb = a.to(dtype).norm(dim=1), b.to(dtype).norm(dim=1)
    unit = 4 * (a.shape[1] + 2) * 2.0**-24 + _INPUT_ROUNDING.get(torch.get_float32_matmul_precision(), 0.1)
    return unit * (na + nb.max()).square(), unit * (nb + na.max()).square()


def _exact_dtype(device: torch.device) -> torch.dtype:
    """float64, or float32 on devices without it (MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _exact_sq(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared L2 distances of broadcast rows of ``a`` and ``b`` (..., D), summed in float64 in a fixed
    order (pairwise halves): the same bits on every device, whatever its reduction kernels do.

    float64 is exact for the squares of float32 differences; devices without it (MPS) use float32.
    """
    dtype = _exact_dtype(a.device)
    x = (a.to(dtype) - b.to(dtype)).square_()
    while x.shape[-1] > 1:
        if x.shape[-1] % 2:
            x = torch.cat([x, x.new_zeros(x.shape[:-1] + (1,))], dim=-1)
        half = x.shape[-1] // 2
        x = x[..., :half].add_(x[..., half:])  # in place: no new buffer per level
    return x[..., 0] if x.shape[-1] == 1 else x.new_zeros(x.shape[:-1])


def _exact_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L2 distances ``(M,)`` float32 of rows ``a[i]``, ``b[i]`` (M, D), from ``_exact_sq``."""
    return _exact_sq(a, b).sqrt().float()
