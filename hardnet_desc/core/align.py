"""Matched affine frames -> more precise positions: patch alignment (Lucas-Kanade).

A correspondence between two affine frames says that the patch of ``frames1`` in image 1 shows what the
patch of ``frames2`` shows in image 2. Where the frames come from synthesized views (``hardnet_desc.wide_baseline``)
their centres are only as precise as the detector was in a compressed view: a keypoint of a view of tilt ``t`` is
off by up to ``t`` times its error along one axis once mapped back. ``align_frames`` moves each frame of image 2
so that its patch matches image 1's: an affine Lucas-Kanade (inverse compositional, Baker and Matthews 2004) on
the intensity-normalised patches, Gaussian-weighted towards the centre. Frame 1 and its patch stay as they are.

Conventions: ``hardnet_desc.core.patches`` (frames ``[A | c]`` ``(M, 2, 3)`` in pixels, patch over ``c + A [-1, 1]^2``).
"""

from __future__ import annotations

import torch

from .patches import (
    PatchSpec,
    build_pyramid,
    check_frames,
    check_integer,
    check_number,
    extract_patches,
    pyramid_depth,
)

#: The aligned patch covers this fraction of each frame's side (half: less of the surroundings, which a change of
#: viewpoint distorts more than the centre; chosen on real wide pairs, docs/wide-baseline-log.md).
SUPPORT = 0.5
#: Gauss-Newton iterations (each cuts one patch per correspondence in image 2).
ITERATIONS = 12
#: A frame is moved only if its last update was below this many patch pixels, its total shift below
#: ``MAX_SHIFT`` patch pixels (a quarter of the 32-pixel patch) and its affine change within a factor of 2.
CONVERGED, MAX_SHIFT = 0.3, 8.0
#: A patch of image 2 whose grey levels (0-1) vary less than this (standard deviation) has nothing to align.
FLAT = 1e-3
#: Correspondences aligned at once (memory: about 80 kB each, mostly float64 steepest-descent images).
CHUNK = 1024


def _normalised(p: torch.Tensor) -> torch.Tensor:
    """``(M, S, S)`` patches with zero mean and unit standard deviation each (flat patches stay ~0)."""
    p = p - p.mean((-1, -2), keepdim=True)
    return p / p.std((-1, -2), keepdim=True).clamp_min(1e-6)


