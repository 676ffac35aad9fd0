"""Real correspondences from a COLMAP reconstruction (hardnet_desc.train.datasets.sfm, make-dataset --from-sfm).

The fixture reconstructs the committed 9-photo scene tests/data/multiview/bundler-et with plain pycolmap (SIFT,
exhaustive matching, incremental mapping: a few seconds) and builds a dataset from it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from hardnet_desc.cli import main
from hardnet_desc.integrations.colmap import keypoints_from_colmap
from hardnet_desc.train.datasets import sfm as sfm_dataset
from hardnet_desc.train.datasets.sfm import (
    cut_patches,
    find_scenes,
    hard_pairs,
    largest_model,
    make_sfm_dataset,
    observation_keypoints,
    reprojection_errors,
    select_tracks,
)
from hardnet_desc.core.image import read_image, to_grey_tensor
from hardnet_desc.core.patches import extract_patches
from hardnet_desc.core.weights import load_weights
from hardnet_desc.data.phototour import read_pairs, read_phototour
from hardnet_desc.outputs import json_is_ours, write_json
from hardnet_desc.train.sampler import PairDataset

pycolmap = pytest.importorskip("pycolmap")

SCENE = Path(__file__).resolve().parent / "data" / "multiview" / "bundler-et"


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    """A folder of two scene folders: bundler-et reconstructed here, and a copy named other-et."""
    root = tmp_path_factory.mktemp("sfm")
    scene = root / "bundler-et"
    (scene / "sparse").mkdir(parents=True)
    names = sorted(p.name for p in SCENE.glob("*.jpg"))
    pycolmap.set_random_seed(0)
    pycolmap.extract_features(scene / "database.db", SCENE, image_names=names)
    pycolmap.match_exhaustive(scene / "database.db")
    pycolmap.incremental_mapping(scene / "database.db", SCENE, scene / "sparse")
    (scene / "summary.json").write_text(json.dumps({"image_dir": str(SCENE), "num_images": len(names)}))
    shutil.copytree(scene, root / "other-et")
    return root


@pytest.fixture(scope="module")
def dataset(scenes, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data")
    make_sfm_dataset(scenes, out, val_scenes=["bundler-et"], max_points_per_scene=400, progress=False)
    return out


def test_colmap_keypoints_agree_with_opencv_sift(scenes):
    """COLMAP's SIFT and OpenCV's SIFT on the same photo: converted keypoints have OpenCV's size and angle."""
    db = pycolmap.Database.open(str(scenes / "bundler-et" / "database.db"))
    raw = db.read_keypoints(db.read_image_with_name("et000.jpg").image_id)
    db.close()
    ours = keypoints_from_colmap(raw)
    image = cv2.imread(str(SCENE / "et000.jpg"), cv2.IMREAD_GRAYSCALE)
    cv = np.array([(k.pt[0], k.pt[1], k.size, k.angle) for k in cv2.SIFT_create(contrastThreshold=0.02).detect(image)])
    # pair each COLMAP keypoint with the OpenCV keypoint at the same place, size and angle
    pairs = []
    for i, cands in enumerate(cKDTree(cv[:, :2]).query_ball_point(ours[:, :2], 1.0)):
        if cands:
            c = np.array(cands)
            dang = np.abs((cv[c, 3] - ours[i, 3] + 180) % 360 - 180)
            dsize = np.abs(np.log(cv[c, 2] / ours[i, 2]))
            j = c[np.argmin(dang / 10 + dsize / 0.1)]
            if dang.min() < 10 and dsize.min() < 0.1:
                pairs.append((i, j))
    i, j = np.array(pairs).T
    assert len(i) > 500
    assert np.median(cv[j, 2] / ours[i, 2]) == pytest.approx(1.0, abs=0.02)
    assert abs(np.median((cv[j, 3] - ours[i, 3] + 180) % 360 - 180)) < 0.5
    # OpenCV's SIFT places keypoints 0.25 px right of and below the true position (its 2x upsampling);
    # COLMAP's sit 0.5 px off (corner convention), which the conversion removes.
    np.testing.assert_allclose(np.median(cv[j, :2] - ours[i, :2], axis=0), [0.25, 0.25], atol=0.05)


