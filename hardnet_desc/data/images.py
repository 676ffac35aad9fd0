"""Finding image files in a folder."""

from __future__ import annotations

import os
from pathlib import Path

#: File endings (lower case) that count as images.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp"}


def list_images(folder: str | Path) -> list[Path]:
    """Image files below ``folder`` (recursive), sorted. Linked folders are followed, each real folder listed
    once, under its own name where ``folder`` holds it without a link (else under the first link's, in name
    order); a link to ``folder`` or above it is not followed. Raises ``FileNotFoundError``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such image folder: {folder}")
    top = os.path.realpath(folder)
    direct = {os.path.realpath(root): root for root, _, _ in os.walk(folder)}  # the folders reached without links
    found, seen = [], set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen or direct.get(real, root) != root or _above(real, top):
            dirs.clear()  # listed already or under its own name, or a link up the tree
            continue
        seen.add(real)
        dirs.sort()
        found += [Path(root, f) for f in files if Path(f).suffix.lower() in IMAGE_SUFFIXES and Path(root, f).is_file()]
    return sorted(found)


def _above(path: str, top: str) -> bool:
    """True if the real path ``path`` is a folder that holds the real path ``top`` (not ``top`` itself)."""
    try:
        return path != top and os.path.commonpath([path, top]) == path
    except ValueError:  # Windows: another drive
        return False
