"""The PhotoTour (Brown) patch format: reader, streaming writer and pair files.

PhotoTour layout (also produced by our synthetic generator):

- ``patches0000.bmp``, ``patches0001.bmp``, ...: 1024x1024 grayscale, a 16x16
  row-major grid of 64x64 patches; patch ``k`` of file ``f`` has global index
  ``256 * f + k`` and sits at grid row ``k // 16``, column ``k % 16``.
- ``info.txt``: one ``pointID photo`` line per patch; its line count is the
  number of patches (the last bmp may be partly black). Brown's files leave
  the second column at 0; our generator writes the index of the source photo
  there, which the sampler can use to draw negatives from the same photos.
- ``m50_<N>_<N>_0.txt``: evaluation pairs, lines of
  ``patchID1 pointID1 unused patchID2 pointID2 unused``.

Patches are kept as uint8 and turned into float32 in [0, 1] per batch; the
network standardises every patch itself.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..core.image import imread_quiet
from ..core.model import PATCH_SIZE
from ..outputs import FORCE, check_output, json_is_ours, writing

GRID = 16  # patches per row / column of a PhotoTour bmp
STORED_SIZE = 64  # PhotoTour patch side in the bmp files
PER_FILE = GRID * GRID

PairArrays = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass
class PhotoTourData:
    """Patches with their 3D point ids.

    Attributes:
        patches: (N, S, S) uint8.
        point_ids: (N,) int64; equal ids = same 3D point.
        source: optional (N,) int32 index into ``source_names`` (HPatches:
            which ``<seq>/<image>`` file each patch came from; PhotoTour: the
            second column of ``info.txt``, the photo index of synthetic data).
        source_names: names indexed by ``source``.
    """

    patches: np.ndarray
    point_ids: np.ndarray
    source: np.ndarray | None = None
    source_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.patches.dtype != np.uint8 or self.patches.ndim != 3 or self.patches.shape[1] != self.patches.shape[2]:
            raise ValueError(f"patches must be uint8 (N, S, S), got {self.patches.dtype} {self.patches.shape}")
        if self.point_ids.shape != (len(self.patches),) or not np.issubdtype(self.point_ids.dtype, np.integer):
            raise ValueError(
                f"point_ids must be ({len(self.patches)},) integers, got {self.point_ids.dtype} {self.point_ids.shape}"
            )

    def __len__(self) -> int:
        return len(self.patches)

    @property
    def patch_size(self) -> int:
        return self.patches.shape[1]


# --------------------------------------------------------------------------- #
# helpers (shared with the HPatches reader)


def resize_area(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """cv2 area resize. For a 2x reduction INTER_AREA is exactly the 2x2 mean
    rounded half up. Applied to a whole grid/strip of patches it equals the
    per-patch resize, because patch borders fall on output pixel borders."""
    if img.shape == (height, width):
        return img
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)


def read_gray(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"missing image file: {path}")
    img = imread_quiet(path, cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise ValueError(f"cannot decode image: {path}")
    return img


def _read_int_table(path: Path, n_cols: int, fmt: str) -> np.ndarray:
    """Parse a whitespace separated text file of ``n_cols`` integers per line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing file: {path}")
    rows = []
    with open(path, encoding="utf-8") as f:
        try:
            lines = list(f)
        except UnicodeDecodeError:
            raise ValueError(f"{path}: not a text file of '{fmt}' lines (it holds bytes that are not UTF-8 "
                             "text)") from None
    for lineno, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        try:
            if len(fields) != n_cols:
                raise ValueError
            rows.append([int(x) for x in fields])
        except ValueError:
            msg = f"{path}:{lineno}: expected '{fmt}' ({n_cols} integers), got {line.rstrip()!r}"
            raise ValueError(msg) from None
    try:
        return np.asarray(rows, dtype=np.int64).reshape(-1, n_cols)
    except OverflowError:  # find the line (rare: only on this failure)
        info = np.iinfo(np.int64)
        lineno, line = next((k, s) for k, s in enumerate(lines, 1)
                            if any(not info.min <= int(x) <= info.max for x in s.split()))
        raise ValueError(f"{path}:{lineno}: an integer beyond 64 bits in {line.rstrip()!r}") from None


def png_shape(path: Path) -> tuple[int, int]:
    """(height, width) read from a PNG header without decoding the image."""
    if not path.is_file():
        raise FileNotFoundError(f"missing image file: {path}")
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise ValueError(f"not a PNG file: {path}")
    return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")


def check_patch_size(patch_size: int) -> None:
    check_count(patch_size, "patch_size")