def test_patches_are_cut_as_compute_cuts_them(scenes):
    scene = find_scenes(scenes)[0]
    rec, _ = largest_model(scene)
    tracks = select_tracks(rec, max_points=50)
    kps = observation_keypoints(rec, scene.database, tracks)
    first = tracks.image_id == tracks.image_id[0]
    image = rec.images[int(tracks.image_id[0])]
    stored = cut_patches(scene.image_dir / image.name, kps[first], 6.0, (image.camera.width, image.camera.height))
    reference = extract_patches(to_grey_tensor(read_image(scene.image_dir / image.name)), kps[first], patch_scale=6.0)
    mean = torch.nn.functional.avg_pool2d(torch.from_numpy(stored).float()[:, None] / 255, 2)
    assert (mean - reference).abs().max() < 1.0 / 255 + 1e-6  # 64x64 uint8, 2x2 mean = the 32x32 inference patch


def test_tracks_reproject_within_colmap_error(scenes):
    scene = find_scenes(scenes)[0]
    rec, _ = largest_model(scene)
    tracks = select_tracks(rec)
    errors = reprojection_errors(rec, tracks)
    assert np.isfinite(errors).all()
    assert errors.max() < 4.0  # COLMAP's mapper drops observations above 4 px
    assert errors.mean() == pytest.approx(rec.compute_mean_reprojection_error(), rel=0.3)


def test_select_tracks_caps_and_near_copies(scenes):
    rec, _ = largest_model(find_scenes(scenes)[0])
    tracks = select_tracks(rec, min_track=3, max_points=100, max_patches_per_point=3)
    assert len(tracks.point3D_ids) == 100 and tracks.eligible > tracks.distinct >= 100
    assert np.bincount(tracks.point).max() <= 3 and (tracks.track_length >= 3).all()
    tracks = select_tracks(rec)  # no two kept points closer than 3 px in any photo
    for image_id in np.unique(tracks.image_id):
        rows = np.flatnonzero(tracks.image_id == image_id)
        xy = np.array([rec.images[int(image_id)].points2D[int(k)].xy for k in tracks.point2D_idx[rows]])
        assert not cKDTree(xy).query_pairs(3.0)
    with pytest.raises(ValueError, match="min_track"):
        select_tracks(rec, min_track=1)


def _ncc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    a = (a - a.mean(1, keepdims=True)) / (a.std(1, keepdims=True) + 1e-6)
    b = (b - b.mean(1, keepdims=True)) / (b.std(1, keepdims=True) + 1e-6)
    return (a * b).mean(1)


def test_patches_of_one_track_look_alike(dataset):
    data = read_phototour(dataset / "val", patch_size=32)
    i1, i2, same = read_pairs(next((dataset / "val").glob("m50_*.txt")))
    ncc = _ncc(data.patches[i1], data.patches[i2])
    assert same.sum() > 100 and (~same).sum() > 100
    assert ncc[same].mean() > ncc[~same].mean() + 0.4, (ncc[same].mean(), ncc[~same].mean())


def test_labels_scenes_and_split(dataset):
    record = json.loads((dataset / "record.json").read_text())
    by_name = {s["name"]: s for s in record["scenes"]}
    assert by_name["bundler-et"]["split"] == "val" and by_name["other-et"]["split"] == "train"
    assert record["totals"]["train"]["scenes"] == record["totals"]["val"]["scenes"] == 1
    seen = []
    for split in ("train", "val"):
        data = read_phototour(dataset / split, patch_size=32)
        scene = by_name["bundler-et" if split == "val" else "other-et"]
        assert set(np.unique(data.source)) == {scene["index"]}  # the photo column holds the scene
        ids, counts = np.unique(data.point_ids, return_counts=True)
        assert counts.min() >= 2 and counts.max() <= 10
        assert len(ids) == scene["points"] <= 400 and len(data) == scene["patches"]
        np.testing.assert_array_equal(ids, scene["first_label"] + np.arange(len(ids)))
        seen.append(set(ids.tolist()))
    assert not seen[0] & seen[1]  # labels unique across scenes
    assert record["label_check"]["max_reprojection_error"] < 4.0
    assert sum(record["track_length_histogram_val"].values()) == by_name["bundler-et"]["points"]
    meta = json.loads((dataset / "meta.json").read_text())
    assert meta["patch_scale"] == 6.0 and meta["min_kp_size"] == load_weights().min_kp_size  # the bundled weights'



