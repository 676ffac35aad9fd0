"""Synthetic correspondences from a folder of photos, written in the PhotoTour layout.

For each photo: detect SIFT keypoints, make several views with random homographies
(viewpoint, scale, in-plane rotation) and photometric changes (brightness, contrast,
gamma, blur, noise, JPEG), re-detect SIFT in every view and keep a keypoint wherever the
re-detection agrees with the keypoint projected through the known homography (position,
scale and orientation). The view's *detected* keypoint is used, so detector noise is real.
Every view's patch is cut with ``hardnet_desc.core.patches.extract_patches``, the same code
as inference, at 64x64 with ``supersample=1``; the loader's 2x2 mean then equals the 32x32
inference patch exactly.

Images are split into train and validation by image.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.spatial import cKDTree

from ...data.images import list_images
from ...data.phototour import STORED_SIZE, check_count, check_dataset_folder, make_pairs
from ...data.warps import WARP_PRESETS, WarpConfig, photometric, project_keypoints, random_homography
from ...detection import MAX_KEYPOINTS, detect_sift
from ...core.image import read_image, to_grey_numpy, to_grey_tensor
from ...core.patches import PatchSpec, check_integer, check_number, extract_patches
from ...workers import WorkerPool
from .writer import Part, StagedDataset, check_outside, default_patch_spec, spec_record, write_split


@dataclass
class MatchConfig:
    """How close a re-detected keypoint must be to the projected one."""

    max_px: float = 2.0  # centre distance, pixels of the view
    max_rel_px: float = 0.1  # ... or this fraction of the projected size, if larger
    max_scale_ratio: float = 1.3  # size ratio either way
    max_angle_deg: float = 20.0
    min_point_distance: float = 3.0  # points closer than this (pixels) to a stronger one are dropped

    def __post_init__(self) -> None:
        """Refuse values that would match nothing or everything (``--match-angle``, ``--match-scale``)."""
        for name in ("max_px", "max_rel_px", "min_point_distance"):
            check_number(getattr(self, name), name, strict=False)
        check_number(self.max_scale_ratio, "max_scale_ratio (--match-scale)", 1.0, strict=False)
        check_number(self.max_angle_deg, "max_angle_deg (--match-angle)", 0.0)
        if self.max_angle_deg > 180:
            raise ValueError(f"max_angle_deg (--match-angle) must be at most 180, got {self.max_angle_deg}")


def split_images(paths: list[Path], val_fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """Deterministic train/validation split by image."""
    order = np.random.default_rng(seed).permutation(len(paths))
    n_val = int(round(val_fraction * len(paths)))
    val = sorted(paths[i] for i in order[:n_val])
    train = sorted(paths[i] for i in order[n_val:])
    return train, val


def detect(image: np.ndarray, n: int) -> np.ndarray:
    """SIFT keypoints (OpenCV's ``nfeatures=n``) as ``(N, 4)`` ``(x, y, size, angle)``, strongest first."""
    kps = detect_sift(image, detector=cv2.SIFT_create(nfeatures=min(n, MAX_KEYPOINTS)))  # no photo has more
    return np.array([(k.pt[0], k.pt[1], k.size, k.angle) for k in kps], dtype=np.float64).reshape(-1, 4)


def match_detections(expected: np.ndarray, found: np.ndarray, cfg: MatchConfig) -> np.ndarray:
    """For each expected keypoint, the index of the agreeing detection, or -1."""
    result = np.full(len(expected), -1)
    if len(found) == 0 or len(expected) == 0:
        return result
    tree = cKDTree(found[:, :2])
    radius = np.maximum(cfg.max_px, cfg.max_rel_px * expected[:, 2])
    for i, cands in enumerate(tree.query_ball_point(expected[:, :2], radius)):
        if not cands:
            continue
        c = found[cands]
        ratio = np.abs(np.log(c[:, 2] / expected[i, 2]))
        dang = np.abs((c[:, 3] - expected[i, 3] + 180.0) % 360.0 - 180.0)
        ok = (ratio < math.log(cfg.max_scale_ratio)) & (dang < cfg.max_angle_deg)
        if ok.any():
            dist = np.linalg.norm(c[:, :2] - expected[i, :2], axis=1) / radius[i]
            cost = dist + ratio / math.log(cfg.max_scale_ratio) + dang / cfg.max_angle_deg
            result[i] = cands[int(np.argmin(np.where(ok, cost, np.inf)))]
    return result


def dedupe(kps: np.ndarray, min_px: float) -> np.ndarray:
    """Drop keypoints within ``min_px`` of a stronger one.

    SIFT repeats a point per orientation, and two points a few pixels apart look alike: as
    in-batch negatives they would teach the net to separate what matching counts as the same.
    """
    keep = np.ones(len(kps), bool)
    tree = cKDTree(kps[:, :2])
    for i, j in sorted(tree.query_pairs(min_px)):
        if keep[i]:
            keep[j] = False
    return kps[keep]


@dataclass
class ImageJob:
    path: str
    seed: int
    points: int
    views: int
    spec: PatchSpec  # the patch geometry (scale, min_kp_size); cut at 64x64 without supersampling
    warp: WarpConfig
    match: MatchConfig


def correspondences_from_image(job: ImageJob) -> tuple[np.ndarray, np.ndarray]:
    """Patches ``(M, 64, 64)`` uint8 and local point ids ``(M,)`` of one photo."""
    rng = np.random.default_rng(job.seed)
    image = to_grey_numpy(read_image(job.path))
    if image.dtype != np.uint8:
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    h, w = image.shape
    base = dedupe(detect(image, 4 * job.points), job.match.min_point_distance)[: 2 * job.points]
    view_kps = [base]  # view 0 is the photo itself, with its own detections
    view_images = [image]
    for _ in range(job.views):
        H, out_h, out_w = random_homography(h, w, job.warp, rng)
        warped = cv2.warpPerspective(image, H, (out_w, out_h), flags=cv2.INTER_LINEAR, borderValue=0)
        valid = cv2.warpPerspective(np.full_like(image, 255), H, (out_w, out_h), flags=cv2.INTER_NEAREST)
        view = photometric(warped, job.warp, rng)
        found = detect(view, 4 * job.points)
        # drop detections on the black outside of the warped photo
        inner = cv2.erode(valid, np.ones((9, 9), np.uint8))
        found = found[inner[found[:, 1].astype(int).clip(0, out_h - 1), found[:, 0].astype(int).clip(0, out_w - 1)] > 0]
        idx = match_detections(project_keypoints(base, H), found, job.match)
        kps = np.full_like(base, np.nan)
        kps[idx >= 0] = found[idx[idx >= 0]]
        view_kps.append(kps)
        view_images.append(view)
    seen = np.stack([~np.isnan(k[:, 0]) for k in view_kps])  # (V+1, N)
    keep = np.flatnonzero(seen.sum(0) >= 2)[: job.points]
    patches, ids = [], []
    with torch.inference_mode():
        for kps, img, s in zip(view_kps, view_images, seen):
            sel = keep[s[keep]]
            if len(sel) == 0:
                continue
            p = extract_patches(to_grey_tensor(img), kps[sel], patch_size=STORED_SIZE, supersample=1,
                                patch_scale=job.spec.scale, min_kp_size=job.spec.min_kp_size)
            patches.append((p[:, 0] * 255.0).round().clamp(0, 255).to(torch.uint8).numpy())
            ids.append(sel)
    if not patches:
        return np.zeros((0, STORED_SIZE, STORED_SIZE), np.uint8), np.zeros(0, np.int64)
    return np.concatenate(patches), np.concatenate(ids).astype(np.int64)


def _init_worker() -> None:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def make_dataset(
    images: str | Path,
    out: str | Path,
    *,
    points: int = 1000,
    views: int = 3,
    patch_scale: float | None = None,
    min_kp_size: float | None = None,
    val_fraction: float = 0.1,
    val_pairs: int = 50_000,
    seed: int = 0,
    split_seed: int | None = None,
    workers: int | None = None,
    warp: WarpConfig | str | None = None,
    match: MatchConfig | None = None,
    progress: bool = True,
    force: bool = False,
) -> dict:
    """Build ``out/train`` and ``out/val`` in the PhotoTour layout from the photos in ``images``.

    Args:
        images: folder searched recursively for photos; ``out`` may not lie in it.
        out: output folder; also receives ``split.json`` (which photo went where) and ``meta.json``.
        points: at most this many 3D points per photo (>= 1).
        views: warped views per photo, >= 1 (the photo itself is one more view).
        patch_scale: patch side in units of ``kp.size`` (must match inference); default: the bundled
            weights' value (``writer.default_patch_spec``, as for the SfM builder).
        min_kp_size: least ``kp.size`` in pixels a patch is cut for (must match inference);
            default: the bundled weights' value.
        val_fraction: share of photos held out for validation, in (0, 1); both splits must keep a photo.
        val_pairs: number of pairs in the validation pair file (half matches), >= 1.
        seed: seeds the warps, the photometric changes and the validation pairs.
        split_seed: seeds the train/validation split (default: ``seed``). Fix it to draw new
            views of the same photos without moving validation photos into training.
        workers: processes cutting patches (0 or 1: all in this process; default: up to 2).
        warp: the views' changes: a ``WarpConfig``, or a name of ``WARP_PRESETS`` (``"default"``, ``"hard"``).
        force: write into ``out`` even if its ``meta.json``, ``split.json`` or ``train/``, ``val/`` were
            written by another program (else ``FileExistsError`` before any work; a dataset of ours is replaced).

    The splits are built beside the old ones and put in place once both are complete (``StagedDataset``):
    a failed or interrupted build leaves ``out`` as it was.

    Returns:
        The summary written to ``meta.json``.

    Raises:
        ValueError: a count < 1, a ``val_fraction`` that leaves a split without photos, ``out`` inside
            ``images``, before anything is written; a split whose photos gave no patch, after the build
            (``out`` left as it was).
    """
    for name, value in (("points", points), ("views", views), ("val_pairs", val_pairs)):
        check_count(value, name)
    check_integer(seed, "seed", 0)
    check_integer(split_seed, "split_seed", 0, "None: seed")
    check_integer(workers, "workers", 0, "None: up to 2")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, numbers.Real) or not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be a number between 0 and 1 (exclusive), got {val_fraction!r}")
    warp, match = _warp_config(warp), match or MatchConfig()
    if not isinstance(match, MatchConfig):
        raise TypeError(f"match must be a MatchConfig, got {type(match).__name__}")
    spec = default_patch_spec(patch_scale, min_kp_size)
    check_outside(images, out)
    paths = list_images(images)
    if len(paths) < 2:
        raise ValueError(f"need at least 2 photos in {images}, found {len(paths)}")
    split_seed = seed if split_seed is None else split_seed
    train, val = split_images(paths, val_fraction, split_seed)
    for split, files in (("validation", val), ("training", train)):
        if not files:
            raise ValueError(f"val_fraction={val_fraction} leaves no {split} photo out of {len(paths)}")
    out = Path(out)
    check_dataset_folder(out, ("meta.json", "split.json"), force)
    root = Path(images)
    workers = min(2, os.cpu_count() or 1) if workers is None else workers
    summary: dict = {"images": str(root), **spec_record(spec), "points_per_image": points, "views": views,
                     "seed": seed, "split_seed": split_seed, "warp": asdict(warp), "match": asdict(match)}
    with StagedDataset(out) as stage:
        for split, files in (("train", train), ("val", val)):
            jobs = [ImageJob(str(p), seed * 100_003 + i + (0 if split == "train" else 50_000), points, views, spec,
                             warp, match)
                    for i, p in enumerate(files)]  # info.txt's second column: the photo's index in split.json
            n_pairs = val_pairs if split == "val" else None
            summary[split] = {"photos": len(files), **_write_split(stage.folder(split), out / split, jobs, workers,
                                                                   n_pairs, seed, progress)}
        stage.commit({"split.json": {"train": [str(p.relative_to(root)) for p in train],
                                     "val": [str(p.relative_to(root)) for p in val]},
                      "meta.json": summary})
    return summary


