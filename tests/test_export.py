"""ONNX export: ONNX Runtime and OpenCV's DNN module give the torch descriptors, on real patches."""

from __future__ import annotations

import json
import re
import runpy
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import make_hardnet

from hardnet_desc import HardNetDescriptor
from hardnet_desc.cli import main
from hardnet_desc.core.patches import PatchSpec
from hardnet_desc.integrations.onnx import export_onnx, is_onnx_ours, read_onnx_metadata
from hardnet_desc.core.image import to_grey_tensor
from hardnet_desc.core.patches import extract_patches
from hardnet_desc.core.weights import save_weights

ort = pytest.importorskip("onnxruntime")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> Path:
    return save_weights(make_hardnet(), tmp_path_factory.mktemp("w") / "net.safetensors", {"patch_scale": 5.0, "min_kp_size": 3.0})


@pytest.fixture(scope="module")
def model(weights_file, tmp_path_factory) -> Path:
    return export_onnx(tmp_path_factory.mktemp("onnx") / "hardnet.onnx", weights_file)


@pytest.fixture(scope="module")
def patches_and_reference(weights_file, example_pair):
    """Real patches of both bundled photos (uint8-range values, odd batch size) and torch's descriptors."""
    hardnet = HardNetDescriptor(weights_file, device="cpu", precision="fp32")  # the ONNX graph is fp32
    patches = torch.cat([
        extract_patches(to_grey_tensor(im), cv2.SIFT_create(nfeatures=150).detect(im, None), patch_scale=5.0)
        for im in example_pair
    ]) * 255.0
    return patches.numpy(), hardnet.describe_patches(patches.numpy())


@pytest.mark.parametrize("opset", [13, 17, 21])
def test_onnxruntime_matches_torch(weights_file, patches_and_reference, tmp_path, opset):
    patches, reference = patches_and_reference
    path = export_onnx(tmp_path / "h.onnx", weights_file, opset=opset)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.shape for i in session.get_inputs()] == [["N", 1, 32, 32]]
    for batch in (patches, patches[:1], patches[:37]):  # the batch axis is dynamic
        out = session.run(["descriptors"], {"patches": batch})[0]
        assert out.shape == (len(batch), 128) and out.dtype == np.float32
        assert np.abs(out - reference[: len(batch)]).max() < 1e-4


def test_opencv_dnn_matches_torch(model, patches_and_reference):
    patches, reference = patches_and_reference
    net = cv2.dnn.readNetFromONNX(str(model))
    for batch in (patches, patches[:5]):
        net.setInput(batch)
        out = net.forward()
        assert out.shape == (len(batch), 128)
        assert np.abs(out - reference[: len(batch)]).max() < 1e-4


def test_metadata_names_weights_and_patch_scale(model, weights_file):
    meta = read_onnx_metadata(model)
    hardnet = HardNetDescriptor(weights_file, device="cpu")
    assert meta["weights"] == str(weights_file)
    assert meta["weights_sha256"] == hardnet.weights.fingerprint
    assert float(meta["patch_scale"]) == 5.0 and float(meta["min_kp_size"]) == 3.0
    assert (meta["patch_scale"], meta["min_kp_size"]) == ("5.0", "3.0")  # as the files have always spelled them
    assert PatchSpec.from_metadata(meta, source=str(model)) == hardnet.patch_spec == PatchSpec(5.0, 3.0)
    assert json.loads(meta["output"]) == {"name": "descriptors", "shape": ["N", 128], "dtype": "float32"}


def test_bad_opset_and_weights_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="opset must be in 13..21"):
        export_onnx(tmp_path / "x.onnx", opset=11)
    assert main(["export-onnx", str(tmp_path / "y.onnx"), "--weights", str(tmp_path / "missing.pth")]) == 2
    assert not (tmp_path / "y.onnx").exists()


def test_export_leaves_the_module_s_mode_and_tells_other_files_apart(tmp_path):
    """Exporting a module in training switched it to eval mode; is_onnx_ours stopped in protobuf's DecodeError
    on a file that is not ONNX."""
    net = make_hardnet().train()
    path = export_onnx(tmp_path / "m.onnx", net)
    assert net.training and is_onnx_ours(path)
    (tmp_path / "notes.txt").write_text("not a model")
    assert not is_onnx_ours(tmp_path / "notes.txt")


def test_cli_export_with_bundled_weights(tmp_path, capsys, example_image):
    out = tmp_path / "sub" / "hardnet.onnx"
    assert main(["export-onnx", str(out), "--opset", "18"]) == 0
    assert re.search(r"opset 18, weights hardnet-desc-v\d+, patch_scale 6\.0, min_kp_size \d", capsys.readouterr().out)
    hardnet = HardNetDescriptor(device="cpu", precision="fp32")
    kps = cv2.SIFT_create(nfeatures=100).detect(example_image, None)
    net = cv2.dnn.readNetFromONNX(str(out))
    example = runpy.run_path(str(ROOT / "examples" / "onnx_opencv_dnn.py"))
    settings = example["model_settings"](out)  # what the example cuts with, read without the onnx package
    assert settings == read_onnx_metadata(out)
    geometry = (float(settings["patch_scale"]), float(settings["min_kp_size"]))
    assert geometry == (hardnet.patch_scale, hardnet.min_kp_size)
    grey = cv2.cvtColor(example_image, cv2.COLOR_BGR2GRAY).astype(np.float32) / 255.0
    net.setInput(example["cut_patches"](grey, kps, hardnet.patch_scale, hardnet.min_kp_size))
    # OpenCV-only patches (warpAffine on a pyrDown pyramid) + cv2.dnn vs the library: measured max 1.2e-5
    assert np.abs(net.forward() - hardnet.compute(example_image, kps)[1]).max() < 1e-3


@pytest.mark.slow
def test_opencv_only_example_matches_the_pair(model, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["onnx_opencv_dnn.py", str(model), "--patch-scale", "5", "--max-keypoints", "500"])
    runpy.run_path(str(ROOT / "examples" / "onnx_opencv_dnn.py"), run_name="__main__")
    found = re.search(r"keypoints: (\d+) \+ (\d+), matches: (\d+), inliers: (\d+)", capsys.readouterr().out)
    assert found and int(found[1]) >= 450 and int(found[4]) > 0


def test_a_full_disk_names_the_model_and_keeps_the_old_one(tmp_path, monkeypatch, capsys):
    import onnx

    out = tmp_path / "hardnet.onnx"
    assert main(["export-onnx", str(out)]) == 0
    before = out.read_bytes()

    def full_disk(model, path, *args, **kwargs):
        Path(path).write_bytes(b"half a model")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(onnx, "save", full_disk)
    capsys.readouterr()
    assert main(["export-onnx", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cannot write {out}: No space left on device" in err[0], err  # it named no file
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["hardnet.onnx"]