def test_trainer_reads_the_dataset(dataset):
    data = read_phototour(dataset / "train", patch_size=32)
    a, p = PairDataset(data, n_pairs=64, batch_size=32, seed=0, photos_per_batch=1).get_batch(0, 0)
    assert a.shape == p.shape == (32, 1, 32, 32)


def test_cli_from_sfm(scenes, tmp_path, capsys):
    out = tmp_path / "real"
    assert main(["make-dataset", "--from-sfm", str(scenes), str(out), "--val-scenes", "other-et",
                 "--max-points-per-scene", "50", "--max-patches-per-point", "2"]) == 0
    text = capsys.readouterr().out
    assert "val   other-et" in text and "train: 1 scenes, 50 points, 100 patches" in text
    assert len(read_phototour(out / "val")) == 100
    assert main(["make-dataset", str(scenes), str(tmp_path / "x"), "--min-track", "3"]) == 2
    assert "only apply with --from-sfm" in capsys.readouterr().err


def test_missing_model_and_split_errors(scenes, tmp_path):
    photos = tmp_path / "photos"
    shutil.copytree(SCENE, photos / "et")
    with pytest.raises(ValueError, match="has no COLMAP model"):
        find_scenes(photos)
    with pytest.raises(ValueError, match="none of the validation scenes"):
        make_sfm_dataset(scenes, tmp_path / "a", val_scenes=["nowhere"], progress=False)
    with pytest.raises(ValueError, match="nothing left to train on"):
        make_sfm_dataset(scenes, tmp_path / "b", val_scenes=["bundler-et", "other-et"], progress=False)


def test_photo_folders_go_through_reconstruct(scenes, tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    shutil.copytree(SCENE, photos / "et")
    calls = []

    def reconstruct(image_dir: Path, out_dir: Path, **options) -> None:  # stands in for COLMAP: the fixture's model
        calls.append((image_dir, out_dir, options))
        out_dir.mkdir(parents=True)
        shutil.copy(scenes / "bundler-et" / "database.db", out_dir)
        shutil.copytree(scenes / "bundler-et" / "sparse", out_dir / "sparse")

    monkeypatch.setattr(sfm_dataset, "colmap_reconstruct", reconstruct)
    found = find_scenes(photos, reconstruct=True, work_dir=tmp_path / "work")
    assert calls == [(photos / "et", tmp_path / "work" / "et", {**sfm_dataset.SFM_OPTIONS, "overwrite": False,
                                                                      "progress": True})]
    assert found[0].name == "et" and found[0].image_dir == photos / "et" and len(found[0].models) == 1
    with pytest.raises(TypeError, match="reconstruct must be True or False"):
        find_scenes(photos, reconstruct=reconstruct)  # the old callback form: not silently run as COLMAP


def test_scene_without_model_is_skipped(scenes, tmp_path):
    root = tmp_path / "scenes"
    root.mkdir()
    for name in ("bundler-et", "other-et"):
        (root / name).symlink_to(scenes / name)
    failed = root / "failed-et"  # a finished reconstruction that found no model
    failed.mkdir()
    shutil.copy(scenes / "bundler-et" / "database.db", failed)
    (failed / "summary.json").write_text(json.dumps({"image_dir": str(SCENE)}))
    record = make_sfm_dataset(root, tmp_path / "out", val_scenes=["bundler-et"], max_points_per_scene=20,
                              progress=False)
    assert record["scenes_without_model"] == ["failed-et"]
    assert [s["name"] for s in record["scenes"]] == ["bundler-et", "other-et"]


def test_hard_pairs_stay_in_scene_and_take_photo_neighbours():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(300), 3)  # 300 points seen in 3 photos each, two scenes
    scene = (labels >= 200).astype(np.int64)
    photo = np.tile(np.arange(3), 300) + 10 * scene
    xy = rng.uniform(0, 1000, size=(900, 2))
    i1, i2, match = hard_pairs(labels, scene, photo, xy, 2000, seed=0)
    assert len(i1) == 2000 and match.sum() == 1000
    np.testing.assert_array_equal(match, labels[i1] == labels[i2])
    assert (scene[i1] == scene[i2]).all()
    neg = ~match
    same_photo = neg & (photo[i1] == photo[i2])
    assert same_photo.sum() >= 0.5 * neg.sum() - 2
    # a near negative is one of the 4 nearest other points of its photo: far closer than random pairs
    dist = np.linalg.norm(xy[i1] - xy[i2], axis=1)
    assert np.median(dist[same_photo]) < 0.3 * np.median(dist[neg & ~same_photo])


