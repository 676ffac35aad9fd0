"""Extraction with several workers (detecting processes feeding one describer, describing processes, a local Ray
instance) gives the single-process file."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import torch
from conftest import DATA_DIR, make_hardnet

from hardnet_desc import HardNetDescriptor
from hardnet_desc.cli import main
from hardnet_desc.integrations.hloc import FEATURE_KEYS, extract_folder, feature_names, file_attrs
from hardnet_desc.integrations.parallel import extract_parallel, merge_parts, parts_folder, start_shard
from hardnet_desc.core.weights import save_weights

NAMES = ["a.jpg", "c.png", "sub/b.jpg", "sub/d.jpg"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    return str(save_weights(make_hardnet(), tmp_path_factory.mktemp("w") / "net.safetensors", {"patch_scale": 6.0}))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Four photos (two in a subfolder) and one file that is not an image."""
    root = tmp_path_factory.mktemp("images")
    (root / "sub").mkdir()
    one, two = (cv2.imread(str(DATA_DIR / f"sacre_coeur_{i}.jpg")) for i in (1, 2))
    shutil.copy(DATA_DIR / "sacre_coeur_1.jpg", root / "a.jpg")
    shutil.copy(DATA_DIR / "sacre_coeur_2.jpg", root / "sub" / "b.jpg")
    cv2.imwrite(str(root / "c.png"), cv2.flip(one, 1))
    cv2.imwrite(str(root / "sub" / "d.jpg"), cv2.resize(two, None, fx=0.7, fy=0.7))
    (root / "broken.jpg").write_bytes(b"not a jpeg")
    return root


@pytest.fixture(scope="module")
def reference(folder, weights, tmp_path_factory):
    """The single-process file."""
    out = tmp_path_factory.mktemp("ref") / "features.h5"
    extract_folder(folder, out, HardNetDescriptor(weights, device="cpu", precision="fp32"), max_keypoints=300, progress=False)
    return out


def assert_same_file(path, reference, atol: float = 1e-5) -> None:
    with h5py.File(path, "r") as got, h5py.File(reference, "r") as ref:
        assert feature_names(got) == feature_names(ref) == set(NAMES)
        assert got.attrs["weights_sha256"] == ref.attrs["weights_sha256"]
        for name in NAMES:
            for key in FEATURE_KEYS:
                np.testing.assert_allclose(got[name][key][()], ref[name][key][()], atol=atol, rtol=0)


def test_processes_give_the_single_process_file(folder, weights, reference, tmp_path):
    out = tmp_path / "features.h5"
    errors = []
    report = extract_parallel(folder, out, weights, workers=2, device="cpu", max_keypoints=300, batch_images=1,
                              progress=False, on_error=lambda name, reason: errors.append(name))
    assert sorted(report.done) == NAMES and report.skipped == []
    assert [name for name, _ in report.failed] == errors == ["broken.jpg"]
    assert not parts_folder(out).exists()  # shards merged and removed
    assert_same_file(out, reference)


def test_resume_merges_left_shards_and_skips_done_images(folder, weights, reference, tmp_path):
    out = tmp_path / "features.h5"
    hardnet = HardNetDescriptor(weights, device="cpu", precision="fp32")
    extract_folder(folder, out, hardnet, max_keypoints=300, progress=False, names=["a.jpg"])
    # an interrupted parallel run: one finished shard, one empty shard of a worker that died at once
    attrs = file_attrs(hardnet, 300)
    extract_folder(folder, start_shard(out, attrs), hardnet, max_keypoints=300, progress=False, names=["sub/b.jpg"])
    start_shard(out, attrs)
    report = extract_parallel(folder, out, weights, workers=2, device="cpu", max_keypoints=300, progress=False)
    assert sorted(report.skipped) == ["a.jpg", "sub/b.jpg"] and sorted(report.done) == ["c.png", "sub/d.jpg"]
    assert_same_file(out, reference)
    again = extract_parallel(folder, out, weights, workers=2, device="cpu", max_keypoints=300, progress=False)
    assert again.done == [] and sorted(again.skipped) == NAMES


