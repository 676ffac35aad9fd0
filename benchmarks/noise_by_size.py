"""Wrong and correct mutual-NN matches by keypoint size, RootSIFT against HardNet, on noise sequences.

    python benchmarks/noise_by_size.py SEQS [--weights W] [--ratio 0.8] [--targets 5,6]

For the ``n_`` sequences of SEQS (``hardnet-desc make-sequences --noise``): the same 2,000 SIFT
keypoints per image for both descriptors, pairs (1, k) for k in ``--targets`` (5, 6: the two strongest
noise levels), matches binned by the reference keypoint's ``kp.size``; a match is correct within 3 px
of the homography. Also counts the reference keypoints without a counterpart (no keypoint of image k
within 3 px, one-to-one). The table is in docs/training.md, "Third round".
"""

from __future__ import annotations

import argparse

import numpy as np

from hardnet_desc import HardNetDescriptor
from hardnet_desc.evaluation.layouts import find_sequences
from hardnet_desc.evaluation.methods import HardNetMethod, rootsift
from hardnet_desc.evaluation.metrics import match_errors, matchable_pairs
from hardnet_desc.evaluation.sequences import describe_sequence
from hardnet_desc.matching import match_descriptors

BINS = [0, 3, 4, 6, 10, np.inf]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("seqs")
    ap.add_argument("--weights", default="default")
    ap.add_argument("--ratio", type=float, default=None, help="Lowe's ratio on top of mutual NN (default: off)")
    ap.add_argument("--targets", default="5,6", help="which pairs (1, k) (default: 5,6)")
    args = ap.parse_args()
    targets = {int(k) for k in args.targets.split(",")}
    describe = {"rootsift": rootsift, "hardnet": HardNetMethod(HardNetDescriptor(args.weights, precision="fp32")),
                "size": lambda image, kps: np.array([k.size for k in kps])}  # not a descriptor: kp.size per keypoint
    nb = len(BINS) - 1
    counts = {m: {"wrong": np.zeros(nb, int), "correct": np.zeros(nb, int)} for m in ("rootsift", "hardnet")}
    unmatched = np.zeros(nb, int)
    for seq in find_sequences(args.seqs):
        if seq.group != "n":
            continue
        feats = describe_sequence(seq, describe, max_keypoints=2000)
        xy1, desc1, _ = feats[0]
        size1 = desc1["size"]
        for k, H in enumerate(seq.homographies, start=2):
            if k not in targets:
                continue
            xyk, desck, _ = feats[k - 1]
            idx1, _ = matchable_pairs(xy1, xyk, H)
            alone = np.ones(len(xy1), bool)
            alone[idx1] = False
            unmatched += np.bincount(np.digitize(size1[alone], BINS) - 1, minlength=nb)
            for name, c in counts.items():
                m = match_descriptors(desc1[name], desck[name], ratio=args.ratio, mutual=True)
                ok = match_errors(xy1[m.query_idx], xyk[m.train_idx], H) <= 3.0
                b = np.digitize(size1[m.query_idx], BINS) - 1
                c["wrong"] += np.bincount(b[~ok], minlength=nb)
                c["correct"] += np.bincount(b[ok], minlength=nb)
    labels = [f"{lo:g}-{hi:g}" if np.isfinite(hi) else f">={lo:g}" for lo, hi in zip(BINS[:-1], BINS[1:])]
    print(f"kp.size bins (px): {' | '.join(labels)}")
    print(f"reference keypoints without a counterpart: {' | '.join(map(str, unmatched))}")
    for name, c in counts.items():
        print(f"{name} wrong / correct: {' | '.join(f'{w} / {r}' for w, r in zip(c['wrong'], c['correct']))}")


if __name__ == "__main__":
    main()
