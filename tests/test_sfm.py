"""Structure from motion (hardnet_desc.integrations.colmap, ``hardnet-desc sfm``) on a small real multi-view set.

The nine 640x480 photos of ``tests/data/multiview/bundler-et`` (provenance in its README.md) are
reconstructed once per feature type (module-scoped fixtures): COLMAP's SIFT through the CLI, and
HardNet through the library with 1,024 keypoints per image to keep the test short.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from hardnet_desc import HardNetDescriptor
from hardnet_desc.cli import main
from hardnet_desc.detection import detect_sift
from hardnet_desc.matching import match_descriptors
from hardnet_desc.outputs import write_json
from hardnet_desc.integrations.colmap import (
    PYCOLMAP_INSTALL,
    ReconstructionSummary,
    colmap_like_sift,
    keypoints_from_colmap,
    keypoints_to_colmap,
    reconstruct,
)

pycolmap = pytest.importorskip("pycolmap")

SCENE = Path(__file__).resolve().parent / "data" / "multiview" / "bundler-et"
NAMES = sorted(p.name for p in SCENE.glob("*.jpg"))
HARDNET_KEYPOINTS = 1024


@pytest.fixture(scope="module")
def hardnet_descriptor() -> HardNetDescriptor:
    return HardNetDescriptor(device="cpu", detector=colmap_like_sift())


@pytest.fixture(scope="module")
def hardnet_run(tmp_path_factory, hardnet_descriptor) -> tuple[ReconstructionSummary, Path]:
    out = tmp_path_factory.mktemp("sfm") / "hardnet"
    summary = reconstruct(SCENE, out, features="hardnet", descriptor=hardnet_descriptor,
                          max_keypoints=HARDNET_KEYPOINTS, progress=False)
    return summary, out


@pytest.fixture(scope="module")
def sift_run(tmp_path_factory) -> tuple[dict, Path]:
    """COLMAP's SIFT, through the command line; the summary read back from --json."""
    out = tmp_path_factory.mktemp("sfm") / "sift"
    json_path = out.parent / "sift.json"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["sfm", str(SCENE), str(out), "--features", "sift", "--quiet", "--json", str(json_path)]) == 0
    summary = json.loads(json_path.read_text())
    # the closing summary of the command
    text = printed.getvalue()
    assert "images registered: 9 / 9" in text and f"3D points:         {summary['num_points3D']}" in text
    assert "seconds:" in text and "extract" in text and "map" in text
    return summary, out


#: The keys of summary.json, in the order written.
SUMMARY_KEYS = [
    "num_images", "registered_images", "num_points3D", "mean_track_length", "mean_reprojection_error", "num_models",
    "models", "keypoints_per_image", "image_pairs", "verified_pairs", "seconds", "image_dir", "out_dir", "features",
    "matcher", "max_image_size", "max_keypoints", "ratio", "camera_model", "camera_params", "weights", "precision",
]


@pytest.mark.parametrize("run", ["hardnet_run", "sift_run"])
def test_every_image_registers(run, request):
    summary, out = request.getfixturevalue(run)
    written = json.loads((out / "summary.json").read_text())
    assert list(written) == ["written_by", *SUMMARY_KEYS] and written.pop("written_by") == "hardnet-desc"
    assert list(written["models"][0]) == ["index", "path", "registered_images", "num_points3D", "mean_track_length",
                                          "mean_reprojection_error"]
    if isinstance(summary, ReconstructionSummary):  # the library's result is what summary.json holds
        assert written == json.loads(json.dumps(summary.to_dict()))
        summary = summary.to_dict()
    assert summary["num_images"] == len(NAMES) == 9
    assert summary["registered_images"] == 9
    assert summary["image_pairs"] == 36 and 20 <= summary["verified_pairs"] <= 36  # RANSAC varies by a few
    model = pycolmap.Reconstruction(out / summary["models"][0]["path"])  # COLMAP's own layout, readable
    assert sorted(im.name for im in model.images.values() if im.has_pose) == NAMES
    assert model.num_points3D() == summary["num_points3D"]
    assert json.loads((out / "summary.json").read_text())["num_points3D"] == summary["num_points3D"]


def test_hardnet_model_is_as_accurate_as_sift(hardnet_run, sift_run):
    hardnet, sift = hardnet_run[0].to_dict(), sift_run[0]
    assert 0 < sift["mean_reprojection_error"] < 1.5
    assert hardnet["mean_reprojection_error"] < min(1.5, 1.5 * sift["mean_reprojection_error"])
    # a 640x480 object scene: hundreds of points seen in several views each, not a handful
    assert hardnet["num_points3D"] > 300 and sift["num_points3D"] > 300
    assert hardnet["mean_track_length"] > 2.5 and sift["mean_track_length"] > 2.5
    for summary in (hardnet, sift):
        assert set(summary["seconds"]) == {"import", "extract", "match", "verify", "map", "total"}


