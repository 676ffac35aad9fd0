"""The example scripts and notebooks run, with random weights and small settings.

Select them with ``-m slow`` or skip them with ``-m "not slow"``.
"""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import cv2
import nbformat
import pytest
import torch

from hardnet_desc import HardNetDescriptor
from hardnet_desc.core.model import HardNet
from hardnet_desc.viz import is_picture_ours
from hardnet_desc.core.weights import BUNDLED, save_weights

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
DATA = EXAMPLES / "data"


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    """Random weights: the examples must run before (and without) the shipped ones."""
    torch.manual_seed(0)
    return str(save_weights(HardNet(), tmp_path_factory.mktemp("weights") / "random.safetensors"))


def pythonpath() -> str:
    """This checkout first, so child processes test it rather than an installed copy."""
    return os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p)


def run_script(name: str, args: list[str], cwd: Path, monkeypatch) -> None:
    """Run examples/<name> in this process (saves importing torch again), as `python name args`."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", [name, *args])
    try:
        runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    except SystemExit as exit_info:
        assert exit_info.code in (None, 0), f"{name} exited with {exit_info.code}"


@pytest.mark.slow
def test_match_pair_runs_from_anywhere(weights, tmp_path):
    # A real process in another working directory: the bundled photos are found from the script.
    env = {**os.environ, "HARDNET_WEIGHTS": weights, "PYTHONPATH": pythonpath()}
    result = subprocess.run([sys.executable, str(EXAMPLES / "match_pair.py"), "--max-keypoints", "300"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert re.search(r"\d+ \+ \d+ keypoints, \d+ matches, \d+ inliers", result.stdout)
    assert cv2.imread(str(tmp_path / "matches.png")) is not None
    assert is_picture_ours(tmp_path / "matches.png")  # marked like the CLI's: `hardnet-desc match` may replace it


@pytest.mark.slow
def test_match_pair_keeps_a_foreign_picture(weights, tmp_path):
    picture = tmp_path / "matches.png"
    picture.write_bytes(b"a picture of the user's")
    env = {**os.environ, "HARDNET_WEIGHTS": weights, "PYTHONPATH": pythonpath()}
    args = [sys.executable, str(EXAMPLES / "match_pair.py"), "--max-keypoints", "100"]
    result = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "matches.png exists and was not written by hardnet-desc" in result.stderr
    assert picture.read_bytes() == b"a picture of the user's"
    result = subprocess.run([*args, "--force"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and is_picture_ours(picture)


def drop_in_rows(args: list[str], tmp_path, monkeypatch, capsys) -> dict[str, tuple[int, int, int]]:
    """The example's table: descriptor -> (keypoints, matches, inliers)."""
    run_script("opencv_drop_in.py", args, tmp_path, monkeypatch)
    rows = re.findall(r"^(SIFT|HardNet)\s+(\d+)\s+(\d+)\s+(\d+)$", capsys.readouterr().out, re.M)
    table = {name: tuple(int(v) for v in values) for name, *values in rows}
    assert set(table) == {"SIFT", "HardNet"}
    return table


@pytest.mark.slow
def test_opencv_drop_in(weights, tmp_path, monkeypatch, capsys):
    # Random weights (the example runs without the shipped ones): one line changes, so both rows see the
    # same keypoints, and even an untrained HardNet on real patches finds a good share of SIFT's inliers
    # (a descriptor of the wrong patches finds almost none).
    rows = drop_in_rows(["--weights", weights, "--max-keypoints", "300"], tmp_path, monkeypatch, capsys)
    (kp_sift, _, in_sift), (kp_hardnet, matches, in_hardnet) = rows["SIFT"], rows["HardNet"]
    assert kp_hardnet == kp_sift and 20 < in_sift
    assert in_sift / 2 < in_hardnet <= matches