def check_count(value: int, name: str) -> int:
    """``value`` as an int, or ``ValueError`` naming ``name`` unless it is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------- #
# PhotoTour reading


def read_info(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Point ids (N,) int64 and photo indices (N,) int64 (the second column) of a PhotoTour ``info.txt``."""
    table = _read_int_table(Path(path), 2, "pointID photo")
    return table[:, 0].copy(), table[:, 1].copy()


def read_pairs(path: str | Path, n_patches: int | None = None) -> PairArrays:
    """Read a PhotoTour pair file (``m50_*.txt``).

    Args:
        path: the pair file.
        n_patches: the number of patches of the folder the pairs are for; given, every patch index must
            lie in ``[0, n_patches)`` (``ValueError`` naming the file otherwise).

    Returns:
        idx1 (M,) int64, idx2 (M,) int64 patch indices and is_match (M,) bool
        (``pointID1 == pointID2``).
    """
    t = _read_int_table(Path(path), 6, "patchID1 pointID1 unused patchID2 pointID2 unused")
    idx1, idx2 = t[:, 0].copy(), t[:, 3].copy()
    if n_patches is not None:
        used = np.concatenate([idx1, idx2])
        bad = used[(used < 0) | (used >= n_patches)]
        if bad.size:
            raise ValueError(f"{path}: {bad.size} patch indices outside [0, {n_patches}), the patches of "
                             f"{Path(path).parent} (first: {bad[0]})")
    return idx1, idx2, t[:, 1] == t[:, 4]


def find_pair_files(root: str | Path) -> list[Path]:
    """Sorted ``m50_*.txt`` pair files of a PhotoTour folder."""
    return sorted(Path(root).glob("m50_*.txt"))


def read_phototour(root: str | Path, patch_size: int = PATCH_SIZE) -> PhotoTourData:
    """Read a PhotoTour / Brown folder.

    Files are read one at a time and downsampled on the fly, so peak memory is
    the (N, patch_size, patch_size) output plus one bmp.

    Args:
        root: folder with ``info.txt`` and ``patchesXXXX.bmp``.
        patch_size: output side; 64 keeps the stored patches, 32 is the 2x2
            mean (cv2 INTER_AREA, rounded half up).

    Returns:
        PhotoTourData with patches (N, patch_size, patch_size) uint8.
    """
    root = Path(root)
    check_patch_size(patch_size)
    if not root.is_dir():
        raise FileNotFoundError(f"PhotoTour folder not found: {root}")
    point_ids, photos = read_info(root / "info.txt")
    n = len(point_ids)
    if n == 0:
        raise ValueError(f"{root / 'info.txt'} lists no patches")
    side = GRID * patch_size
    patches = np.empty((n, patch_size, patch_size), dtype=np.uint8)
    for f in range(math.ceil(n / PER_FILE)):
        path = root / f"patches{f:04d}.bmp"
        img = read_gray(path)
        if img.shape != (GRID * STORED_SIZE,) * 2:
            raise ValueError(f"{path}: expected a {GRID * STORED_SIZE}x{GRID * STORED_SIZE} image, got {img.shape}")
        grid = resize_area(img, side, side).reshape(GRID, patch_size, GRID, patch_size).transpose(0, 2, 1, 3)
        count = min(PER_FILE, n - f * PER_FILE)
        patches[f * PER_FILE : f * PER_FILE + count] = grid.reshape(PER_FILE, patch_size, patch_size)[:count]
    return PhotoTourData(patches, point_ids, photos.astype(np.int32))


# --------------------------------------------------------------------------- #
# PhotoTour writing


#: The files of a PhotoTour folder as ``PhotoTourWriter`` writes them.
LAYOUT_FILE = re.compile(r"info\.txt|patches\d{4,}\.bmp|m50_.*\.txt")
#: Files an operating system leaves in a folder it showed (macOS Finder, Windows Explorer): no one's data.
OS_FILE = re.compile(r"\.DS_Store|\._.*|Thumbs\.db|desktop\.ini", re.IGNORECASE)