def test_database_holds_our_keypoints_and_matches(hardnet_run, hardnet_descriptor):
    summary, out = hardnet_run
    with pycolmap.Database.open(out / "database.db") as db:
        images = {im.name: im for im in db.read_all_images()}
        assert sorted(images) == NAMES and db.num_cameras() == 1  # one image size: one camera
        im1, im2 = images[NAMES[0]], images[NAMES[1]]
        stored = [db.read_keypoints(im.image_id) for im in (im1, im2)]
        matches = db.read_matches(im1.image_id, im2.image_id)
        assert db.read_two_view_geometry(im1.image_id, im2.image_id).inlier_matches.shape[0] >= 15
    descs = []
    for name, keypoints in zip(NAMES[:2], stored):
        image = cv2.imread(str(SCENE / name))
        kps = hardnet_descriptor.detect(image, max_keypoints=HARDNET_KEYPOINTS)
        # affine frames (x, y, a11, a12, a21, a22) of exactly our keypoints: scale and orientation kept
        np.testing.assert_allclose(keypoints, keypoints_to_colmap(kps), atol=1e-4)
        descs.append(hardnet_descriptor.compute(image, kps)[1])
    expected = match_descriptors(descs[0], descs[1], ratio=0.8, mutual=True).pairs
    assert len(matches) > 100
    np.testing.assert_array_equal(matches, expected)


def test_resize_scales_keypoints_back(tmp_path, hardnet_descriptor, monkeypatch):
    """Extraction at 320 px: the stored keypoints are in full-resolution pixels (640x480). Relative folders
    are recorded absolute in the summary (eval-pairs and make-dataset read it from elsewhere)."""
    scene = tmp_path / "images"
    scene.mkdir()
    for name in NAMES[:3]:
        shutil.copy(SCENE / name, scene / name)
    monkeypatch.chdir(tmp_path)
    summary = reconstruct(Path("images"), Path("out"), descriptor=hardnet_descriptor, max_image_size=320,
                          max_keypoints=300, progress=False)
    assert summary.image_dir == str(scene.resolve()) and summary.out_dir == str((tmp_path / "out").resolve())
    with pycolmap.Database.open(tmp_path / "out" / "database.db") as db:
        im = db.read_image_with_name(NAMES[0])
        stored = keypoints_from_colmap(db.read_keypoints(im.image_id))
    assert len(stored) == 300
    full = cv2.imread(str(SCENE / NAMES[0]))
    small = cv2.resize(full, (320, 240), interpolation=cv2.INTER_AREA)
    expected = np.array([(k.pt[0], k.pt[1], k.size) for k in detect_sift(small, 300, colmap_like_sift())])
    np.testing.assert_allclose(stored[:, 0], (expected[:, 0] + 0.5) * 2 - 0.5, atol=1e-3)
    np.testing.assert_allclose(stored[:, 1], (expected[:, 1] + 0.5) * 2 - 0.5, atol=1e-3)
    np.testing.assert_allclose(stored[:, 2], expected[:, 2] * 2, rtol=1e-5)
    assert stored[:, 0].max() > 400  # spans the full-resolution image, not the 320 px one
    # ...and they sit on the features SIFT finds at full resolution: most within 2 px of one
    ref = np.array([k.pt for k in colmap_like_sift().detect(full, None)])
    nearest = np.linalg.norm(stored[:, None, :2] - ref[None], axis=2).min(axis=1)
    assert np.median(nearest) < 1.0 and np.mean(nearest < 2.0) > 0.7


