"""The `match` and `extract` commands (and `--help` of every command), with random weights."""

from __future__ import annotations

import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import torch

from hardnet_desc import HardNetDescriptor
from hardnet_desc.cli import build_parser, main
from hardnet_desc.integrations.hloc import FEATURE_KEYS, read_features
from hardnet_desc.core.model import HardNet
from hardnet_desc.viz import draw_matches
from hardnet_desc.core.weights import load_hardnet, save_weights

DATA = Path(__file__).resolve().parents[1] / "examples" / "data"
IMG1, IMG2 = DATA / "sacre_coeur_1.jpg", DATA / "sacre_coeur_2.jpg"


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    """A random-weights file, so the tests do not depend on the shipped weights."""
    torch.manual_seed(0)
    return str(save_weights(HardNet(), tmp_path_factory.mktemp("weights") / "random.safetensors"))


@pytest.fixture
def images(tmp_path) -> Path:
    """A folder with the bundled pair, one of them in a subfolder."""
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(IMG1, folder / "a.jpg")
    shutil.copy(IMG2, folder / "sub" / "b.jpg")
    return folder


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# --- help ---------------------------------------------------------------------------------------
SUBCOMMANDS = sorted(build_parser()._subparsers._group_actions[0].choices)


@pytest.mark.parametrize("command", [None, *SUBCOMMANDS])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"] if command is None else [command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: hardnet-desc{'' if command is None else ' ' + command}")
    if command is None:
        assert {"match", "extract"} <= set(SUBCOMMANDS)


# --- match --------------------------------------------------------------------------------------
@pytest.mark.parametrize("geometry", ["fundamental", "homography"])
def test_match_writes_picture_and_prints_counts(geometry, weights, tmp_path, capsys):
    out = tmp_path / "matches.png"
    code = main(["match", str(IMG1), str(IMG2), "--out", str(out), "--weights", weights,
                 "--max-keypoints", "300", "--device", "cpu", "--geometry", geometry])
    assert code == 0
    text = capsys.readouterr().out
    counts = {k: int(v) for k, v in re.findall(r"^(keypoints|matches|inliers):\s+(\d+)", text, re.M)}
    assert counts["keypoints"] == 300
    assert 0 < counts["inliers"] <= counts["matches"] <= 300
    assert f"({geometry}" in text
    picture = cv2.imread(str(out))
    assert picture is not None and picture.ndim == 3
    assert picture.shape[0] > 600  # banner + 600 px of images
    assert picture.shape[1] > 600 * (800 / 520 + 592 / 800) - 1  # both images side by side


def test_match_verbose_shows_the_chosen_precision(tmp_path, capsys):
    from hardnet_desc import HardNetDescriptor
    from hardnet_desc.core.device import choose_precision

    args = ["match", str(IMG1), str(IMG2), "--out", str(tmp_path / "m.png"), "--max-keypoints", "200", "--device", "cpu"]
    assert main([*args, "--verbose"]) == 0
    chosen = HardNetDescriptor(device="cpu").precision  # auto for the bundled weights (calibrated): int8 on x86
    assert chosen == choose_precision("auto", torch.device("cpu"), inference=True, int8_calibrated=True)
    assert f"precision='{chosen}'" in capsys.readouterr().err
    assert main([*args, "-v", "--precision", "int8"]) == 0  # bundled weights: calibrated for int8
    assert "precision='int8'" in capsys.readouterr().err
    assert main(args) == 0 and "descriptor:" not in capsys.readouterr().err


def test_match_bad_paths_exit_2(weights, tmp_path, capsys):
    out = ["--out", str(tmp_path / "m.png")]  # never the working directory's matches.png
    assert main(["match", str(tmp_path / "missing.jpg"), str(IMG2), "--weights", weights, *out]) == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "missing.jpg" in err[0] and err[0].startswith("hardnet-desc match: error:")

    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"not an image")
    assert main(["match", str(IMG1), str(corrupt), "--weights", weights, *out]) == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "corrupt.jpg" in err[0]

    assert main(["match", str(IMG1), str(IMG2), "--weights", str(tmp_path / "none.safetensors"), *out]) == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "none.safetensors" in err[0]

    out = tmp_path / "no" / "such" / "folder" / "m.png"
    assert main(["match", str(IMG1), str(IMG2), "--weights", weights, "--max-keypoints", "50", "--out", str(out)]) == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "m.png" in err[0]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_the_cli_keeps_freed_memory_with_glibc():
    # `match` and `extract` set glibc's thresholds (in a fresh interpreter: not this one), and the C library takes them.
    code = "from hardnet_desc.cli.options import keep_freed_memory as k; print(k())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr


