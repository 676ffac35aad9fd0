"""Keypoint detection: the one place that runs a ``cv2.Feature2D`` detector (SIFT by default)."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from .image import ImageLike, to_uint8


def detect_sift(
    image: ImageLike,
    max_keypoints: int | None = None,
    detector: Any = None,
    mask: np.ndarray | None = None,
) -> list[cv2.KeyPoint]:
    """Keypoints sorted by response, strongest first, at most ``max_keypoints``.

    Args:
        image: any image :func:`hardnet_desc.image.to_uint8` accepts (BGR or grey); the detector
            sees its grey 8-bit version.
        max_keypoints: keep the strongest this many; ``None`` (or 0) keeps all.
        detector: a ``cv2.Feature2D``; default ``cv2.SIFT_create()``.
        mask: optional ``(H, W)`` uint8 mask, non-zero where keypoints may lie.

    Returns:
        ``cv2.KeyPoint`` list; ties in response keep the detector's order.
    """
    detector = detector if detector is not None else cv2.SIFT_create()
    kps = sorted(detector.detect(to_uint8(image), mask), key=lambda k: -k.response)
    return kps[:max_keypoints] if max_keypoints else kps
