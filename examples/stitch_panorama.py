"""Stitch two overlapping photos into one picture with a homography.

Matches SIFT keypoints described by HardNet, fits a homography with RANSAC, warps the second
image into the first one's frame on a canvas that holds both, and blends the overlap.

    python examples/stitch_panorama.py                    # the bundled pair -> panorama.jpg
    python examples/stitch_panorama.py left.jpg right.jpg --out pano.jpg --weights my.safetensors

A homography is exact only for a planar scene or a camera that turned on the spot. The bundled
photos were taken from different places, so the facade lines up and the foreground ghosts. When
the views differ by a translation in a 3D scene, no homography fits: use the fundamental matrix
instead (``hardnet-desc match A B --geometry fundamental``), which checks the matches but cannot
warp one view onto the other.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import cv2
import numpy as np

from hardnet_desc import HardNetDescriptor
from hardnet_desc.pipeline import match_pair

DATA = Path(__file__).resolve().parent / "data"
MIN_INLIERS = 15


def find_homography(image1: np.ndarray, image2: np.ndarray, hardnet: HardNetDescriptor, max_keypoints: int):
    """Homography ``H`` (3, 3) mapping pixels of image2 into image1, and its inlier count."""
    r = match_pair(image2, image1, hardnet, max_keypoints=max_keypoints, geometry="homography")  # x1 ~ H x2
    return r.model, int(r.inliers.sum())


def stitch(image1: np.ndarray, image2: np.ndarray, H: np.ndarray, max_growth: float = 4.0) -> np.ndarray | None:
    """Both images on one canvas, image2 warped by ``H``; None if the canvas would be absurd."""
    h1, w1 = image1.shape[:2]
    h2, w2 = image2.shape[:2]
    corners2 = cv2.perspectiveTransform(np.float32([[0, 0], [w2, 0], [w2, h2], [0, h2]])[None], H)[0]
    corners = np.concatenate([corners2, [[0, 0], [w1, 0], [w1, h1], [0, h1]]])
    x0, y0 = np.floor(corners.min(0)).astype(int)
    x1, y1 = np.ceil(corners.max(0)).astype(int)
    if (x1 - x0) * (y1 - y0) > max_growth * (w1 * h1 + w2 * h2):
        return None  # a near-degenerate H throws image2 towards infinity
    shift = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64)  # canvas = image1 frame moved by (-x0, -y0)
    size = (int(x1 - x0), int(y1 - y0))
    warped = [cv2.warpPerspective(im, shift @ M, size) for im, M in ((image1, np.eye(3)), (image2, H))]
    masks = [cv2.warpPerspective(np.full(im.shape[:2], 255, np.uint8), shift @ M, size, flags=cv2.INTER_NEAREST)
             for im, M in ((image1, np.eye(3)), (image2, H))]
    # Feathering: weight each image by the distance to its own border, so seams fade out.
    weights = [cv2.distanceTransform(m, cv2.DIST_L2, 3)[..., None] for m in masks]
    total = np.maximum(weights[0] + weights[1], 1e-6)
    return ((warped[0] * weights[0] + warped[1] * weights[1]) / total).astype(np.uint8)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image1", nargs="?", type=Path, default=DATA / "sacre_coeur_1.jpg", help="reference view")
    parser.add_argument("image2", nargs="?", type=Path, default=DATA / "sacre_coeur_2.jpg", help="view warped onto it")
    parser.add_argument("--out", type=Path, default=Path("panorama.jpg"))
    parser.add_argument("--max-keypoints", type=int, default=2048)
    parser.add_argument("--weights", default=os.environ.get("HARDNET_WEIGHTS", "default"))
    args = parser.parse_args()
    image1, image2 = cv2.imread(str(args.image1)), cv2.imread(str(args.image2))
    if image1 is None or image2 is None:
        parser.error(f"cannot read {args.image1 if image1 is None else args.image2}")

    H, n_inliers = find_homography(image1, image2, HardNetDescriptor(args.weights), args.max_keypoints)
    print(f"homography inliers: {n_inliers}")
    panorama = stitch(image1, image2, H) if H is not None and n_inliers >= MIN_INLIERS else None
    if panorama is None:
        print("no usable homography: the views may not overlap, or the scene is not planar; "
              "check the matches with `hardnet-desc match A B --geometry fundamental`", file=sys.stderr)
        return 1
    cv2.imwrite(str(args.out), panorama)
    print(f"wrote {args.out} ({panorama.shape[1]}x{panorama.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
