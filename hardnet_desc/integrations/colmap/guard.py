"""The one place the package imports pycolmap: every COLMAP module gets it from ``import_pycolmap``."""

from __future__ import annotations

from typing import Any

__all__ = ["PYCOLMAP_INSTALL", "import_pycolmap"]

#: What to install when pycolmap is missing.
PYCOLMAP_INSTALL = 'pip install "hardnet-desc[sfm]"'


def import_pycolmap(purpose: str = "structure from motion") -> Any:
    """The pycolmap module, or an ``ImportError`` that says what to install.

    Args:
        purpose: what needs pycolmap, for the message (``"<purpose> needs pycolmap: pip install ..."``).
    """
    try:
        import pycolmap
    except ImportError as err:
        raise ImportError(f"{purpose} needs pycolmap: {PYCOLMAP_INSTALL}") from err
    return pycolmap
