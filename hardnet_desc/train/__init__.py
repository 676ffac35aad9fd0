"""Training HardNet: hardest-in-batch loss, patch datasets, synthetic correspondences, trainer.

CLI: ``hardnet-desc make-dataset`` and ``hardnet-desc train`` (or ``python -m hardnet_desc.train``).
"""

from .datasets import PairDataset, PhotoTourData, make_pairs, read_hpatches, read_pairs, read_phototour, write_phototour
from .loss import hardest_in_batch_loss
from .synthetic import make_dataset
from .trainer import TrainConfig, train

__all__ = [
    "PairDataset",
    "PhotoTourData",
    "TrainConfig",
    "hardest_in_batch_loss",
    "make_dataset",
    "make_pairs",
    "read_hpatches",
    "read_pairs",
    "read_phototour",
    "train",
    "write_phototour",
]