def check_dataset_folder(out: str | Path, records: Sequence[str], force: bool = False) -> None:
    """Before make-dataset writes a dataset into ``out`` (which replaces its split folders whole): refuse
    (``FileExistsError``, unless ``force``) if one of its JSON ``records`` (``meta.json``, ...) there was not
    written by hardnet-desc, if ``out/train`` or ``out/val`` holds a PhotoTour folder and no record of ours
    lies beside it (another program's dataset, such as Brown's), or if it is a link, a file, or holds anything
    but the PhotoTour files (``LAYOUT_FILE``; ``OS_FILE`` such as macOS's ``.DS_Store`` too).
    ``NotADirectoryError``/``PermissionError`` if ``out`` cannot be written."""
    out = Path(out)
    for name in records:
        check_output(out / name, json_is_ours, force=force)
    ours = any((out / name).is_file() for name in records)  # each one that exists passed the check above
    for split in () if force else ("train", "val"):
        folder = out / split
        if not ours and (folder / "info.txt").exists():
            raise FileExistsError(f"{folder} holds a PhotoTour dataset that hardnet-desc did not write "
                                  f"(no {' or '.join(records)} of its own in {out}); pass {FORCE} to overwrite it")
        if folder.is_symlink():  # the build would replace the link with a folder and leave the old patches there
            raise FileExistsError(f"{folder} is a link; the build replaces split folders whole: remove the link "
                                  f"(or build into its target's folder), or pass {FORCE} to replace it by a folder")
        if folder.exists() and not folder.is_dir():
            raise FileExistsError(f"{folder} is a file, not a dataset folder; pass {FORCE} to replace it")
        other = [p.name for p in (folder.iterdir() if folder.is_dir() else ())
                 if not (LAYOUT_FILE.fullmatch(p.name) or OS_FILE.fullmatch(p.name))]
        if other:
            raise FileExistsError(f"{folder} holds {sorted(other)[0]}, which is not part of a PhotoTour dataset "
                                  f"(the folder is replaced whole); move it or pass {FORCE}")


