"""The training pair sampler: deterministic, resumable (anchor, positive) batches of one patch dataset
(``PairDataset``) or of several mixed (``MixedPairs``)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from ..data.phototour import PhotoTourData, group_by_point
from ..core.patches import DEFAULT_PATCH_SCALE, check_integer, check_number
from .augment import AugmentConfig, augment_patches, kp_jitter, warp_patches


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
        augment: every augmentation (``hardnet_desc.train.augment.AugmentConfig``;
            default none): the flip/rot90 of a pair, the same for anchor and
            positive; then, drawn independently for anchor and positive from the
            batch's RNG, rotation/zoom jitter, keypoint jitter and the
            photometric chain.
        photos_per_batch: 0 draws the batch's points from the whole dataset;
            ``k > 0`` draws them from ``k`` random photos (``data.source``),
            ``batch_size / k`` from each, so the hardest negatives come from
            the same photo, as the distractors do when two images are matched.
        patch_scale: patch side in units of ``kp.size`` (the data's), to
            express the keypoint position noise in patch pixels.
        stream: 0, or a further seed component so that several samplers with
            the same ``seed`` (the parts of a ``MixedPairs``) draw
            independently.
    """

    def __init__(
        self,
        data: PhotoTourData,
        n_pairs: int,
        *,
        batch_size: int = 1024,
        seed: int = 0,
        augment: AugmentConfig | None = None,
        photos_per_batch: int = 0,
        patch_scale: float = DEFAULT_PATCH_SCALE,
        stream: int = 0,
    ) -> None:
        if not isinstance(data, PhotoTourData):
            raise TypeError(f"data must be a PhotoTourData, got {type(data).__name__}")
        if data.source is not None and len(data.source) != len(data):
            raise ValueError(f"data.source has {len(data.source)} entries for {len(data)} patches (one per patch)")
        for name, value, low in (("batch_size", batch_size, 2), ("n_pairs", n_pairs, 1), ("seed", seed, 0),
                                 ("photos_per_batch", photos_per_batch, 0), ("stream", stream, 0)):
            check_integer(value, name, low)
        if n_pairs < batch_size:
            raise ValueError(f"n_pairs ({n_pairs}) is smaller than batch_size ({batch_size})")
        check_number(patch_scale, "patch_scale")
        self.data = data
        self.n_pairs, self.batch_size, self.seed = int(n_pairs), int(batch_size), int(seed)
        if augment is not None and not isinstance(augment, AugmentConfig):
            raise TypeError(f"augment must be an AugmentConfig or None, got {type(augment).__name__}")
        self.augment = augment or AugmentConfig()
        self.patch_scale, self.stream = float(patch_scale), int(stream)

        order, starts, counts = group_by_point(data.point_ids)
        keep = counts >= 2
        self._order = order
        self._starts, self._counts = starts[keep], counts[keep]
        if len(self._counts) < batch_size:
            raise ValueError(
                f"only {len(self._counts)} points have >= 2 patches; a batch needs {batch_size} distinct points"
            )
        self.photos_per_batch = int(photos_per_batch)
        if photos_per_batch:
            if data.source is None:
                raise ValueError("photos_per_batch needs the photo of every patch (data.source), which this data lacks")
            photo = data.source[order[self._starts]]  # a point's patches all come from one photo
            by_photo, first, _ = group_by_point(photo)  # the same grouping, by photo instead of point
            self._photo_points = np.split(by_photo, first[1:])  # eligible points of each photo

    def __len__(self) -> int:
        return self.n_pairs // self.batch_size

    def _rng(self, epoch: int, index: int) -> np.random.Generator:
        check_integer(epoch, "epoch")
        if not 0 <= index < len(self):
            raise IndexError(f"batch index {index} outside [0, {len(self)})")
        return np.random.default_rng([self.seed, epoch, index] + ([self.stream] if self.stream else []))

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
        if left:  # every photo gave per_photo points (few photos, e.g. a scene column): fill from their rest
            rest = np.setdiff1d(np.concatenate(self._photo_points), np.concatenate(chosen))
            chosen.append(rng.choice(rest, size=left, replace=False))
        return np.concatenate(chosen)

    def pair_indices(self, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Patch indices (B,), (B,) of anchors and positives of one batch."""
        return self._sample(self._rng(epoch, index))

    def get_batch(self, epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``index`` of ``epoch``: anchor, positive (B, 1, S, S) float32 in [0, 1]."""
        rng = self._rng(epoch, index)
        ia, ip = self._sample(rng)
        a, p = self.data.patches[ia], self.data.patches[ip]  # (B, S, S) uint8 copies
        if self.augment.flip_rot90:
            a, p = _flip_rot90(a, p, rng)
        both = torch.from_numpy(np.concatenate([a, p])).unsqueeze(1).float().div_(255.0)  # (2B, 1, S, S)
        both = self._jitter(both, rng)
        if self.augment.photometric_chain:
            both = torch.from_numpy(augment_patches(both[:, 0].numpy(), rng, self.augment)).unsqueeze(1)
        return both[: len(a)], both[len(a) :]

    def _jitter(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """Random rotation/zoom (``rot_deg``, ``scale``) and keypoint noise (``kpjitter``) of each
        patch (2B, 1, S, S), in one resampling."""
        aug, n = self.augment, len(x)
        if not aug.frame_jitter:
            return x
        angle, zoom, shift = np.zeros(n), np.ones(n), None
        if aug.rot_deg > 0 or aug.scale > 0:
            angle = np.deg2rad(rng.uniform(-aug.rot_deg, aug.rot_deg, n))
            zoom = rng.uniform(1 - aug.scale, 1 + aug.scale, n)
        if aug.kpjitter > 0:
            kp_angle, kp_zoom, shift = kp_jitter(rng, n, aug.kpjitter, x.shape[-1], self.patch_scale)
            angle, zoom, shift = angle + kp_angle, zoom * kp_zoom, torch.from_numpy(shift).float()
        return warp_patches(x, torch.from_numpy(angle).float(), torch.from_numpy(zoom).float(), shift)

    def batches(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield the batches of ``epoch`` from batch index ``start`` on (resume)."""
        for index in range(start, len(self)):
            yield self.get_batch(epoch, index)


def split_batch(batch_size: int, fractions: Sequence[float]) -> list[int]:
    """Pairs per part of a batch of ``batch_size`` mixed by ``fractions`` (normalised; largest remainder)."""
    f = np.asarray(fractions, np.float64)
    if f.ndim != 1 or not len(f) or not np.all(np.isfinite(f)) or np.any(f <= 0):
        raise ValueError(f"mix fractions must be positive numbers, got {list(fractions)}")
    with np.errstate(over="ignore"):
        if not np.isfinite(batch_size * f.sum()):  # huge fractions (--mix 1e308,1e308): scale them into (0, 1]
            f = f / f.max()
    exact = batch_size * f / f.sum()
    sizes = np.floor(exact).astype(int)
    sizes[np.argsort(sizes - exact, kind="stable")[: batch_size - sizes.sum()]] += 1
    return sizes.tolist()


class MixedPairs:
    """Batches mixed from several ``PairDataset`` parts, concatenated in part order.

    Part ``k`` draws its share of batch ``b`` of epoch ``e`` as it would alone (its own points,
    photos-per-batch and augmentations) from its own RNG, so the mix resumes exactly as one
    dataset does. Give the parts different ``stream`` values and equal lengths.

    Args:
        parts: samplers whose ``batch_size`` is their share (see ``split_batch``).
    """

    def __init__(self, parts: Sequence[PairDataset]) -> None:
        if not parts:
            raise ValueError("MixedPairs needs at least one part")
        if len({len(p) for p in parts}) != 1 or len({p.stream for p in parts}) != len(parts):
            raise ValueError("the parts of a mix must have equal lengths and distinct streams")
        self.parts = list(parts)
        self.batch_size = sum(p.batch_size for p in parts)

    def __len__(self) -> int:
        return len(self.parts[0])

    def get_batch(self, epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Anchor, positive (B, 1, S, S) float32 in [0, 1]; rows of part 0 first."""
        batches = [p.get_batch(epoch, index) for p in self.parts]
        return torch.cat([a for a, _ in batches]), torch.cat([p for _, p in batches])

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