def test_other_weights_are_refused_before_any_work(folder, weights, reference, tmp_path):
    out = tmp_path / "features.h5"
    shutil.copy(reference, out)
    other = save_weights(make_hardnet(seed=1), tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="holds features from other weights"):
        extract_parallel(folder, out, other, workers=2, device="cpu")
    other_net = HardNetDescriptor(other, device="cpu", precision="fp32")
    extract_folder(folder, start_shard(out, file_attrs(other_net, 50)), other_net, max_keypoints=50, progress=False,
                   names=["a.jpg"])
    with pytest.raises(ValueError, match="holds features from other weights"):
        merge_parts(out)
    with pytest.raises(ValueError, match="backend must be one of"):
        extract_parallel(folder, out, weights, backend="dask")
    with pytest.raises(ValueError, match="workers must be >= 1"):
        extract_parallel(folder, out, weights, workers=0)


def test_detecting_workers_give_the_same_file(folder, weights, reference, tmp_path):
    """Two processes read and detect, this one describes: every dataset equal to the one-process file's."""
    out = tmp_path / "features.h5"
    hardnet = HardNetDescriptor(weights, device="cpu", precision="fp32")
    errors = []
    report = extract_folder(folder, out, hardnet, max_keypoints=300, workers=2, progress=False,
                            on_error=lambda name, reason: errors.append((name, reason)))
    assert report.done == NAMES and report.skipped == []  # in order
    assert report.failed == errors and [name for name, _ in errors] == ["broken.jpg"]
    assert "decode" in errors[0][1]  # the worker's one-line reason
    with h5py.File(out, "r") as got, h5py.File(reference, "r") as ref:
        assert dict(got.attrs) == dict(ref.attrs)
        for name in NAMES:
            for key in FEATURE_KEYS:
                np.testing.assert_array_equal(got[name][key][()], ref[name][key][()])


class SiftPlusOne:
    """SIFT, plus one keypoint that cannot be described (outside the image, or of size 0) in images
    of a given width."""

    def __init__(self, width: int, bad: cv2.KeyPoint) -> None:
        self.width, self.bad, self.sift = width, bad, cv2.SIFT_create()

    def detect(self, image, mask=None):
        kps = list(self.sift.detect(image, mask))
        return kps + [self.bad] if image.shape[1] == self.width else kps


@pytest.mark.parametrize("bad", [cv2.KeyPoint(-50.0, 10.0, 4.0, 0.0, 1e9), cv2.KeyPoint(20.0, 10.0, 0.0, 0.0, 1e9)],
                         ids=["outside", "size 0"])
def test_an_image_that_cannot_be_described_fails_alone(folder, weights, reference, tmp_path, bad):
    """One image of a batch fails; the others of its batch are described together and are written as
    they are alone: equal to the reference file and to compute() of each image, bit for bit (on the CPU
    an image's network batches are its own)."""
    width = cv2.imread(str(folder / "sub" / "d.jpg")).shape[1]  # the only image this wide
    hardnet = HardNetDescriptor(weights, device="cpu", precision="fp32", detector=SiftPlusOne(width, bad))
    report = extract_folder(folder, tmp_path / "f.h5", hardnet, max_keypoints=300, batch_images=8, progress=False)
    assert [name for name, _ in report.failed] == ["broken.jpg", "sub/d.jpg"]
    assert ("outside the" if bad.pt[0] < 0 else "size <= 0") in report.failed[1][1]
    assert report.done == ["a.jpg", "c.png", "sub/b.jpg"]
    plain = HardNetDescriptor(weights, device="cpu", precision="fp32")
    with h5py.File(tmp_path / "f.h5", "r") as got, h5py.File(reference, "r") as ref:
        assert "sub/d.jpg" not in got
        for name in report.done:
            for key in FEATURE_KEYS:
                np.testing.assert_array_equal(got[name][key][()], ref[name][key][()])
            image = cv2.imread(str(folder / name))
            _, desc = plain.compute(image, plain.detect(image, max_keypoints=300))
            np.testing.assert_array_equal(got[name]["descriptors"][()].T, desc)


