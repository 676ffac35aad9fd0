"""Finding image files in a folder."""

from __future__ import annotations

from pathlib import Path

#: File endings (lower case) that count as images.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp"}


def list_images(folder: str | Path) -> list[Path]:
    """Image files below ``folder`` (recursive), sorted. Raises ``FileNotFoundError``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such image folder: {folder}")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