@pytest.mark.slow
@pytest.mark.skipif(not BUNDLED, reason="this build ships no weights")
def test_opencv_drop_in_with_the_shipped_weights(tmp_path, monkeypatch, capsys):
    # What docs/benchmarks.md promises for the example's default settings: HardNet's inliers >= SIFT's.
    rows = drop_in_rows([], tmp_path, monkeypatch, capsys)
    assert rows["HardNet"][0] == rows["SIFT"][0] > 1000
    assert rows["HardNet"][2] >= rows["SIFT"][2] > 300


@pytest.mark.slow
def test_stitch_panorama(weights, tmp_path, monkeypatch, capsys):
    # Two overlapping crops of one photo: the homography is a pure shift of 300 px, so the
    # panorama must be the photo's size again (random weights match identical pixels well).
    image = cv2.imread(str(DATA / "sacre_coeur_1.jpg"))  # 800 x 520
    cv2.imwrite(str(tmp_path / "left.png"), image[:, :500])
    cv2.imwrite(str(tmp_path / "right.png"), image[:, 300:])
    run_script("stitch_panorama.py", ["left.png", "right.png", "--out", "pano.png", "--weights", weights,
                                      "--max-keypoints", "500"], tmp_path, monkeypatch)
    assert "wrote pano.png" in capsys.readouterr().out
    pano = cv2.imread(str(tmp_path / "pano.png"))
    assert abs(pano.shape[1] - 800) <= 3 and abs(pano.shape[0] - 520) <= 3
    # The canvas may start a pixel or two off; at the best shift the blended overlap matches the photo.
    overlap = image[10:-10, 320:480].astype(float)
    diffs = [abs(pano[10 + dy : 510 + dy, 320 + dx : 480 + dx] - overlap).mean() for dy in range(3) for dx in range(3)]
    assert min(diffs) < 3


@pytest.mark.slow
def test_train_on_your_photos(tmp_path):
    # A real process: make_dataset forks workers, which is safest from a fresh interpreter.
    args = [str(DATA), "--out", "run", "--points", "100", "--pairs-per-epoch", "64", "--batch-size", "32",
            "--precision", "fp32", "--device", "cpu"]
    result = subprocess.run([sys.executable, str(EXAMPLES / "train_on_your_photos.py"), *args], cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": pythonpath()}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"weights: {Path('run') / 'run' / 'hardnet.safetensors'}" in result.stdout
    weights = tmp_path / "run" / "run" / "hardnet.safetensors"
    assert HardNetDescriptor(weights, device="cpu").patch_scale == 6.0


def load_generator():
    return runpy.run_path(str(ROOT / "docs" / "scripts" / "make_notebooks.py"))


@pytest.mark.parametrize("name", ["01_quickstart.ipynb", "02_train_your_own.ipynb"])
def test_notebooks_match_their_generator(name):
    stored = nbformat.read(EXAMPLES / name, as_version=4)
    built = load_generator()["build"](name)
    assert [(c.cell_type, c.source) for c in stored.cells] == [(c.cell_type, c.source) for c in built.cells], (
        f"examples/{name} differs from docs/scripts/make_notebooks.py: edit the script and run it"
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", ["01_quickstart.ipynb", "02_train_your_own.ipynb"])
def test_notebook_executes(name, weights, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    # The kernel inherits these: tiny settings, random weights, scratch space, this checkout.
    monkeypatch.setenv("HARDNET_WEIGHTS", weights)
    monkeypatch.setenv("HARDNET_MAX_KEYPOINTS", "300")
    monkeypatch.setenv("HARDNET_TRAIN_STEPS", "8")
    monkeypatch.setenv("HARDNET_TRAIN_BATCH", "32")
    monkeypatch.setenv("HARDNET_TRAIN_POINTS", "100")
    monkeypatch.setenv("HARDNET_WORKDIR", str(tmp_path / "work"))
    monkeypatch.setenv("PYTHONPATH", pythonpath())
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(EXAMPLES)}}).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    if name.startswith("02"):
        assert (tmp_path / "work" / "run" / "hardnet.safetensors").is_file()