def test_write_features_takes_keypoint_rows(tmp_path):
    """Keypoint rows (as the detecting workers send them) give the datasets of the cv2.KeyPoint list."""
    from hardnet_desc.integrations.hloc import keypoint_rows, read_features, write_features

    image = cv2.imread(str(DATA_DIR / "sacre_coeur_1.jpg"), cv2.IMREAD_GRAYSCALE)
    kps = cv2.SIFT_create(200).detect(image)
    desc = np.random.default_rng(0).standard_normal((len(kps), 128)).astype(np.float32)
    rows = keypoint_rows(kps)
    assert rows.shape == (len(kps), 7)
    with h5py.File(tmp_path / "f.h5", "w") as h5:
        write_features(h5, "objects", kps, desc, (image.shape[1], image.shape[0]))
        write_features(h5, "rows", rows, desc, (image.shape[1], image.shape[0]))
        write_features(h5, "columns", rows[:, :5], desc, (image.shape[1], image.shape[0]))
        with pytest.raises(ValueError, match=r"x: keypoint rows have shape \(\d+, 4\), expected \(N, >= 5\)"):
            write_features(h5, "x", rows[:, :4], desc, (1, 1))
        # found by fuzzing: written without a word, or stopped in h5py / an AttributeError ('list' has no 'pt')
        write_features(h5, "list", rows.tolist(), desc, (image.shape[1], image.shape[0]))
        write_features(h5, "tensor", torch.from_numpy(rows), desc, (image.shape[1], image.shape[0]))
        for args, match in (((rows, desc, (800,)), "image_size must be \\(width, height\\)"),
                            ((rows, desc, (800, 520, 3)), "image_size must be"),
                            ((rows, desc * np.nan, (800, 520)), "contain NaN or inf")):
            with pytest.raises(ValueError, match=match):
                write_features(h5, "x", *args)
        with pytest.raises(ValueError, match="no group path"):
            write_features(h5, "/", rows, desc, (800, 520))
        assert "x" not in h5
    objects = read_features(tmp_path / "f.h5", "objects")
    assert objects["oris"].dtype == np.float32 and len(objects["keypoints"]) == len(kps)
    for name in ("rows", "columns", "list", "tensor"):
        for key, value in read_features(tmp_path / "f.h5", name).items():
            assert value.dtype == objects[key].dtype
            np.testing.assert_array_equal(value, objects[key])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_extract_with_workers_gives_the_cpu_file(folder, weights, reference, tmp_path, monkeypatch):
    """Detecting workers feeding a CUDA describer (fp32, TF32 off), two images a batch (so a batch is written
    while the next is described): the CPU file, descriptors to float rounding."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    out = tmp_path / "features.h5"
    hardnet = HardNetDescriptor(weights, device="cuda", precision="fp32")
    report = extract_folder(folder, out, hardnet, max_keypoints=300, workers=2, batch_images=2, progress=False)
    assert report.done == NAMES and [name for name, _ in report.failed] == ["broken.jpg"]
    assert_same_file(out, reference, atol=1e-4)


def test_detecting_workers_resume_and_bound_their_input(folder, weights, reference, tmp_path, monkeypatch):
    import hardnet_desc.integrations.hloc as features_io

    out = tmp_path / "features.h5"
    hardnet = HardNetDescriptor(weights, device="cpu", precision="fp32")
    extract_folder(folder, out, hardnet, max_keypoints=300, workers=0, progress=False, names=["c.png"])
    submitted, waiting = [], []  # images sent to the workers; sent and not yet taken, after each image taken

    class CountingPool(features_io.WorkerPool):
        def submit(self, *args, **kwargs):
            submitted.append(args[1])
            return super().submit(*args, **kwargs)

    detected = features_io._detected

    def spy(*args, **kwargs):
        for taken, item in enumerate(detected(*args, **kwargs)):
            waiting.append(len(submitted) - taken - 1)
            yield item

    monkeypatch.setattr(features_io, "WorkerPool", CountingPool)
    monkeypatch.setattr(features_io, "_detected", spy)
    report = extract_folder(folder, out, hardnet, max_keypoints=300, workers=1, batch_images=1, progress=False)
    assert report.skipped == ["c.png"] and report.done == ["a.jpg", "sub/b.jpg", "sub/d.jpg"]
    assert [Path(p).name for p in submitted] == ["a.jpg", "broken.jpg", "b.jpg", "d.jpg"]  # each once, in order
    assert waiting == [3, 2, 1, 0]  # at most batch_images + 2 * workers read ahead
    assert_same_file(out, reference)
    with pytest.raises(ValueError, match="holds features from other weights"):  # attributes checked as before
        extract_folder(folder, out, HardNetDescriptor(make_hardnet(seed=1), device="cpu"), workers=1, progress=False)


def test_detecting_workers_are_checked(folder, weights, tmp_path):
    hardnet = HardNetDescriptor(weights, device="cpu", precision="fp32")
    with pytest.raises(ValueError, match="workers must be >= 0"):
        extract_folder(folder, tmp_path / "f.h5", hardnet, workers=-1)
    with pytest.raises(TypeError, match="workers must be an integer"):
        extract_folder(folder, tmp_path / "f.h5", hardnet, workers=1.5)
    own = HardNetDescriptor(weights, device="cpu", detector=cv2.ORB_create())
    with pytest.raises(ValueError, match="has its own detector: use workers=0"):
        extract_folder(folder, tmp_path / "f.h5", own, workers=2)
    assert not (tmp_path / "f.h5").exists()


def test_default_workers():
    from hardnet_desc.core.device import usable_cpus
    from hardnet_desc.integrations.hloc import default_workers

    assert default_workers(torch.device("cpu")) == 0  # the network's threads use the cores
    assert default_workers(torch.device("cuda")) == max(1, usable_cpus() - 1)  # the GPU waits for no detector


def test_merge_parts_keeps_files_it_did_not_write(folder, weights, reference, tmp_path):
    # OUT.parts/ also holds: a copy of a real shard without the mark (attributes and all), an HDF5 file
    # without attributes, a marked shard of another output file, and a marked shard under another name.
    out = tmp_path / "features.h5"
    hardnet = HardNetDescriptor(weights, device="cpu", precision="fp32")
    mine = start_shard(out, file_attrs(hardnet, 300))
    extract_folder(folder, mine, hardnet, max_keypoints=300, progress=False, names=["sub/b.jpg"])
    parts = parts_folder(out)
    unmarked = parts / "part-1-0123abcd.h5"
    shutil.copy(reference, unmarked)
    with h5py.File(unmarked, "a") as h5:
        h5.attrs["note"] = "theirs"
    h5py.File(parts / "user.h5", "w").close()
    other_out = start_shard(tmp_path / "other.h5", file_attrs(hardnet, 300))
    shutil.move(other_out, parts / other_out.name)
    renamed = parts / "mine-renamed.h5"
    shutil.copy(mine, renamed)
    foreign = [unmarked, parts / "user.h5", parts / other_out.name, renamed]
    before = {f: f.read_bytes() for f in foreign}
    with pytest.warns(UserWarning, match="not shards hardnet-desc wrote for features.h5"):
        assert merge_parts(out) == ["sub/b.jpg"]
    assert not mine.exists()  # our shard: merged and removed
    assert {f: f.read_bytes() for f in foreign} == before  # the others: kept byte for byte
    with h5py.File(out, "r") as h5:
        assert feature_names(h5) == {"sub/b.jpg"}  # nothing of the unmarked copy of the reference
        assert "note" not in h5.attrs and "hardnet_desc_shard_of" not in h5.attrs
    with pytest.warns(UserWarning):
        report = extract_parallel(folder, out, weights, workers=2, device="cpu", max_keypoints=300, progress=False)
    assert sorted(report.done) == ["a.jpg", "c.png", "sub/d.jpg"]
    assert {f: f.read_bytes() for f in foreign} == before
    assert_same_file(out, reference)


@pytest.mark.parametrize("backend", [[], ["--backend", "processes"]])
def test_cli_workers(folder, weights, reference, tmp_path, capsys, backend):
    out = tmp_path / "features.h5"
    code = main(["extract", str(folder), "--out", str(out), "--workers", "2", "--weights", weights,
                 "--max-keypoints", "300", "--device", "cpu", "--precision", "fp32", "--quiet", *backend])
    assert code == 1  # broken.jpg
    captured = capsys.readouterr()
    assert "4 images extracted, 0 already in" in captured.out and "1 failed" in captured.out
    assert "broken.jpg" in captured.err
    assert_same_file(out, reference)


@pytest.mark.slow
def test_ray_gives_the_single_process_file(folder, weights, reference, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # its workers import this checkout: conftest
    try:
        out = tmp_path / "features.h5"
        extract_folder(folder, out, HardNetDescriptor(weights, device="cpu", precision="fp32"), max_keypoints=300, progress=False,
                       names=["c.png"])  # resumable: already there
        report = extract_parallel(folder, out, weights, backend="ray", workers=2, device="cpu",
                                  max_keypoints=300, batch_images=1, progress=False)
        assert sorted(report.done) == ["a.jpg", "sub/b.jpg", "sub/d.jpg"] and report.skipped == ["c.png"]
        assert [name for name, _ in report.failed] == ["broken.jpg"]
        assert not parts_folder(out).exists()
        assert_same_file(out, reference)
    finally:
        ray.shutdown()


def test_a_file_name_that_is_not_utf8_fails_alone(weights, tmp_path):
    """No HDF5 key holds such a name: h5py stopped the whole extraction ("surrogates not allowed") after the
    images before it; now that image is reported failed, in one process and with workers."""
    name = os.fsdecode(b"caf\xe9.jpg")  # Latin-1 bytes, kept by Python as a surrogate
    root = tmp_path / "photos"
    root.mkdir()
    try:
        shutil.copy(DATA_DIR / "sacre_coeur_1.jpg", root / name)
    except (OSError, UnicodeError):
        pytest.skip("this file system takes UTF-8 names only")
    shutil.copy(DATA_DIR / "sacre_coeur_2.jpg", root / "z.jpg")
    hardnet = HardNetDescriptor(weights, device="cpu", precision="fp32")
    for report in (extract_folder(root, tmp_path / "one.h5", hardnet, max_keypoints=100, progress=False),
                   extract_parallel(root, tmp_path / "two.h5", weights, workers=1, device="cpu", max_keypoints=100,
                                    progress=False)):
        assert report.done == ["z.jpg"] and report.failed == [(name, "its file name is not valid UTF-8, which an "
                                                                     "HDF5 key must be")]
    for out in ("one.h5", "two.h5"):
        with h5py.File(tmp_path / out, "r") as h5:
            assert feature_names(h5) == {"z.jpg"}


def cli_error(capsys, *args: str) -> str:
    """The one error line of an ``extract`` that must exit 2."""
    assert main(["extract", *args, "--quiet"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hardnet-desc extract: error: "), lines
    return lines[0]


def test_bad_device_precision_or_address_fail_before_any_file_or_worker(folder, weights, tmp_path, capsys):
    """A device or precision the workers would refuse stopped each describing process in its initializer (a
    traceback, then BrokenProcessPool, exit 1) after an empty OUT was made; --address was ignored off Ray."""
    out = tmp_path / "f.h5"
    base = [str(folder), "--out", str(out), "--weights", weights]
    cases = {("--backend", "processes", "--device", "cuda:99"): "'cuda:99'",  # no such GPU here
             ("--backend", "processes", "--device", "cpu", "--precision", "fp16"): "'fp16' needs a CUDA device",
             ("--backend", "ray", "--device", "cpu", "--precision", "fp16"): "'fp16' needs a CUDA device",
             ("--address", "auto"): "--address is for --backend ray only; --backend feed runs",
             ("--backend", "processes", "--address", "auto"): "--address is for --backend ray only"}
    for args, message in cases.items():
        assert message in cli_error(capsys, *base, *args), args
    with pytest.raises(ValueError, match="'fp16' needs a CUDA device"):
        extract_parallel(folder, out, weights, device="cpu", precision="fp16")
    with pytest.raises(ValueError, match="address is for backend='ray' only"):
        extract_parallel(folder, out, weights, address="auto")
    assert not out.exists() and not parts_folder(out).exists()


def test_a_resume_with_another_budget_than_the_left_shards_is_refused_before_any_work(folder, weights, tmp_path):
    """An interrupted run left OUT (no images yet) and a shard at 300 keypoints: a resume at 200 extracted every
    image, then refused the merge naming 200 as the file's budget, and left shards at 200 behind."""
    out = tmp_path / "features.h5"
    hardnet = HardNetDescriptor(weights, device="cpu", precision="fp32")
    merge_parts(out, file_attrs(hardnet, 300))  # as the interrupted run made OUT
    shard = start_shard(out, file_attrs(hardnet, 300))
    extract_folder(folder, shard, hardnet, max_keypoints=300, progress=False, names=["a.jpg"])
    with pytest.raises(ValueError, match=rf"{shard.name} was extracted with --max-keypoints 300 .* not 200"):
        extract_parallel(folder, out, weights, workers=2, device="cpu", max_keypoints=200, progress=False)
    assert list(parts_folder(out).iterdir()) == [shard]  # no shard of another budget
    with h5py.File(shard, "r") as h5, h5py.File(out, "r") as merged:
        assert feature_names(h5) == {"a.jpg"} and feature_names(merged) == set()


