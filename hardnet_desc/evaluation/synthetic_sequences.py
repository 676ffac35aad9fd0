"""Synthetic HPatches-layout sequences from held-out photos.

Each photo gives

* ``v_<photo>``: ``1.png`` (the grey photo) and 5 views ``2.png .. 6.png``, each a random
  homography of level 1..5 (rotation, scale and perspective ranges grow with the level) plus mild
  photometric changes, with the exact ``H_1_k``;
* ``i_<photo>`` (optional): 5 views with photometric changes of growing strength only, and
  identity homographies;
* ``n_<photo>`` (optional): 5 views with zero-mean Gaussian sensor noise of growing standard
  deviation (``NOISE_SIGMAS``, grey levels of 0..255) and nothing else, identity homographies.

The warps come from ``hardnet_desc.data.warps.random_homography`` and
``photometric`` with a ``WarpConfig``
scaled per level, so training and evaluation share one warper. Use photos that were not used
for training.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from ..data.images import list_images
from ..data.warps import WarpConfig, photometric, random_homography
from ..core.image import read_image, to_uint8
from ..core.patches import check_integer
from ..outputs import json_is_ours, write_json

LEVELS = 5
#: Warp ranges at the hardest level (5); level ``l`` uses ``l / 5`` of each range.
HARDEST_GEOMETRY = WarpConfig(max_rotation_deg=60.0, max_log2_scale=1.5, max_perspective=0.35)
#: Photometric ranges at the hardest level of an ``i_`` sequence.
HARDEST_PHOTOMETRIC = WarpConfig(
    brightness=60.0, contrast=0.5, max_log2_gamma=1.2, blur_prob=0.5, max_blur_sigma=1.5,
    noise_prob=0.5, max_noise_std=8.0, jpeg_prob=0.3, min_jpeg_quality=40, shading=1.5,
)
#: Standard deviation of the Gaussian noise of ``n_`` views 2..6, in grey levels (0..255).
NOISE_SIGMAS = (4.0, 8.0, 12.0, 16.0, 24.0)
#: The warped reference must cover at least this fraction of the view's canvas.
MIN_COVERAGE = 0.35
#: The smallest ``max_side``: a photo smaller than this keeps too few keypoints after the warps.
MIN_SIDE = 64


def level_config(level: int, geometric: bool) -> WarpConfig:
    """The ``WarpConfig`` of difficulty ``level`` in 1..5.

    Geometric (``v_``) levels scale ``HARDEST_GEOMETRY`` and add mild photometric noise (a
    third of the ``i_`` strength); photometric (``i_``) levels scale ``HARDEST_PHOTOMETRIC``.
    """
    if not 1 <= level <= LEVELS:
        raise ValueError(f"level must be in 1..{LEVELS}, got {level}")
    f = level / LEVELS
    p = HARDEST_PHOTOMETRIC
    photo = f if not geometric else f / 3
    cfg = replace(
        p, brightness=p.brightness * photo, contrast=p.contrast * photo, max_log2_gamma=p.max_log2_gamma * photo,
        blur_prob=p.blur_prob * photo, max_blur_sigma=0.3 + (p.max_blur_sigma - 0.3) * photo,
        noise_prob=p.noise_prob * photo, max_noise_std=p.max_noise_std * photo, jpeg_prob=p.jpeg_prob * photo,
        shading=p.shading * photo,
    )
    g = HARDEST_GEOMETRY
    if geometric:
        return replace(cfg, max_rotation_deg=g.max_rotation_deg * f, max_log2_scale=g.max_log2_scale * f,
                       max_perspective=g.max_perspective * f)
    return replace(cfg, max_rotation_deg=0.0, max_log2_scale=0.0, max_perspective=0.0)


def coverage(H: np.ndarray, height: int, width: int, out_height: int, out_width: int) -> float:
    """Fraction of the ``out`` canvas covered by the reference image warped by ``H``."""
    corners = np.float32([[0, 0], [width, 0], [width, height], [0, height]]).reshape(-1, 1, 2)
    quad = cv2.perspectiveTransform(corners, H).reshape(-1, 2)
    x = np.clip(quad[:, 0], 0, out_width)
    y = np.clip(quad[:, 1], 0, out_height)
    area = 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))  # shoelace
    return float(area / (out_width * out_height))


def warp_view(
    image: np.ndarray, level: int, geometric: bool, rng: np.random.Generator, tries: int = 20
) -> tuple[np.ndarray, np.ndarray]:
    """One view of ``image`` (grey uint8) at ``level``: ``(view uint8, H (3, 3) float64)``.

    Geometric warps are redrawn until the reference covers ``MIN_COVERAGE`` of the view (the
    canvas holds the whole warped reference, so every view overlaps the reference); ``ValueError`` if none
    does in ``tries`` (an image too small or too elongated).
    """
    cfg = level_config(level, geometric)
    h, w = image.shape
    H, out_h, out_w = np.eye(3), h, w
    if geometric:
        for _ in range(tries):
            H, out_h, out_w = random_homography(h, w, cfg, rng)
            if coverage(H, h, w, out_h, out_w) >= MIN_COVERAGE:
                break
        else:
            raise ValueError(f"no warp of level {level} of a {w}x{h} image reached {MIN_COVERAGE:.0%} coverage "
                             f"in {tries} tries (too small or too elongated)")
        view = cv2.warpPerspective(image, H, (out_w, out_h), flags=cv2.INTER_LINEAR, borderValue=0)
    else:
        view = image
    return photometric(view, cfg, rng), H / H[2, 2]


def noise_view(image: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    """``image`` (grey uint8) plus Gaussian noise of standard deviation ``NOISE_SIGMAS[level - 1]``, rounded and clipped."""
    if not 1 <= level <= LEVELS:
        raise ValueError(f"level must be in 1..{LEVELS}, got {level}")
    noisy = image.astype(np.float32) + rng.normal(0.0, NOISE_SIGMAS[level - 1], size=image.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _sequence_name(path: Path, used: set[str]) -> str:
    name = re.sub(r"[^A-Za-z0-9]+", "_", path.stem).strip("_") or "photo"
    base, i = name, 2
    while name in used:  # same stem in two sub-folders
        name, i = f"{base}_{i}", i + 1
    used.add(name)
    return name


def make_sequences(
    images: str | Path,
    out: str | Path,
    *,
    n_images: int | None = None,
    seed: int = 0,
    illumination: bool = True,
    noise: bool = False,
    max_side: int = 1024,
    suffix: str = ".png",
    force: bool = False,
    on_error: Callable[[str, str], None] | None = None,
) -> list[Path]:
    """Write synthetic HPatches-layout sequences to ``out``.

    Args:
        images: folder of photos (searched recursively).
        out: output folder; one sub-folder per sequence, marked as ours by its ``SEQUENCE_MARK`` file.
            A sequence folder written before by ``make_sequences`` is overwritten; one that holds
            other files is left as it is and ``FileExistsError`` raised before any work, unless ``force``.
        n_images: use this many photos (a seeded random choice), None for all.
        seed: seeds the choice of photos and every warp; the output is reproducible.
        illumination: also write the ``i_`` (photometric only) sequences.
        noise: also write the ``n_`` (Gaussian sensor noise only) sequences.
        max_side: photos are first downscaled so that their longer side is at most this (>= ``MIN_SIDE``).
        suffix: image format, ``'.png'`` or ``'.ppm'`` (lossless).
        force: write into sequence folders that hold files of another program.
        on_error: a photo that cannot be read or warped (an undecodable file, one too small or too elongated)
            gives no sequences and is reported as ``on_error(photo, reason)`` (``photo`` relative to ``images``);
            the other photos are still done. Without ``on_error``, a ``ValueError`` naming such photos is
            raised once the others are done.

    Each sequence is written into a temporary sibling folder renamed into place once complete, so an
    interrupted or failed run leaves a sequence folder as it was or complete, never half-written.

    Returns:
        The written sequence folders.
    """
    if suffix not in IMAGE_SUFFIXES:
        raise ValueError(f"suffix must be .png, .ppm or .pgm (lossless), got {suffix!r}")
    check_integer(max_side, "max_side", MIN_SIDE)
    check_integer(seed, "seed", 0)
    paths = list_images(images)
    if not paths:
        raise ValueError(f"no images found in {images}")
    if n_images is not None:
        if n_images < 1:
            raise ValueError(f"n_images must be >= 1, got {n_images}")
        pick = np.random.default_rng(seed).permutation(len(paths))[:n_images]
        paths = [paths[i] for i in sorted(pick)]
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} is a file, not an output folder")
    used: set[str] = set()
    names = [_sequence_name(path, used) for path in paths]
    kinds = ["v"] + (["i"] if illumination else []) + (["n"] if noise else [])
    for name in names:  # before any work
        for prefix in kinds:
            _check_sequence_folder(out / f"{prefix}_{name}", force)
    written, failed = [], {}
    for index, (path, name) in enumerate(zip(paths, names)):
        try:  # every view of the photo in memory before any is written
            image = _read_photo(path, max_side)
            views = {prefix: _views(image, prefix, np.random.default_rng([seed, index, KIND_SEEDS[prefix]]))
                     for prefix in kinds}
        except (OSError, ValueError) as err:
            photo = str(path.relative_to(Path(images)))
            failed[photo] = str(err)
            if on_error is not None:
                on_error(photo, str(err))
            continue
        for prefix, (frames, homographies) in views.items():
            folder = out / f"{prefix}_{name}"
            _write_sequence(folder, frames, homographies, {"seed": seed, "photo": path.name}, suffix)
            written.append(folder)
    if failed and on_error is None:
        others = " (the sequences of the others are written)" if written else ""
        raise ValueError(f"{len(failed)} of {len(paths)} photos cannot be used{others}: "
                         + "; ".join(f"{photo}: {why}" for photo, why in failed.items()))
    return written


#: Seeds each kind of sequence's random generator (with the seed and the photo's index).
KIND_SEEDS = {"i": 0, "v": 1, "n": 2}


def _read_photo(path: Path, max_side: int) -> np.ndarray:
    """The photo as grey uint8, downscaled to a longer side of at most ``max_side``."""
    image = to_uint8(read_image(path))
    scale = max_side / max(image.shape)
    if scale < 1:
        if min(image.shape) * scale < 2:
            raise ValueError(f"a {image.shape[1]}x{image.shape[0]} photo is too elongated for "
                             f"max_side {max_side} (its shorter side would be under 2 px)")
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return image


def _views(image: np.ndarray, prefix: str, rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The images ``1 .. LEVELS + 1`` of the ``prefix`` sequence of ``image`` and their ``H_1_k``."""
    frames, homographies = [image], []
    for level in range(1, LEVELS + 1):
        if prefix == "n":
            view, H = noise_view(image, level, rng), np.eye(3)
        else:
            view, H = warp_view(image, level, prefix == "v", rng)
        frames.append(view)
        homographies.append(H)
    return frames, homographies


