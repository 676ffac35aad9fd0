"""Drawing matches: one function used by the CLI, the examples and the notebooks."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from .outputs import check_output, write_bytes

#: Written into every picture ``save_picture`` makes (PNG tEXt chunk, JPEG comment), so that a later
#: run (of ``hardnet-desc match`` or ``examples/match_pair.py``) may overwrite its own pictures but never
#: another file without ``force`` (``outputs.check_output``).
PICTURE_MARK = b"hardnet-desc match picture"
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: The widest an image of the picture is, in units of its height: a 2-pixel-high strip scaled to 600 pixels
#: high made a picture 1.2 million pixels wide that PNG and JPEG cannot hold.
MAX_ASPECT = 8


def _to_bgr(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8:
        peak = 65535.0 if image.dtype == np.uint16 else (255.0 if float(image.max(initial=0)) > 1 else 1.0)
        image = np.clip(image.astype(np.float32) * (255.0 / peak), 0, 255).astype(np.uint8)
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return image[:, :, :3].copy()


def draw_matches(
    image1: np.ndarray,
    image2: np.ndarray,
    points1: np.ndarray,
    points2: np.ndarray,
    text: str | Sequence[str] = (),
    *,
    height: int = 600,
    max_lines: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """Side-by-side picture of point correspondences, as a BGR uint8 image.

    Both images are scaled to ``height`` pixels and slightly dimmed so that the lines stand
    out; each match gets its own colour. ``text`` lines are written on a dark banner on top.

    Args:
        image1: ``(H, W, 3)`` BGR or ``(H, W)`` grey image (uint8, uint16 or float).
        image2: the same for the second image.
        points1: ``(M, 2)`` matched ``(x, y)`` pixel positions in image1 (OpenCV convention),
            e.g. ``kpts1[matches.query_idx]``.
        points2: ``(M, 2)`` the corresponding positions in image2.
        text: a line or lines to write on the picture (e.g. the counts).
        height: height of the picture's image row (an image more than ``MAX_ASPECT`` times as wide as
            high is scaled to ``MAX_ASPECT * height`` pixels wide instead).
        max_lines: draw at most this many matches (a random subset) to stay readable.
        seed: for the subset and the colours.

    Returns:
        ``(banner + height, W, 3)`` uint8 BGR, ready for ``cv2.imwrite``.

    Raises:
        ValueError: ``points1`` and ``points2`` differ in length, or hold NaN or inf.
    """
    points1 = np.asarray(points1, np.float64).reshape(-1, 2)
    points2 = np.asarray(points2, np.float64).reshape(-1, 2)
    if len(points1) != len(points2):
        raise ValueError(f"points1 and points2 differ in length: {len(points1)} vs {len(points2)}")
    for name, points in (("points1", points1), ("points2", points2)):
        bad = np.flatnonzero(~np.isfinite(points).all(axis=1))
        if bad.size:
            raise ValueError(f"{name} contain NaN or inf ({bad.size} of {len(points)}, first: index {bad[0]})")
    rng = np.random.default_rng(seed)
    if len(points1) > max_lines:
        keep = np.sort(rng.choice(len(points1), max_lines, replace=False))
        points1, points2 = points1[keep], points2[keep]

    gap = max(4, height // 60)
    tiles, scales = zip(*(_dimmed_tile(image, height) for image in (image1, image2)))
    width = tiles[0].shape[1] + gap + tiles[1].shape[1]

    lines = [text] if isinstance(text, str) else list(text)
    font, font_scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.5, height / 900)
    thick = max(1, round(font_scale * 2))
    line_h = cv2.getTextSize("Ag", font, font_scale, thick)[0][1] * 2
    banner = line_h * len(lines) + (line_h // 2 if lines else 0)

    canvas = np.full((banner + height, width, 3), 255, np.uint8)
    canvas[banner : banner + tiles[0].shape[0], : tiles[0].shape[1]] = tiles[0]
    canvas[banner : banner + tiles[1].shape[0], tiles[0].shape[1] + gap :] = tiles[1]
    # (x, y) in the picture; pixel centres stay centres under scaling: (p + 0.5) * s - 0.5
    p1 = (points1 + 0.5) * scales[0] - 0.5 + [0, banner]
    p2 = (points2 + 0.5) * scales[1] - 0.5 + [tiles[0].shape[1] + gap, banner]

    _draw_lines(canvas, p1, p2, rng, max(1, round(height / 600)))

    if lines:
        canvas[:banner] = 32
        for i, line in enumerate(lines):
            origin = (line_h // 2, line_h * (i + 1))
            # Hershey fonts draw ASCII only, and a surrogate (from a file name that is not UTF-8) crashes OpenCV
            text = line.encode("ascii", "replace").decode()
            cv2.putText(canvas, text, origin, font, font_scale, (255, 255, 255), thick, cv2.LINE_AA)
    return canvas


def _dimmed_tile(image: np.ndarray, height: int) -> tuple[np.ndarray, float]:
    """``image`` as BGR, dimmed (lines read better) and scaled to ``height``, or to ``MAX_ASPECT * height`` wide
    if that is narrower (a panorama or a strip: it then lies at the top of its row); and the scale."""
    s = min(height / image.shape[0], MAX_ASPECT * height / image.shape[1])
    size = (max(1, round(image.shape[1] * s)), max(1, min(height, round(image.shape[0] * s))))
    tile = (_to_bgr(image) * 0.75).astype(np.uint8)
    return cv2.resize(tile, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR), s


def _draw_lines(canvas: np.ndarray, p1: np.ndarray, p2: np.ndarray, rng: np.random.Generator, lw: int) -> None:
    """A line with dots at both ends from each ``p1[i]`` to ``p2[i]`` (picture pixels), each in a random hue."""
    shift = 4  # sub-pixel drawing: coordinates in 1/16 px
    hsv = np.full((1, len(p1), 3), 255, np.uint8)
    hsv[0, :, 0] = rng.integers(0, 180, len(p1))  # random hues, full saturation and value
    colors = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0] if len(p1) else np.empty((0, 3), np.uint8)
    for a, b, c in zip(np.round(p1 * 2**shift).astype(int), np.round(p2 * 2**shift).astype(int), colors.tolist()):
        cv2.line(canvas, tuple(a), tuple(b), c, lw, cv2.LINE_AA, shift)
        for q in (a, b):
            cv2.circle(canvas, tuple(q), (lw + 2) << shift, c, -1, cv2.LINE_AA, shift)


def check_picture_path(path: str | Path, force: bool = False) -> Path:
    """Check, before any work, that ``save_picture`` will be able and allowed to write ``path``.

    Raises:
        ValueError: the suffix is not .png, .jpg or .jpeg, or ``path`` is a folder.
        FileExistsError: ``path`` exists and is not a picture written by hardnet-desc (unless ``force``).
        FileNotFoundError: its folder does not exist.
        PermissionError: its folder (or the file) cannot be written.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give a file name such as {path / 'matches.png'}")
    if path.suffix.lower() not in PICTURE_SUFFIXES:
        raise ValueError(f"{path}: the picture must be a {', '.join(PICTURE_SUFFIXES)} file")
    check_output(path, is_picture_ours, force=force)  # and that its folder, if it exists, can be written
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {path.parent} does not exist")
    try:
        if path.exists():
            with open(path, "r+b"):
                pass
    except OSError as err:
        raise PermissionError(f"cannot write {path}: {err.strerror.lower()}") from None
    return path


def is_picture_ours(path: str | Path) -> bool:
    """True if ``path`` is a picture ``save_picture`` wrote (it holds ``PICTURE_MARK``)."""
    return PICTURE_MARK in Path(path).read_bytes()


def save_picture(path: str | Path, image: np.ndarray) -> Path:
    """Write a BGR picture as PNG or JPEG with ``PICTURE_MARK`` in its metadata, atomically (call
    ``check_picture_path`` first: this replaces ``path`` whoever wrote it)."""
    path = Path(path)
    suffix = path.suffix.lower()
    ok, encoded = cv2.imencode(suffix, image)
    if not ok:
        raise ValueError(f"cannot encode the picture as {suffix}")
    data = encoded.tobytes()
    if suffix == ".png":  # a tEXt chunk right before the final IEND chunk (12 bytes)
        body = b"tEXt" + b"Software\x00" + PICTURE_MARK
        chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
        data = data[:-12] + chunk + data[-12:]
    else:  # a JPEG comment segment right after the SOI marker
        data = data[:2] + b"\xff\xfe" + struct.pack(">H", len(PICTURE_MARK) + 2) + PICTURE_MARK + data[2:]
    return write_bytes(path, data)
