"""No command replaces a file it did not write unless ``--force``, and writes replace atomically.

Each writing command: a file another program left where it writes is kept byte for byte (exit 2, one
error line naming the file and ``--force``) and nothing is computed; ``--force`` replaces it; a file of
its own is replaced on a rerun as before. ``merge_parts`` is covered in test_parallel.py.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from hardnet_desc.cli import main
from hardnet_desc.data.camera_pairs import CameraPair, read_camera_pairs, write_camera_pairs
from hardnet_desc.evaluation.sequences import save_json
from hardnet_desc.integrations.onnx import read_onnx_metadata
from hardnet_desc.outputs import check_output, json_is_ours, replacing, write_json
from hardnet_desc.core.weights import save_weights

from conftest import EXAMPLE_FILES, make_hardnet
from test_evaluation import small_photo

FOREIGN = b"another program's file\n"


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    return str(save_weights(make_hardnet(), tmp_path_factory.mktemp("w") / "net.safetensors", {"patch_scale": 6.0}))


def refused(capsys, code: int, path) -> None:
    """Exit 2 with one error line that names ``path`` and ``--force``; ``path`` still holds ``FOREIGN``."""
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "\n" not in err and str(path) in err and "not written by hardnet-desc" in err and "--force" in err, err
    assert path.read_bytes() == FOREIGN


# --- the helper ---------------------------------------------------------------------------------
def test_check_output_and_write_json(tmp_path):
    theirs = tmp_path / "r.json"
    theirs.write_bytes(FOREIGN)
    with pytest.raises(FileExistsError, match="r.json exists and was not written by hardnet-desc; pass --force"):
        write_json(theirs, {"a": 1})
    assert theirs.read_bytes() == FOREIGN
    (tmp_path / "other.json").write_text('{"a": 1}')  # JSON, but not marked as ours
    with pytest.raises(FileExistsError):
        check_output(tmp_path / "other.json", json_is_ours)
    write_json(theirs, {"a": 1}, force=True)
    assert json.loads(theirs.read_text()) == {"written_by": "hardnet-desc", "a": 1}
    write_json(theirs, {"a": 2})  # ours now: replaced without force
    assert json.loads(theirs.read_text())["a"] == 2
    with pytest.raises(ValueError, match="is a folder"):
        check_output(tmp_path, json_is_ours, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.json", "r.json"]  # no temporary file left


def test_an_interrupted_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with replacing(path) as tmp:
            tmp.write_bytes(b"half of the ne")
            raise KeyboardInterrupt
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["out.bin"]
    with replacing(path) as tmp:
        assert tmp.parent == path.parent and tmp.suffix == ".bin" and tmp != path
        tmp.write_bytes(b"new")
    assert path.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["out.bin"]


# --- each command -------------------------------------------------------------------------------
def test_export_onnx_keeps_a_foreign_model(weights, tmp_path, capsys):
    out = tmp_path / "user.onnx"
    out.write_bytes(FOREIGN)
    refused(capsys, main(["export-onnx", str(out), "--weights", weights]), out)
    assert main(["export-onnx", str(out), "--weights", weights, "--force"]) == 0
    assert read_onnx_metadata(out)["weights"] == weights
    first = out.stat().st_mtime_ns
    assert main(["export-onnx", str(out), "--weights", weights, "--opset", "18"]) == 0  # its own: replaced
    assert out.stat().st_mtime_ns >= first and "opset 18" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["user.onnx"]


@pytest.fixture(scope="module")
def sequence(tmp_path_factory):
    root = tmp_path_factory.mktemp("seq")
    (root / "photos").mkdir()
    cv2.imwrite(str(root / "photos" / "photo.png"), small_photo(1))
    assert main(["make-sequences", str(root / "photos"), str(root / "seqs"), "--n-images", "1", "--seed", "1",
                 "--no-illumination"]) == 0
    return root / "seqs" / "v_photo"


def test_eval_sequences_keeps_a_foreign_json_and_plot(sequence, tmp_path, capsys):
    argv = ["eval-sequences", str(sequence), "--methods", "sift", "--max-keypoints", "100", "--quiet"]
    out = tmp_path / "results.json"
    out.write_bytes(FOREIGN)
    refused(capsys, main([*argv, "--json", str(out)]), out)
    plot = tmp_path / "mma.png"
    plot.write_bytes(FOREIGN)
    refused(capsys, main([*argv, "--plot", str(plot)]), plot)
    assert main([*argv, "--json", str(out), "--plot", str(plot), "--force"]) == 0
    assert json.loads(out.read_text())["summary"]["sift"]["overall"]["pairs"] == 5 and cv2.imread(str(plot)) is not None
    assert main([*argv, "--json", str(out), "--plot", str(plot)]) == 0  # its own files: replaced
    assert json.loads(out.read_text())["written_by"] == "hardnet-desc"


@pytest.mark.parametrize("suffix", [".pdf", ".svg"])
def test_eval_sequences_plot_formats_are_marked_and_others_refused_first(sequence, tmp_path, capsys, suffix):
    """A .pdf or .svg plot carries the mark, so a rerun replaces it (it refused its own file); a format
    without a mark is refused before the evaluation runs."""
    argv = ["eval-sequences", str(sequence), "--methods", "sift", "--max-keypoints", "100", "--quiet"]
    plot = tmp_path / f"mma{suffix}"
    for _ in range(2):
        assert main([*argv, "--plot", str(plot)]) == 0, capsys.readouterr().err
    assert plot.read_bytes()[:5] == (b"%PDF-" if suffix == ".pdf" else b"<?xml")
    out = tmp_path / "results.json"
    assert main([*argv, "--json", str(out), "--plot", str(tmp_path / "mma.gif")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("mma.gif: the plot must be a .png, .pdf, .svg file"), err
    assert not out.exists() and not (tmp_path / "mma.gif").exists()


def test_outputs_that_cannot_be_written_fail_before_any_work(tmp_path, capsys):
    """--json into /proc or under a file failed after the work, with the picture already written ("[Errno 2] No such
    file or directory: '/proc/.x.f3277ebb.tmp.json'", "[Errno 17] File exists"); export-onnx likewise."""
    from conftest import EXAMPLE_FILES

    (tmp_path / "photo.jpg").write_bytes(b"")
    picture = tmp_path / "m.png"
    for target, message in (("/proc/x.json", "cannot write /proc/x.json: "),
                            (str(tmp_path / "photo.jpg" / "m.json"), "photo.jpg is a file, not a folder")):
        assert main(["match", *map(str, EXAMPLE_FILES), "--out", str(picture), "--json", target,
                     "--weights", "none.safetensors"]) == 2  # refused before the (missing) weights load
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and message in err, err
        assert not picture.exists()
    assert main(["export-onnx", "/proc/x.onnx"]) == 2
    assert "cannot write /proc/x.onnx" in capsys.readouterr().err


def test_eval_pairs_json_and_write_pairs(tmp_path):
    pair = CameraPair("a.jpg", "b.jpg", np.eye(3).ravel().tolist(), np.eye(3).ravel().tolist(),
                      np.eye(3).ravel().tolist(), [1.0, 0.0, 0.0])
    theirs = tmp_path / "scene.txt"
    theirs.write_bytes(FOREIGN)
    with pytest.raises(FileExistsError, match="scene.txt exists and was not written by hardnet-desc"):
        write_camera_pairs(theirs, [pair], tmp_path)
    assert theirs.read_bytes() == FOREIGN
    write_camera_pairs(theirs, [pair], tmp_path, force=True)
    write_camera_pairs(theirs, [pair, pair], tmp_path)  # its own: replaced
    assert len(read_camera_pairs(theirs)[0]) == 2
    out = tmp_path / "poses.json"
    out.write_bytes(FOREIGN)
    with pytest.raises(FileExistsError):
        save_json({"auc": float("nan")}, out)
    assert out.read_bytes() == FOREIGN
    save_json({"auc": float("nan")}, out, force=True)
    assert json.loads(out.read_text())["auc"] is None


def test_eval_pairs_cli_refuses_before_any_work(tmp_path, capsys):
    out = tmp_path / "poses.json"
    out.write_bytes(FOREIGN)
    pairs = tmp_path / "pairs.txt"
    pair = CameraPair("sacre_coeur_1.jpg", "sacre_coeur_2.jpg", np.eye(3).ravel().tolist(),
                      np.eye(3).ravel().tolist(), np.eye(3).ravel().tolist(), [1.0, 0.0, 0.0])
    write_camera_pairs(pairs, [pair], EXAMPLE_FILES[0].parent)
    refused(capsys, main(["eval-pairs", str(pairs), "--methods", "sift", "--quiet", "--json", str(out)]), out)


MAKE = ["--points", "60", "--views", "2", "--val-fraction", "0.25", "--val-pairs", "100", "--workers", "1"]


def test_make_dataset_keeps_a_foreign_dataset(photo_crops, tmp_path, capsys):
    out = tmp_path / "data"
    out.mkdir()
    meta = out / "meta.json"
    meta.write_bytes(FOREIGN)
    refused(capsys, main(["make-dataset", str(photo_crops), str(out), *MAKE]), meta)
    assert sorted(p.name for p in out.iterdir()) == ["meta.json"]  # nothing written
    # another program's PhotoTour folder (no record of ours beside it) is not written into either
    meta.unlink()
    (out / "train").mkdir()
    info = out / "train" / "info.txt"
    info.write_bytes(FOREIGN)
    code = main(["make-dataset", str(photo_crops), str(out), *MAKE])
    assert code == 2 and "holds a PhotoTour dataset that hardnet-desc did not write" in capsys.readouterr().err
    assert info.read_bytes() == FOREIGN
    meta.write_bytes(FOREIGN)
    assert main(["make-dataset", str(photo_crops), str(out), *MAKE, "--force"]) == 0
    assert json.loads(meta.read_text())["views"] == 2 and info.read_bytes() != FOREIGN
    assert main(["make-dataset", str(photo_crops), str(out), *MAKE, "--views", "1"]) == 0  # its own: replaced
    assert json.loads(meta.read_text())["views"] == 1


TRAIN = ["--epochs", "1", "--pairs-per-epoch", "64", "--batch-size", "32", "--precision", "fp32", "--device", "cpu",
         "--quiet"]


def test_train_keeps_foreign_log_and_weights(photo_crops, tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["make-dataset", str(photo_crops), str(data), *MAKE]) == 0
    out = tmp_path / "run"
    out.mkdir()
    for name in ("log.csv", "hardnet.safetensors"):
        (out / name).write_bytes(FOREIGN)
    code = main(["train", str(data / "train"), str(out), *TRAIN])
    err = capsys.readouterr().err
    assert code == 2 and "log.csv exists and was not written by hardnet-desc; pass --force" in err, err
    assert all((out / n).read_bytes() == FOREIGN for n in ("log.csv", "hardnet.safetensors"))
    assert sorted(p.name for p in out.iterdir()) == ["hardnet.safetensors", "log.csv"]  # no checkpoint either
    (out / "log.csv").unlink()
    refused(capsys, main(["train", str(data / "train"), str(out), *TRAIN]), out / "hardnet.safetensors")
    assert main(["train", str(data / "train"), str(out), *TRAIN, "--force"]) == 0
    assert (out / "log.csv").read_text().startswith("epoch,step,")
    assert (out / "hardnet.safetensors").read_bytes() != FOREIGN
    # a rerun over its own log and weights (the checkpoint removed) replaces them as before
    (out / "checkpoint.pt").unlink()
    assert main(["train", str(data / "train"), str(out), *TRAIN, "--seed", "1"]) == 0
    assert json.loads((out / "model_card.json").read_text())["recipe"]["seed"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "hardnet.safetensors", "log.csv",
                                                      "model_card.json"]  # no temporary file left


def test_make_sequences_keeps_a_foreign_folder(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "photo.png"), small_photo(1))
    theirs = tmp_path / "seqs" / "v_photo" / "1.png"
    theirs.parent.mkdir(parents=True)
    theirs.write_bytes(FOREIGN)
    argv = ["make-sequences", str(photos), str(tmp_path / "seqs"), "--no-illumination"]
    code, err = main(argv), capsys.readouterr().err
    assert code == 2 and "v_photo exists and was not written by hardnet-desc" in err and "--force" in err, err
    assert theirs.read_bytes() == FOREIGN and [p.name for p in theirs.parent.iterdir()] == ["1.png"]
    assert not (tmp_path / "seqs" / "i_photo").exists()  # nothing written
    assert main([*argv, "--force"]) == 0 and cv2.imread(str(theirs)) is not None
    first = cv2.imread(str(theirs))
    assert main([*argv, "--seed", "3"]) == 0  # its own folder: rewritten
    assert np.array_equal(cv2.imread(str(theirs)), first)  # the reference image (1.png) is the photo
    assert sorted(p.name for p in theirs.parent.iterdir())[:3] == ["1.png", "2.png", "3.png"]