def test_extract_refuses_a_file_it_did_not_write_unless_forced(folder, weights, reference, tmp_path, capsys):
    """Another tool's HDF5 file or a text file is refused before any work, by every backend and function alike;
    --force replaces it. A file that holds nothing to lose (0 bytes, an empty HDF5 file) is used."""
    zero, empty, theirs, text = (tmp_path / f"{name}.h5" for name in ("zero", "empty", "theirs", "text"))
    zero.touch()
    h5py.File(empty, "w").close()
    with h5py.File(theirs, "w") as h5:
        h5["x"] = np.arange(3)
    text.write_text("plain text")
    before = {out: out.read_bytes() for out in (theirs, text)}
    for out in before:
        for backend in ("feed", "processes"):
            message = cli_error(capsys, str(folder), "--out", str(out), "--weights", weights, "--backend", backend)
            assert f"{out} exists and was not written by hardnet-desc; pass --force" in message
        with pytest.raises(FileExistsError, match="not written by hardnet-desc"):
            extract_folder(folder, out, HardNetDescriptor(weights, device="cpu"), progress=False)
        with pytest.raises(FileExistsError, match="not written by hardnet-desc"):
            extract_parallel(folder, out, weights, device="cpu", progress=False)
        assert out.read_bytes() == before[out] and not parts_folder(out).exists()
    common = ["--weights", weights, "--max-keypoints", "300", "--device", "cpu", "--precision", "fp32", "--quiet",
              "--force"]
    assert main(["extract", str(folder), "--out", str(theirs), *common]) == 1  # 1: broken.jpg
    assert main(["extract", str(folder), "--out", str(text), "--backend", "processes", "--workers", "1",
                 *common]) == 1
    for out in (theirs, text):
        assert_same_file(out, reference)
    assert main(["extract", str(folder), "--out", str(text), *common[:-1]]) == 1  # ours now: resumed, no --force
    assert "0 images extracted, 4 already in" in capsys.readouterr().out
    for out in (zero, empty):
        assert main(["extract", str(folder), "--out", str(out), *common[:-1]]) == 1
        assert_same_file(out, reference)


