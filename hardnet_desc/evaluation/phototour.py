"""FPR95 of a descriptor on PhotoTour-layout patch pairs (Brown et al.; also our synthetic sets).

The layout is described in ``hardnet_desc.data.phototour``; the metric in
``hardnet_desc.fpr95``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..data.phototour import find_pair_files, read_pairs, read_phototour
from ..descriptor import HardNetDescriptor
from ..fpr95 import pairs_fpr95
from ..core.model import PATCH_SIZE


def evaluate_fpr95(
    root: str | Path,
    descriptor: HardNetDescriptor | Callable[[np.ndarray], np.ndarray],
    pair_files: Sequence[str | Path] | None = None,
    patch_size: int = PATCH_SIZE,
) -> dict[str, float]:
    """FPR95 of ``descriptor`` for each pair file of a PhotoTour folder.

    Args:
        root: folder with ``info.txt``, ``patches*.bmp`` and ``m50_*.txt`` pair files.
        descriptor: a ``HardNetDescriptor`` (its ``describe_patches``), or any function
            ``(N, S, S) uint8 patches -> (N, D)`` such as
            ``hardnet_desc.evaluation.methods.sift_patches``.
        pair_files: pair files to use; a bare name is looked up in ``root``. None = all
            ``m50_*.txt`` in ``root``.
        patch_size: the stored patches are resized to this side (32 for HardNet; 64 keeps them).

    Returns:
        pair file name -> FPR95 in [0, 1].

    Raises:
        FileNotFoundError: missing folder or pair file, or no pair file in ``root``.
        ValueError: a malformed pair file, or one whose patch indices lie outside the folder's patches.
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
    data = read_phototour(root, patch_size=patch_size)
    describe = descriptor.describe_patches if isinstance(descriptor, HardNetDescriptor) else descriptor
    pairs = {f: read_pairs(f, len(data)) for f in files}  # all checked before any patch is described
    return {f.name: pairs_fpr95(describe, data.patches, p) for f, p in pairs.items()}