def test_draw_matches_shapes():
    grey = np.zeros((100, 50), np.uint8)
    colour = np.zeros((40, 80, 3), np.uint8)
    pts = np.array([[10.0, 20.0], [30.0, 5.0]])
    picture = draw_matches(grey, colour, pts, pts, ["two lines", "of text"], height=200)
    assert picture.dtype == np.uint8 and picture.shape[2] == 3
    assert picture.shape[1] == 100 + 4 + 400  # both scaled to height 200, plus a 4 px gap
    assert draw_matches(grey, colour, np.empty((0, 2)), np.empty((0, 2))).shape[0] == 600  # no banner
    with pytest.raises(ValueError):
        draw_matches(grey, colour, pts, pts[:1])
    # a 2-pixel-high strip was scaled to 600 high: a picture 1.2 million pixels wide that no PNG could hold
    strip = np.full((2, 4000, 3), 200, np.uint8)
    picture = draw_matches(grey, strip, pts, pts / 10, height=600)
    assert picture.shape == (600, 300 + 10 + 8 * 600, 3)
    assert (picture[0:2, 320:4000] == 150).mean() > 0.9 and (picture[300:, 310:] == 255).all()  # at the top
    assert cv2.imencode(".png", picture)[0]


# --- extract ------------------------------------------------------------------------------------
def test_extract_records_the_descriptors_min_kp_size(weights, tmp_path):
    # The file records the min_kp_size the patches were cut with: the descriptor's (here set apart from
    # the weights' 0), so a resume with the weights' own value (other patches) is refused.
    from hardnet_desc.integrations.hloc import extract_folder

    folder = tmp_path / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), cv2.imread(str(IMG1))[:200, :300])
    out = tmp_path / "feats.h5"
    clamped = HardNetDescriptor(weights, device="cpu", precision="fp32", min_kp_size=5.0)
    assert clamped.weights.min_kp_size == 0.0
    extract_folder(folder, out, clamped, max_keypoints=50, progress=False)
    with h5py.File(out, "r") as f:
        assert float(f.attrs["min_kp_size"]) == 5.0
    with pytest.raises(ValueError, match="min_kp_size 5.0"):
        extract_folder(folder, out, HardNetDescriptor(weights, device="cpu", precision="fp32"), max_keypoints=50,
                       progress=False)
    extract_folder(folder, out, clamped, max_keypoints=50, progress=False)  # the same settings: resumed


def extract(images: Path, out: Path, weights: str, *extra: str) -> int:
    return main(["extract", str(images), "--out", str(out), "--weights", weights, "--max-keypoints", "200",
                 "--batch-images", "2", "--device", "cpu", "--quiet", *extra])


def test_extract_layout_matches_hloc_and_compute(images, weights, tmp_path, capsys):
    out = tmp_path / "feats.h5"
    assert extract(images, out, weights, "--precision", "fp32") == 0  # fp32: compared with compute() below
    assert "2 images extracted" in capsys.readouterr().out
    hardnet = HardNetDescriptor(weights, device="cpu", precision="fp32")
    with h5py.File(out, "r") as f:
        assert set(f) == {"a.jpg", "sub"} and set(f["sub"]) == {"b.jpg"}
        assert f.attrs["patch_scale"] == hardnet.patch_scale
    for name, path in (("a.jpg", IMG1), ("sub/b.jpg", IMG2)):
        feats = read_features(out, name)
        assert set(feats) == set(FEATURE_KEYS)
        n = len(feats["keypoints"])
        assert 0 < n <= 200
        assert feats["keypoints"].shape == (n, 2) and feats["keypoints"].dtype == np.float32
        assert feats["descriptors"].shape == (128, n) and feats["descriptors"].dtype == np.float32
        for key in ("scores", "scales", "oris"):
            assert feats[key].shape == (n,) and feats[key].dtype == np.float32
        image = cv2.imread(str(path))
        np.testing.assert_array_equal(feats["image_size"], [image.shape[1], image.shape[0]])
        assert np.all(np.diff(feats["scores"]) <= 0)  # strongest first
        assert np.all((feats["oris"] >= 0) & (feats["oris"] < 2 * np.pi + 1e-6))
        # The stored descriptors are what HardNetDescriptor.compute gives for the stored keypoints.
        kps = [cv2.KeyPoint(float(x), float(y), float(s), float(np.rad2deg(o)))
               for (x, y), s, o in zip(feats["keypoints"], feats["scales"], feats["oris"])]
        _, desc = hardnet.compute(image, kps)
        np.testing.assert_allclose(feats["descriptors"].T, desc, atol=2e-5)


