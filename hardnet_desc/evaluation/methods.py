"""Descriptor methods compared side by side on the same keypoints.

A method is a callable ``describe(image, keypoints) -> (N, D) float32``: ``image`` is a grey
``(H, W)`` uint8 array, ``keypoints`` a list of ``N`` ``cv2.KeyPoint`` (from the detector,
with SIFT's octave field set), and row ``i`` describes ``keypoints[i]``.

* ``sift``: OpenCV SIFT descriptors.
* ``rootsift``: RootSIFT (Arandjelovic & Zisserman, CVPR 2012): L1-normalise, then square root.
* ``hardnet``: ``HardNetDescriptor``.
* ``kornia``: ``kornia.feature.LAFDescriptor(kornia.feature.HardNet())`` with the *same* weights
  and the *same* patch regions as ``hardnet``, so only the patch pipeline differs. kornia's LAF
  ``[A | c]`` covers ``c + A [-1, 1]^2`` with ``A``'s first column the patch x axis (see
  ``kornia.feature.laf_from_center_scale_ori``), which is exactly our frame convention, so our
  frames are passed to kornia unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from ..descriptor import HardNetDescriptor
from ..core.image import to_grey_tensor
from ..integrations.kornia import laf_descriptor
from ..core.model import DESCRIPTOR_DIM, HardNet
from ..core.patches import DEFAULT_PATCH_SCALE, check_patch_scale
from ..core.weights import DEFAULT_WEIGHTS

DescribeFn = Callable[[np.ndarray, Sequence[cv2.KeyPoint]], np.ndarray]

#: Method names in reporting order.
METHODS = ("sift", "rootsift", "hardnet", "kornia")


def _sift_compute(image: np.ndarray, keypoints: Sequence[cv2.KeyPoint]) -> np.ndarray:
    kps, desc = cv2.SIFT_create().compute(image, list(keypoints))
    if len(kps) != len(keypoints):  # OpenCV must keep them for the comparison to be fair
        raise RuntimeError(f"cv2.SIFT compute returned {len(kps)} of {len(keypoints)} keypoints")
    return np.zeros((0, DESCRIPTOR_DIM), np.float32) if desc is None else desc.astype(np.float32)


def sift(image: np.ndarray, keypoints: Sequence[cv2.KeyPoint]) -> np.ndarray:
    """OpenCV SIFT descriptors ``(N, 128)`` float32."""
    return _sift_compute(image, keypoints)


def rootsift(image: np.ndarray, keypoints: Sequence[cv2.KeyPoint]) -> np.ndarray:
    """RootSIFT ``(N, 128)`` float32: ``sqrt(d / |d|_1)``, which has unit L2 norm."""
    desc = _sift_compute(image, keypoints)
    return np.sqrt(desc / np.maximum(desc.sum(axis=1, keepdims=True), 1e-12)).astype(np.float32)


def sift_octave(size: float) -> int:
    """OpenCV's packed ``kp.octave`` (octave, layer) for a SIFT keypoint of diameter ``size``.

    SIFT detects a keypoint of blur ``sigma = 1.6 * 2^(octave + layer / 3)`` (in image pixels) with
    ``size = 2 sigma``; ``compute`` reads that octave and layer of its pyramid.
    """
    level = math.log2(size / (2 * 1.6))
    octave = math.floor(level)
    layer = round(3 * (level - octave))
    if layer == 0:  # layers 1..3 exist in each octave
        octave, layer = octave - 1, 3
    return (octave & 255) | (layer << 8)


def sift_patches(patches: np.ndarray, patch_scale: float = DEFAULT_PATCH_SCALE, root: bool = False) -> np.ndarray:
    """SIFT (or RootSIFT) descriptors of ready patches: the keypoint is the patch centre, angle 0,
    diameter ``side / patch_scale`` (the patch covers ``patch_scale * kp.size``, as our patches do).

    Patches are laid out, reflect-padded, in mosaics of 8x8 tiles and described by one
    ``cv2.SIFT.compute`` call per mosaic.

    Args:
        patches: ``(N, S, S)`` uint8.
        patch_scale: patch side in units of ``kp.size`` (6: SIFT's own 4x4-cell window).
        root: RootSIFT instead of SIFT.

    Returns:
        ``(N, 128)`` float32.
    """
    patches = np.asarray(patches)
    if patches.ndim != 3 or patches.shape[1] != patches.shape[2] or patches.dtype != np.uint8:
        raise ValueError(f"patches must be (N, S, S) uint8, got {patches.shape} {patches.dtype}")
    patch_scale = check_patch_scale(patch_scale)
    n, side = len(patches), patches.shape[1]
    pad, grid = side // 2, 8
    tile = side + 2 * pad
    size = side / patch_scale
    centre = pad + (side - 1) / 2
    out = np.zeros((n, 128), np.float32)
    describe = rootsift if root else sift
    for start in range(0, n, grid * grid):
        chunk = patches[start : start + grid * grid]
        mosaic = np.zeros((grid * tile, grid * tile), np.uint8)
        kps = []
        for i, patch in enumerate(chunk):
            r, c = divmod(i, grid)
            mosaic[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile] = cv2.copyMakeBorder(
                patch, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
            kps.append(cv2.KeyPoint(c * tile + centre, r * tile + centre, size, 0.0, 0.0, sift_octave(size)))
        out[start : start + len(chunk)] = describe(mosaic, kps)
    return out


class HardNetMethod:
    """``hardnet``: ``HardNetDescriptor.compute`` on the given keypoints."""

    def __init__(self, descriptor: HardNetDescriptor) -> None:
        self.descriptor = descriptor

    def __call__(self, image: np.ndarray, keypoints: Sequence[cv2.KeyPoint]) -> np.ndarray:
        return self.descriptor.compute(image, keypoints)[1]


class KorniaMethod:
    """``kornia``: kornia's LAFDescriptor + HardNet, with our weights and our patch regions.

    Args:
        descriptor: the ``hardnet`` method's descriptor; its weights, patch regions
            (``HardNetDescriptor.frames``), device and ``batch_size`` are reused. kornia runs in
            float32 whatever its precision.
    """

    def __init__(self, descriptor: HardNetDescriptor) -> None:
        self.laf_descriptor = laf_descriptor(descriptor.weights, device=descriptor.device)
        self.descriptor = descriptor

    @torch.inference_mode()
    def __call__(self, image: np.ndarray, keypoints: Sequence[cv2.KeyPoint]) -> np.ndarray:
        lafs = self.descriptor.frames(keypoints)[None]  # (1, N, 2, 3), the regions hardnet describes
        grey = to_grey_tensor(image, lafs.device)  # (1, 1, H, W) in [0, 1], as hardnet sees it
        out = np.zeros((lafs.shape[1], DESCRIPTOR_DIM), np.float32)
        batch_size = self.descriptor.batch_size
        for start in range(0, lafs.shape[1], batch_size):
            desc = self.laf_descriptor(grey, lafs[:, start : start + batch_size])
            out[start : start + desc.shape[1]] = desc[0].float().cpu().numpy()
        return out


def kornia_available() -> bool:
    try:
        import kornia.feature  # noqa: F401
    except ImportError:
        return False
    return True


def build_methods(
    names: Sequence[str] = METHODS,
    *,
    weights: str | Path | HardNet | None = None,
    device: str | torch.device = "auto",
    precision: str = "fp32",
    batch_size: int = 1024,
) -> tuple[dict[str, DescribeFn], dict[str, str]]:
    """Build the named methods.

    Args:
        names: any of ``METHODS``.
        weights: HardNet weights for ``hardnet`` and ``kornia`` (path, bundled name or module);
            None uses the default weights.
        device, precision, batch_size: passed to ``HardNetDescriptor``.

    Returns:
        ``(methods, skipped)``: name -> describe function, in the given order, and name -> reason
        for methods that cannot run here (kornia not installed).

    Raises:
        ValueError: an unknown or repeated name (and ``WeightsError``
            for weights that cannot be loaded).
    """
    names = list(names)
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:
        raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"method names repeat: {names}")
    methods: dict[str, DescribeFn] = {}
    skipped: dict[str, str] = {}
    if "kornia" in names and not kornia_available():
        skipped["kornia"] = "kornia is not installed (pip install 'hardnet-desc[kornia]')"
    descriptor = None
    if "hardnet" in names or ("kornia" in names and "kornia" not in skipped):
        descriptor = HardNetDescriptor(
            DEFAULT_WEIGHTS if weights is None else weights, device=device, precision=precision, batch_size=batch_size
        )
    for name in names:
        if name == "sift":
            methods[name] = sift
        elif name == "rootsift":
            methods[name] = rootsift
        elif name == "hardnet":
            methods[name] = HardNetMethod(descriptor)
        elif name == "kornia" and name not in skipped:
            methods[name] = KorniaMethod(descriptor)
    return methods, skipped
