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
    return err


@pytest.mark.parametrize(
    "option, value, match",
    [
        ("--epochs", "0", "epochs must be >= 1, got 0"),
        ("--batch-size", "1", "batch_size must be >= 2"),
        ("--pairs-per-epoch", "10", "pairs_per_epoch must be >= batch_size"),
        ("--lr", "0", "lr must be a finite number > 0, got 0.0"),
        ("--lr", "nan", "lr must be a finite number > 0, got nan"),
        ("--margin", "-1", "margin must be a finite number > 0, got -1.0"),
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


def _copy_data(src, dst, meta=None):
    """A PhotoTour folder ``dst`` whose files link to ``src``'s; ``meta``: a meta.json text beside it."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        (dst / f.name).symlink_to(f)
    if meta is not None:
        (dst.parent / "meta.json").write_text(meta)
    return dst


def test_val_pairs_without_positives_or_negatives_are_refused_before_training(data_dir, tmp_path, capsys):
    """A pair file with only non-matching (or only matching) pairs was refused after the epoch was trained,
    with "no matching pairs (positives): FPR at recall is undefined", naming neither the file nor --val."""
    pair_file = next((data_dir / "val").glob("m50_*.txt"))
    rows = [line.split() for line in pair_file.read_text().splitlines()]
    for kind, keep in (("matching", lambda r: r[1] != r[4]), ("non-matching", lambda r: r[1] == r[4])):
        val = tmp_path / kind / "val"
        val.mkdir(parents=True)
        for f in (data_dir / "val").iterdir():
            if f != pair_file:
                (val / f.name).symlink_to(f)
        (val / pair_file.name).write_text("".join(" ".join(r) + "\n" for r in rows if keep(r)))
        out = tmp_path / kind / "run"
        code = main(["train", str(data_dir / "train"), str(out), "--val", str(val), *FAST])
        _one_line_error(capsys, code, f"--val {val}: {val / pair_file.name} holds no {kind} pairs")
        assert not out.exists()  # nothing trained, no OUT made


def test_resume_compares_the_data_not_how_its_path_is_spelt(data_dir, tmp_path, monkeypatch, capsys):
    """--resume compared the data paths as strings: ds/train/, ./ds/train and an absolute path were refused,
    and the same string naming another folder (another cwd) was resumed without a word."""
    monkeypatch.chdir(data_dir.parent)
    out = tmp_path / "run"
    args = [str(out), "--max-steps", "1", *FAST]
    assert main(["train", f"{data_dir.name}/train", *args]) == 0
    for spelt in (f"{data_dir.name}/train/", f"./{data_dir.name}/train", str(data_dir / "train")):
        assert main(["train", spelt, *args, "--resume"]) == 0, capsys.readouterr().err
    other = tmp_path / "elsewhere"  # the same relative name, from another folder: other patches
    _copy_data(data_dir / "train", other / data_dir.name / "train")
    first = other / data_dir.name / "train" / "patches0000.bmp"
    first.unlink()
    cv2.imwrite(str(first), 255 - cv2.imread(str(data_dir / "train" / "patches0000.bmp"), cv2.IMREAD_GRAYSCALE))
    monkeypatch.chdir(other)
    capsys.readouterr()
    code = main(["train", f"{data_dir.name}/train", *args, "--resume"])
    _one_line_error(capsys, code, f"{out / 'checkpoint.pt'} was made with other data: {first.parent.resolve()} "
                    f"holds other patches than {(data_dir / 'train').resolve()}")


def test_resume_refuses_changed_settings_naming_each(data_dir, tmp_path, capsys):
    """--lr, --margin, --dropout, --photos-per-batch, --batch-reduce and --pairs-per-epoch changed on --resume
    were taken without a word, and model_card.json recorded only the new values."""
    out = tmp_path / "run"
    assert main(["train", str(data_dir / "train"), str(out), "--max-steps", "1", *FAST]) == 0
    changed = ["--lr", "0.001", "--margin", "3", "--dropout", "0", "--photos-per-batch", "2", "--batch-reduce",
               "random", "--pairs-per-epoch", "512"]
    code = main(["train", str(data_dir / "train"), str(out), *FAST, *changed, "--resume"])
    _one_line_error(capsys, code, "was made with other settings: pairs_per_epoch 256 (now 512); lr 10.0 (now 0.001); "
                    "margin 1.0 (now 3.0); batch_reduce 'min' (now 'random'); dropout 0.3 (now 0.0); photos_per_batch "
                    "0 (now 2); resume with the same recipe", "or train into another output folder")
    assert json.loads((out / "model_card.json").read_text())["recipe"]["lr"] == 10.0  # the max-steps export's
    # settings that cannot change the weights may change
    assert main(["train", str(data_dir / "train"), str(out), *FAST, "--resume", "--checkpoint-every", "1",
                 "--max-steps", "2"]) == 0


@pytest.mark.parametrize("content, match", [("garbage", "not a JSON file (Expecting value"),
                                            ("[1]", "holds a JSON list, not the JSON object expected")])
def test_a_broken_meta_json_beside_the_data_is_named(data_dir, tmp_path, capsys, content, match):
    """A meta.json beside the data folder that is not JSON, or not an object, gave "Expecting value: line 1
    column 1 (char 0)" or an AttributeError (exit 1), naming no file."""
    train = _copy_data(data_dir / "train", tmp_path / "ds" / "train", meta=content)
    code = main(["train", str(train), str(tmp_path / "run"), *FAST])
    _one_line_error(capsys, code, f"{tmp_path / 'ds' / 'meta.json'}: {match}")
    assert not (tmp_path / "run").exists()


def test_a_full_disk_at_the_export_keeps_the_checkpoint_and_resume_exports(data_dir, tmp_path, monkeypatch, capsys):
    """The export onto a full disk ended in "SafetensorError: ... No space left on device" (exit 1), naming no
    file, not saying the checkpoint is kept and --resume exports."""
    from safetensors import SafetensorError

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    out = tmp_path / "run"
    save = trainer_module.save_weights
    monkeypatch.setattr(trainer_module, "save_weights", full)
    code = main(["train", str(data_dir / "train"), str(out), *FAST])
    _one_line_error(capsys, code, f"cannot write {out / 'hardnet.safetensors'} (", "No space left on device (os error "
                    f"28)); the checkpoint {out / 'checkpoint.pt'} is kept, --resume exports from it")
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "log.csv"]
    monkeypatch.setattr(trainer_module, "save_weights", save)
    assert main(["train", str(data_dir / "train"), str(out), *FAST, "--resume"]) == 0
    assert json.loads((out / "model_card.json").read_text())["pairs_seen"] == 8 * 64


def test_mix_of_huge_fractions_is_normalised(data_dir, tmp_path, capsys):
    """--mix 1e308,1e308 printed four numpy RuntimeWarnings, then "--mix gives ... -9223372036854775807 pairs"."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["train", str(tmp_path / "run"), "--data", str(data_dir / "train"), "--data",
                     str(data_dir / "train"), "--mix", "1e308,1e308", "--max-steps", "1", *FAST]) == 0
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in caught]
    card = json.loads((tmp_path / "run" / "model_card.json").read_text())
    assert card["recipe"]["mix"] == [1e308, 1e308]


def test_an_info_txt_id_beyond_64_bits_is_named(data_dir, tmp_path, capsys):
    """A 24-digit point id in info.txt gave "OverflowError: Python int too large to convert to C long" (exit 1)."""
    train = _copy_data(data_dir / "train", tmp_path / "ds" / "train")
    lines = (data_dir / "train" / "info.txt").read_text().splitlines()
    lines[2] = "999999999999999999999999 0"
    (train / "info.txt").unlink()
    (train / "info.txt").write_text("\n".join(lines) + "\n")
    code = main(["train", str(train), str(tmp_path / "run"), *FAST])
    _one_line_error(capsys, code, f"{train / 'info.txt'}:3: an integer beyond 64 bits in '999999999999999999999999 0'")


def test_checks_before_the_training_data_is_read(data_dir, tmp_path, monkeypatch, capsys):
    """The whole training set was read before a missing --init file or an existing checkpoint.pt was reported,
    a failed start left an empty OUT, and a folder OUT/checkpoint.pt gave "exists: pass --resume", then with
    --resume "no checkpoint at", both naming a nonexistent --out option."""
    def unread(*args, **kwargs):
        raise AssertionError("the training data was read")

    monkeypatch.setattr(trainer_module, "read_phototour", unread)
    out = tmp_path / "run"
    code = main(["train", str(data_dir / "train"), str(out), *FAST, "--init", str(tmp_path / "none.safetensors")])
    _one_line_error(capsys, code, "none.safetensors")
    assert not out.exists()
    (out / "checkpoint.pt").mkdir(parents=True)
    for resume in ([], ["--resume"]):
        code = main(["train", str(data_dir / "train"), str(out), *FAST, *resume])
        err = _one_line_error(capsys, code, f"{out / 'checkpoint.pt'} is a folder, not a checkpoint: move it away, "
                              "or train into another output folder")
        assert "--out" not in err
    (out / "checkpoint.pt").rmdir()
    (out / "checkpoint.pt").write_bytes(b"")
    code = main(["train", str(data_dir / "train"), str(out), *FAST])
    assert "--out" not in _one_line_error(capsys, code, f"{out / 'checkpoint.pt'} exists: pass --resume")


def test_a_validation_set_at_another_patch_scale_is_refused(data_dir, tmp_path, capsys):
    """Validation patches cut at another patch_scale than the training data's were used without a word."""
    val = _copy_data(data_dir / "val", tmp_path / "ds8" / "val", meta=json.dumps({"patch_scale": 8.0}))
    code = main(["train", str(data_dir / "train"), str(tmp_path / "run"), "--val", str(val), *FAST])
    _one_line_error(capsys, code, f"--val {val} holds patches cut at patch_scale 8 ({val.parent / 'meta.json'}), but "
                    f"{data_dir / 'train'} at patch_scale 6")


def test_a_later_validation_set_at_another_patch_scale_names_the_training_folders(data_dir, tmp_path, capsys):
    """With two --val sets, the second one's patch_scale error printed the first set's PhotoTourData (its repr,
    2,410 characters) instead of the training folders: the loop overwrote their name."""
    val = _copy_data(data_dir / "val", tmp_path / "ds8" / "val", meta=json.dumps({"patch_scale": 8.0}))
    code = main(["train", str(data_dir / "train"), str(tmp_path / "run"), "--val", str(data_dir / "val"),
                 "--val", str(val), *FAST])
    err = _one_line_error(capsys, code, f"but {data_dir / 'train'} at patch_scale 6")
    assert "PhotoTourData" not in err and len(err) < 400, err


def test_resume_compares_the_init_file_not_how_its_path_is_spelt(data_dir, tmp_path, monkeypatch, capsys):
    """The checkpoint kept --init as typed: resuming from another folder with the same weights named by their
    absolute path was refused, and the message suggested a relative name that no longer resolved there."""
    from hardnet_desc.core.weights import BUNDLED, bundled_path

    here, there, out = tmp_path.resolve() / "here", tmp_path / "there", tmp_path / "run"
    here.mkdir(), there.mkdir()
    (here / "w.safetensors").write_bytes(bundled_path(next(iter(BUNDLED))).read_bytes())
    args = [str(data_dir / "train"), str(out), *FAST]
    monkeypatch.chdir(here)
    assert main(["train", *args, "--init", "w.safetensors", "--max-steps", "1"]) == 0
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ckpt["config"]["init"] == str(here / "w.safetensors")  # recorded resolved
    monkeypatch.chdir(there)
    assert main(["train", *args, "--init", str(here / "w.safetensors"), "--max-steps", "2", "--resume"]) == 0, \
        capsys.readouterr().err
    assert json.loads((out / "model_card.json").read_text())["recipe"]["init"] == str(here / "w.safetensors")
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    ckpt["config"]["init"] = "w.safetensors"  # an older checkpoint: --init as typed, resolved from here
    torch.save(ckpt, out / "checkpoint.pt")
    monkeypatch.chdir(here)
    assert main(["train", *args, "--init", "w.safetensors", "--max-steps", "3", "--resume"]) == 0, \
        capsys.readouterr().err
