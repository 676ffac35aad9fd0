"""Patch datasets: PhotoTour (Brown) and HPatches readers, a PhotoTour writer
and the training pair sampler.

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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

GRID = 16  # patches per row / column of a PhotoTour bmp
STORED_SIZE = 64  # PhotoTour patch side in the bmp files
PER_FILE = GRID * GRID
HPATCHES_SIZE = 65
HPATCHES_IMAGES = ("ref",) + tuple(f"{t}{i}" for t in "eht" for i in range(1, 6))

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
# helpers


def _resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """cv2 area resize. For a 2x reduction INTER_AREA is exactly the 2x2 mean
    rounded half up. Applied to a whole grid/strip of patches it equals the
    per-patch resize, because patch borders fall on output pixel borders."""
    if img.shape == (height, width):
        return img
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)


def _read_gray(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"missing image file: {path}")
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise ValueError(f"cannot decode image: {path}")
    return img


def _read_int_table(path: Path, n_cols: int, fmt: str) -> np.ndarray:
    """Parse a whitespace separated text file of ``n_cols`` integers per line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing file: {path}")
    rows = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
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
    return np.asarray(rows, dtype=np.int64).reshape(-1, n_cols)


def _png_shape(path: Path) -> tuple[int, int]:
    """(height, width) read from a PNG header without decoding the image."""
    if not path.is_file():
        raise FileNotFoundError(f"missing image file: {path}")
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise ValueError(f"not a PNG file: {path}")
    return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")


def _check_patch_size(patch_size: int) -> None:
    if not isinstance(patch_size, (int, np.integer)) or patch_size < 1:
        raise ValueError(f"patch_size must be a positive integer, got {patch_size!r}")


# --------------------------------------------------------------------------- #
# PhotoTour reading


