"""hardnet-desc: HardNet local patch descriptors as a drop-in for OpenCV SIFT descriptors."""

from .descriptor import HardNetDescriptor
from .export import export_onnx
from .model import HardNet
from .patches import extract_patches
from .weights import load_weights

__version__ = "0.1.0"

__all__ = ["HardNet", "HardNetDescriptor", "export_onnx", "extract_patches", "load_weights", "__version__"]
