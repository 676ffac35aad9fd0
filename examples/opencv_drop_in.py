"""HardNet in an existing OpenCV SIFT pipeline: one line changes.

The pipeline below is plain OpenCV (SIFT keypoints, BFMatcher + Lowe's ratio test, RANSAC).
It is run twice, once with SIFT descriptors and once with HardNet, and prints the inliers of both.

    python examples/opencv_drop_in.py [image1 image2] [--weights my_hardnet.safetensors]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import cv2
import numpy as np

from hardnet_desc import HardNetDescriptor

DATA = Path(__file__).resolve().parent / "data"


def pipeline(image1: np.ndarray, image2: np.ndarray, descriptor, max_keypoints: int) -> tuple[int, int, int]:
    """An ordinary OpenCV matching pipeline; returns (keypoints in image 1, matches, inliers)."""
    detector = cv2.SIFT_create(nfeatures=max_keypoints)
    kp1, kp2 = detector.detect(image1, None), detector.detect(image2, None)
    kp1, desc1 = descriptor.compute(image1, kp1)
    kp2, desc2 = descriptor.compute(image2, kp2)

    knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(desc1, desc2, k=2)
    good = [p[0] for p in knn if len(p) == 2 and p[0].distance < 0.8 * p[1].distance]
    if len(good) < 8:
        return len(kp1), len(good), 0
    pts1 = np.float32([kp1[m.queryIdx].pt for m in good])
    pts2 = np.float32([kp2[m.trainIdx].pt for m in good])
    _, mask = cv2.findFundamentalMat(pts1, pts2, cv2.USAC_MAGSAC, 1.0, 0.999, 10_000)
    return len(kp1), len(good), 0 if mask is None else int(mask.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image1", nargs="?", type=Path, default=DATA / "sacre_coeur_1.jpg")
    parser.add_argument("image2", nargs="?", type=Path, default=DATA / "sacre_coeur_2.jpg")
    parser.add_argument("--max-keypoints", type=int, default=2048)
    parser.add_argument("--weights", default=os.environ.get("HARDNET_WEIGHTS", "default"))
    args = parser.parse_args()
    image1, image2 = cv2.imread(str(args.image1)), cv2.imread(str(args.image2))
    if image1 is None or image2 is None:
        parser.error(f"cannot read {args.image1 if image1 is None else args.image2}")

    descriptors = {
        "SIFT": cv2.SIFT_create(),
        "HardNet": HardNetDescriptor(args.weights),  # <- the one line that changes
    }
    print(f"{'descriptor':<10} {'keypoints':>9} {'matches':>8} {'inliers':>8}")
    for name, descriptor in descriptors.items():
        n_kp, n_matches, n_inliers = pipeline(image1, image2, descriptor, args.max_keypoints)
        print(f"{name:<10} {n_kp:>9} {n_matches:>8} {n_inliers:>8}")


if __name__ == "__main__":
    main()
