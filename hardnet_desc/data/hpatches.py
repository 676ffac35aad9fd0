"""The HPatches patch release (``hpatches-release``): one PNG per sequence image, patches stacked vertically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.model import PATCH_SIZE
from .phototour import PhotoTourData, check_patch_size, png_shape, read_gray, resize_area

HPATCHES_SIZE = 65
HPATCHES_IMAGES = ("ref",) + tuple(f"{t}{i}" for t in "eht" for i in range(1, 6))


def read_hpatches(
    root: str | Path,
    patch_size: int = PATCH_SIZE,
    sequences: Sequence[str] | None = None,
    images: Sequence[str] = HPATCHES_IMAGES,
) -> PhotoTourData:
    """Read the HPatches patch release (``hpatches-release`` layout).

    Each ``<root>/<seq>/<image>.png`` stacks n 65x65 patches vertically; row r
    of every image of a sequence is the same 3D point. Patches are ordered by
    sequence, then image (``images`` order), then row.

    Args:
        root: folder of sequence folders.
        patch_size: output side (65 -> 32 uses cv2 INTER_AREA).
        sequences: sequence names to load; all folders holding ``ref.png`` if None.
        images: image names to load per sequence (default all 16).

    Returns:
        PhotoTourData; point ids are unique across sequences and ``source``
        indexes ``'<seq>/<image>'`` names.
    """
    root = Path(root)
    check_patch_size(patch_size)
    if not root.is_dir():
        raise FileNotFoundError(f"HPatches folder not found: {root}")
    if sequences is None:
        sequences = sorted(p.name for p in root.iterdir() if (p / "ref.png").is_file())
        if not sequences:
            raise FileNotFoundError(f"no HPatches sequence (folder with ref.png) in {root}")
    if isinstance(sequences, str):
        sequences = [sequences]
    if isinstance(images, str):
        images = [images]
    if not sequences or not images:
        raise ValueError("sequences and images must each name at least one entry")

    files, n_rows = _patch_files(root, sequences, images)

    # Pass 2: decode and downsample file by file.
    total = len(images) * sum(n_rows)
    patches = np.empty((total, patch_size, patch_size), dtype=np.uint8)
    point_ids = np.empty(total, dtype=np.int64)
    source = np.empty(total, dtype=np.int32)
    names = tuple(f"{p.parent.name}/{p.stem}" for p in files)
    rows = np.repeat(n_rows, len(images))  # patches per file
    first_point = np.repeat(np.cumsum([0] + n_rows[:-1]), len(images))
    offset = 0
    for f, path in enumerate(files):
        n = int(rows[f])
        img = read_gray(path)
        if img.shape != (n * HPATCHES_SIZE, HPATCHES_SIZE):
            raise ValueError(f"{path}: decoded shape {img.shape} differs from its PNG header")
        patches[offset : offset + n] = resize_area(img, patch_size, n * patch_size).reshape(n, patch_size, patch_size)
        point_ids[offset : offset + n] = first_point[f] + np.arange(n)
        source[offset : offset + n] = f
        offset += n
    return PhotoTourData(patches, point_ids, source, names)


def _patch_files(root: Path, sequences: Sequence[str], images: Sequence[str]) -> tuple[list[Path], list[int]]:
    """Pass 1 of ``read_hpatches``: the files and each sequence's patch count, from the PNG
    headers, so a mismatch fails early and the output is allocated once."""
    files, n_rows = [], []
    for seq in sequences:
        if not (root / seq).is_dir():
            raise FileNotFoundError(f"HPatches sequence not found: {root / seq}")
        counts = {}
        for name in images:
            path = root / seq / f"{name}.png"
            h, w = png_shape(path)
            if w != HPATCHES_SIZE or h % HPATCHES_SIZE:
                raise ValueError(f"{path}: expected a 65-wide stack of 65x65 patches, got {h}x{w}")
            counts[name] = h // HPATCHES_SIZE
            files.append(path)
        if len(set(counts.values())) > 1:
            raise ValueError(f"HPatches sequence {seq!r}: images disagree in patch count: {counts}")
        n_rows.append(counts[images[0]])
    return files, n_rows
