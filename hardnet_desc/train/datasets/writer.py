"""What both training-set builders share: the split writer and the default ``PatchSpec``.

A split is a PhotoTour folder (``hardnet_desc.data.phototour``) written from parts, one per photo
(synthetic builder) or per scene (SfM builder): each part's patches with its own point labels
``0..P-1``, which run on across the parts, and the part's index as the second column of
``info.txt`` (``--photos-per-batch`` draws a batch's negatives from one part).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np

from ...data.phototour import PairArrays, PhotoTourWriter
from ...core.patches import PatchSpec

#: One part of a split: patches (k, 64, 64) uint8, their point labels (k,) counted from 0 within the
#: part, and the part's index (``info.txt``'s second column).
Part = tuple[np.ndarray, np.ndarray, int]


def write_split(
    folder: Path,
    parts: Iterable[Part],
    *,
    first_label: int = 0,
    pair_files: Callable[[np.ndarray], Mapping[str, PairArrays] | None] | None = None,
    total: int | None = None,
    unit: str = "photos",
    progress: bool = True,
) -> np.ndarray:
    """Write the ``parts`` to the PhotoTour folder ``folder``; returns every patch's label (N,) int64.

    Args:
        folder: the split's folder (``OUT/train`` or ``OUT/val``).
        parts: ``(patches, labels, index)`` per photo or scene, in order; labels run on from
            ``first_label``, each part's after the previous part's largest.
        pair_files: called with all labels once every part is written; the pair files it returns
            (``{"m50_*.txt": (idx1, idx2, is_match)}``) are written beside the patches.
        total, unit, progress: the progress bar over the parts (``"{folder.name} {unit}"``).
    """
    from tqdm import tqdm

    writer = PhotoTourWriter(folder)
    labels: list[np.ndarray] = []
    next_label = first_label
    for patches, local, index in tqdm(parts, total=total, desc=f"{folder.name} {unit}", disable=not progress):
        labels.append(local + next_label)
        writer.add(patches, labels[-1], index)
        next_label += int(local.max()) + 1 if len(local) else 0
    ids = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    writer.close(pair_files(ids) if pair_files else None)
    return ids


def default_patch_spec(patch_scale: float | None = None, min_kp_size: float | None = None) -> PatchSpec:
    """The ``PatchSpec`` a training set is cut with: ``patch_scale`` and ``min_kp_size`` as given, else the
    bundled weights' (a set cut as they describe; ``PatchSpec``'s defaults for what they do not record).

    Raises:
        ValueError, TypeError: a value that is not a valid number for its field.
    """
    if patch_scale is None or min_kp_size is None:
        from ...core.weights import load_weights

        return load_weights().patch_spec.replace(scale=patch_scale, min_kp_size=min_kp_size)
    return PatchSpec(scale=patch_scale, min_kp_size=min_kp_size)


def spec_record(spec: PatchSpec) -> dict[str, float]:
    """The spec as a dataset's ``meta.json`` records it, in numbers: ``{"patch_scale": 6.0, "min_kp_size": 3.5}``
    (the keys of ``PatchSpec.to_metadata``, which the trainer reads back and writes into the weights)."""
    return {key: float(value) for key, value in spec.to_metadata().items()}