def test_all_models_counts_each_registered_photo_once(scenes, tmp_path):
    """--all-models: points and patches of every model add up; a photo registered in two models is one photo."""
    two = tmp_path / "two"
    shutil.copytree(scenes / "bundler-et", two / "bundler-et")
    shutil.copytree(scenes / "other-et", two / "other-et")
    shutil.copytree(two / "other-et" / "sparse" / "0", two / "other-et" / "sparse" / "1")  # the same model again
    make_sfm_dataset(two, tmp_path / "one", val_scenes=["bundler-et"], progress=False)
    make_sfm_dataset(two, tmp_path / "all", val_scenes=["bundler-et"], all_models=True, progress=False)
    one, both = ({s["name"]: s for s in json.loads((tmp_path / d / "record.json").read_text())["scenes"]}["other-et"]
                 for d in ("one", "all"))
    assert len(both["models"]) == 2 and both["points"] == 2 * one["points"] and both["patches"] == 2 * one["patches"]
    assert both["registered"] == one["registered"] == 9


def _photo_root(tmp_path: Path, scenes: Path, *photo_folders: str) -> Path:
    """A folder of scene folders: bundler-et (the fixture's reconstruction, for validation) and copies of the
    photos to reconstruct, under the given names."""
    root = tmp_path / "in"
    root.mkdir()
    (root / "bundler-et").symlink_to(scenes / "bundler-et")
    for name in photo_folders:
        shutil.copytree(SCENE, root / name, ignore=shutil.ignore_patterns("README.md"))
    return root


def test_rerun_reuses_our_reconstruction_of_the_same_photos(scenes, tmp_path):
    """make-dataset --from-sfm again into the same OUT (here another seed) reuses OUT/sfm/<name>, and redoes it
    once a photo was written since (it refused: "already holds a reconstruction; pass overwrite=True")."""
    root = _photo_root(tmp_path, scenes, "et2")
    out, summary = tmp_path / "out", tmp_path / "out" / "sfm" / "et2" / "summary.json"
    options = {"reconstruct": True, "val_scenes": ["bundler-et"], "max_points_per_scene": 50, "progress": False}
    make_sfm_dataset(root, out, **options)
    made = summary.stat().st_mtime_ns
    make_sfm_dataset(root, out, seed=1, **options)
    assert summary.stat().st_mtime_ns == made  # reused
    photo = root / "et2" / "et003.jpg"
    photo.write_bytes(photo.read_bytes())  # written since: redone
    record = make_sfm_dataset(root, out, seed=2, **options)
    assert summary.stat().st_mtime_ns > made and record["totals"]["train"]["scenes"] == 1
    from hardnet_desc.integrations.colmap import existing_run

    assert existing_run(out / "sfm" / "et2", root / "et2", **sfm_dataset.SFM_OPTIONS) == "same"
    data = json.loads(summary.read_text())
    write_json(summary, {**data, "max_keypoints": 100})  # ours, made with other settings: redone
    assert existing_run(out / "sfm" / "et2", root / "et2", **sfm_dataset.SFM_OPTIONS) == "ours"


def test_photo_folders_are_checked_before_any_reconstruction(scenes, tmp_path, capsys):
    """A one-photo folder, and a work folder holding a reconstruction not ours, stop the build before any
    photo folder is reconstructed (before: after the ones sorted first), naming an option make-dataset has."""
    root = _photo_root(tmp_path, scenes, "a-et")
    (root / "b-one").mkdir()
    shutil.copy(SCENE / "et000.jpg", root / "b-one")
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match="at least 2 images, found 1 in .*b-one"):
        make_sfm_dataset(root, out, reconstruct=True, val_scenes=["bundler-et"], progress=False)
    assert not (out / "sfm").exists()
    shutil.rmtree(root / "b-one")
    shutil.copytree(SCENE, root / "b-et")
    (out / "sfm" / "b-et").mkdir(parents=True)
    shutil.copy(scenes / "bundler-et" / "database.db", out / "sfm" / "b-et")  # not written by hardnet-desc
    assert main(["make-dataset", "--from-sfm", str(root), str(out), "--val-scenes", "bundler-et"]) == 2
    err = capsys.readouterr().err
    assert ("b-et holds a reconstruction without hardnet-desc's summary.json: an unfinished run, or another "
            "program's; pass --force") in err
    assert "overwrite" not in err and not (out / "sfm" / "a-et").exists()
    assert main(["make-dataset", "--from-sfm", str(root), str(out), "--val-scenes", "bundler-et", "--force",
                 "--max-points-per-scene", "50"]) == 0
    assert json_is_ours(out / "sfm" / "b-et" / "summary.json")


