"""The command line as a careful user and a careless one meet it: one default keypoint budget,
``--version``, match/extract outputs that never clobber other tools' files, incomplete sequences,
and one error line for every failure."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import torch

from hardnet_desc import HardNetDescriptor, __version__
from hardnet_desc.cli import build_parser, evaluate, main
from hardnet_desc.detection import DEFAULT_MAX_KEYPOINTS, detect_sift
from hardnet_desc.matching import match_descriptors
from hardnet_desc.core.model import HardNet
from hardnet_desc.viz import PICTURE_MARK
from hardnet_desc.core.weights import save_weights

DATA = Path(__file__).resolve().parents[1] / "examples" / "data"
IMG1, IMG2 = DATA / "sacre_coeur_1.jpg", DATA / "sacre_coeur_2.jpg"
SUBCOMMANDS = sorted(build_parser()._subparsers._group_actions[0].choices)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    torch.manual_seed(0)
    return str(save_weights(HardNet(), tmp_path_factory.mktemp("weights") / "random.safetensors"))


def _error(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"hardnet-desc {__version__}"



def test_help_leaves_the_handlers_imports_to_the_handlers():
    """Building every parser imports no module only a handler needs, so ``hardnet-desc --help`` stays fast."""
    heavy = ["hardnet_desc.pipeline", "hardnet_desc.viz", "hardnet_desc.evaluation", "hardnet_desc.integrations.hloc",
             "hardnet_desc.integrations.parallel", "hardnet_desc.integrations.colmap", "h5py", "matplotlib",
             "pycolmap", "ray", "onnxruntime", "kornia"]
    code = ("import sys\nfrom hardnet_desc.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            f"print([m for m in {heavy!r} if m in sys.modules])")
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "make-dataset" in result.stdout and result.stdout.strip().splitlines()[-1] == "[]", result.stdout

@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_has_no_escaped_percent(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    assert "%%" not in text and "%(" not in text
    if command == "eval-fpr95":
        assert "95% recall" in text


def test_one_default_keypoint_budget():
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices
    for command in ("match", "extract", "eval-sequences"):
        (action,) = [a for a in sub[command]._actions if a.dest == "max_keypoints"]
        assert action.default == DEFAULT_MAX_KEYPOINTS, command
        assert f"(default: {DEFAULT_MAX_KEYPOINTS})" in " ".join(sub[command].format_help().split())


def test_match_uses_ratio_and_mutual_check(weights, tmp_path, capsys):
    """The printed match count is that of mutual NN + ratio 0.8 on the same descriptors, and --ratio 1 keeps more."""
    out = tmp_path / "m.png"
    argv = ["match", str(IMG1), str(IMG2), "--weights", weights, "--max-keypoints", "300", "--device", "cpu",
            "--out", str(out)]
    assert main(argv) == 0
    printed = int(re.search(r"^matches:\s+(\d+)", capsys.readouterr().out, re.M).group(1))
    desc = HardNetDescriptor(weights, device="cpu")
    images = [cv2.imread(str(p)) for p in (IMG1, IMG2)]
    d = [desc.compute(image, detect_sift(image, 300))[1] for image in images]
    assert printed == len(match_descriptors(d[0], d[1], ratio=0.8, mutual=True)) > 20
    assert printed < len(match_descriptors(d[0], d[1], ratio=None, mutual=True))
    assert main([*argv, "--ratio", "1"]) == 0  # overwrites its own picture
    loose = int(re.search(r"^matches:\s+(\d+)", capsys.readouterr().out, re.M).group(1))
    assert printed < loose == len(match_descriptors(d[0], d[1], ratio=1.0, mutual=True))
    assert PICTURE_MARK in out.read_bytes()


def test_match_reads_and_draws_a_file_whose_name_is_not_utf8(tmp_path):
    # OpenCV's imread and putText crashed (a segfault) on such a name: run in a subprocess, so a crash fails this test
    # only. The picture's banner shows the name with "?" for what its font cannot draw.
    name = os.fsdecode(b"caf\xe9.jpg")  # Latin-1 bytes, kept by Python as a surrogate
    try:
        shutil.copy(IMG1, tmp_path / name)
    except (OSError, UnicodeError):
        pytest.skip("this file system takes UTF-8 names only")
    out = tmp_path / "m.png"
    result = subprocess.run([sys.executable, "-m", "hardnet_desc", "match", name, str(IMG2), "--max-keypoints", "300",
                             "--device", "cpu", "--out", str(out)], cwd=tmp_path, capture_output=True, text=True,
                            errors="replace", timeout=300)
    assert result.returncode == 0, result.stderr[-800:]
    assert int(re.search(r"^inliers:\s+(\d+)", result.stdout, re.M).group(1)) > 20
    assert cv2.imread(str(out)).shape[1] > 800


def test_match_out_is_checked_before_any_work(tmp_path, capsys):
    """An unwritable folder or another program's file fails first: before the (missing) weights load."""
    missing_weights = str(tmp_path / "none.safetensors")
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    folder = read_only if os.geteuid() != 0 else Path("/sys")  # root ignores permission bits; /sys is read-only
    assert main(["match", str(IMG1), str(IMG2), "--weights", missing_weights, "--out", str(folder / "m.png")]) == 2
    assert "permission denied" in _error(capsys)

    theirs = tmp_path / "photo.png"
    cv2.imwrite(str(theirs), np.zeros((8, 8), np.uint8))
    before = theirs.read_bytes()
    assert main(["match", str(IMG1), str(IMG2), "--weights", missing_weights, "--out", str(theirs)]) == 2
    assert "exists and was not written by hardnet-desc; pass --force" in _error(capsys)
    assert theirs.read_bytes() == before
    assert main(["match", str(IMG1), str(IMG2), "--weights", missing_weights, "--out", str(tmp_path / "m.tif")]) == 2
    assert "must be a .png, .jpg, .jpeg file" in _error(capsys)


