"""Keypoint detection: the one place that runs a ``cv2.Feature2D`` detector (SIFT by default)."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from .core.image import ImageLike, check_mask, to_uint8
from .core.patches import check_integer

#: The keypoint budget per image of ``match``, ``extract`` and ``eval-sequences`` (and of the
#: library functions behind them): the strongest this many SIFT keypoints.
DEFAULT_MAX_KEYPOINTS = 2000
#: The largest keypoint budget: OpenCV's int (``nfeatures``); feature files record it as an integer attribute.
MAX_KEYPOINTS = 2**31 - 1


def detect_sift(
    image: ImageLike,
    max_keypoints: int | None = None,
    detector: Any = None,
    mask: np.ndarray | None = None,
) -> list[cv2.KeyPoint]:
    """Keypoints sorted by response, strongest first, at most ``max_keypoints``.

    Args:
        image: any image ``hardnet_desc.core.image.to_uint8`` accepts (BGR or grey); the detector
            sees its grey 8-bit version.
        max_keypoints: keep the strongest this many, an integer >= 0; ``None`` (or 0) keeps all.
        detector: a ``cv2.Feature2D``; default ``cv2.SIFT_create()``.
        mask: optional uint8 or bool ``(H, W)`` mask of the image's size, non-zero where keypoints
            may lie; another shape or dtype raises (OpenCV would read outside it).

    Returns:
        ``cv2.KeyPoint`` list; ties in response keep the detector's order.

    Raises:
        TypeError: ``max_keypoints`` is not an integer. ValueError: it is negative.
    """
    check_max_keypoints(max_keypoints)
    detector = detector if detector is not None else cv2.SIFT_create()
    grey = to_uint8(image)
    kps = sorted(detector.detect(grey, check_mask(mask, grey.shape)), key=lambda k: -k.response)
    return kps[:max_keypoints] if max_keypoints else kps


def check_max_keypoints(max_keypoints: int | None, name: str = "max_keypoints") -> None:
    """Raise unless ``max_keypoints`` (the argument ``name``) is ``None`` or an integer >= 0 (the keypoint budget;
    0 or ``None``: all).

    Raises:
        TypeError: not an integer (e.g. 2.5 or "100").
        ValueError: negative, or above ``2**31 - 1`` (OpenCV's int).
    """
    check_integer(max_keypoints, name, 0, "0 or None: all")
    if max_keypoints is not None and max_keypoints > MAX_KEYPOINTS:
        raise ValueError(f"{name} must be at most {MAX_KEYPOINTS} (0 or None: all), got {max_keypoints}")
