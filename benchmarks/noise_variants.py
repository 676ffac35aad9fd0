"""Inference-time variants of one HardNet on viewpoint and noise sequences (docs/training.md, "Third round").

    python benchmarks/noise_variants.py SEQS --weights W --variants base,pb0.8,ib0.6,ms3.5 [--ratios none,0.8]

Variants (every one describes the same SIFT keypoints, 2,000 per image, mutual NN):
``base`` as shipped; ``pbS`` the 32x32 patches blurred with a Gaussian of std S patch pixels;
``ibS`` the image blurred with std S pixels before cutting; ``msS`` the weights run with
``min_kp_size`` S pixels (``ms0``: none; ``benchmarks/min_kp_size.py`` writes weights that record
it, for any CLI command). SIFT and
RootSIFT are the references. Prints MMA@3 and correct matches per pair for the ``v_`` and ``n_``
groups, once per ratio setting.
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np

from hardnet_desc import HardNetDescriptor
from hardnet_desc.evaluation.methods import rootsift, sift
from hardnet_desc.evaluation.sequences import evaluate_sequences
from hardnet_desc.train.augment import gaussian_blur


def variant(hardnet: HardNetDescriptor, name: str):
    """``describe(grey_uint8, keypoints) -> (N, 128)`` for the variant ``name``."""
    kind = name[:2]
    if name != "base" and kind not in ("pb", "ib", "ms"):
        raise SystemExit(f"unknown variant {name!r}: base, pbS, ibS or msS")
    value = float(name[2:]) if name != "base" else 0.0
    if kind == "ms":
        hardnet = HardNetDescriptor(hardnet.weights, precision=hardnet.precision, min_kp_size=value)

    def describe(image: np.ndarray, kps) -> np.ndarray:
        if not len(kps):
            return np.zeros((0, 128), np.float32)
        if kind == "ib":
            image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), value)
        patches = hardnet.cut_patches(image, kps)
        if kind == "pb":
            patches = gaussian_blur(patches[:, 0].numpy(), value)[:, None]
        return hardnet.describe_patches(patches)

    return describe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("seqs")
    ap.add_argument("--weights", default="default")
    ap.add_argument("--variants", default="base")
    ap.add_argument("--ratios", default="none,0.8")
    args = ap.parse_args()
    hardnet = HardNetDescriptor(args.weights, precision="fp32")
    methods = {"sift": sift, "rootsift": rootsift}
    methods.update({v: variant(hardnet, v) for v in args.variants.split(",")})
    for ratio in args.ratios.split(","):
        r = None if ratio == "none" else float(ratio)
        summary = evaluate_sequences(args.seqs, methods, ratio=r).summary
        print(f"--- ratio {ratio}\n{'method':10s} v:MMA@3 v:correct n:MMA@3 n:correct")
        for m, groups in summary.items():
            print(f"{m:10s} " + " ".join(f"{groups[g]['mma@3']:.4f} {groups[g]['correct']:7.1f}"
                                         for g in ("v", "n") if g in groups))


if __name__ == "__main__":
    main()
