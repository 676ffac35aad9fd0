"""Match two photos: SIFT keypoints, HardNet descriptors, mutual nearest neighbours + ratio
test, then RANSAC on the fundamental matrix. Writes a picture of the inlier matches.

    python examples/match_pair.py                         # the bundled Sacré-Cœur pair
    python examples/match_pair.py a.jpg b.jpg --out ab.png --weights my_hardnet.safetensors

The weights default to the bundled ones; ``HARDNET_WEIGHTS=path`` or ``--weights path`` overrides.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import cv2
import numpy as np

from hardnet_desc import HardNetDescriptor
from hardnet_desc.matching import match_descriptors
from hardnet_desc.viz import draw_matches

DATA = Path(__file__).resolve().parent / "data"  # works from any working directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image1", nargs="?", type=Path, default=DATA / "sacre_coeur_1.jpg")
    parser.add_argument("image2", nargs="?", type=Path, default=DATA / "sacre_coeur_2.jpg")
    parser.add_argument("--out", type=Path, default=Path("matches.png"), help="picture (default: %(default)s)")
    parser.add_argument("--max-keypoints", type=int, default=2048, help="per image (default: %(default)s)")
    parser.add_argument("--weights", default=os.environ.get("HARDNET_WEIGHTS", "default"))
    args = parser.parse_args()

    image1, image2 = cv2.imread(str(args.image1)), cv2.imread(str(args.image2))
    for path, image in ((args.image1, image1), (args.image2, image2)):
        if image is None:
            parser.error(f"cannot read image {path}")

    sift = cv2.SIFT_create(nfeatures=args.max_keypoints)
    hardnet = HardNetDescriptor(args.weights)  # CUDA if available, else CPU

    kp1, kp2 = sift.detect(image1, None), sift.detect(image2, None)
    kp1, desc1 = hardnet.compute(image1, kp1)  # (N1, 128) float32, unit rows
    kp2, desc2 = hardnet.compute(image2, kp2)

    matches = match_descriptors(desc1, desc2, ratio=0.8, mutual=True)
    pts1 = np.float32([kp1[i].pt for i in matches.query_idx]).reshape(-1, 2)
    pts2 = np.float32([kp2[i].pt for i in matches.train_idx]).reshape(-1, 2)

    inliers = np.zeros(len(matches), bool)
    if len(matches) >= 8:
        _, mask = cv2.findFundamentalMat(pts1, pts2, cv2.USAC_MAGSAC, 1.0, 0.999, 10_000)
        if mask is not None:
            inliers = mask.ravel().astype(bool)

    counts = f"{len(kp1)} + {len(kp2)} keypoints, {len(matches)} matches, {inliers.sum()} inliers"
    print(counts)
    picture = draw_matches(image1, image2, pts1[inliers], pts2[inliers], ["HardNet + SIFT keypoints", counts])
    cv2.imwrite(str(args.out), picture)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
