"""Hardest-in-batch triplet margin loss of HardNet.

Mishchuk et al., "Working hard to know your neighbor's margins: Local
descriptor learning loss", NIPS 2017. Each row ``i`` of ``anchor`` and
``positive`` describes the same 3D point; every other row of the batch is a
negative. The loss pulls matching pairs together and pushes the *closest*
non-matching descriptor at least ``margin`` further away.
"""

from __future__ import annotations

from typing import Literal

import torch

from ..core.patches import check_number

ReductionMode = Literal["min", "average", "random"]

# Pairs closer than this are treated as duplicates of the positive (e.g. the
# same patch stored twice under different point ids) and are never used as
# negatives. Value from the authors' implementation.
NEAR_DUPLICATE_DIST = 0.008


def distance_matrix(a: torch.Tensor, p: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pairwise L2 distances between two sets of descriptors.

    Args:
        a: (n, D) descriptors.
        p: (m, D) descriptors.
        eps: added under the square root so the gradient stays finite at 0.

    Returns:
        (n, m) float32 matrix with ``d[i, j] = sqrt(|a_i - p_j|^2 + eps)``.
    """
    if a.ndim != 2 or p.ndim != 2 or a.shape[1] != p.shape[1]:
        raise ValueError(f"expected (n, D) and (m, D) descriptors, got {tuple(a.shape)} and {tuple(p.shape)}")
    # Always float32: |a|^2 + |p|^2 - 2 a.p cancels badly in bf16/fp16.
    with torch.autocast(device_type=a.device.type, enabled=False):
        a, p = a.float(), p.float()
        d2 = (a * a).sum(1, keepdim=True) + (p * p).sum(1)[None] - 2.0 * (a @ p.t())
        return torch.sqrt(d2.clamp(min=0.0) + eps)


def hardest_in_batch_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    *,
    margin: float = 1.0,
    anchor_swap: bool = True,
    reduction_mode: ReductionMode = "min",
    eps: float = 1e-8,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Triplet margin loss with in-batch negative mining.

    For pair ``i`` the negative distance ``d_neg_i`` is taken over
    ``d(anchor_i, positive_j)``, ``j != i`` (row ``i``) and, with
    ``anchor_swap``, also ``d(positive_i, anchor_j)`` (column ``i``). The
    diagonal and entries closer than ``NEAR_DUPLICATE_DIST`` are excluded.
    The loss is ``mean_i max(0, margin + d(anchor_i, positive_i) - d_neg_i)``.

    Args:
        anchor: (n, D) descriptors, n >= 2.
        positive: (n, D) descriptors; row i matches ``anchor[i]``.
        margin: triplet margin, a finite number >= 0.
        anchor_swap: also mine negatives among the anchors for each positive.
        reduction_mode: how the negative of row i is chosen:
            ``'min'`` the hardest one (HardNet);
            ``'average'`` every valid negative, the hinge is averaged over them;
            ``'random'`` one valid negative drawn uniformly (uses ``generator``).
            With ``anchor_swap``, entry ``(i, j)`` uses ``min(d[i, j], d[j, i])``.
        eps: stabiliser of the square root, see ``distance_matrix``.
        generator: random source for ``'random'``; the global RNG if None.

    Returns:
        Scalar float32 loss. Rows without any valid negative contribute 0.

    Raises:
        TypeError: ``anchor`` or ``positive`` is not a tensor, or ``margin`` not a number.
        ValueError: shapes other than two equal (n, D) with n >= 2, a bad ``margin`` or ``reduction_mode``.
    """
    if not isinstance(anchor, torch.Tensor) or not isinstance(positive, torch.Tensor):
        raise TypeError(f"anchor and positive must be torch tensors (n, D), got {type(anchor).__name__} and "
                        f"{type(positive).__name__}")
    check_number(margin, "margin", 0.0, strict=False)
    if anchor.shape != positive.shape or anchor.ndim != 2:
        raise ValueError(
            f"anchor and positive must both be (n, D), got {tuple(anchor.shape)} and {tuple(positive.shape)}"
        )
    n = anchor.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 pairs for in-batch negatives, got {n}")
    if reduction_mode not in ("min", "average", "random"):
        raise ValueError(f"reduction_mode must be 'min', 'average' or 'random', got {reduction_mode!r}")

    d = distance_matrix(anchor, positive, eps)  # (n, n)
    pos = d.diagonal()  # (n,)

    eye = torch.eye(n, dtype=torch.bool, device=d.device)
    excluded = eye | (d.detach() < NEAR_DUPLICATE_DIST)
    # Push excluded entries out of reach by adding a constant (as the authors
    # do) instead of masking with inf, so the graph keeps finite values. The
    # offset exceeds max(d) + margin, hence an excluded entry never gives a
    # positive hinge, whatever the descriptor scale.
    big = d.detach().max() + abs(margin) + 1.0
    neg = d + big * excluded  # (n, n)
    if anchor_swap:
        # neg.t()[i, j] = d(anchor_j, positive_i), masked by its own exclusion.
        neg = torch.minimum(neg, neg.t())
        excluded = excluded & excluded.t()

    if reduction_mode == "min":
        d_neg = neg.min(dim=1).values
        return (margin + pos - d_neg).clamp(min=0.0).mean()

    if reduction_mode == "random":
        device = generator.device if generator is not None else d.device
        scores = torch.rand(n, n, generator=generator, device=device).to(d.device)
        # argmax over random scores of the valid entries = uniform valid pick;
        # a row with none left picks an excluded entry, whose hinge is 0.
        j = scores.masked_fill(excluded, -1.0).argmax(dim=1)
        d_neg = neg.gather(1, j[:, None]).squeeze(1)
        return (margin + pos - d_neg).clamp(min=0.0).mean()

    # 'average': hinge of every valid triplet, averaged per row, then over rows.
    hinge = (margin + pos[:, None] - neg).clamp(min=0.0) * ~excluded
    n_valid = (~excluded).sum(dim=1).clamp(min=1)
    return (hinge.sum(dim=1) / n_valid).mean()
