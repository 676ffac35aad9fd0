"""Image sequences with ground-truth homographies, in the HPatches and Oxford layouts.

HPatches sequences layout (Balntas et al., CVPR 2017)::

    <seq>/1.ppm 2.ppm ... 6.ppm        (.png / .jpg / .pgm also accepted)
    <seq>/H_1_2 ... H_1_6              3x3 text matrices mapping image 1 -> image k

Oxford affine layout (Mikolajczyk et al., IJCV 2005)::

    <seq>/img1.ppm ... img6.ppm        (.pgm / .png / .jpg also accepted)
    <seq>/H1to2p ... H1to6p

Homographies act on pixel coordinates ``(x, y, 1)`` with x right and y down, as
in ``hardnet_desc.core.patches``. Sequence names starting with ``v_`` form the
viewpoint group, ``i_`` the illumination group, anything else ``'other'``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Image suffixes tried for each frame, in order of preference.
SEQUENCE_SUFFIXES = (".ppm", ".png", ".jpg", ".jpeg", ".pgm")
#: Sequence groups in reporting order.
GROUPS = ("v", "i", "n", "other")

# per layout: image stem and homography file name of frame k
_LAYOUTS = {
    "hpatches": (lambda k: f"{k}", lambda k: f"H_1_{k}"),
    "oxford": (lambda k: f"img{k}", lambda k: f"H1to{k}p"),
}


@dataclass
class ImageSequence:
    """One reference image and its views with ground truth.

    Attributes:
        name: folder name, e.g. ``'v_graffiti'``.
        images: paths of frames ``1, 2, ..., n``; ``images[0]`` is the reference.
        homographies: ``(3, 3)`` float64 ``H_1_k`` for ``k = 2..n`` (``len(images) - 1`` of them),
            mapping reference pixels to frame ``k`` pixels.
        layout: ``'hpatches'`` or ``'oxford'``.
    """

    name: str
    images: list[Path]
    homographies: list[np.ndarray]
    layout: str

    @property
    def group(self) -> str:
        """``'v'`` (viewpoint), ``'i'`` (illumination), ``'n'`` (sensor noise) or ``'other'``, from the name prefix."""
        prefix = self.name[:2]
        return {"v_": "v", "i_": "i", "n_": "n"}.get(prefix, "other")

    def __len__(self) -> int:
        return len(self.images)


def read_homography(path: str | Path) -> np.ndarray:
    """Read a 3x3 homography written as 9 whitespace-separated numbers.

    Returns:
        ``(3, 3)`` float64, scaled so that ``H[2, 2] == 1`` when it is non-zero.

    Raises:
        FileNotFoundError: missing file.
        ValueError: not exactly 9 finite numbers, or a singular matrix.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing homography file: {path}")
    fields = path.read_text(errors="replace").split()
    try:
        values = np.array([float(x) for x in fields], dtype=np.float64)
    except ValueError:
        bad = next(x for x in fields if not _is_float(x))
        raise ValueError(f"{path}: malformed homography, {bad!r} is not a number") from None
    if values.size != 9:
        raise ValueError(f"{path}: malformed homography, expected 3x3 = 9 numbers, found {values.size}")
    if not np.isfinite(values).all():
        raise ValueError(f"{path}: malformed homography, contains NaN or inf")
    H = values.reshape(3, 3)
    if abs(np.linalg.det(H)) < 1e-12 * max(1.0, np.abs(H).max() ** 3):
        raise ValueError(f"{path}: malformed homography, the matrix is singular")
    return H / H[2, 2] if H[2, 2] != 0 else H


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _find_image(folder: Path, stem: str) -> Path | None:
    for suffix in SEQUENCE_SUFFIXES:
        for candidate in (folder / (stem + suffix), folder / (stem + suffix.upper())):
            if candidate.is_file():
                return candidate
    return None


def sequence_layout(folder: str | Path) -> str | None:
    """``'hpatches'``, ``'oxford'`` or None, from the reference image's name."""
    folder = Path(folder)
    for layout, (image_stem, _) in _LAYOUTS.items():
        if _find_image(folder, image_stem(1)) is not None:
            return layout
    return None


def read_sequence(folder: str | Path) -> ImageSequence:
    """Read one sequence folder in either layout.

    Frames ``2, 3, ...`` are taken while their image exists; each needs its homography file.

    Raises:
        FileNotFoundError: missing folder, an image whose homography file is missing, or a missing image
            that the sequence goes on after (the next image or its own homography file exists).
        ValueError: a folder in neither layout, a sequence with a single image, or a malformed homography.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such sequence folder: {folder}")
    layout = sequence_layout(folder)
    if layout is None:
        raise ValueError(
            f"{folder}: not an image sequence in the HPatches layout (1.ppm, 2.ppm, ..., H_1_2, ...) "
            f"or the Oxford layout (img1.ppm, img2.ppm, ..., H1to2p, ...)"
        )
    image_stem, h_name = _LAYOUTS[layout]
    images = [_find_image(folder, image_stem(1))]
    homographies = []
    k = 2
    while (image := _find_image(folder, image_stem(k))) is not None:
        homographies.append(read_homography(folder / h_name(k)))
        images.append(image)
        k += 1
    if len(images) < 2:
        raise ValueError(f"{folder}: sequence has only the reference image {images[0].name}, no image {image_stem(2)}.*")
    later = _find_image(folder, image_stem(k + 1))
    if later is not None or (folder / h_name(k)).is_file():  # a gap, not the end: frames after it would be lost
        raise FileNotFoundError(f"{folder}: missing image {image_stem(k)}.* (the sequence goes on with "
                                f"{later.name if later is not None else h_name(k)})")
    return ImageSequence(folder.name, images, homographies, layout)


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def find_sequences(
    root: str | Path, *, strict: bool = True, on_skip: Callable[[str, str], None] | None = None
) -> list[ImageSequence]:
    """All sequences under ``root``: ``root`` itself if it is one, else its sequence sub-folders.

    Sub-folders in neither layout, and hidden ones (``.name``: e.g. a sequence ``make_sequences`` was writing
    when killed), are ignored; sequences are sorted by name.

    Args:
        root: one sequence folder, or a folder of them.
        strict: if False, a sub-folder that looks like a sequence but cannot be read (a reference
            image only, a missing or malformed homography) is skipped and reported through
            ``on_skip(name, reason)`` (default: a ``UserWarning``); if True it raises.

    Raises:
        FileNotFoundError: ``root`` does not exist (or, with ``strict``, a sequence misses a file).
        ValueError: ``root`` is neither a sequence nor holds any readable one (or, with ``strict``,
            a sequence is malformed).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no such folder: {root}")
    if sequence_layout(root) is not None:
        return [read_sequence(root)]
    folders = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and sequence_layout(p)),
                     key=_natural_key)
    if not folders:
        raise ValueError(
            f"{root}: neither an image sequence nor a folder of sequences; expected <seq>/1.ppm + <seq>/H_1_2 ... "
            f"(HPatches layout) or <seq>/img1.ppm + <seq>/H1to2p ... (Oxford layout)"
        )
    if strict:
        return [read_sequence(p) for p in folders]
    sequences = []
    for folder in folders:
        try:
            sequences.append(read_sequence(folder))
        except (FileNotFoundError, ValueError) as err:
            if on_skip is None:
                warnings.warn(f"skipped sequence {folder.name}: {err}", stacklevel=2)
            else:
                on_skip(folder.name, str(err))
    if not sequences:
        raise ValueError(f"{root}: none of its {len(folders)} sequence folders can be read")
    return sequences