def _scene_copy(scenes: Path, folder: Path, **summary) -> Path:
    """A copy of the fixture's bundler-et scene folder at ``folder``, its summary.json updated with ``summary``."""
    shutil.copytree(scenes / "bundler-et", folder)
    data = json.loads((folder / "summary.json").read_text())
    (folder / "summary.json").write_text(json.dumps({**data, **summary}))
    return folder


@pytest.mark.parametrize("case", ["missing photo", "fewer keypoints"])
def test_database_of_another_model_is_named(scenes, tmp_path, capsys, case):
    """A database.db that is not the model's: one line naming the database and the model, exit 2 (was an
    IndexError or AttributeError, exit 1)."""
    import sqlite3

    root = tmp_path / "in"
    root.mkdir()
    (root / "bundler-et").symlink_to(scenes / "bundler-et")
    other = _scene_copy(scenes, root / "other")
    with sqlite3.connect(other / "database.db") as db:
        if case == "missing photo":
            db.execute("UPDATE images SET name = 'x' || name")
        else:  # half the keypoints of each photo: the model's indices run past them
            db.execute("UPDATE keypoints SET rows = rows / 2, data = substr(data, 1, (rows / 2) * cols * 4)")
    db.close()
    assert main(["make-dataset", "--from-sfm", str(root), str(tmp_path / "out"), "--val-scenes", "bundler-et",
                 "--max-points-per-scene", "50"]) == 2
    err = capsys.readouterr().err
    assert f"{other / 'database.db'} is not the database of the model {other / 'sparse' / '0'}: " in err
    assert ("it has no photo" if case == "missing photo" else "its keypoints of") in err


def test_scene_name_given_twice_is_refused(scenes, tmp_path):
    """Two scene folders whose summary.json give one scene name shared one scene index without a word."""
    root = tmp_path / "in"
    _scene_copy(scenes, root / "s1", scene="same")
    _scene_copy(scenes, root / "s2", scene="same")
    (root / "bundler-et").symlink_to(scenes / "bundler-et")
    with pytest.raises(ValueError, match=r"s1 and .*s2 are both the scene 'same'"):
        make_sfm_dataset(root, tmp_path / "out", val_scenes=["bundler-et"], max_points_per_scene=50, progress=False)


def test_replaced_photos_are_refused(scenes, tmp_path):
    """Photos of the same names and size but other content (flipped) were cut at the wrong places, exit 0; the
    same photos saved again (JPEG of quality 60) pass."""
    root = tmp_path / "in"
    root.mkdir()
    (root / "bundler-et").symlink_to(scenes / "bundler-et")
    flipped, resaved = tmp_path / "flipped", tmp_path / "resaved"
    for folder, change in ((flipped, lambda im: im[::-1]), (resaved, lambda im: im)):
        folder.mkdir()
        for path in SCENE.glob("*.jpg"):
            cv2.imwrite(str(folder / path.name), np.ascontiguousarray(change(cv2.imread(str(path)))),
                        [cv2.IMWRITE_JPEG_QUALITY, 60])
    other = _scene_copy(scenes, root / "other", image_dir=str(resaved))
    options = {"val_scenes": ["bundler-et"], "max_points_per_scene": 200, "progress": False}
    assert make_sfm_dataset(root, tmp_path / "ok", **options)["totals"]["train"]["patches"] > 0
    _scene_copy(scenes, other.with_name("flipped"), image_dir=str(flipped))
    shutil.rmtree(other)
    with pytest.raises(ValueError, match=r"flipped/et00\d.jpg: SIFT finds only \d of 32 .* not the photo that was"):
        make_sfm_dataset(root, tmp_path / "out", **options)