def _warp_config(warp: WarpConfig | str | None) -> WarpConfig:
    """``warp`` as a ``WarpConfig`` (None: the default; a name: ``WARP_PRESETS[name]``)."""
    if warp is None or isinstance(warp, WarpConfig):
        return warp or WarpConfig()
    if not isinstance(warp, str):
        raise TypeError(f"warp must be a WarpConfig or one of {sorted(WARP_PRESETS)}, got {type(warp).__name__}")
    if warp not in WARP_PRESETS:
        raise ValueError(f"warp must be a WarpConfig or one of {sorted(WARP_PRESETS)}, got {warp!r}")
    return WARP_PRESETS[warp]


def _write_split(folder: Path, split: Path, jobs: list[ImageJob], workers: int, val_pairs: int | None, seed: int,
                 progress: bool) -> dict:
    """Run the jobs of one split (in ``workers`` processes) and write their patches to ``folder``, which
    becomes the split folder ``split`` (named in messages).

    Point ids are made contiguous over the split; ``val_pairs`` (for the validation split) writes
    a pair file of that many pairs, seeded by ``seed``. Returns ``{"points", "patches"}``.

    Raises:
        ValueError: the split's photos gave no patch.
    """
    def pair_files(ids: np.ndarray) -> dict | None:
        if not len(ids):
            raise ValueError(f"{split}: the {'validation' if val_pairs else 'training'} photos gave no patch (no "
                             "re-detected keypoint agreed with its projection); add photos or loosen "
                             "--match-angle/--match-scale")
        if val_pairs is None:
            return None
        n = min(val_pairs, len(ids))
        return {f"m50_{n}_{n}_0.txt": make_pairs(ids, n, seed)}

    ids = write_split(folder, _photo_parts(jobs, workers), pair_files=pair_files, total=len(jobs), unit="photos",
                      progress=progress, name=split.name)
    return {"points": int(ids.max()) + 1 if len(ids) else 0, "patches": len(ids)}


def _photo_parts(jobs: list[ImageJob], workers: int) -> Iterator[Part]:
    """``(patches, labels 0..P-1, photo index)`` of each job, in order, run in ``workers`` processes."""
    # spawned, not forked: a forked child of a process whose torch/OpenMP threads already ran can deadlock
    workers = min(workers, len(jobs))
    pool = WorkerPool(workers, _init_worker) if workers > 1 else None
    with pool or nullcontext():
        results = pool.map(correspondences_from_image, jobs) if pool else map(correspondences_from_image, jobs)
        for photo, (patches, ids) in enumerate(results):
            _, local = np.unique(ids, return_inverse=True)  # contiguous ids per photo
            yield patches, local, photo
