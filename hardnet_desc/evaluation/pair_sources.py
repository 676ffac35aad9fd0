"""Where ``eval-pairs`` gets its image pairs: COLMAP models, scene folders and pairs files.

A *source* path is one of:

* a pairs text file (``*.txt``, format in ``hardnet_desc.data.camera_pairs``): one scene
  named after the file;
* a COLMAP model folder (``cameras.bin``, ``images.bin``, ``points3D.bin`` or the ``.txt`` files);
* a scene folder holding ``sparse/<k>/`` models (as ``hardnet-desc sfm`` and COLMAP write them)
  and, optionally, a ``summary.json`` whose ``image_dir`` names the photos;
* a folder of scenes: every child that is a scene folder or a pairs file.

Pairs from a model: every two registered images of one model that see at least ``min_covisible``
common 3D points; at most ``max_pairs`` per scene, drawn uniformly at random with a fixed seed
(so the same model always gives the same pairs). The intrinsics come from the model's cameras,
converted to OpenCV pixels, with their radial distortion; keypoints are undistorted with it
before the essential matrix is estimated. Reading models needs ``pycolmap`` (imported only then).
The scene-folder layout is read by ``hardnet_desc.integrations.colmap.scene``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

from ..data.camera_pairs import CameraPair, read_camera_pairs
from ..integrations.colmap.scene import is_model, load_model, model_folders, read_scene_folder

#: COLMAP camera models we can read: name -> (index of fx, fy, cx, cy, k1, k2; None = absent / same as fx).
_CAMERA_MODELS = {
    "SIMPLE_PINHOLE": (0, None, 1, 2, None, None),
    "PINHOLE": (0, 1, 2, 3, None, None),
    "SIMPLE_RADIAL": (0, None, 1, 2, 3, None),
    "RADIAL": (0, None, 1, 2, 3, 4),
}


@dataclass
class Scene:
    """The pairs of one scene. ``image_dir``: the folder the pairs' image paths are relative to."""

    name: str
    image_dir: Path
    pairs: list[CameraPair]
    source: str


def camera_intrinsics(camera) -> tuple[np.ndarray, tuple[float, float], tuple[int, int]]:
    """``(K (3, 3) in OpenCV pixels, (k1, k2), (width, height))`` of a ``pycolmap.Camera``.

    Raises:
        ValueError: a camera model other than SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL, RADIAL.
    """
    name = camera.model.name
    if name not in _CAMERA_MODELS:
        raise ValueError(f"camera model {name} is not supported (use one of {', '.join(_CAMERA_MODELS)})")
    p = np.asarray(camera.params, dtype=np.float64)
    fx, fy, cx, cy, k1, k2 = (None if i is None else p[i] for i in _CAMERA_MODELS[name])
    K = np.array([[fx, 0.0, cx - 0.5], [0.0, fx if fy is None else fy, cy - 0.5], [0.0, 0.0, 1.0]])
    radial = (0.0 if k1 is None else float(k1), 0.0 if k2 is None else float(k2))
    return K, radial, (int(camera.width), int(camera.height))


def _pose(image) -> tuple[np.ndarray, np.ndarray]:
    rigid = image.cam_from_world() if callable(image.cam_from_world) else image.cam_from_world
    return np.asarray(rigid.rotation.matrix(), np.float64), np.asarray(rigid.translation, np.float64)


def model_pairs(model_dir: str | Path, min_covisible: int = 50) -> list[CameraPair]:
    """Every pair of registered images of one COLMAP model with ``>= min_covisible`` common 3D points."""
    rec = load_model(model_dir)
    seen: dict[int, set[int]] = {}
    for point_id, point in rec.points3D.items():
        for element in point.track.elements:
            seen.setdefault(element.image_id, set()).add(point_id)
    images = {i: rec.images[i] for i in sorted(seen) if rec.images[i].has_pose}
    pairs = []
    for a, b in combinations(images, 2):
        covisible = len(seen[a] & seen[b])
        if covisible < min_covisible:
            continue
        (R1, t1), (R2, t2) = _pose(images[a]), _pose(images[b])
        (K1, d1, s1), (K2, d2, s2) = camera_intrinsics(images[a].camera), camera_intrinsics(images[b].camera)
        R = R2 @ R1.T
        pairs.append(CameraPair(images[a].name, images[b].name, K1, K2, R, t2 - R @ t1, d1, d2, s1, s2, covisible))
    return pairs


