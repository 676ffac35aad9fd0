"""HardNetDescriptor: a drop-in for OpenCV's SIFT descriptor.

``HardNetDescriptor().compute(img, kps)`` returns what ``cv2.SIFT_create().compute(img, kps)``
returns: the keypoints and a float32 ``(N, 128)`` array with unit L2 norm rows, in keypoint order.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .image import ImageLike, to_grey_tensor, to_uint8
from .model import DESCRIPTOR_DIM, PATCH_SIZE, HardNet, fuse_hardnet
from .patches import (
    DEFAULT_PATCH_SCALE,
    SUPERSAMPLE,
    KeypointsLike,
    build_pyramid,
    check_inside,
    extract_patches,
    keypoints_to_frames,
    pyramid_levels,
)
from .weights import DEFAULT_WEIGHTS, Weights, load_hardnet

_PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str | torch.device) -> torch.device:
    """``'auto'`` picks CUDA when available, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but CUDA is not available")
    return device


class HardNetDescriptor:
    """HardNet descriptors for OpenCV keypoints, with OpenCV's Feature2D methods.

    Args:
        weights: a bundled name (``"default"``), a ``.safetensors``/``.pth`` path,
            ``"hf://owner/repo/file"``, or a :class:`~hardnet_desc.model.HardNet` module.
        device: ``"auto"`` (CUDA if present), ``"cpu"``, ``"cuda"`` or a ``torch.device``.
        batch_size: patches per forward pass; bounds memory, never changes results. On CPU 256
            is fastest (1024 is about 30 % slower: the activations no longer fit in cache).
        precision: ``"fp32"``, ``"bf16"`` (about 2x faster on CPUs with AVX-512 BF16) or ``"fp16"`` (CUDA).
        patch_scale: patch side in units of ``kp.size``. ``None`` takes the value recorded in the
            weight file, else :data:`~hardnet_desc.patches.DEFAULT_PATCH_SCALE`.
        detector: any ``cv2.Feature2D`` used by :meth:`detect`; default ``cv2.SIFT_create()``.
    """

    def __init__(
        self,
        weights: str | Path | HardNet = DEFAULT_WEIGHTS,
        *,
        device: str | torch.device = "auto",
        batch_size: int = 256,
        precision: str = "fp32",
        patch_scale: float | None = None,
        detector: Any = None,
    ) -> None:
        if precision not in _PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(_PRECISIONS)}, got {precision!r}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = resolve_device(device)
        if precision == "fp16" and self.device.type != "cuda":
            raise ValueError("precision='fp16' needs a CUDA device; use 'bf16' on CPU")
        if isinstance(weights, HardNet):
            net, self.weights = weights, Weights(weights.state_dict(), "HardNet module")
        else:
            net, self.weights = load_hardnet(weights)
        self.patch_scale = float(patch_scale or self.weights.patch_scale or DEFAULT_PATCH_SCALE)
        self.batch_size = int(batch_size)
        self.precision = precision
        self.net = fuse_hardnet(net.eval()).to(self.device).to(memory_format=torch.channels_last)
        self.detector = detector if detector is not None else cv2.SIFT_create()

    def __repr__(self) -> str:
        return (
            f"HardNetDescriptor(weights={self.weights.source!r}, device='{self.device}', "
            f"precision='{self.precision}', patch_scale={self.patch_scale}, batch_size={self.batch_size})"
        )

    # --- OpenCV Feature2D interface -------------------------------------------------------
    def descriptorSize(self) -> int:  # noqa: N802 (OpenCV's name)
        return DESCRIPTOR_DIM

    def descriptorType(self) -> int:  # noqa: N802
        return cv2.CV_32F

    def defaultNorm(self) -> int:  # noqa: N802
        return cv2.NORM_L2

    def getDefaultName(self) -> str:  # noqa: N802
        return "HardNetDescriptor"

    def detect(self, image: ImageLike, mask: np.ndarray | None = None) -> tuple[cv2.KeyPoint, ...]:
        """Keypoints from the detector (SIFT by default) on the grey 8-bit image."""
        return self.detector.detect(to_uint8(image), mask)

    def compute(self, image: ImageLike, keypoints: KeypointsLike) -> tuple[KeypointsLike, np.ndarray]:
        """Describe ``keypoints`` of ``image``.

        Args:
            image: ``(H, W)`` grey or ``(H, W, 3)`` BGR numpy (uint8, uint16 or float), or a torch
                image ``(H, W)``, ``(C, H, W)``, ``(1, C, H, W)`` (RGB).
            keypoints: ``cv2.KeyPoint`` list, ``(N, 4)`` ``(x, y, size, angle_deg)`` array, or
                ``(N, 2, 3)`` affine frames. Conventions: :mod:`hardnet_desc.patches`.

        Returns:
            ``(keypoints, descriptors)``: the keypoints as given and float32 ``(N, 128)``.
        """
        frames = keypoints_to_frames(keypoints, self.patch_scale)
        grey = to_grey_tensor(image, self.device)
        return keypoints, self.describe_frames(grey, frames)

    def detectAndCompute(  # noqa: N802
        self, image: ImageLike, mask: np.ndarray | None = None
    ) -> tuple[tuple[cv2.KeyPoint, ...], np.ndarray]:
        keypoints = self.detect(image, mask)
        return self.compute(image, keypoints)

    # --- tensors in, descriptors out --------------------------------------------------------
    @torch.inference_mode()
    def describe_frames(self, grey: torch.Tensor, frames: torch.Tensor) -> np.ndarray:
        """Descriptors ``(N, 128)`` for affine frames ``(N, 2, 3)`` of a ``(1, 1, H, W)`` image."""
        out = np.empty((len(frames), DESCRIPTOR_DIM), dtype=np.float32)
        if len(frames) == 0:
            return out
        frames = frames.to(self.device)
        check_inside(frames, grey.shape[-2], grey.shape[-1])
        pyramid = build_pyramid(grey, int(pyramid_levels(frames, PATCH_SIZE * SUPERSAMPLE).max()))
        for start in range(0, len(frames), self.batch_size):
            patches = extract_patches(grey, frames[start : start + self.batch_size], pyramid=pyramid)
            out[start : start + len(patches)] = self._run_net(patches).cpu().numpy()
        return out

    @torch.inference_mode()
    def describe_patches(self, patches: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Describe ready-made patches.

        Args:
            patches: ``(N, H, W)`` or ``(N, 1, H, W)``, any numeric dtype and range; other sizes
                than 32x32 (e.g. HPatches' 65x65) are resized with area averaging.

        Returns:
            ``(N, 128)`` float32, numpy for numpy input and a tensor (on this device) for a tensor.
        """
        as_numpy = not isinstance(patches, torch.Tensor)
        x = torch.as_tensor(np.asarray(patches)) if as_numpy else patches
        if x.dim() == 3:
            x = x[:, None]
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"patches must be (N, H, W) or (N, 1, H, W), got {tuple(x.shape)}")
        x = x.to(self.device, torch.float32)
        if not torch.isfinite(x).all():
            raise ValueError("patches contain NaN or inf")
        out = torch.empty((len(x), DESCRIPTOR_DIM), device=self.device)
        for start in range(0, len(x), self.batch_size):
            batch = x[start : start + self.batch_size]
            if batch.shape[-2:] != (PATCH_SIZE, PATCH_SIZE):
                mode = "area" if min(batch.shape[-2:]) >= PATCH_SIZE else "bilinear"
                batch = F.interpolate(batch, size=(PATCH_SIZE, PATCH_SIZE), mode=mode)
            out[start : start + len(batch)] = self._run_net(batch)
        return out.cpu().numpy() if as_numpy else out

    def _run_net(self, patches: torch.Tensor) -> torch.Tensor:
        dtype = _PRECISIONS[self.precision]
        autocast = (
            torch.autocast(device_type=self.device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()
        )
        with autocast:
            return self.net(patches.contiguous(memory_format=torch.channels_last)).float()
