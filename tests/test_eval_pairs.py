"""Relative-pose evaluation: the AUC bootstrap, the pairs file, a synthetic two-view scene with known
cameras, and a real run on the committed bundler-et photos with a COLMAP model built here (the
geometry's hand cases are in test_geometry.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from hardnet_desc.cli import main
from hardnet_desc.data.camera_pairs import CameraPair, read_camera_pairs, write_camera_pairs
from hardnet_desc.evaluation.pair_sources import Scene, load_scene
from hardnet_desc.evaluation.poses import auc_difference, evaluate_pairs, format_pose_table

from conftest import EXAMPLE_FILES

ET_DIR = Path(__file__).resolve().parent / "data" / "multiview" / "bundler-et"


def rot_y(deg: float) -> np.ndarray:
    return cv2.Rodrigues(np.array([0.0, math.radians(deg), 0.0]))[0]


# ---------------------------------------------------------------- AUC differences


def test_auc_difference_paired_bootstrap():
    errors = [0.5, 2.0, 7.0, 15.0, math.inf]
    same = auc_difference(errors, errors)
    assert all(v == [0.0, 0.0, 0.0] for v in same.values())
    better = auc_difference([0.0] * 5, [math.inf] * 5)  # every pose exact vs every pose failed
    assert all(v == pytest.approx([1.0, 1.0, 1.0]) for v in better.values())
    mixed = auc_difference([0.0, 0.0, math.inf, math.inf], [math.inf, math.inf, 0.0, 0.0])
    d, lo, hi = mixed["auc@10"]
    assert d == 0.0 and lo < -0.4 and hi > 0.4  # no difference on average, a wide interval
    with pytest.raises(ValueError, match="different pairs"):
        auc_difference([1.0], [1.0, 2.0])


# ---------------------------------------------------------------- pairs file format


def _pair(R=None, t=(0.3, 0.0, 0.05), radial=((0.0, 0.0), (0.0, 0.0))) -> CameraPair:
    K = [[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]]
    return CameraPair("a.png", "b.png", K, K, rot_y(8) if R is None else R, t, *radial)


def test_pairs_file_round_trip_and_errors(tmp_path):
    pairs = [_pair(), _pair(rot_y(-3.3), (1 / 3, 2 / 7, -0.1), ((-0.1234567891, 0.0), (0.05, 0.001)))]
    path = write_camera_pairs(tmp_path / "p" / "s.txt", pairs, tmp_path / "imgs", comment="test")
    back, image_dir = read_camera_pairs(path)
    assert image_dir == (tmp_path / "imgs").resolve() and len(back) == 2
    for a, b in zip(pairs, back):
        assert (a.image1, a.image2, a.radial1, a.radial2) == (b.image1, b.image2, b.radial1, b.radial2)
        for key in ("K1", "K2", "R", "t"):
            np.testing.assert_array_equal(getattr(a, key), getattr(b, key))  # repr: exact floats
    assert len(path.read_text().splitlines()[-2].split()) == 2 + 30  # no distortion: 30 numbers
    assert len(path.read_text().splitlines()[-1].split()) == 2 + 34
    bad = tmp_path / "bad.txt"
    bad.write_text("a.png b.png 1 2 3\n")
    with pytest.raises(ValueError, match=r"bad.txt:1: expected 2 image names and 30 or 34 numbers"):
        read_camera_pairs(bad)
    bad.write_text("# comment\n\n" + _pair().to_line().replace(" 1.0 ", " 2.0 ", 1) + "\n")  # K's last row
    with pytest.raises(ValueError, match="bad.txt:3: .*last row"):
        read_camera_pairs(bad)
    with pytest.raises(ValueError, match="not a rotation"):
        _pair(R=2 * np.eye(3))
    with pytest.raises(FileNotFoundError):
        read_camera_pairs(tmp_path / "missing.txt")


# ---------------------------------------------------------------- synthetic two-view scene


def _render_ridge_pair(tmp_path: Path) -> tuple[Scene, np.ndarray, np.ndarray]:
    """A photo pasted on a ridge (two planes meeting at x = 0, 5 m away, pointing at camera 1),
    seen by camera 1 and by camera 2 = (R, t). Returns the scene with the true pair and a pair
    whose rotation is wrong by 10 degrees."""
    K = np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]])
    R, t = rot_y(-6.0), np.array([0.6, 0.05, 0.1])
    alpha, depth = math.radians(25), 5.0
    image1 = cv2.resize(cv2.imread(str(EXAMPLE_FILES[0])), (640, 480), interpolation=cv2.INTER_AREA)
    inv = []
    for sign in (-1.0, 1.0):  # x < 0: plane A, x >= 0: plane B
        n = np.array([sign * math.sin(alpha), 0.0, math.cos(alpha)])
        H = K @ (R + np.outer(t, n) / (n @ [0, 0, depth])) @ np.linalg.inv(K)  # image 1 -> image 2
        inv.append(np.linalg.inv(H))
    v, u = np.mgrid[0:480, 0:640].astype(np.float64)
    grid = np.stack([u, v, np.ones_like(u)], axis=-1)
    src = [grid @ Hi.T for Hi in inv]
    src = [s[..., :2] / s[..., 2:] for s in src]
    use_a = src[0][..., 0] < 319.5  # the source pixel lies left of the ridge line (x = 0)
    maps = np.where(use_a[..., None], src[0], src[1]).astype(np.float32)
    image2 = cv2.remap(image1, maps[..., 0], maps[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    cv2.imwrite(str(tmp_path / "view1.png"), image1)
    cv2.imwrite(str(tmp_path / "view2.png"), image2)
    true = CameraPair("view1.png", "view2.png", K, K, R, t)
    wrong = CameraPair("view1.png", "view2.png", K, K, rot_y(10) @ R, t)
    return Scene("ridge", tmp_path, [true, wrong], "synthetic"), R, t


def test_synthetic_two_view_scene_recovers_the_pose(tmp_path):
    scene, _, _ = _render_ridge_pair(tmp_path)
    results = evaluate_pairs([scene], ["sift", "rootsift", "hardnet"], max_keypoints=1000)
    for name, s in results.summary.items():
        true, wrong = (p["methods"][name] for p in results.scenes[0]["pairs"])
        assert true["pose_error"] < 1.0, name  # the known pose is found
        assert true["correct"] > 150 and true["inliers"] > 150, name
        assert 8.0 < wrong["pose_error"] < 12.0, name  # a 10-degree error in the truth shows
        assert wrong["correct"] < true["correct"] / 3, name
        assert s["overall"]["pairs"] == 2 and s["overall"]["failures"] == 0
    table = format_pose_table(results)
    assert "favour SIFT" in table and "hardnet - rootsift: AUC@5" in table
    assert set(results.differences) == {"sift", "hardnet"} and results.reference == "rootsift"
    # the JSON form keeps the keys (and their order) of the dict evaluate_pairs returned before
    assert list(results.to_dict()) == ["config", "thresholds", "baseline_edges", "summary", "reference",
                                       "differences", "timing", "scenes"]
    assert results.to_dict()["summary"] is results.summary


# ---------------------------------------------------------------- real photos, COLMAP model


@pytest.fixture(scope="module")
def et_model(tmp_path_factory) -> Path:
    """A SIFT reconstruction of the nine bundler-et photos by plain pycolmap (a few seconds)."""
    pycolmap = pytest.importorskip("pycolmap")
    out = tmp_path_factory.mktemp("et-sfm")
    db = out / "database.db"
    pycolmap.extract_features(db, ET_DIR)
    pycolmap.match_exhaustive(db)
    models = pycolmap.incremental_mapping(db, ET_DIR, out / "sparse")
    assert models and max(m.num_reg_images() for m in models.values()) >= 7
    (out / "summary.json").write_text(json.dumps({"image_dir": str(ET_DIR)}))
    return out


def test_real_scene_all_methods_sensible(et_model, tmp_path):
    scene = load_scene(et_model, min_covisible=50)
    assert len(scene.pairs) >= 12 and scene.image_dir == ET_DIR
    assert all(p.covisible >= 50 and p.size1 == (640, 480) and p.radial1[0] != 0 for p in scene.pairs)
    results = evaluate_pairs([scene], ["sift", "rootsift", "hardnet"])
    s = {name: v["overall"] for name, v in results.summary.items()}
    for name, v in s.items():
        assert v["auc@20"] > 0.4 and v["auc@5"] > 0.2, (name, v)
        assert v["correct"] > 60 and v["inliers"] > 60, (name, v)
    # not worse than SIFT beyond noise (24 pairs: one pair moves AUC@10 by about 0.04); here about level
    assert s["hardnet"]["auc@20"] > s["sift"]["auc@20"] - 0.1, s
    assert s["hardnet"]["auc@10"] > s["sift"]["auc@10"] - 0.15, s
    assert s["hardnet"]["correct"] > s["sift"]["correct"], s  # bundled weights: more correct matches
    edges = results.baseline_edges
    assert len(edges) == 2 and edges[0] < edges[1]
    assert sum(results.summary["sift"][g]["pairs"] for g in ("narrow", "medium", "wide")) == len(scene.pairs)
    # wide baselines are harder
    assert results.summary["sift"]["wide"]["auc@10"] < results.summary["sift"]["narrow"]["auc@10"]


def test_pairs_file_from_model_gives_the_same_results(et_model, tmp_path, capsys):
    json_path = tmp_path / "out.json"
    assert main(["eval-pairs", str(et_model), "--write-pairs", str(tmp_path / "pairs"), "--max-pairs", "6"]) == 0
    assert ": 6 pairs -> " in capsys.readouterr().out
    frozen = sorted((tmp_path / "pairs").glob("*.txt"))
    assert len(frozen) == 1 and len(read_camera_pairs(frozen[0])[0]) == 6
    from_model = evaluate_pairs(et_model, ["sift"], max_pairs=6)
    assert main(["eval-pairs", str(frozen[0]), "--methods", "sift", "--quiet", "--json", str(json_path)]) == 0
    printed = capsys.readouterr().out
    assert "AUC@10" in printed and "favour SIFT" in printed
    from_file = json.loads(json_path.read_text())
    errors = [[p["methods"]["sift"]["pose_error"] for p in r["scenes"][0]["pairs"]]
              for r in (from_model.to_dict(), from_file)]
    assert errors[0] == pytest.approx(errors[1], abs=1e-6)  # the text file keeps the cameras exactly enough
    # a model whose pairs all fall below --min-covisible: its file of no pairs could not be read back
    assert main(["eval-pairs", str(et_model), "--write-pairs", str(tmp_path / "none"), "--min-covisible",
                 "100000"]) == 0
    assert ": no pairs (--min-covisible 100000): not written" in capsys.readouterr().out
    assert not list((tmp_path / "none").glob("*.txt"))


def test_eval_pairs_errors(et_model, tmp_path, capsys):
    assert main(["eval-pairs", str(tmp_path / "nothing")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["eval-pairs", str(et_model.parent), "--scenes", "nope", "--methods", "sift"]) == 2
    assert "no scene(s) nope" in capsys.readouterr().err
    small = tmp_path / "small"
    small.mkdir()
    pair = load_scene(et_model).pairs[0]
    for name in (pair.image1, pair.image2):
        cv2.imwrite(str(small / name), cv2.resize(cv2.imread(str(ET_DIR / name)), (320, 240)))
    with pytest.raises(ValueError, match="is 320x240 but its camera is 640x480"):
        evaluate_pairs([Scene("small", small, [pair], "test")], ["sift"])



# ---------------------------------------------------------------- bad input, refused before any work


def _pairs_file(path: Path, n: int = 2, image_dir: Path | None = None) -> Path:
    return write_camera_pairs(path, [_pair()] * n, image_dir or path.parent)


def _refused(args: list[str], capsys) -> str:
    """The one error line of ``hardnet-desc eval-pairs ARGS`` (exit code 2)."""
    assert main(["eval-pairs", *map(str, args)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hardnet-desc eval-pairs: error: ") and err.count("\n") == 1, err
    return err


def test_eval_pairs_refuses_two_scenes_of_one_name(tmp_path, capsys):
    a1, a2 = _pairs_file(tmp_path / "d1" / "a.txt", 6), _pairs_file(tmp_path / "d2" / "a.txt", 3)
    err = _refused([a1, a2, "--write-pairs", tmp_path / "out"], capsys)
    assert "two scenes are named 'a'" in err and str(a1) in err and str(a2) in err
    assert not (tmp_path / "out").exists()  # nothing written (one file would have replaced the other)
    scenes = [Scene("a", tmp_path, [_pair()], "one"), Scene("a", tmp_path, [_pair()], "two")]
    with pytest.raises(ValueError, match="two scenes are named 'a': one and two"):  # one summary entry for both
        evaluate_pairs(scenes, {"never": None})


def test_eval_pairs_outputs_never_replace_an_input(tmp_path, capsys):
    source = _pairs_file(tmp_path / "wp" / "a.txt", 4)
    before = source.read_bytes()
    assert "is the input" in _refused([source, "--write-pairs", tmp_path / "wp", "--max-pairs", "2"], capsys)
    assert "is the input" in _refused([source, "--json", source, "--force"], capsys)
    assert source.read_bytes() == before


def test_eval_pairs_checks_every_scene_s_images_first(tmp_path):
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(tmp_path / name), np.zeros((48, 64, 3), np.uint8))
    broken = CameraPair("a.png", "missing.png", _pair().K1, _pair().K2, _pair().R, _pair().t)
    scenes = [Scene("fine", tmp_path, [_pair()], "one"), Scene("broken", tmp_path, [broken], "two")]

    def describe(image, kps):
        raise AssertionError("the first scene was described before the second's images were checked")

    with pytest.raises(FileNotFoundError, match="scene broken: 1 image.*missing.png"):
        evaluate_pairs(scenes, {"x": describe})


def test_eval_pairs_bounds_ransac_px_and_threads(tmp_path, capsys):
    source = _pairs_file(tmp_path / "a.txt")
    for value in ("inf", "nan", "0"):
        assert "--ransac-px must be a finite number > 0" in _refused([source, "--ransac-px", value], capsys)
    assert "--threads must be 1..1024, got 100000" in _refused([source, "--threads", "100000"], capsys)
    with pytest.raises(ValueError, match="ransac_px must be a finite number > 0, got inf"):
        evaluate_pairs([Scene("a", tmp_path, [_pair()], "test")], {"never": None}, ransac_px=math.inf)


def test_eval_pairs_refuses_no_pairs(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    for text in ("", "# image_dir: .\n# a comment\n\n"):
        empty.write_text(text)
        assert f"{empty}: no pairs in it" in _refused([empty, "--methods", "sift"], capsys)
    with pytest.raises(ValueError, match="no pairs to evaluate in test"):  # a model with no covisible pairs
        evaluate_pairs([Scene("a", tmp_path, [], "test")], {"never": None})


def test_a_camera_turned_in_place_scores_its_matches_by_the_rotation_homography():
    """t = 0 made F the zero matrix: every Sampson error inf and no match correct, however exact."""
    from hardnet_desc.evaluation.poses import pair_pose_metrics

    K = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    R = cv2.Rodrigues(np.array([0.0, 0.1, 0.02]))[0]
    pair = CameraPair("a.jpg", "b.jpg", K.ravel().tolist(), K.ravel().tolist(), R.ravel().tolist(), [0.0, 0.0, 0.0])
    p1 = np.random.default_rng(0).uniform([0, 0], [640, 480], (60, 2))
    p2 = cv2.perspectiveTransform(p1[None], K @ R @ np.linalg.inv(K))[0]
    p2[:10] += 5.0  # ten wrong matches
    assert pair_pose_metrics(p1, p2, pair)["correct"] == 50
    with pytest.raises(ValueError, match="ransac_px must be a finite number > 0, got 0"):
        pair_pose_metrics(p1, p2, pair, ransac_px=0)


def test_scenes_that_name_no_source_are_refused(tmp_path, capsys):
    """--scenes zzz with a single pairs file was ignored: the scene was evaluated all the same."""
    source = _pairs_file(tmp_path / "a.txt")
    assert "no scenes to evaluate: none of zzz is among the sources" in _refused(
        [source, "--scenes", "zzz", "--methods", "sift"], capsys)
