"""A scikit-image-style descriptor extractor: HardNet where ``skimage.feature.SIFT`` or ``BRIEF`` go.

``HardNetExtractor().extract(image, keypoints, scales, orientations)`` fills ``.descriptors`` and
``.mask`` as scikit-image's extractors do, so ``skimage.feature.match_descriptors`` and
``skimage.measure.ransac`` take the results as they are. scikit-image's conventions, and how they
map to OpenCV's (docs/conventions.md), checked against ``skimage.feature.SIFT`` 0.26 on the bundled
photos:

* keypoints are ``(row, col)``: ``x = col``, ``y = row``; pixel centres at integers in both.
* ``scales`` are blurs ``sigma`` in pixels, what ``SIFT.sigmas`` holds (``SIFT.scales`` is an index
  into the octave, not a size): ``kp.size = 2 * sigma``, so the patch side is
  ``patch_scale * 2 * sigma``.
* ``orientations`` are radians measured from the row axis (down) towards the column axis (right),
  as ``SIFT.orientations``: ``kp.angle = 90 - degrees(orientation)``. Upright is ``pi / 2``.
* colour images are RGB (as ``skimage.io.imread`` gives them), uint8 or float.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path

import numpy as np
import torch

from ..descriptor import HardNetDescriptor
from ..core.model import HardNet
from ..core.weights import DEFAULT_WEIGHTS


class HardNetExtractor:
    """HardNet descriptors with scikit-image's extractor interface.

    Args:
        weights: as ``HardNetDescriptor``, or a ready ``HardNetDescriptor``.
        sigma: keypoint blur in pixels used when ``extract`` gets no ``scales`` (4: a patch of
            ``patch_scale * 8`` pixels, 48 for the bundled weights, about ``BRIEF``'s 49).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...

    Attributes:
        descriptors: ``(M, 128)`` float32 unit rows for the kept keypoints, after ``extract``.
        mask: ``(N,)`` bool, which keypoints were kept (centre inside the image).
    """

    def __init__(
        self,
        weights: str | Path | HardNet | HardNetDescriptor = DEFAULT_WEIGHTS,
        *,
        sigma: float = 4.0,
        device: str | torch.device = "auto",
    ) -> None:
        if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real):
            raise TypeError(f"sigma must be a number (pixels), got {type(sigma).__name__}")
        if not 0 < sigma < math.inf:
            raise ValueError(f"sigma must be > 0 (a finite number of pixels), got {sigma}")
        if not isinstance(weights, HardNetDescriptor):
            weights = HardNetDescriptor(weights, device=device)
        self.descriptor = weights
        self.sigma = float(sigma)
        self.descriptors: np.ndarray | None = None
        self.mask: np.ndarray | None = None

    def extract(
        self,
        image: np.ndarray,
        keypoints: np.ndarray,
        scales: np.ndarray | None = None,
        orientations: np.ndarray | None = None,
    ) -> None:
        """Describe ``keypoints`` of ``image``; sets ``descriptors`` and ``mask``.

        Args:
            image: ``(H, W)`` grey or ``(H, W, 3)`` RGB, uint8 or float.
            keypoints: ``(N, 2)`` ``(row, col)`` pixels, e.g. ``SIFT.positions`` or ``corner_peaks``.
            scales: ``(N,)`` blur sigma in pixels (``SIFT.sigmas``); None: ``sigma`` for all.
            orientations: ``(N,)`` radians (``SIFT.orientations``); None: upright.

        Raises:
            TypeError: ``image`` is not a numpy array. ValueError: bad shapes or scales <= 0.
        """
        if not isinstance(image, np.ndarray):
            raise TypeError(f"image must be a numpy array (H, W) or (H, W, 3), got {type(image).__name__}")
        keypoints = _per_keypoint(keypoints, None, "keypoints")
        if keypoints.ndim != 2 or keypoints.shape[1] != 2:
            raise ValueError(f"keypoints must be (N, 2) (row, col), got shape {keypoints.shape}")
        n = len(keypoints)
        sigmas = np.full(n, self.sigma) if scales is None else _per_keypoint(scales, n, "scales")
        oris = np.full(n, np.pi / 2) if orientations is None else _per_keypoint(orientations, n, "orientations")
        if np.any(sigmas <= 0):  # compute() would drop them (OpenCV's rule) and break the mask's row count
            raise ValueError(f"{int(np.sum(sigmas <= 0))} keypoint(s) have size <= 0: scales must be > 0")
        image = np.asarray(image)
        if image.ndim == 3 and image.shape[2] in (3, 4):
            image = np.ascontiguousarray(image[:, :, 2::-1])  # RGB(A) -> BGR, OpenCV's order
        height, width = image.shape[:2]
        rows, cols = keypoints[:, 0], keypoints[:, 1]
        self.mask = (rows >= -0.5) & (rows <= height - 0.5) & (cols >= -0.5) & (cols <= width - 0.5)
        kps = np.stack([cols, rows, 2.0 * sigmas, 90.0 - np.degrees(oris)], axis=1)[self.mask]
        self.descriptors = self.descriptor.compute(image, kps)[1]


def _per_keypoint(values, n: int | None, name: str) -> np.ndarray:
    """``values`` as float64: one per keypoint (``n``), or as they are (``n=None``); finite real numbers only
    (a NaN row was silently left out of the mask, complex values cut to their real part)."""
    values = np.asarray(values)
    if values.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers, got dtype {values.dtype}")
    values = values.astype(np.float64)
    if n is not None:
        values = values.reshape(-1)
        if len(values) != n:
            raise ValueError(f"{name} must have one value per keypoint: {len(values)} for {n} keypoints")
    if not np.isfinite(values).all():
        raise ValueError(f"{name} contain NaN or inf")
    return values