def test_max_keypoints_beyond_opencv_fail_before_any_file(folder, weights, tmp_path, capsys):
    """A budget no HDF5 attribute holds stopped in "Object dtype dtype('O') has no native HDF5 equivalent" after
    the weights loaded and an empty OUT was made (the bound itself is check_max_keypoints')."""
    out = tmp_path / "f.h5"
    for backend in ("feed", "processes"):
        message = cli_error(capsys, str(folder), "--out", str(out), "--weights", weights, "--backend", backend,
                            "--max-keypoints", "99999999999999999999")
        assert "--max-keypoints" in message and "dtype" not in message
    with pytest.raises(ValueError, match="max_keypoints"):
        extract_folder(folder, out, HardNetDescriptor(weights, device="cpu"), max_keypoints=2**40)
    with pytest.raises(ValueError, match="max_keypoints"):
        extract_parallel(folder, out, weights, device="cpu", max_keypoints=2**40)
    assert not out.exists()


def test_an_unreachable_ray_address_fails_at_once(folder, weights, tmp_path):
    """ray.init tried an address nothing listens on for minutes, printing log lines, after OUT was made."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray instance is running: the address is not used")
    out = tmp_path / "f.h5"
    with socket.socket() as closed:  # bound, not listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{closed.getsockname()[1]}"
        with pytest.raises(ConnectionError, match=f"no Ray cluster answers at {address}"):
            extract_parallel(folder, out, weights, backend="ray", address=address, device="cpu")
    assert not out.exists() and not ray.is_initialized()


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="POSIX process groups")
def test_ctrl_c_stops_the_processes_backend(weights, tmp_path):
    """Ctrl-C (SIGINT to the whole command) while the workers describe: the command ends within seconds with one
    line and exit code 130, the batches not started are not run, and a rerun completes the file. Before, a worker
    interrupted while it waited for work kept the pool's queue locked (the command never ended), and leaving the
    pool ran every batch submitted."""
    photos = tmp_path / "photos"
    photos.mkdir()
    image = cv2.imread(str(DATA_DIR / "sacre_coeur_1.jpg"))
    for i in range(16):
        cv2.imwrite(str(photos / f"im{i:02d}.jpg"), np.roll(image, 7 * i, axis=1))
    out = tmp_path / "features.h5"
    command = [sys.executable, "-m", "hardnet_desc", "extract", str(photos), "--out", str(out), "--weights", weights,
               "--backend", "processes", "--workers", "2", "--batch-images", "1", "--device", "cpu",
               "--precision", "fp32", "--max-keypoints", "300", "--quiet"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(list(parts_folder(out).glob("part-*.h5"))) < 2:
            time.sleep(0.05)  # both workers loaded the weights
        os.killpg(proc.pid, signal.SIGINT)
        sent = time.monotonic()
        _, err = proc.communicate(timeout=120)
        seconds = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 130 and err.strip() == "hardnet-desc extract: interrupted", err
    assert seconds < 30, seconds
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    already = int(re.search(r"(\d+) already in", done.stdout).group(1))
    assert already < 8, done.stdout  # the interrupted run stopped early (its finished images kept, merged now)
    with h5py.File(out, "r") as h5:
        assert len(feature_names(h5)) == 16