def _write_sequence(folder: Path, frames: list[np.ndarray], homographies: list[np.ndarray], mark: dict,
                    suffix: str) -> None:
    """Write a sequence into a temporary sibling folder and rename that onto ``folder`` once complete.

    Files of an existing ``folder`` that this sequence does not hold (another program's, with ``force``) are
    kept, except views in another image format (the evaluation would read them with these homographies).
    """
    tmp = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}.tmp")
    old = tmp.with_suffix(".old")
    stale = {f"{k}{other}" for k in range(1, len(frames) + 1) for other in IMAGE_SUFFIXES if other != suffix}
    try:
        tmp.mkdir(parents=True)
        write_json(tmp / SEQUENCE_MARK, mark)
        for k, frame in enumerate(frames, start=1):
            _write_image(tmp / f"{k}{suffix}", frame)
        for k, H in enumerate(homographies, start=2):
            np.savetxt(tmp / f"H_1_{k}", H, fmt="%.12g")
        if folder.is_dir():
            os.replace(folder, old)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.is_dir() and not folder.exists():  # failed between the two renames: the old folder back
            os.replace(old, folder)
    if old.is_dir():
        for entry in old.iterdir():
            if entry.name not in stale and not (folder / entry.name).exists():
                os.replace(entry, folder / entry.name)
        shutil.rmtree(old)


#: The lossless image formats ``make_sequences`` writes.
IMAGE_SUFFIXES = (".png", ".ppm", ".pgm")

#: The file that marks a sequence folder as written by ``make_sequences`` (evaluation reads only images
#: and homographies, so it is ignored there).
SEQUENCE_MARK = "hardnet-desc.json"


def _check_sequence_folder(folder: Path, force: bool) -> None:
    """Raise ``FileExistsError`` if ``folder`` is a file, or holds files and no ``SEQUENCE_MARK`` of ours (unless
    ``force``)."""
    if folder.exists() and not folder.is_dir():  # even with force: a file is not a sequence folder
        raise FileExistsError(f"{folder} is a file, not a sequence folder; remove it or choose another output folder")
    if force or not folder.is_dir() or not any(folder.iterdir()):
        return
    mark = folder / SEQUENCE_MARK
    try:
        ours = json_is_ours(mark)
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise FileExistsError(f"{folder} exists and was not written by hardnet-desc (no {SEQUENCE_MARK} of ours); "
                              "pass --force (force=True) to overwrite its images")


def _write_image(path: Path, image: np.ndarray) -> None:
    if path.suffix == ".ppm":  # OpenCV writes .ppm from BGR only
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"cannot write {path}")
