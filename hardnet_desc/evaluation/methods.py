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

from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from ..descriptor import HardNetDescriptor
from ..image import to_grey_tensor
from ..kornia import laf_descriptor
from ..model import DESCRIPTOR_DIM, HardNet
from ..weights import DEFAULT_WEIGHTS

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