class PhotoTourWriter:
    """Streams 64x64 patches into the PhotoTour layout.

    Full 256-patch bmp files are written as soon as they fill, so only one
    file's patches and the point ids are held in memory.

    Example:
        >>> with PhotoTourWriter(root) as w:   # doctest: +SKIP
        ...     w.add(patches, point_ids)      # (k, 64, 64) uint8, (k,)
        ...     w.close(pairs={"m50_1000_1000_0.txt": make_pairs(ids, 1000, 0)})
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._buf = np.zeros((PER_FILE, STORED_SIZE, STORED_SIZE), dtype=np.uint8)
        self._fill = 0
        self._files = 0
        self._ids: list[np.ndarray] = []
        self._photos: list[np.ndarray] = []
        self._closed = False

    def __len__(self) -> int:
        return self._files * PER_FILE + self._fill

    def add(self, patches: np.ndarray, point_ids: np.ndarray, photo: int = 0) -> None:
        """Append patches (k, 64, 64) uint8 with their point ids (k,), all cut from photo number ``photo``."""
        if self._closed:
            raise RuntimeError("PhotoTourWriter is closed")
        patches = np.asarray(patches)
        point_ids = np.asarray(point_ids).reshape(-1)
        if patches.dtype != np.uint8 or patches.ndim != 3 or patches.shape[1:] != (STORED_SIZE, STORED_SIZE):
            raise ValueError(f"patches must be uint8 (k, 64, 64), got {patches.dtype} {patches.shape}")
        if len(point_ids) != len(patches) or not np.issubdtype(point_ids.dtype, np.integer):
            raise ValueError(f"point_ids must be {len(patches)} integers, got {point_ids.dtype} {point_ids.shape}")
        if photo < 0:
            raise ValueError(f"photo must be a non-negative index, got {photo}")
        self._ids.append(point_ids.astype(np.int64))
        self._photos.append(np.full(len(point_ids), photo, np.int64))
        start = 0
        while start < len(patches):
            take = min(PER_FILE - self._fill, len(patches) - start)
            self._buf[self._fill : self._fill + take] = patches[start : start + take]
            self._fill += take
            start += take
            if self._fill == PER_FILE:
                self._flush()

    def _flush(self) -> None:
        self._buf[self._fill :] = 0  # unused cells of the last file stay black
        img = self._buf.reshape(GRID, GRID, STORED_SIZE, STORED_SIZE).transpose(0, 2, 1, 3)
        path = self.root / f"patches{self._files:04d}.bmp"
        ok, data = cv2.imencode(".bmp", np.ascontiguousarray(img.reshape(GRID * STORED_SIZE, -1)))
        with writing(path):
            if not ok:
                raise OSError(f"OpenCV cannot encode {path.name}")
            path.write_bytes(data.tobytes())
        self._files += 1
        self._fill = 0

    def close(self, pairs: Mapping[str, PairArrays] | None = None) -> None:
        """Flush the last bmp, write ``info.txt`` and the pair files; then remove the bmp and pair files of
        an earlier dataset in the folder that this one did not overwrite.

        Args:
            pairs: pair file name (e.g. ``'m50_1000_1000_0.txt'``) ->
                (idx1, idx2, is_match); is_match must agree with the point ids.
        """
        if self._closed:
            return
        if self._fill:
            self._flush()
        ids = np.concatenate(self._ids) if self._ids else np.zeros(0, np.int64)
        for name, (i1, i2, match) in (pairs or {}).items():
            self._write_pairs(name, ids, i1, i2, match)
        photos = np.concatenate(self._photos) if self._photos else np.zeros(0, np.int64)
        with writing(self.root / "info.txt"):
            np.savetxt(self.root / "info.txt", np.stack([ids, photos], 1), fmt="%d")
        self._remove_stale(set(pairs or {}))
        self._closed = True

    def _remove_stale(self, written: set[str]) -> None:
        """Remove what an earlier dataset in this folder left that this one did not replace: bmp files past
        the last one written and pair files not written (readers would take them for part of this dataset)."""
        for path in self.root.glob("patches*.bmp"):
            number = re.fullmatch(r"patches(\d{4,})\.bmp", path.name)
            if number and int(number.group(1)) >= self._files:
                path.unlink()
        for path in find_pair_files(self.root):
            if path.name not in written:
                path.unlink()

    def _write_pairs(self, name: str, ids: np.ndarray, i1, i2, match) -> None:
        if Path(name).name != name:
            raise ValueError(f"pair file name must be a bare file name, got {name!r}")
        i1, i2 = np.asarray(i1, np.int64).reshape(-1), np.asarray(i2, np.int64).reshape(-1)
        match = np.asarray(match, bool).reshape(-1)
        if not len(i1) == len(i2) == len(match):
            raise ValueError(f"{name}: idx1, idx2, is_match lengths differ ({len(i1)}, {len(i2)}, {len(match)})")
        if len(i1) and (min(i1.min(), i2.min()) < 0 or max(i1.max(), i2.max()) >= len(ids)):
            raise IndexError(f"{name}: pair indices outside [0, {len(ids)})")
        if not np.array_equal(ids[i1] == ids[i2], match):
            raise ValueError(f"{name}: is_match disagrees with the point ids of the pairs")
        zero = np.zeros_like(i1)
        table = np.stack([i1, ids[i1], zero, i2, ids[i2], zero], 1)
        with writing(self.root / name):
            np.savetxt(self.root / name, table, fmt="%d")

    def __enter__(self) -> PhotoTourWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()


def write_phototour(
    root: str | Path,
    patches: np.ndarray,
    point_ids: np.ndarray,
    pairs: Mapping[str, PairArrays] | None = None,
) -> None:
    """Write (N, 64, 64) uint8 patches in the PhotoTour layout."""
    writer = PhotoTourWriter(root)
    writer.add(patches, point_ids)
    writer.close(pairs)


def make_pairs(point_ids: np.ndarray, n_pairs: int, seed: int) -> PairArrays:
    """Sample evaluation pairs: ``n_pairs // 2`` matches, the rest non-matches.

    A match is two different patches of one point (points drawn uniformly
    among those with >= 2 patches); a non-match is two patches of different
    points drawn uniformly. The order is shuffled.

    Returns:
        idx1 (M,) int64, idx2 (M,) int64, is_match (M,) bool.
    """
    check_count(n_pairs, "n_pairs")
    ids = np.asarray(point_ids).reshape(-1)
    rng = np.random.default_rng(seed)
    n_pos, n_neg = n_pairs // 2, n_pairs - n_pairs // 2
    order, starts, counts = group_by_point(ids)
    multi = np.flatnonzero(counts >= 2)
    if n_pos and not len(multi):
        raise ValueError("no point has two patches: cannot sample matching pairs")
    if n_neg and len(counts) < 2:
        raise ValueError("fewer than 2 distinct points: cannot sample non-matching pairs")

    pt = multi[rng.integers(len(multi), size=n_pos)]
    a = rng.integers(counts[pt])
    b = rng.integers(counts[pt] - 1)
    b += b >= a  # second patch != first
    pos1, pos2 = order[starts[pt] + a], order[starts[pt] + b]

    neg1 = rng.integers(len(ids), size=n_neg)
    neg2 = rng.integers(len(ids), size=n_neg)
    while (bad := np.flatnonzero(ids[neg1] == ids[neg2])).size:
        neg2[bad] = rng.integers(len(ids), size=bad.size)

    perm = rng.permutation(n_pairs)
    idx1 = np.concatenate([pos1, neg1]).astype(np.int64)[perm]
    idx2 = np.concatenate([pos2, neg2]).astype(np.int64)[perm]
    return idx1, idx2, ids[idx1] == ids[idx2]


def group_by_point(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patch indices sorted by point, start offset and count of each point."""
    order = np.argsort(ids, kind="stable")
    _, starts, counts = np.unique(ids[order], return_index=True, return_counts=True)
    return order, starts, counts
