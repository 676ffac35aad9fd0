"""Finding image files in a folder."""

from __future__ import annotations

import os
from pathlib import Path

#: File endings (lower case) that count as images.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp"}


def list_images(folder: str | Path) -> list[Path]:
    """Image files below ``folder`` (recursive, into linked folders too, each real folder once), sorted.
    Raises ``FileNotFoundError``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such image folder: {folder}")
    found, seen = [], set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a link back up the tree, or a second link to one folder
            dirs.clear()
            continue
        seen.add(real)
        dirs.sort()  # the first name of a folder linked twice is the one listed
        found += [Path(root, f) for f in files if Path(f).suffix.lower() in IMAGE_SUFFIXES and Path(root, f).is_file()]
    return sorted(found)
