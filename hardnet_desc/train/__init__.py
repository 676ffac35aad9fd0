"""Training HardNet: hardest-in-batch loss, the pair sampler and its patch augmentations, synthetic
correspondences, trainer.

Dataset formats (PhotoTour, HPatches, pair files) live in ``hardnet_desc.data``.

CLI: ``hardnet-desc make-dataset`` and ``hardnet-desc train`` (or ``python -m hardnet_desc train``).
"""

from .augment import AugmentConfig, augment_patches
from .loss import hardest_in_batch_loss
from .sampler import MixedPairs, PairDataset
from .datasets.synthetic import make_dataset
from .trainer import TrainConfig, train

__all__ = [
    "AugmentConfig",
    "MixedPairs",
    "PairDataset",
    "TrainConfig",
    "augment_patches",
    "hardest_in_batch_loss",
    "make_dataset",
    "train",
]
