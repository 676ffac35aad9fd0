"""FPR95 of a descriptor on PhotoTour-layout patch pairs (Brown et al.; also our synthetic sets).

The layout is described in :mod:`hardnet_desc.train.datasets`; the metric in
:mod:`hardnet_desc.evaluation.fpr95`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..descriptor import HardNetDescriptor
from ..train.datasets import find_pair_files, read_pairs, read_phototour
from .fpr95 import fpr95, pair_distances

PatchDescriber = Callable[[np.ndarray], np.ndarray]


def pairs_fpr95(describe: PatchDescriber, patches: np.ndarray, pairs: tuple[np.ndarray, np.ndarray, np.ndarray]) -> float:
    """FPR95 of ``describe`` on pairs of ``patches``.

    Only the patches that some pair uses are described.

    Args:
        describe: ``(n, S, S)`` uint8 patches -> ``(n, D)`` descriptors, e.g.
            ``HardNetDescriptor(...).describe_patches``.
        patches: ``(N, S, S)`` uint8.
        pairs: ``(idx1 (M,), idx2 (M,), is_match (M,))`` as from :func:`~hardnet_desc.train.datasets.read_pairs`.
    """
    idx1, idx2, is_match = pairs
    used, inverse = np.unique(np.concatenate([idx1, idx2]), return_inverse=True)
    if used.size and (used[0] < 0 or used[-1] >= len(patches)):
        raise IndexError(f"pair indices outside the {len(patches)} patches (min {used[0]}, max {used[-1]})")
    desc = np.asarray(describe(patches[used]))
    local1, local2 = inverse[: len(idx1)], inverse[len(idx1) :]
    return fpr95(pair_distances(desc, local1, local2), is_match)


def evaluate_fpr95(
    root: str | Path,
    descriptor: HardNetDescriptor,
    pair_files: Sequence[str | Path] | None = None,
) -> dict[str, float]:
    """FPR95 of ``descriptor`` for each pair file of a PhotoTour folder.

    Args:
        root: folder with ``info.txt``, ``patches*.bmp`` and ``m50_*.txt`` pair files.
        descriptor: describes the 32x32 patches with :meth:`HardNetDescriptor.describe_patches`.
        pair_files: pair files to use; a bare name is looked up in ``root``. None = all
            ``m50_*.txt`` in ``root``.

    Returns:
        pair file name -> FPR95 in [0, 1].

    Raises:
        FileNotFoundError: missing folder or pair file, or no pair file in ``root``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"PhotoTour folder not found: {root}")
    if pair_files:
        files = [Path(f) if Path(f).is_file() or not (root / f).is_file() else root / f for f in pair_files]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"pair file(s) not found: {', '.join(missing)}")
    else:
        files = find_pair_files(root)
        if not files:
            raise FileNotFoundError(f"{root}: no m50_*.txt pair file (pass one with --pairs)")
    data = read_phototour(root, patch_size=32)
    return {f.name: pairs_fpr95(descriptor.describe_patches, data.patches, read_pairs(f)) for f in files}
