"""hardnet-desc: HardNet local patch descriptors as a drop-in for OpenCV SIFT descriptors."""

try:
    import cv2  # noqa: F401  (not an install requirement: see setup.cfg and docs/index.md, "Install")
except ImportError as _err:
    raise ImportError(
        f"hardnet-desc needs OpenCV's cv2 module ({_err}). It does not install one itself, so as not to replace "
        'an OpenCV you already have: pip install "hardnet-desc[opencv]" (or "hardnet-desc[headless]" on servers)'
    ) from _err

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported on first use (``__getattr__``): the command line starts, and answers Ctrl-C, before torch
    from .core.model import HardNet
    from .core.patches import extract_patches
    from .core.weights import WeightsError, load_weights
    from .descriptor import HardNetDescriptor
    from .integrations.onnx import export_onnx
    from .matching import DescriptorMatcher, Matches, match_descriptors

__version__ = "0.1.0"

#: Each public name and the module that defines it.
_PUBLIC = {"HardNet": "core.model", "extract_patches": "core.patches", "WeightsError": "core.weights",
           "load_weights": "core.weights", "HardNetDescriptor": "descriptor", "export_onnx": "integrations.onnx",
           "DescriptorMatcher": "matching", "Matches": "matching", "match_descriptors": "matching"}


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'hardnet_desc' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

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
