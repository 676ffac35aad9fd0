"""Data: dataset formats, view changes and image listing, shared by training and evaluation.

* ``hardnet_desc.data.phototour``: the PhotoTour (Brown) patch format: reader, writer, pair files.
* ``hardnet_desc.data.camera_pairs``: image pairs with known cameras and their text format.
* ``hardnet_desc.data.hpatches``: the HPatches patch release reader.
* ``hardnet_desc.data.warps``: random homographies and photometric changes (``WarpConfig``).
* ``hardnet_desc.data.images``: ``list_images`` and ``IMAGE_SUFFIXES``.
* ``hardnet_desc.train.datasets.sfm``: real correspondences from COLMAP reconstructions
  (``make-dataset --from-sfm``), written in the PhotoTour format.

This layer sits on the inference core (model, image, patches) and under both
``hardnet_desc.train`` and ``hardnet_desc.evaluation``; it imports neither.
"""

from .camera_pairs import CameraPair, read_camera_pairs, write_camera_pairs
from .hpatches import HPATCHES_IMAGES, read_hpatches
from .images import IMAGE_SUFFIXES, list_images
from .phototour import (
    PhotoTourData,
    PhotoTourWriter,
    find_pair_files,
    make_pairs,
    read_info,
    read_pairs,
    read_phototour,
    write_phototour,
)
from .warps import HARD_WARP, WARP_PRESETS, WarpConfig, photometric, project_keypoints, random_homography

__all__ = [
    "CameraPair",
    "HARD_WARP",
    "HPATCHES_IMAGES",
    "IMAGE_SUFFIXES",
    "WARP_PRESETS",
    "PhotoTourData",
    "PhotoTourWriter",
    "WarpConfig",
    "find_pair_files",
    "list_images",
    "make_pairs",
    "photometric",
    "project_keypoints",
    "random_homography",
    "read_hpatches",
    "read_camera_pairs",
    "read_info",
    "read_pairs",
    "read_phototour",
    "write_camera_pairs",
    "write_phototour",
]