@torch.inference_mode()
def align_frames(
    image1: torch.Tensor,
    image2: torch.Tensor,
    frames1: torch.Tensor,
    frames2: torch.Tensor,
    *,
    support: float = SUPPORT,
    iterations: int = ITERATIONS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres for ``frames2`` at which their patches match those of ``frames1``.

    Args:
        image1, image2: grey float images ``(1, 1, H_k, W_k)`` (``hardnet_desc.core.image.to_grey_tensor``), on one
            device.
        frames1, frames2: ``(M, 2, 3)`` matched affine frames in pixels of each image, row ``i`` with row ``i``.
        support: the aligned patch is ``support`` times each frame's side.
        iterations: Gauss-Newton iterations.

    Returns:
        ``(centres (M, 2) float64, moved (M,) bool)`` on the images' device: where ``moved`` is false (no
        convergence, a shift beyond a quarter of the patch, a centre that left image 2, a flat patch) the centre
        is ``frames2``'s own.

    Raises:
        ValueError: frames of another shape, different counts, a frame outside its image, NaN or inf; a ``support``
            that is not a positive finite number, ``iterations`` below 1. TypeError: a ``support`` that is not a
            number, ``iterations`` that is not an integer.
    """
    check_number(support, "support")
    check_integer(iterations, "iterations", 1)
    if frames1.dim() != 3 or frames1.shape[1:] != (2, 3) or frames1.shape != frames2.shape:
        raise ValueError(f"frames1 and frames2 must both be (M, 2, 3), got {tuple(frames1.shape)} and "
                         f"{tuple(frames2.shape)}")
    device = image2.device
    for image, frames in ((image1, frames1), (image2, frames2)):
        check_frames(frames.to(image.device), image.shape[-2], image.shape[-1])
    if len(frames1) == 0:
        return torch.zeros(0, 2, dtype=torch.float64, device=device), torch.zeros(0, dtype=torch.bool, device=device)
    pyramid = build_pyramid(image2, pyramid_depth(*image2.shape[-2:]))
    out = [_align(image1.to(device), image2, pyramid, frames1[i:i + CHUNK].to(device), frames2[i:i + CHUNK].to(device),
                  support, iterations) for i in range(0, len(frames1), CHUNK)]
    return torch.cat([c for c, _ in out]), torch.cat([m for _, m in out])


def _align(image1: torch.Tensor, image2: torch.Tensor, pyramid: list[torch.Tensor], frames1: torch.Tensor,
           frames2: torch.Tensor, support: float, iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``align_frames`` of one chunk; ``pyramid``: image 2's."""
    device, spec = image2.device, PatchSpec()
    f1 = frames1.float().clone()
    f1[:, :, :2] *= support
    linear = frames2[:, :, :2].double() * support
    start = frames2[:, :, 2].double()
    h, w = image2.shape[-2:]
    t = _normalised(extract_patches(image1, f1, spec)[:, 0].double())  # the template (M, S, S)
    n = t.shape[-1]
    gx, gy = torch.zeros_like(t), torch.zeros_like(t)
    gx[:, :, 1:-1] = (t[:, :, 2:] - t[:, :, :-2]) / 2
    gy[:, 1:-1] = (t[:, 2:] - t[:, :-2]) / 2
    axis = torch.arange(n, device=device, dtype=torch.float64) - (n - 1) / 2
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    weight = torch.exp(-(xx**2 + yy**2) / (2 * (n / 4) ** 2))
    # steepest-descent images of the affine warp x -> (I + P) x + d, in patch pixels
    sd = torch.stack([gx * xx, gx * yy, gy * xx, gy * yy, gx, gy], 1)
    hessian = torch.einsum("mkij,mlij,ij->mkl", sd, sd, weight)
    flat = torch.linalg.matrix_rank(hessian) < 6
    inverse = torch.linalg.pinv(hessian)
    warp = torch.eye(3, dtype=torch.float64, device=device).repeat(len(t), 1, 1)
    moved = ~flat
    to_pixels = 2.0 / n  # patch pixels -> frame units ([-1, 1] over the patch)
    for _ in range(iterations):
        centres = start + (linear @ (warp[:, :2, 2:] * to_pixels))[:, :, 0]
        inside = (centres[:, 0] >= 0) & (centres[:, 0] <= w - 1) & (centres[:, 1] >= 0) & (centres[:, 1] <= h - 1)
        moved &= inside
        centres = torch.where(inside[:, None], centres, start)
        frames = torch.cat([linear @ warp[:, :2, :2], centres[:, :, None]], 2).float()
        patches = extract_patches(image2, frames, spec, pyramid=pyramid)[:, 0].double()
        error = _normalised(patches) - t
        dp = (inverse @ torch.einsum("mkij,mij,ij->mk", sd, error, weight)[:, :, None])[:, :, 0]
        step = torch.eye(3, dtype=torch.float64, device=device).repeat(len(t), 1, 1)
        step[:, :2, :2] += dp[:, :4].reshape(-1, 2, 2)
        step[:, :2, 2] += dp[:, 4:]
        warp = warp @ torch.linalg.inv(step)
    stretch = torch.linalg.svdvals(warp[:, :2, :2])
    moved &= ((patches.std((-1, -2)) > FLAT) & (dp[:, 4:].norm(dim=1) < CONVERGED)
              & (warp[:, :2, 2].abs() < MAX_SHIFT).all(1) & (stretch[:, 0] < 2) & (stretch[:, 1] > 0.5))
    centres = start + (linear @ (warp[:, :2, 2:] * to_pixels))[:, :, 0]
    return torch.where(moved[:, None], centres, start), moved
