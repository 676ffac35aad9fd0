"""Experiment: run a ``hardnet-desc`` command with every keypoint's size clamped to at least SMIN pixels.

    python benchmarks/min_kp_size.py 3.5 make-dataset --from-sfm SCENES/ data/real6m --all-models
    python benchmarks/min_kp_size.py 3.5 eval-pairs data/eval-pairs/heldout-v3 --methods hardnet --weights W

A minimum patch support for the smallest SIFT keypoints (noise blobs whose 6 x size patch holds
little but noise); docs/training.md, "Third round", has what it did. The clamp is applied where
keypoints become affine frames (``hardnet_desc.patches.keypoints_to_frames``), so patch cutting for
datasets, description and evaluation all see it; frames given as frames are left alone. Not a
library feature (yet): weights trained this way need the same clamp at use, and nothing stores it.
"""

from __future__ import annotations

import sys

import numpy as np

import hardnet_desc.patches as patches


def clamp_sizes(min_size: float) -> None:
    """Make ``keypoints_to_frames`` (and everything that cuts patches through it) clamp ``kp.size``."""
    original = patches.keypoints_to_frames

    def clamped(keypoints, patch_scale=patches.DEFAULT_PATCH_SCALE):
        if patches.is_frames(keypoints):
            return original(keypoints, patch_scale)
        kps = patches.keypoints_to_array(keypoints).copy()
        kps[:, 2] = np.maximum(kps[:, 2], min_size)
        return original(kps, patch_scale)

    patches.keypoints_to_frames = clamped


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    clamp_sizes(float(sys.argv[1]))
    from hardnet_desc.cli import main

    sys.exit(main(sys.argv[2:]))
