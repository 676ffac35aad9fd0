"""hardnet-desc: HardNet local patch descriptors as a drop-in for OpenCV SIFT descriptors."""

try:
    import cv2  # noqa: F401  (not an install requirement: see setup.cfg and docs/index.md, "Install")
except ImportError as _err:
    raise ImportError(
        f"hardnet-desc needs OpenCV's cv2 module ({_err}). It does not install one itself, so as not to replace "
        'an OpenCV you already have: pip install "hardnet-desc[opencv]" (or "hardnet-desc[headless]" on servers)'
    ) from _err

from .descriptor import HardNetDescriptor
from .integrations.onnx import export_onnx
from .matching import DescriptorMatcher, Matches, match_descriptors
from .core.model import HardNet
from .core.patches import extract_patches
from .core.weights import WeightsError, load_weights

__version__ = "0.1.0"

__all__ = [
    "DescriptorMatcher",
    "HardNet",
    "HardNetDescriptor",
    "Matches",
    "WeightsError",
    "export_onnx",
    "extract_patches",
    "load_weights",
    "match_descriptors",
    "__version__",
]
