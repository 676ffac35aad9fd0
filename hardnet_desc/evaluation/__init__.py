"""Evaluation: FPR95 on patch pairs, the image-sequence matching benchmark and relative pose on image pairs.

* ``hardnet_desc.fpr95`` (a leaf, shared with training): the FPR95 metric, re-exported here;
  ``hardnet_desc.evaluation.phototour`` applies it to PhotoTour-layout folders (``hardnet-desc eval-fpr95``).
* ``hardnet_desc.evaluation.layouts``: HPatches / Oxford sequence folders.
* ``hardnet_desc.evaluation.metrics``: MMA, corner error, homography accuracy.
* ``hardnet_desc.evaluation.methods``: sift, rootsift, hardnet and kornia on the same keypoints.
* ``hardnet_desc.evaluation.sequences``: the benchmark (``hardnet-desc eval-sequences``), results as
  ``SequenceResults``.
* ``hardnet_desc.evaluation.synthetic_sequences``: sequences from photos (``hardnet-desc make-sequences``).
* ``hardnet_desc.evaluation.poses``: relative pose on image pairs with known cameras
  (``hardnet-desc eval-pairs``), results as ``PoseResults``; ``hardnet_desc.evaluation.pair_sources`` picks the pairs from
  COLMAP models or reads pairs files (format: ``hardnet_desc.data.camera_pairs``); the
  two-view geometry (every H/F/E fit) is the leaf ``hardnet_desc.geometry``.
"""

from ..fpr95 import fpr95, fpr_at_recall, pair_distances, pairs_fpr95
from .layouts import ImageSequence, find_sequences, read_homography, read_sequence
from .methods import METHODS, build_methods
from .metrics import matching_accuracy, pair_metrics, summarize
from .phototour import evaluate_fpr95
from .poses import PoseResults, evaluate_pairs, format_pose_table
from .sequences import SequenceResults, evaluate_sequences, format_table, plot_mma, save_json
from .synthetic_sequences import make_sequences

__all__ = [
    "METHODS",
    "ImageSequence",
    "PoseResults",
    "SequenceResults",
    "build_methods",
    "evaluate_fpr95",
    "evaluate_pairs",
    "evaluate_sequences",
    "find_sequences",
    "format_pose_table",
    "format_table",
    "fpr95",
    "fpr_at_recall",
    "make_sequences",
    "matching_accuracy",
    "pair_distances",
    "pair_metrics",
    "pairs_fpr95",
    "plot_mma",
    "read_homography",
    "read_sequence",
    "save_json",
    "summarize",
]
