"""Match two photos: SIFT keypoints, HardNet descriptors, mutual nearest neighbours + ratio
test, then RANSAC on the fundamental matrix. Writes a picture of the inlier matches, marked as
hardnet-desc's own as ``hardnet-desc match`` marks its pictures (so either may replace the other's,
and neither replaces a file of yours without ``--force``).

    python examples/match_pair.py                         # the bundled Sacré-Cœur pair
    python examples/match_pair.py a.jpg b.jpg --out ab.png --weights my_hardnet.safetensors

The weights default to the bundled ones; ``HARDNET_WEIGHTS=path`` or ``--weights path`` overrides.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import cv2

from hardnet_desc import HardNetDescriptor
from hardnet_desc.pipeline import match_pair
from hardnet_desc.viz import check_picture_path, draw_matches, save_picture

DATA = Path(__file__).resolve().parent / "data"  # works from any working directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image1", nargs="?", type=Path, default=DATA / "sacre_coeur_1.jpg")
    parser.add_argument("image2", nargs="?", type=Path, default=DATA / "sacre_coeur_2.jpg")
    parser.add_argument("--out", type=Path, default=Path("matches.png"), help="picture (default: %(default)s)")
    parser.add_argument("--max-keypoints", type=int, default=2048, help="per image (default: %(default)s)")
    parser.add_argument("--weights", default=os.environ.get("HARDNET_WEIGHTS", "default"))
    parser.add_argument("--force", action="store_true", help="replace --out even if another program wrote it")
    args = parser.parse_args()
    try:
        check_picture_path(args.out, force=args.force)  # before any work
    except (OSError, ValueError) as err:
        parser.error(str(err))

    image1, image2 = cv2.imread(str(args.image1)), cv2.imread(str(args.image2))
    for path, image in ((args.image1, image1), (args.image2, image2)):
        if image is None:
            parser.error(f"cannot read image {path}")

    hardnet = HardNetDescriptor(args.weights)  # CUDA if available, else CPU
    # SIFT keypoints, HardNet descriptors, mutual NN + ratio 0.8, RANSAC on the fundamental matrix
    r = match_pair(image1, image2, hardnet, max_keypoints=args.max_keypoints, geometry="fundamental")

    inliers = r.inliers
    counts = (f"{len(r.keypoints1)} + {len(r.keypoints2)} keypoints, {len(r.matches)} matches, "
              f"{inliers.sum()} inliers")
    print(counts)
    picture = draw_matches(image1, image2, r.points1[inliers], r.points2[inliers], ["HardNet + SIFT keypoints", counts])
    save_picture(args.out, picture)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
