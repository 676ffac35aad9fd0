"""COLMAP (pycolmap), in one place: structure from motion with HardNet or SIFT, and what reads its output.

* ``guard``: the one place pycolmap is imported (``import_pycolmap``: an ``ImportError`` saying what to install);
* ``keypoints``: OpenCV keypoints <-> COLMAP's affine keypoint frames;
* ``scene``: the scene-folder layout (``database.db``, ``sparse/<k>/``, ``summary.json``), read once;
* ``reconstruction``: ``reconstruct(image_dir, out_dir)`` -> ``ReconstructionSummary``; ``existing_run`` says
  whether an output folder already holds that run.

pycolmap is an optional dependency (``pip install "hardnet-desc[sfm]"``), imported only when used.
"""

from .guard import PYCOLMAP_INSTALL, import_pycolmap
from .keypoints import keypoints_from_colmap, keypoints_to_colmap
from .reconstruction import (
    FEATURES,
    MATCHERS,
    OVERWRITE,
    ModelSummary,
    ReconstructionSummary,
    colmap_like_sift,
    existing_run,
    format_summary,
    photo_names,
    reconstruct,
    resize_for_extraction,
)
from .scene import (
    DATABASE,
    SPARSE,
    SUMMARY,
    ColmapScene,
    is_model,
    load_model,
    model_folders,
    open_database,
    read_scene_folder,
    read_summary,
)

__all__ = [
    "DATABASE", "FEATURES", "MATCHERS", "OVERWRITE", "PYCOLMAP_INSTALL", "SPARSE", "SUMMARY", "ColmapScene",
    "ModelSummary", "ReconstructionSummary", "colmap_like_sift", "existing_run", "format_summary", "import_pycolmap",
    "is_model", "keypoints_from_colmap", "keypoints_to_colmap", "load_model", "model_folders", "open_database",
    "photo_names", "reconstruct", "read_scene_folder", "read_summary", "resize_for_extraction",
]