def test_colmap_sift_follows_the_documented_keypoint_conversion():
    """COLMAP's SIFT and OpenCV's find the same blobs: scale = size / 2, orientation = angle (radians),
    coordinates + 0.5, as keypoints_to_colmap converts."""
    grey = cv2.imread(str(SCENE / NAMES[0]), cv2.IMREAD_GRAYSCALE)
    extractor = pycolmap.FeatureExtractor.create(pycolmap.FeatureExtractionOptions())
    keypoints, _ = extractor.extract_from_uint8_array(np.ascontiguousarray(grey))
    ours = keypoints_from_colmap(pycolmap.keypoints_to_matrix(keypoints))  # (x, y, scale, orientation)
    opencv = np.array([(k.pt[0], k.pt[1], k.size, k.angle) for k in colmap_like_sift().detect(grey, None)])
    dist = np.linalg.norm(ours[:, None, :2] - opencv[None, :, :2], axis=2)
    near = dist.min(axis=1) < 0.3
    partner = opencv[dist.argmin(axis=1)[near]]
    assert near.sum() > 100
    assert np.median(ours[near, 2] / partner[:, 2]) == pytest.approx(1.0, abs=0.05)
    angle_diff = (ours[near, 3] - partner[:, 3] + 180) % 360 - 180
    assert np.median(np.abs(angle_diff)) < 5
    # and COLMAP's own affine frame of (x, y, scale, orientation) is the one we write
    frames = pycolmap.keypoints_from_matrix(pycolmap.keypoints_to_matrix(keypoints)[:50])
    colmap6 = np.array([(k.x, k.y, k.a11, k.a12, k.a21, k.a22) for k in frames])
    np.testing.assert_allclose(keypoints_to_colmap(ours[:50]), colmap6, rtol=1e-4, atol=1e-3)


def test_bad_input_names_the_problem(tmp_path):
    with pytest.raises(ValueError, match="features"):
        reconstruct(SCENE, tmp_path / "a", features="orb")
    with pytest.raises(ValueError, match="matcher"):
        reconstruct(SCENE, tmp_path / "a", matcher="vocabtree")
    for ratio, error in ((None, ValueError), ("0.8", TypeError), (0.0, ValueError)):  # str and None: before,
        with pytest.raises(error, match="ratio must be"):  # a TypeError from a comparison
            reconstruct(SCENE, tmp_path / "a", ratio=ratio)
    assert not (tmp_path / "a").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="at least 2 images"):
        reconstruct(tmp_path / "empty", tmp_path / "a")
    with pytest.raises(ValueError, match="cannot create cameras"):
        reconstruct(SCENE, tmp_path / "c", camera_model="PINHOLE", camera_params=[500.0, 320.0])  # needs 4
    assert not (tmp_path / "c" / "database.db").exists()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "database.db").write_bytes(b"")
    with pytest.raises(FileExistsError, match="overwrite"):
        reconstruct(SCENE, tmp_path / "b", features="sift")
    (tmp_path / "d").mkdir()  # a summary.json hardnet-desc did not write is refused before any work, and kept
    (tmp_path / "d" / "summary.json").write_text('{"a": 1}')
    with pytest.raises(FileExistsError, match=r"not written by hardnet-desc; pass --overwrite \(overwrite=True\)"):
        reconstruct(SCENE, tmp_path / "d", features="sift")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["summary.json"]
    assert (tmp_path / "d" / "summary.json").read_text() == '{"a": 1}'


def test_a_failed_run_leaves_nothing_a_rerun_would_refuse(tmp_path, monkeypatch):
    """An unreadable photo, or Ctrl-C while mapping, left OUT/database.db: a plain rerun was refused as 'already
    holds a reconstruction'. The run's own database and models go; an old summary.json went with --overwrite."""
    from hardnet_desc.integrations.colmap import reconstruction

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in NAMES[:2]:
        shutil.copy(SCENE / name, photos / name)
    (photos / "z.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="cannot decode image file: .*z.jpg"):
        reconstruct(photos, tmp_path / "new", features="sift", progress=False)
    assert not (tmp_path / "new").exists()  # the run made the folder: it goes too
    (photos / "z.jpg").unlink()
    mapped = []

    def interrupted(database, *args, **kwargs):
        mapped.append(Path(database).is_file())
        raise KeyboardInterrupt

    monkeypatch.setattr(reconstruction, "_map", interrupted)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "notes.txt").write_text("the user's")
    write_json(tmp_path / "old" / "summary.json", {"num_images": 9})  # an earlier run's, replaced by this one
    (tmp_path / "old" / "database.db").write_bytes(b"")
    with pytest.raises(KeyboardInterrupt):
        reconstruct(photos, tmp_path / "old", features="sift", progress=False, overwrite=True)
    assert mapped == [True] and sorted(p.name for p in (tmp_path / "old").iterdir()) == ["notes.txt"]


def test_cli_says_what_to_install_without_pycolmap(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "pycolmap", None)  # makes `import pycolmap` raise ImportError
    assert main(["sfm", str(SCENE), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert PYCOLMAP_INSTALL in err and 'pip install "hardnet-desc[sfm]"' in err
    assert not (tmp_path / "out").exists()


def test_cli_missing_folder_is_one_error_line(tmp_path, capsys):
    assert main(["sfm", str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("hardnet-desc sfm: error:") and "missing" in err[0]