def test_extract_resumes(images, weights, tmp_path, capsys):
    out = tmp_path / "feats.h5"
    assert extract(images, out, weights) == 0
    first = read_features(out, "a.jpg")
    capsys.readouterr()
    assert extract(images, out, weights) == 0
    assert "0 images extracted, 2 already in" in capsys.readouterr().out
    shutil.copy(IMG2, images / "c.png")
    assert extract(images, out, weights) == 0
    assert "1 images extracted, 2 already in" in capsys.readouterr().out
    for key, value in read_features(out, "a.jpg").items():
        np.testing.assert_array_equal(value, first[key])
    with h5py.File(out, "a") as f:  # a half-written group (interrupted run) is redone
        del f["c.png/image_size"]
    assert extract(images, out, weights) == 0
    assert "1 images extracted, 2 already in" in capsys.readouterr().out


def test_extract_survives_a_corrupt_image(images, weights, tmp_path, capsys):
    (images / "sub" / "broken.jpg").write_bytes(b"\xff\xd8 this is no jpeg")
    out = tmp_path / "feats.h5"
    assert extract(images, out, weights) == 1
    captured = capsys.readouterr()
    err = error_lines(captured.err)
    assert len(err) == 1 and err[0].startswith("hardnet-desc extract: error: sub/broken.jpg:")
    assert "2 images extracted" in captured.out and "1 failed" in captured.out
    with h5py.File(out, "r") as f:
        assert "a.jpg" in f and "sub/b.jpg" in f and "sub/broken.jpg" not in f


def test_extract_bad_paths_exit_2(images, weights, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    cases = {"no such image folder": [str(tmp_path / "missing")], "no image files": [str(empty)]}
    for message, args in cases.items():
        assert main(["extract", *args, "--out", str(tmp_path / "f.h5"), "--weights", weights, "--quiet"]) == 2
        err = error_lines(capsys.readouterr().err)
        assert len(err) == 1 and message in err[0], err

    not_h5 = tmp_path / "not.h5"
    not_h5.write_text("plain text")
    assert extract(images, not_h5, weights) == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "not.h5" in err[0]

    # Features of other weights are not mixed into an existing file.
    out = tmp_path / "feats.h5"
    assert extract(images, out, weights) == 0
    torch.manual_seed(1)
    other = str(save_weights(HardNet(), tmp_path / "other.safetensors"))
    capsys.readouterr()
    assert extract(images, out, other) == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "other weights" in err[0]
    # the same tensors recorded with a minimum keypoint size cut other patches: refused too
    clamped = str(save_weights(load_hardnet(weights)[0], tmp_path / "clamped.safetensors", {"min_kp_size": "4"}))
    assert extract(images, out, clamped) == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "min_kp_size 0.0" in err[0]


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="Linux's /proc")
def test_ctrl_c_while_the_command_line_starts(tmp_path):
    """Ctrl-C while the parsers import torch (for their defaults) ends in one line and exit code 130; it printed a
    traceback of the import before."""
    proc = subprocess.Popen([sys.executable, "-m", "hardnet_desc", "extract", str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        maps = Path(f"/proc/{proc.pid}/maps")
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline and "libtorch" not in maps.read_text():
            time.sleep(0.005)  # torch's libraries are loaded first; its Python modules take most of a second more
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 130 and err.strip() == "hardnet-desc: interrupted", err
