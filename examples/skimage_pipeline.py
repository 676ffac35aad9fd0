"""HardNet in a scikit-image pipeline: skimage's SIFT keypoints, match_descriptors and ransac.

    python examples/skimage_pipeline.py [image1 image2]

``HardNetExtractor`` takes keypoints the way skimage's extractors do: ``(row, col)`` positions,
blur ``sigma`` in pixels as scales and orientations in radians (``SIFT.positions``, ``.sigmas``,
``.orientations``), and fills ``.descriptors`` and ``.mask``. Prints the RANSAC inliers of
skimage's SIFT descriptors and of HardNet on the same keypoints.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from skimage.color import rgb2gray
from skimage.feature import SIFT, match_descriptors
from skimage.io import imread
from skimage.measure import ransac
from skimage.transform import FundamentalMatrixTransform

from hardnet_desc.integrations.skimage import HardNetExtractor

DATA = Path(__file__).resolve().parent / "data"
paths = sys.argv[1:3] if len(sys.argv) > 2 else [DATA / "sacre_coeur_1.jpg", DATA / "sacre_coeur_2.jpg"]
images = [imread(p) for p in paths]  # RGB uint8

sifts = []
for image in images:
    sift = SIFT(upsampling=1)
    sift.detect_and_extract(rgb2gray(image))
    sifts.append(sift)

hardnet = HardNetExtractor()
hardnet_descriptors = []
for image, sift in zip(images, sifts):
    hardnet.extract(image, sift.positions, scales=sift.sigmas, orientations=sift.orientations)
    assert hardnet.mask.all()  # SIFT keypoints lie inside the image
    hardnet_descriptors.append(hardnet.descriptors)


def inliers(descriptors) -> tuple[int, int]:
    """(matches, RANSAC inliers of a fundamental matrix at 1 px)."""
    matches = match_descriptors(descriptors[0], descriptors[1], cross_check=True, max_ratio=0.8)
    src = sifts[0].positions[matches[:, 0]][:, ::-1]  # (row, col) -> (x, y)
    dst = sifts[1].positions[matches[:, 1]][:, ::-1]
    _, mask = ransac((src, dst), FundamentalMatrixTransform, min_samples=8, residual_threshold=1.0,
                     max_trials=2000, rng=0)
    return len(matches), int(mask.sum())


print(f"keypoints: {len(sifts[0].positions)} + {len(sifts[1].positions)}")
for name, descriptors in (("SIFT", [s.descriptors for s in sifts]), ("HardNet", hardnet_descriptors)):
    print("{:<8} matches: {}, inliers: {}".format(name, *inliers(descriptors)))
