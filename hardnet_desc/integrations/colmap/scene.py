"""The scene-folder layout, read in one place.

A *scene folder* is what ``reconstruct`` (``hardnet-desc sfm``) writes, and what COLMAP writes
when pointed at one folder::

    FOLDER/database.db      COLMAP database: cameras, images, keypoints, matches, two-view geometries
    FOLDER/sparse/<k>/      model k (cameras, images, points3D as .bin or .txt)
    FOLDER/summary.json     reconstruct's summary; its ``image_dir`` names the photo folder

The training-set builder (``hardnet_desc.train.datasets.sfm``), ``eval-pairs``' pair sources
(``hardnet_desc.evaluation.pair_sources``) and ``reconstruct`` all go through the names and
functions here. Reading the layout needs no pycolmap; loading a model does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...outputs import read_json_object
from .guard import import_pycolmap

__all__ = ["DATABASE", "SPARSE", "SUMMARY", "ColmapScene", "is_model", "load_model", "model_folders",
           "open_database", "read_scene_folder", "read_summary"]

#: The files and folders of a scene folder.
DATABASE = "database.db"
SPARSE = "sparse"
SUMMARY = "summary.json"
_MODEL_FILES = ("cameras", "images", "points3D")


def is_model(folder: str | Path) -> bool:
    """Whether ``folder`` holds a COLMAP model (``cameras``, ``images``, ``points3D``, each ``.bin`` or ``.txt``)."""
    folder = Path(folder)
    return all((folder / f"{name}.bin").is_file() or (folder / f"{name}.txt").is_file() for name in _MODEL_FILES)


def model_folders(folder: str | Path) -> list[Path]:
    """The models ``folder/sparse/<k>/`` of a scene folder, in numeric order (0, 1, ..., 10); ``[]`` if none."""
    sparse = Path(folder) / SPARSE
    if not sparse.is_dir():
        return []
    return sorted((p for p in sparse.iterdir() if is_model(p)), key=lambda p: (len(p.name), p.name))


@dataclass(frozen=True)
class ColmapScene:
    """One scene folder, as read by ``read_scene_folder``.

    Attributes:
        folder: the scene folder.
        name: ``summary.json``'s ``scene``, else the folder's name.
        image_dir: the photo folder (given, or ``summary.json``'s ``image_dir``, relative to ``folder``);
            ``None`` when neither names one.
        database: ``folder/database.db``, or ``None`` when there is none.
        models: the model folders ``sparse/<k>/``, in numeric order.
        summary: the content of ``summary.json``, or ``None`` when there is none.
    """

    folder: Path
    name: str
    image_dir: Path | None
    database: Path | None
    models: list[Path]
    summary: dict[str, Any] | None = None

    @property
    def num_images(self) -> int | None:
        """Photos given to the reconstruction (``summary.json``'s ``num_images``), ``None`` if unknown."""
        return (self.summary or {}).get("num_images")

    @property
    def reconstructed(self) -> bool:
        """Whether COLMAP ran here: a ``database.db`` or a ``sparse/`` folder (models or not)."""
        return self.database is not None or (self.folder / SPARSE).is_dir()


def read_scene_folder(folder: str | Path, image_dir: str | Path | None = None) -> ColmapScene:
    """Read the layout of the scene folder ``folder`` (module docstring); checks nothing beyond that
    and ``summary.json``'s form (``read_summary``).

    Args:
        image_dir: the photo folder, instead of ``summary.json``'s ``image_dir``.
    """
    folder = Path(folder)
    path = folder / SUMMARY
    summary = read_summary(path) if path.is_file() else None
    if image_dir is None and summary and summary.get("image_dir"):
        image_dir = folder / summary["image_dir"]  # an absolute image_dir stays as it is
    database = folder / DATABASE
    return ColmapScene(folder, (summary or {}).get("scene", folder.name),
                       None if image_dir is None else Path(image_dir), database if database.is_file() else None,
                       model_folders(folder), summary)


#: The fields of ``summary.json`` its readers use, and the types they must have.
_SUMMARY_TYPES = {"scene": str, "image_dir": str, "num_images": int}


def read_summary(path: str | Path) -> dict[str, Any]:
    """The JSON object in ``path`` (a ``summary.json``): ``ValueError`` naming the file if it is not JSON, not
    an object (``read_json_object``), or gives ``scene``, ``image_dir`` or ``num_images`` of another type."""
    summary = read_json_object(path)
    for key, kind in _SUMMARY_TYPES.items():
        value = summary.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise ValueError(f"{path}: {key} must be a {kind.__name__}, got {value!r}")
    return summary


def load_model(folder: str | Path, purpose: str = "reading COLMAP models") -> Any:
    """The ``pycolmap.Reconstruction`` in ``folder`` (``ImportError`` naming what to install without pycolmap)."""
    return import_pycolmap(purpose).Reconstruction(str(folder))


def open_database(path: str | Path) -> Any:
    """``pycolmap.Database.open(path)``: a context manager that closes the database."""
    return import_pycolmap().Database.open(str(path))
