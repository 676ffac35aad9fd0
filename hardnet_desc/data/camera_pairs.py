"""Image pairs with known cameras, and their text file format (``hardnet-desc eval-pairs``).

One pair per line, fields separated by whitespace::

    image1 image2 K1(9) K2(9) R(9) t(3) [k1_1 k2_1 k1_2 k2_2]

* ``image1``, ``image2``: image paths (no spaces), relative to the image folder.
* ``K1``, ``K2``: the pinhole matrices, row-major, in OpenCV pixels (pixel centres at integers;
  COLMAP's ``cx`` is 0.5 larger).
* ``R`` (row-major) and ``t``: the relative pose, camera 1 -> camera 2: ``X2 = R X1 + t``. Only
  the direction of ``t`` is used.
* optional 4 numbers: radial distortion ``(k1, k2)`` of camera 1, then of camera 2, in COLMAP's
  ``RADIAL`` model (``SIMPLE_RADIAL``: ``k2 = 0``); 0 when absent. See
  ``hardnet_desc.geometry`` for the conventions.

Blank lines and lines starting with ``#`` are ignored, except a header line
``# image_dir: PATH``, which names the image folder (relative paths are relative to the file).
Without it images are looked up next to the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..outputs import check_output, write_bytes

_HEADER = "# image_dir:"
_NUMBERS = (30, 34)  # K1, K2, R, t [+ radial]


@dataclass(frozen=True, eq=False)
class CameraPair:
    """Two images with known intrinsics and relative pose (conventions: module docstring).

    Attributes:
        image1, image2: image paths relative to the scene's image folder.
        K1, K2: ``(3, 3)`` float64 pinhole matrices (OpenCV pixels).
        R: ``(3, 3)`` float64 rotation camera 1 -> camera 2.
        t: ``(3,)`` float64 translation camera 1 -> camera 2.
        radial1, radial2: ``(k1, k2)`` radial distortion of each camera.
        size1, size2: ``(width, height)`` the cameras were calibrated at, or None (unknown: not checked).
        covisible: 3D points seen in both images (from a reconstruction), or None.
    """

    image1: str
    image2: str
    K1: np.ndarray
    K2: np.ndarray
    R: np.ndarray
    t: np.ndarray
    radial1: tuple[float, float] = (0.0, 0.0)
    radial2: tuple[float, float] = (0.0, 0.0)
    size1: tuple[int, int] | None = None
    size2: tuple[int, int] | None = None
    covisible: int | None = None

    def __post_init__(self) -> None:
        for name, shape in (("K1", (3, 3)), ("K2", (3, 3)), ("R", (3, 3)), ("t", (3,))):
            value = np.asarray(getattr(self, name), dtype=np.float64)
            if value.size != np.prod(shape) or not np.isfinite(value).all():
                raise ValueError(f"{name} of pair {self.image1} {self.image2} must be {shape} finite numbers")
            object.__setattr__(self, name, value.reshape(shape))
        for K in (self.K1, self.K2):
            if not (K[0, 0] > 0 and K[1, 1] > 0 and np.allclose(K[2], [0, 0, 1])):
                raise ValueError(
                    f"pair {self.image1} {self.image2}: K needs fx, fy > 0 and last row 0 0 1, got {K.tolist()}"
                )
        if abs(np.linalg.det(self.R) - 1.0) > 1e-3 or not np.allclose(self.R @ self.R.T, np.eye(3), atol=1e-3):
            raise ValueError(f"pair {self.image1} {self.image2}: R is not a rotation matrix")
        for name in ("radial1", "radial2"):
            object.__setattr__(self, name, tuple(float(k) for k in getattr(self, name)))

    def to_line(self) -> str:
        """This pair as one line of the text format (full float precision)."""
        numbers = [*self.K1.ravel(), *self.K2.ravel(), *self.R.ravel(), *self.t]
        if any(self.radial1) or any(self.radial2):
            numbers += [*self.radial1, *self.radial2]
        return " ".join([self.image1, self.image2, *(repr(float(x)) for x in numbers)])


def read_camera_pairs(path: str | Path) -> tuple[list[CameraPair], Path]:
    """Read a pairs file.

    Returns:
        ``(pairs, image_dir)``: the image folder from the ``# image_dir:`` header (relative to the
        file), else the file's folder.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a binary file, a malformed line (its number is named), or no pair at all (only blank
            lines and comments).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such pairs file: {path}")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text pairs file (it holds bytes that are not UTF-8 text)") from None
    image_dir, pairs = path.parent, []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith(_HEADER):
            image_dir = path.parent / stripped[len(_HEADER):].strip()
            continue
        if not stripped or stripped.startswith("#"):
            continue
        fields = stripped.split()
        try:
            values = [float(x) for x in fields[2:]]
        except ValueError:
            values = []
        if len(values) not in _NUMBERS:
            raise ValueError(f"{path}:{number}: expected 2 image names and 30 or 34 numbers, got {stripped[:80]!r}")
        radial = values[30:34] or [0.0] * 4
        try:
            pairs.append(CameraPair(fields[0], fields[1], values[0:9], values[9:18], values[18:27], values[27:30],
                                    (radial[0], radial[1]), (radial[2], radial[3])))
        except ValueError as err:
            raise ValueError(f"{path}:{number}: {err}") from None
    if not pairs:
        raise ValueError(f"{path}: no pairs in it (only blank lines and comments)")
    return pairs, image_dir


#: The first line of every pairs file ``write_camera_pairs`` writes (how it knows its own files).
_FIRST_LINE = "# image1 image2 K1(9) K2(9) R(9) t(3) [k1_1 k2_1 k1_2 k2_2]; X2 = R X1 + t; OpenCV pixels"


def is_pairs_file_ours(path: str | Path) -> bool:
    """True if ``path`` is a pairs file ``write_camera_pairs`` wrote (its first line)."""
    with open(path, encoding="utf-8") as f:
        return f.readline().rstrip("\n") == _FIRST_LINE


def write_camera_pairs(
    path: str | Path, pairs: list[CameraPair], image_dir: str | Path | None = None, comment: str = "",
    *, force: bool = False,
) -> Path:
    """Write ``pairs`` in the text format; ``image_dir`` goes into the header (absolute path). Atomically;
    an existing ``path`` is replaced only if this function wrote it, or with ``force`` (else ``FileExistsError``)."""
    path = check_output(path, is_pairs_file_ours, force=force)
    lines = [_FIRST_LINE]
    lines += [f"# {c}" for c in comment.splitlines() if c]
    if image_dir is not None:
        lines.append(f"{_HEADER} {Path(image_dir).resolve()}")
    for pair in pairs:
        if any(c.isspace() for c in pair.image1 + pair.image2):
            raise ValueError(f"image names with spaces cannot be written: {pair.image1!r}, {pair.image2!r}")
        lines.append(pair.to_line())
    return write_bytes(path, ("\n".join(lines) + "\n").encode())


__all__ = ["CameraPair", "is_pairs_file_ours", "read_camera_pairs", "write_camera_pairs"]
