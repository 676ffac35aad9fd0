"""``hardnet-desc make-dataset`` and ``train`` run end to end through the CLI, and every broken
input (bad settings, a diverging run, a broken or foreign ``--resume`` checkpoint) ends in one
``hardnet-desc train: error: ...`` line and exit code 2, never a traceback or exported weights."""

from __future__ import annotations

import json
import os

import cv2
import pytest
import torch

from hardnet_desc.cli import main
from hardnet_desc.data.phototour import read_phototour
from hardnet_desc.train import trainer as trainer_module

from conftest import EXAMPLE_FILES

FAST = ["--epochs", "2", "--pairs-per-epoch", "256", "--batch-size", "64", "--precision", "fp32", "--device", "cpu",
        "--quiet"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """make-dataset through the CLI on four crops of the bundled photos."""
    root = tmp_path_factory.mktemp("cli_train")
    photos = root / "photos"
    photos.mkdir()
    for k, path in enumerate(EXAMPLE_FILES):
        img = cv2.imread(str(path))
        h, w = img.shape[:2]
        for j, x in enumerate((0, w // 2)):
            cv2.imwrite(str(photos / f"p{k}{j}.jpg"), img[: h // 2 + 40, x : x + w // 2])
    return root, photos


def test_make_dataset_cli(dataset, capsys):
    root, photos = dataset
    out = root / "synth"
    argv = ["make-dataset", str(photos), str(out), "--points", "120", "--views", "2", "--val-fraction", "0.25",
            "--val-pairs", "300", "--workers", "1", "--patch-scale", "5"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for split in ("train", "val"):
        data = read_phototour(out / split)
        assert f"{split}: " in printed and f"{len(data)} patches -> {out}/{split}" in printed
        assert data.patches.shape[1:] == (32, 32) and len(data) > 50
    assert json.loads((out / "meta.json").read_text())["patch_scale"] == 5.0
    split = json.loads((out / "split.json").read_text())
    assert len(split["train"]) == 3 and len(split["val"]) == 1


@pytest.fixture(scope="module")
def data_dir(dataset):
    root, photos = dataset
    out = root / "synth2"
    if not out.exists():
        assert main(["make-dataset", str(photos), str(out), "--points", "120", "--views", "2", "--val-fraction",
                     "0.25", "--val-pairs", "300", "--workers", "1"]) == 0
    return out


@pytest.fixture
def spy(monkeypatch):
    """Records the loss's anchor_swap argument and the learning rate of every SGD step."""
    calls = {"anchor_swap": [], "lr": []}
    loss = trainer_module.hardest_in_batch_loss

    def spy_loss(*args, **kwargs):
        calls["anchor_swap"].append(kwargs["anchor_swap"])
        return loss(*args, **kwargs)

    step = torch.optim.SGD.step

    def spy_step(self, *args, **kwargs):
        calls["lr"].append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "hardest_in_batch_loss", spy_loss)
    monkeypatch.setattr(torch.optim.SGD, "step", spy_step)
    return calls


def test_train_cli_no_anchor_swap_and_lr_decay(data_dir, tmp_path, spy, capsys):
    out = tmp_path / "run"
    argv = ["train", str(data_dir / "train"), str(out), "--val", str(data_dir / "val"), "--no-anchor-swap",
            "--lr", "2.0", *FAST]
    assert main(argv) == 0
    total = 2 * 256 // 64
    assert spy["anchor_swap"] == [False] * total
    assert spy["lr"] == pytest.approx([2.0 * (1 - s / total) for s in range(total)])  # linear decay to 0
    card = json.loads((out / "model_card.json").read_text())
    assert card["recipe"]["anchor_swap"] is False and card["pairs_seen"] == total * 64
    assert f"weights: {out / 'hardnet.safetensors'}" in capsys.readouterr().out
    assert 0 <= card["val_fpr95"] <= 1


def test_train_cli_anchor_swap_by_default(data_dir, tmp_path, spy):
    assert main(["train", str(data_dir / "train"), str(tmp_path / "run"), "--max-steps", "2", *FAST]) == 0
    assert spy["anchor_swap"] == [True, True]


def _one_line_error(capsys, code, *matches):
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("hardnet-desc train: error: ") and "\n" not in err and "Traceback" not in err, err
    assert all(match in err for match in matches), err


@pytest.mark.parametrize(
    "option, value, match",
    [
        ("--epochs", "0", "epochs must be >= 1 (--epochs), got 0"),
        ("--batch-size", "1", "batch_size must be >= 2"),
        ("--pairs-per-epoch", "10", "pairs_per_epoch must be >= batch_size"),
        ("--lr", "0", "lr must be > 0 (--lr)"),
        ("--lr", "nan", "lr must be > 0 (--lr)"),
        ("--margin", "-1", "margin must be > 0"),
        ("--dropout", "1.5", "dropout must be in [0, 1)"),
        ("--checkpoint-every", "0", "checkpoint_every must be >= 1"),
        ("--max-steps", "0", "max_steps must be >= 1"),
        ("--seed", "100000000000000", "seed must be in [0, 2**32) (--seed)"),  # was "Overflow when unpacking long"
        ("--photos-per-batch", "-1", "photos_per_batch must be >= 0"),
        ("--rot-deg", "-1", "rot_deg must be >= 0 (--rot-deg), got -1.0"),
        ("--scale-jitter", "1", "scale must be in [0, 1) (--scale-jitter), got 1.0"),
        ("--device", "gpu7", "unknown device 'gpu7'"),
    ],
)
def test_train_bad_settings(data_dir, tmp_path, capsys, option, value, match):
    code = main(["train", str(data_dir / "train"), str(tmp_path / "run"), *FAST, option, value])
    _one_line_error(capsys, code, match)
    assert not (tmp_path / "run" / "hardnet.safetensors").exists()


def test_diverging_loss_stops_without_export(data_dir, tmp_path, monkeypatch, capsys):
    loss = trainer_module.hardest_in_batch_loss
    steps = []

    def nan_at_third(*args, **kwargs):
        steps.append(1)
        value = loss(*args, **kwargs)
        return value * float("nan") if len(steps) == 3 else value

    monkeypatch.setattr(trainer_module, "hardest_in_batch_loss", nan_at_third)
    code = main(["train", str(data_dir / "train"), str(tmp_path / "run"), *FAST])
    _one_line_error(capsys, code, "step 3: the loss is nan")
    assert not (tmp_path / "run" / "hardnet.safetensors").exists()


def test_degenerate_start_weights_stop_at_the_first_step(data_dir, tmp_path, capsys):
    """All-zero --init weights describe every patch alike: the loss was 0 (every negative closer than the
    near-duplicate distance is left out), the weights never moved, and the run exported them as trained."""
    from hardnet_desc.core.model import HardNet
    from hardnet_desc.core.weights import save_weights

    net = HardNet()
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
    zero = save_weights(net, tmp_path / "zero.safetensors", {"patch_scale": 6.0})
    code = main(["train", str(data_dir / "train"), str(tmp_path / "run"), *FAST, "--init", str(zero)])
    _one_line_error(capsys, code, "step 1: the network gives one descriptor for all 128 patches of the batch")
    assert not (tmp_path / "run" / "hardnet.safetensors").exists()


def test_a_failed_checkpoint_is_one_line_and_resume_logs_each_epoch_once(data_dir, tmp_path, monkeypatch, capsys):
    """A full disk at the end of epoch 2: torch.save's "unexpected pos" became one line naming the file; the log
    kept epoch 2's row, and --resume (from epoch 1's checkpoint) wrote it again: two rows for epoch 2."""
    save, calls = torch.save, []

    def disk_full_at_second(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 9152 vs 9040")
        return save(obj, f, *args, **kwargs)

    out = tmp_path / "run"
    monkeypatch.setattr(torch, "save", disk_full_at_second)
    code = main(["train", str(data_dir / "train"), str(out), *FAST])
    _one_line_error(capsys, code, f"step 8: cannot write {out / 'checkpoint.pt'} (",
                    "unexpected pos 9152 vs 9040); the last checkpoint is kept, --resume goes on from it")
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 4
    assert len((out / "log.csv").read_text().splitlines()) == 3  # header, epochs 1 and 2
    monkeypatch.setattr(torch, "save", save)
    assert main(["train", str(data_dir / "train"), str(out), *FAST, "--resume"]) == 0
    rows = (out / "log.csv").read_text().splitlines()
    assert [r.split(",")[:2] for r in rows[1:]] == [["1", "4"], ["2", "8"]], rows


def test_nan_weights_are_never_saved(data_dir, tmp_path, monkeypatch, capsys):
    step = torch.optim.SGD.step

    calls = []

    def poison(self, *args, **kwargs):  # the 4th step (the end of epoch 1) leaves an inf weight
        result = step(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 4:
            self.param_groups[0]["params"][0].data.fill_(float("inf"))
        return result

    monkeypatch.setattr(torch.optim.SGD, "step", poison)
    code = main(["train", str(data_dir / "train"), str(tmp_path / "run"), *FAST])
    _one_line_error(capsys, code, "step 4: features.0.weight contains NaN or inf")
    assert not (tmp_path / "run" / "hardnet.safetensors").exists()
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def _good_checkpoint(data_dir, tmp_path):
    out = tmp_path / "good"
    assert main(["train", str(data_dir / "train"), str(out), "--max-steps", "1", *FAST]) == 0
    return torch.load(out / "checkpoint.pt", weights_only=True)


BROKEN = {
    "empty": lambda good: b"",
    "text": lambda good: b"resume me\n",
    "truncated": lambda good: "truncate",
    "empty dict": lambda good: {},
    "list": lambda good: [1, 2, 3],
    "no model": lambda good: {k: v for k, v in good.items() if k != "model"},
    "wrong shapes": lambda good: {**good, "model": {k: v.flatten()[:1] for k, v in good["model"].items()}},
    "foreign optimizer": lambda good: {**good, "optimizer": {"state": {}, "param_groups": []}},
    "bad step": lambda good: {**good, "step": "many"},
    "pickled code": lambda good: {**good, "history": _Payload()},
}


@pytest.fixture(scope="module")
def good_checkpoint(data_dir, tmp_path_factory):
    return _good_checkpoint(data_dir, tmp_path_factory.mktemp("good"))


def test_resume_refuses_a_checkpoint_beyond_the_runs_steps(data_dir, tmp_path, good_checkpoint, capsys):
    """A step of 10^9 resumed into a run of 8 steps exited 0 and exported "loss nan" weights."""
    out = tmp_path / "run"
    out.mkdir()
    torch.save({**good_checkpoint, "step": 10**9}, out / "checkpoint.pt")
    code = main(["train", str(data_dir / "train"), str(out), "--resume", *FAST])
    _one_line_error(capsys, code, f"{out / 'checkpoint.pt'}: its step 1000000000 is beyond this run's 8 steps")
    assert not (out / "hardnet.safetensors").exists() and not (out / "log.csv").exists()


OLD_NAMES = {"aug": None, "aug_strength": 1.0, "augment": False, "rot_deg": 0.0, "scale_jitter": 0.0}


def test_resume_reads_the_augmentation_names_of_older_checkpoints(data_dir, tmp_path, good_checkpoint, capsys):
    """Checkpoints from before AugmentConfig store aug, aug_strength, augment (bool), rot_deg, scale_jitter."""
    for name, old, args, code in [("same", OLD_NAMES, [], 0), ("other", {**OLD_NAMES, "aug": "noise"}, [], 2),
                                  ("flip", {**OLD_NAMES, "augment": True, "rot_deg": 5.0}, ["--augment"], 2),
                                  ("flip-rot", {**OLD_NAMES, "augment": True, "rot_deg": 5.0},
                                   ["--augment", "--rot-deg", "5"], 0)]:
        out = tmp_path / name
        out.mkdir()
        config = {k: v for k, v in good_checkpoint["config"].items() if k != "augment"}
        torch.save({**good_checkpoint, "config": {**config, **old}}, out / "checkpoint.pt")
        capsys.readouterr()
        assert main(["train", str(data_dir / "train"), str(out), "--resume", "--max-steps", "2", *FAST, *args]) == code
        assert ("same recipe" in capsys.readouterr().err) == (code == 2), name
    assert good_checkpoint["config"]["augment"] == {"noise": 0.0, "blur": 0.0, "jpeg": 0.0, "photometric": 0.0,
                                                    "kpjitter": 0.0, "flip_rot90": False, "rot_deg": 0.0,
                                                    "scale": 0.0}


@pytest.mark.parametrize("case", BROKEN, ids=list(BROKEN))
def test_resume_from_broken_checkpoints(data_dir, tmp_path, good_checkpoint, capsys, case):
    out = tmp_path / "run"
    out.mkdir()
    content = BROKEN[case](good_checkpoint)
    path = out / "checkpoint.pt"
    if content == "truncate":
        torch.save(good_checkpoint, path)
        path.write_bytes(path.read_bytes()[:3000])
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    code = main(["train", str(data_dir / "train"), str(out), "--resume", *FAST])
    _one_line_error(capsys, code, str(path))
    assert not (out / "hardnet.safetensors").exists()
