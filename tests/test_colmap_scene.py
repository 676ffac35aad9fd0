"""The scene-folder layout (hardnet_desc.integrations.colmap.scene): read without pycolmap, in one place.

Readers of real reconstructions (the training-set builder, eval-pairs) are tested on the committed
bundler-et photos in tests/test_sfm_dataset.py and tests/test_eval_pairs.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from hardnet_desc.integrations.colmap import PYCOLMAP_INSTALL
from hardnet_desc.integrations.colmap.scene import (
    DATABASE,
    SPARSE,
    SUMMARY,
    is_model,
    load_model,
    model_folders,
    read_scene_folder,
)


def _model(folder: Path, suffix: str = ".bin") -> Path:
    folder.mkdir(parents=True)
    for name in ("cameras", "images", "points3D"):
        (folder / f"{name}{suffix}").write_bytes(b"")
    return folder


def test_models_in_numeric_order_and_either_format(tmp_path):
    for k in (10, 2, 0):
        _model(tmp_path / SPARSE / str(k))
    _model(tmp_path / SPARSE / "1", ".txt")
    partial = tmp_path / SPARSE / "3"
    partial.mkdir()
    (partial / "points3D.bin").write_bytes(b"")  # no cameras/images: not a model
    assert [p.name for p in model_folders(tmp_path)] == ["0", "1", "2", "10"]
    assert is_model(tmp_path / SPARSE / "1") and not is_model(partial)
    assert model_folders(tmp_path / "nothing") == []


def test_read_scene_folder(tmp_path):
    photos = tmp_path / "photos"
    scene_dir = tmp_path / "scene"
    _model(scene_dir / SPARSE / "0")
    (scene_dir / DATABASE).write_bytes(b"")
    (scene_dir / SUMMARY).write_text(json.dumps({"image_dir": "../photos", "num_images": 9}))
    scene = read_scene_folder(scene_dir)
    assert scene.name == "scene" and scene.database == scene_dir / DATABASE and scene.reconstructed
    assert scene.models == [scene_dir / SPARSE / "0"] and scene.num_images == 9
    assert scene.image_dir.resolve() == photos.resolve()  # relative to the scene folder, not the working directory
    (scene_dir / SUMMARY).write_text(json.dumps({"image_dir": str(photos), "scene": "et"}))
    scene = read_scene_folder(scene_dir)
    assert scene.image_dir == photos and scene.name == "et" and scene.num_images is None
    assert read_scene_folder(scene_dir, image_dir=tmp_path / "other").image_dir == tmp_path / "other"


def test_a_folder_of_photos_is_not_reconstructed(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    scene = read_scene_folder(tmp_path)
    assert not scene.reconstructed and scene.database is None and scene.models == []
    assert scene.image_dir is None and scene.summary is None


def test_load_model_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pycolmap", None)  # makes `import pycolmap` raise ImportError
    with pytest.raises(ImportError, match="reading COLMAP models needs pycolmap") as err:
        load_model(tmp_path)
    assert PYCOLMAP_INSTALL in str(err.value)