@pytest.mark.parametrize("text, problem", [("{not json", "not a JSON file"), ("[1, 2]", "holds a JSON list"),
                                           ('{"scene": 3}', "scene must be a str")])
def test_bad_summary_json_is_named(scenes, tmp_path, text, problem):
    """A summary.json that is not a JSON object (or whose scene is no name) gave an error naming no file."""
    folder = _scene_copy(scenes, tmp_path / "in" / "other")
    (folder / "summary.json").write_text(text)
    with pytest.raises(ValueError, match=f"{folder / 'summary.json'}: .*{problem}"):
        find_scenes(tmp_path / "in")


def test_a_chmod_of_the_photos_keeps_our_reconstruction(scenes, tmp_path):
    """Freshness took the photos' st_ctime, which chmod, chown and cp -a move: the whole reconstruction was
    redone for no change."""
    from hardnet_desc.integrations.colmap import existing_run, model_folders

    photos, work = tmp_path / "photos", tmp_path / "work"
    shutil.copytree(SCENE, photos, ignore=shutil.ignore_patterns("README.md"))  # copy2: the old mtimes
    shutil.copytree(scenes / "bundler-et", work)  # stands in for our reconstruction of them
    ours = {"image_dir": str(photos.resolve()), "num_models": len(model_folders(work)), **sfm_dataset.SFM_OPTIONS}
    write_json(work / "summary.json", ours, force=True)
    assert existing_run(work, photos, **sfm_dataset.SFM_OPTIONS) == "same"
    for photo in photos.iterdir():
        photo.chmod(0o644)  # only the change time moves
    assert existing_run(work, photos, **sfm_dataset.SFM_OPTIONS) == "same"


def test_a_killed_reconstruction_of_ours_is_redone_without_force(scenes, tmp_path, monkeypatch):
    """A reconstruction of ours killed before summary.json (OOM, kill -9) left database.db alone: the rerun
    called it another program's and asked for --force. reconstruct now marks its run first."""
    from hardnet_desc.integrations.colmap import existing_run, reconstruction

    root, out = _photo_root(tmp_path, scenes, "et2"), tmp_path / "out"
    work, killed = out / "sfm" / "et2", tmp_path / "killed"
    extract = reconstruction._extract_sift

    def kill(database, *args, **kwargs):  # what a kill while extracting leaves: copied, then Ctrl-C cleans up
        extract(database, *args, **kwargs)
        shutil.copytree(Path(database).parent, killed)
        raise KeyboardInterrupt

    monkeypatch.setattr(reconstruction, "_extract_sift", kill)
    options = {"reconstruct": True, "val_scenes": ["bundler-et"], "max_points_per_scene": 50, "progress": False}
    with pytest.raises(KeyboardInterrupt):
        make_sfm_dataset(root, out, **options)
    monkeypatch.undo()
    assert sorted(p.name for p in killed.iterdir()) == ["database.db", "summary.json"]
    assert existing_run(killed, root / "et2", **sfm_dataset.SFM_OPTIONS) == "ours"
    with pytest.raises(FileNotFoundError, match="killed: an unfinished reconstruction"):
        find_scenes([killed])
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(killed, work)
    assert make_sfm_dataset(root, out, **options)["totals"]["train"]["scenes"] == 1
    summary = json.loads((work / "summary.json").read_text())
    assert json_is_ours(work / "summary.json") and "finished" not in summary and summary["num_models"] >= 1


def test_out_inside_the_scenes_is_refused_before_any_work(scenes, tmp_path):
    """Only the CLI checked that OUT lies outside the scenes: make_sfm_dataset wrote its patches into a scene
    folder, where a later run takes them for input."""
    root = _photo_root(tmp_path, scenes, "et2")
    cases = ((root, root / "ds", "scenes folder"), ([root / "et2"], root / "et2" / "ds", "scene folder"))
    for given, out, what in cases:
        with pytest.raises(ValueError, match=f"the output folder {out} lies in the {what} "):
            make_sfm_dataset(given, out, reconstruct=True, val_scenes=["bundler-et"], progress=False)
        assert not out.exists() and not (root / "et2" / "_sfm").exists()