def test_match_force_overwrites(weights, tmp_path, capsys):
    theirs = tmp_path / "photo.jpg"
    cv2.imwrite(str(theirs), np.zeros((8, 8, 3), np.uint8))
    assert main(["match", str(IMG1), str(IMG2), "--weights", weights, "--max-keypoints", "100", "--device", "cpu",
                 "--out", str(theirs), "--force"]) == 0
    assert PICTURE_MARK in theirs.read_bytes() and cv2.imread(str(theirs)).shape[0] > 600


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(IMG1, folder / "a.jpg")
    shutil.copy(IMG2, folder / "b.jpg")
    shutil.copy(IMG1, folder / "c.jpg")
    return folder


def _extract(images, out, weights, *extra):
    return main(["extract", str(images), "--out", str(out), "--weights", weights, "--device", "cpu", "--quiet",
                 "--max-keypoints", "100", *extra])


def test_extract_refuses_other_tools_files(images, weights, tmp_path, capsys):
    out = tmp_path / "theirs.h5"
    with h5py.File(out, "w") as f:
        f.create_dataset("a.jpg/keypoints", data=np.zeros((3, 2), np.float32))
    assert _extract(images, out, weights) == 2
    assert "theirs.h5 exists and was not written by hardnet-desc; pass --force" in _error(capsys)
    with h5py.File(out, "r") as f:
        assert list(f["a.jpg"]) == ["keypoints"]  # untouched
    empty = tmp_path / "empty.h5"
    h5py.File(empty, "w").close()  # an empty HDF5 file is fine
    assert _extract(images, empty, weights) == 0


def test_extract_refuses_another_keypoint_budget(images, weights, tmp_path, capsys):
    out = tmp_path / "f.h5"
    (images / "c.jpg").rename(tmp_path / "c.jpg")
    assert _extract(images, out, weights) == 0
    with h5py.File(out, "r") as f:
        assert f.attrs["max_keypoints"] == 100
    (tmp_path / "c.jpg").rename(images / "c.jpg")
    assert _extract(images, out, weights, "--max-keypoints", "50") == 2
    assert "was extracted with --max-keypoints 100" in _error(capsys)
    assert _extract(images, out, weights) == 0  # the same budget appends
    assert "1 images extracted, 2 already in" in capsys.readouterr().out


def test_extract_progress_moves_per_image(images, weights, tmp_path, monkeypatch):
    import tqdm

    updates = []
    original = tqdm.tqdm.update
    monkeypatch.setattr(tqdm.tqdm, "update", lambda self, n=1: (updates.append(n), original(self, n))[1])
    assert main(["extract", str(images), "--out", str(tmp_path / "f.h5"), "--weights", weights, "--device", "cpu",
                 "--max-keypoints", "50", "--batch-images", "8"]) == 0
    assert updates == [1, 1, 1]


def test_unexpected_errors_are_one_line_too(monkeypatch, capsys):
    def boom(args):
        raise RuntimeError("something broke\ndeep inside")

    monkeypatch.setattr(evaluate, "run_make_sequences", boom)
    assert main(["make-sequences", "in", "out"]) == 1
    assert _error(capsys) == "hardnet-desc make-sequences: error: RuntimeError: something broke deep inside"
    monkeypatch.setenv("HARDNET_DESC_DEBUG", "1")
    with pytest.raises(RuntimeError):
        main(["make-sequences", "in", "out"])


def test_eval_sequences_skips_incomplete_sequences(weights, tmp_path, capsys):
    from test_evaluation import small_photo, write_sequence

    image = small_photo()
    write_sequence(tmp_path / "v_ok", image, [np.eye(3)])
    write_sequence(tmp_path / "v_only_reference", image, [])
    argv = ["eval-sequences", str(tmp_path), "--methods", "sift", "--max-keypoints", "100", "--quiet"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "overall: 1 sequences, 1 pairs" in captured.out
    assert captured.err.strip().startswith("hardnet-desc eval-sequences: warning: skipped sequence v_only_reference:")
    assert main([*argv, "--strict"]) == 2
    assert "only the reference image" in _error(capsys)
