"""False-positive rate at 95% recall (FPR95), the Brown / PhotoTour metric.

Pairs are ranked by descriptor distance (lower = more similar). The
threshold is the smallest distance that accepts at least ``recall`` of the
matching pairs; FPR is the fraction of non-matching pairs it also accepts.

A leaf module (numpy and torch only), so that training (validation FPR95) and evaluation
(``hardnet-desc eval-fpr95``) share it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch


def fpr_at_recall(distances: np.ndarray, is_match: np.ndarray, recall: float = 0.95) -> float:
    """False-positive rate at the distance threshold reaching ``recall``.

    With ``P`` positives sorted by distance, the threshold is the
    ``ceil(recall * P)``-th smallest positive distance; a pair is accepted
    when ``distance <= threshold``. Ties therefore count against the
    descriptor: every negative at exactly the threshold is a false positive.

    Args:
        distances: (M,) pair distances.
        is_match: (M,) bool (or 0/1) ground truth, True for matching pairs.
        recall: target true-positive rate in (0, 1].

    Returns:
        FPR in [0, 1].
    """
    d = np.asarray(distances, dtype=np.float64).reshape(-1)
    m = np.asarray(is_match).reshape(-1)
    if d.shape != m.shape:
        raise ValueError(f"distances and is_match differ in length: {d.size} vs {m.size}")
    if m.dtype != bool:
        if not np.isin(m, (0, 1)).all():
            raise ValueError("is_match must be boolean or contain only 0 and 1")
        m = m.astype(bool)
    if not 0.0 < recall <= 1.0:
        raise ValueError(f"recall must be in (0, 1], got {recall}")
    if np.isnan(d).any():
        raise ValueError(f"distances contain {int(np.isnan(d).sum())} NaN value(s)")
    pos, neg = d[m], d[~m]
    if pos.size == 0:
        raise ValueError("no matching pairs (positives): FPR at recall is undefined")
    if neg.size == 0:
        raise ValueError("no non-matching pairs (negatives): FPR is undefined")

    # Small tolerance so e.g. 0.95 * 20 = 19.000000000000004 still needs 19.
    k = max(1, math.ceil(recall * pos.size - 1e-9))
    threshold = np.partition(pos, k - 1)[k - 1]
    return float(np.count_nonzero(neg <= threshold) / neg.size)


def fpr95(distances: np.ndarray, is_match: np.ndarray) -> float:
    """FPR at 95% recall; see ``fpr_at_recall``."""
    return fpr_at_recall(distances, is_match, recall=0.95)


def pair_distances(
    desc: np.ndarray | torch.Tensor,
    idx1: np.ndarray,
    idx2: np.ndarray,
    chunk: int = 65536,
) -> np.ndarray:
    """L2 distances between descriptor rows ``desc[idx1]`` and ``desc[idx2]``.

    Args:
        desc: (N, D) descriptors (numpy or torch; moved to CPU).
        idx1: (M,) row indices of the first patch of each pair.
        idx2: (M,) row indices of the second patch.
        chunk: pairs processed at once, bounds the temporary memory.

    Returns:
        (M,) float32 distances.
    """
    if isinstance(desc, torch.Tensor):
        desc = desc.detach().float().cpu().numpy()
    desc = np.asarray(desc)
    if desc.ndim != 2:
        raise ValueError(f"desc must be (N, D), got shape {desc.shape}")
    i1 = np.asarray(idx1, dtype=np.int64).reshape(-1)
    i2 = np.asarray(idx2, dtype=np.int64).reshape(-1)
    if i1.shape != i2.shape:
        raise ValueError(f"idx1 and idx2 differ in length: {i1.size} vs {i2.size}")
    n = desc.shape[0]
    for name, idx in (("idx1", i1), ("idx2", i2)):
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"{name} has indices outside [0, {n}) (min {idx.min()}, max {idx.max()})")
    out = np.empty(i1.size, dtype=np.float32)
    for s in range(0, i1.size, chunk):
        diff = desc[i1[s : s + chunk]].astype(np.float32) - desc[i2[s : s + chunk]]
        out[s : s + chunk] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    return out


PatchDescriber = Callable[[np.ndarray], np.ndarray]


def pairs_fpr95(describe: PatchDescriber, patches: np.ndarray, pairs: tuple[np.ndarray, np.ndarray, np.ndarray]) -> float:
    """FPR95 of ``describe`` on pairs of ``patches``.

    Only the patches that some pair uses are described.

    Args:
        describe: ``(n, S, S)`` uint8 patches -> ``(n, D)`` descriptors, e.g.
            ``HardNetDescriptor(...).describe_patches``.
        patches: ``(N, S, S)`` uint8.
        pairs: ``(idx1 (M,), idx2 (M,), is_match (M,))`` as from ``read_pairs``.
    """
    idx1, idx2, is_match = pairs
    used, inverse = np.unique(np.concatenate([idx1, idx2]), return_inverse=True)
    if used.size and (used[0] < 0 or used[-1] >= len(patches)):
        raise IndexError(f"pair indices outside the {len(patches)} patches (min {used[0]}, max {used[-1]})")
    desc = np.asarray(describe(patches[used]))
    local1, local2 = inverse[: len(idx1)], inverse[len(idx1) :]
    return fpr95(pair_distances(desc, local1, local2), is_match)
