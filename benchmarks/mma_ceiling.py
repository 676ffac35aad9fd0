"""How far is each method from the best MMA its keypoints allow? (mutual NN, as the benchmark)

For every pair of a sequence folder (HPatches layout, e.g. ``eval_validation.py --out DIR`` writes
``DIR/sequences``) this takes the benchmark's keypoints (the strongest SIFT detections) and reports
per method:

* ``matchable``: the largest one-to-one pairing of keypoints within 3 px under the ground truth
  (:func:`~hardnet_desc.evaluation.metrics.matchable_pairs`); no descriptor can get more correct matches.
* ``recall``: correct mutual-NN matches / matchable.
* ``ceiling``: MMA@3 if the descriptor were perfect on every matchable keypoint (their pairs at
  distance -1) and kept its own distances everywhere else, so that the keypoints without a
  counterpart still pair up with each other as they do now. This is the MMA that better matching
  of repeatable keypoints alone can reach.

    python benchmarks/mma_ceiling.py SEQUENCES [--weights W] [--max-keypoints 2000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from hardnet_desc.evaluation import build_methods, find_sequences
from hardnet_desc.evaluation.metrics import CORRECT_PX, match_errors, matchable_pairs
from hardnet_desc.evaluation.sequences import describe_sequence


def mutual_nn(dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mutual nearest neighbours of an ``(N1, N2)`` distance matrix -> ``(idx1, idx2)``."""
    nn12, nn21 = dist.argmin(1), dist.argmin(0)
    idx1 = np.flatnonzero(nn21[nn12] == np.arange(len(nn12)))
    return idx1, nn12[idx1]


def accuracy(xy1: np.ndarray, xy2: np.ndarray, H: np.ndarray, idx1: np.ndarray, idx2: np.ndarray) -> tuple[float, int]:
    correct = int(np.count_nonzero(match_errors(xy1[idx1], xy2[idx2], H) <= CORRECT_PX))
    return (correct / len(idx1) if len(idx1) else 0.0), correct


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sequences", type=Path)
    p.add_argument("--weights", default=None, help="HardNet weights (default: the bundled default)")
    p.add_argument("--methods", nargs="+", default=["rootsift", "hardnet"])
    p.add_argument("--max-keypoints", type=int, default=2000)
    args = p.parse_args()

    methods, _ = build_methods(args.methods, weights=args.weights, device="cpu")
    rows: dict[str, list[tuple[float, float, int]]] = {m: [] for m in methods}
    matchable = []
    for seq in find_sequences(args.sequences):
        feats = describe_sequence(seq, methods, args.max_keypoints)
        xy1, desc1, _ = feats[0]
        for (xyk, desck, _), H in zip(feats[1:], seq.homographies):
            g1, gk = matchable_pairs(xy1, xyk, H)
            matchable.append(len(g1))
            for name in methods:
                dist = 2.0 - 2.0 * desc1[name] @ desck[name].T  # squared L2 of unit descriptors
                actual, correct = accuracy(xy1, xyk, H, *mutual_nn(dist))
                dist[g1, gk] = -1.0  # perfect on every matchable keypoint
                ceiling, _ = accuracy(xy1, xyk, H, *mutual_nn(dist))
                rows[name].append((actual, ceiling, correct))

    print(f"{len(matchable)} pairs, {np.mean(matchable):.1f} matchable keypoints per pair (<= {CORRECT_PX:g} px, one-to-one)")
    print(f"{'method':10s} {'MMA@3':>7s} {'ceiling':>8s} {'correct':>8s} {'recall':>7s}")
    for name, r in rows.items():
        a = np.array(r, dtype=np.float64)
        print(f"{name:10s} {a[:, 0].mean():7.3f} {a[:, 1].mean():8.3f} {a[:, 2].mean():8.1f} "
              f"{a[:, 2].sum() / max(sum(matchable), 1):7.3f}")


if __name__ == "__main__":
    main()