def read_info(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Point ids (N,) int64 and photo indices (N,) int64 (the second column) of a PhotoTour ``info.txt``."""
    table = _read_int_table(Path(path), 2, "pointID photo")
    return table[:, 0].copy(), table[:, 1].copy()


def read_pairs(path: str | Path) -> PairArrays:
    """Read a PhotoTour pair file (``m50_*.txt``).

    Returns:
        idx1 (M,) int64, idx2 (M,) int64 patch indices and is_match (M,) bool
        (``pointID1 == pointID2``).
    """
    t = _read_int_table(Path(path), 6, "patchID1 pointID1 unused patchID2 pointID2 unused")
    return t[:, 0].copy(), t[:, 3].copy(), t[:, 1] == t[:, 4]


def find_pair_files(root: str | Path) -> list[Path]:
    """Sorted ``m50_*.txt`` pair files of a PhotoTour folder."""
    return sorted(Path(root).glob("m50_*.txt"))


def read_phototour(root: str | Path, patch_size: int = 32) -> PhotoTourData:
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
    _check_patch_size(patch_size)
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
        img = _read_gray(path)
        if img.shape != (GRID * STORED_SIZE,) * 2:
            raise ValueError(f"{path}: expected a {GRID * STORED_SIZE}x{GRID * STORED_SIZE} image, got {img.shape}")
        grid = _resize(img, side, side).reshape(GRID, patch_size, GRID, patch_size).transpose(0, 2, 1, 3)
        count = min(PER_FILE, n - f * PER_FILE)
        patches[f * PER_FILE : f * PER_FILE + count] = grid.reshape(PER_FILE, patch_size, patch_size)[:count]
    return PhotoTourData(patches, point_ids, photos.astype(np.int32))


# --------------------------------------------------------------------------- #
# PhotoTour writing


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
        if not cv2.imwrite(str(path), np.ascontiguousarray(img.reshape(GRID * STORED_SIZE, -1))):
            raise OSError(f"cannot write {path}")
        self._files += 1
        self._fill = 0

    def close(self, pairs: Mapping[str, PairArrays] | None = None) -> None:
        """Flush the last bmp, write ``info.txt`` and the pair files.

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
        np.savetxt(self.root / "info.txt", np.stack([ids, photos], 1), fmt="%d")
        self._closed = True

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
    ids = np.asarray(point_ids).reshape(-1)
    rng = np.random.default_rng(seed)
    n_pos, n_neg = n_pairs // 2, n_pairs - n_pairs // 2
    order, starts, counts = _group_by_point(ids)
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


def _group_by_point(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patch indices sorted by point, start offset and count of each point."""
    order = np.argsort(ids, kind="stable")
    _, starts, counts = np.unique(ids[order], return_index=True, return_counts=True)
    return order, starts, counts


# --------------------------------------------------------------------------- #
# HPatches


def read_hpatches(
    root: str | Path,
    patch_size: int = 32,
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
    _check_patch_size(patch_size)
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

    # Pass 1: patch counts from the PNG headers, so the mismatch error comes
    # early and the output is allocated once.
    files, n_rows = [], []
    for seq in sequences:
        if not (root / seq).is_dir():
            raise FileNotFoundError(f"HPatches sequence not found: {root / seq}")
        counts = {}
        for name in images:
            path = root / seq / f"{name}.png"
            h, w = _png_shape(path)
            if w != HPATCHES_SIZE or h % HPATCHES_SIZE:
                raise ValueError(f"{path}: expected a 65-wide stack of 65x65 patches, got {h}x{w}")
            counts[name] = h // HPATCHES_SIZE
            files.append(path)
        if len(set(counts.values())) > 1:
            raise ValueError(f"HPatches sequence {seq!r}: images disagree in patch count: {counts}")
        n_rows.append(counts[images[0]])

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
        img = _read_gray(path)
        if img.shape != (n * HPATCHES_SIZE, HPATCHES_SIZE):
            raise ValueError(f"{path}: decoded shape {img.shape} differs from its PNG header")
        patches[offset : offset + n] = _resize(img, patch_size, n * patch_size).reshape(n, patch_size, patch_size)
        point_ids[offset : offset + n] = first_point[f] + np.arange(n)
        source[offset : offset + n] = f
        offset += n
    return PhotoTourData(patches, point_ids, source, names)


# --------------------------------------------------------------------------- #
# training pairs


class PairDataset:
    """Deterministic, resumable sampler of (anchor, positive) training batches.

    Batch ``b`` of epoch ``e`` is drawn from its own RNG seeded with
    ``(seed, e, b)``, so any batch can be rebuilt without replaying the epoch.
    A batch holds ``batch_size`` distinct points (all in-batch negatives are
    true negatives) and, per point, two different patches; points with a
    single patch are never drawn.

    Args:
        data: patches and point ids.
        n_pairs: pairs per epoch; ``len(self) = n_pairs // batch_size`` (the
            remainder is dropped: hardest-in-batch mining depends on the size).
        batch_size: pairs per batch.
        seed: base seed (non-negative).
        augment: "+" augmentation of HardNet+: a random flip and rot90 per
            pair, the same for anchor and positive.
        rot_deg: independent random rotation of each patch in
            [-rot_deg, rot_deg] degrees (0 = off).
        scale: independent random zoom of each patch in [1 - scale, 1 + scale]
            (0 = off).
        photos_per_batch: 0 draws the batch's points from the whole dataset;
            ``k > 0`` draws them from ``k`` random photos (``data.source``),
            ``batch_size / k`` from each, so the hardest negatives come from
            the same photo, as the distractors do when two images are matched.
    """

    def __init__(
        self,
        data: PhotoTourData,
        n_pairs: int,
        batch_size: int,
        seed: int,
        augment: bool = False,
        rot_deg: float = 0.0,
        scale: float = 0.0,
        photos_per_batch: int = 0,
    ) -> None:
        if batch_size < 2:
            raise ValueError(f"batch_size must be >= 2, got {batch_size}")
        if n_pairs < batch_size:
            raise ValueError(f"n_pairs ({n_pairs}) is smaller than batch_size ({batch_size})")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        if rot_deg < 0 or not 0 <= scale < 1:
            raise ValueError(f"need rot_deg >= 0 and 0 <= scale < 1, got {rot_deg}, {scale}")
        self.data = data
        self.n_pairs, self.batch_size, self.seed = n_pairs, batch_size, seed
        self.augment, self.rot_deg, self.scale = augment, rot_deg, scale

        order, starts, counts = _group_by_point(data.point_ids)
        keep = counts >= 2
        self._order = order
        self._starts, self._counts = starts[keep], counts[keep]
        if len(self._counts) < batch_size:
            raise ValueError(
                f"only {len(self._counts)} points have >= 2 patches; a batch needs {batch_size} distinct points"
            )
        if photos_per_batch < 0:
            raise ValueError(f"photos_per_batch must be >= 0, got {photos_per_batch}")
        self.photos_per_batch = photos_per_batch
        if photos_per_batch:
            if data.source is None:
                raise ValueError("photos_per_batch needs the photo of every patch (data.source), which this data lacks")
            photo = data.source[order[self._starts]]  # a point's patches all come from one photo
            by_photo, first, _ = _group_by_point(photo)  # the same grouping, by photo instead of point
            self._photo_points = np.split(by_photo, first[1:])  # eligible points of each photo

    def __len__(self) -> int:
        return self.n_pairs // self.batch_size

    def _rng(self, epoch: int, index: int) -> np.random.Generator:
        if not 0 <= index < len(self):
            raise IndexError(f"batch index {index} outside [0, {len(self)})")
        return np.random.default_rng([self.seed, epoch, index])

    def _sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        pt = self._points_by_photo(rng) if self.photos_per_batch else rng.choice(
            len(self._counts), size=self.batch_size, replace=False)
        counts = self._counts[pt]
        a = rng.integers(counts)
        b = rng.integers(counts - 1)
        b += b >= a
        return self._order[self._starts[pt] + a], self._order[self._starts[pt] + b]

    def _points_by_photo(self, rng: np.random.Generator) -> np.ndarray:
        """``batch_size`` distinct points, ``batch_size / photos_per_batch`` per random photo
        (photos with fewer points give all they have, and further photos fill the batch)."""
        per_photo = math.ceil(self.batch_size / self.photos_per_batch)
        chosen: list[np.ndarray] = []
        left = self.batch_size
        for photo in rng.permutation(len(self._photo_points)):
            points = self._photo_points[photo]
            take = min(per_photo, left, len(points))
            chosen.append(rng.choice(points, size=take, replace=False))
            left -= take
            if left == 0:
                break
        return np.concatenate(chosen)

    def pair_indices(self, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Patch indices (B,), (B,) of anchors and positives of one batch."""
        return self._sample(self._rng(epoch, index))

    def get_batch(self, epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``index`` of ``epoch``: anchor, positive (B, 1, S, S) float32 in [0, 1]."""
        rng = self._rng(epoch, index)
        ia, ip = self._sample(rng)
        a, p = self.data.patches[ia], self.data.patches[ip]  # (B, S, S) uint8 copies
        if self.augment:
            a, p = _flip_rot90(a, p, rng)
        at = torch.from_numpy(np.ascontiguousarray(a)).unsqueeze(1).float().div_(255.0)
        pt = torch.from_numpy(np.ascontiguousarray(p)).unsqueeze(1).float().div_(255.0)
        if self.rot_deg > 0 or self.scale > 0:
            both = _jitter(torch.cat([at, pt]), rng, self.rot_deg, self.scale)
            at, pt = both[: len(at)], both[len(at) :]
        return at, pt

    def batches(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield the batches of ``epoch`` from batch index ``start`` on (resume)."""
        for index in range(start, len(self)):
            yield self.get_batch(epoch, index)


def _flip_rot90(a: np.ndarray, p: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Apply one random dihedral transform per pair, identical for a and p (B, S, S)."""
    flip = rng.random(len(a)) < 0.5
    k = rng.integers(4, size=len(a))
    for x in (a, p):
        x[flip] = x[flip, :, ::-1]
        for r in (1, 2, 3):
            sel = k == r
            x[sel] = np.rot90(x[sel], r, axes=(1, 2))
    return a, p


def _jitter(x: torch.Tensor, rng: np.random.Generator, rot_deg: float, scale: float) -> torch.Tensor:
    """Random rotation/zoom of each patch (B, 1, S, S) about its centre, one grid_sample."""
    n, size = len(x), x.shape[-1]
    ang = torch.from_numpy(np.deg2rad(rng.uniform(-rot_deg, rot_deg, n))).float()
    zoom = torch.from_numpy(rng.uniform(1 - scale, 1 + scale, n)).float()
    cos = (torch.cos(ang) / zoom)[:, None, None]
    sin = (torch.sin(ang) / zoom)[:, None, None]
    # Pixel centres in [-1, 1] (align_corners=False). Built elementwise: as
    # fast as it gets here, F.affine_grid's batched 3x2 matmul is ~3x slower.
    c = (torch.arange(size, dtype=torch.float32) + 0.5) * (2.0 / size) - 1.0
    gx, gy = c[None, None, :], c[None, :, None]
    grid = torch.stack([cos * gx - sin * gy, sin * gx + cos * gy], dim=-1)  # (B, S, S, 2)
    # Reflection avoids black corners that would be an easy cue for the net.
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