def sample_pairs(pairs: Sequence[CameraPair], max_pairs: int | None, seed: int = 0) -> list[CameraPair]:
    """At most ``max_pairs`` of ``pairs`` (uniform, seeded, order kept); all when None."""
    if max_pairs is None or len(pairs) <= max_pairs:
        return list(pairs)
    keep = np.sort(np.random.default_rng(seed).choice(len(pairs), size=max_pairs, replace=False))
    return [pairs[i] for i in keep]


def _is_scene(path: Path) -> bool:
    return bool(model_folders(path))


def _scene_image_dir(scene_dir: Path, images: Path | None) -> Path:
    image_dir = read_scene_folder(scene_dir, images).image_dir
    if image_dir is None:
        raise ValueError(f"{scene_dir}: no summary.json with image_dir; give the photos with --images")
    return image_dir


def load_scene(
    path: str | Path, *, images: str | Path | None = None, min_covisible: int = 50, max_pairs: int | None = 100,
    seed: int = 0,
) -> Scene:
    """One scene from a pairs file, a model folder or a scene folder (see the module docstring).

    Args:
        images: the image folder; default: the pairs file's header, or the scene's
            ``summary.json``, or (for a bare model folder) the ``summary.json`` two levels up.
        min_covisible, max_pairs, seed: pair selection from a model (``max_pairs`` also caps a pairs file).
    """
    path, images = Path(path), (None if images is None else Path(images))
    if path.is_file():
        pairs, image_dir = read_camera_pairs(path)
        return Scene(path.stem, images or image_dir, sample_pairs(pairs, max_pairs, seed), str(path))
    if is_model(path):
        scene_dir = path.parent.parent if path.parent.name == "sparse" else path
        name = scene_dir.name
        pairs = model_pairs(path, min_covisible)
    elif _is_scene(path):
        scene_dir, name = path, path.name
        pairs = [pair for model in model_folders(path) for pair in model_pairs(model, min_covisible)]
    else:
        raise FileNotFoundError(f"{path} is neither a pairs file, a COLMAP model nor a scene folder with sparse/<k>/")
    return Scene(name, _scene_image_dir(scene_dir, images), sample_pairs(pairs, max_pairs, seed), str(path))


def scene_name(path: Path) -> str:
    """The scene a source path stands for: a pairs file's stem, else the folder's name."""
    return path.stem if path.is_file() else path.name


def find_sources(path: str | Path, scenes: Sequence[str] | None = None) -> list[Path]:
    """``[path]`` for one scene; for a folder of scenes its scene folders and pairs files, sorted.

    Args:
        scenes: keep only these scene names (folder names or pairs-file stems): for a folder of scenes each
            must exist; a single scene is kept if it is named (``[]`` otherwise).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    if path.is_file() or is_model(path) or _is_scene(path):
        return [path] if scenes is None or scene_name(path) in scenes else []
    found = {scene_name(p): p for p in sorted(path.iterdir()) if (p.is_file() and p.suffix == ".txt") or _is_scene(p)}
    if not found:
        raise FileNotFoundError(f"{path}: no scene folders (with sparse/<k>/) or pairs files (*.txt) in it")
    if scenes is None:
        return list(found.values())
    missing = [s for s in scenes if s not in found]
    if missing:
        raise ValueError(f"{path}: no scene(s) {', '.join(missing)}; found {', '.join(found)}")
    return [found[s] for s in sorted(set(scenes))]


__all__ = ["Scene", "camera_intrinsics", "find_sources", "load_scene", "model_pairs", "sample_pairs", "scene_name"]
