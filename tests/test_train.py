"""The trainer end to end: synthetic correspondences from real photos, training, exact resume, export."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from hardnet_desc import HardNetDescriptor
from hardnet_desc.cli import main
from hardnet_desc.data.phototour import PhotoTourData, find_pair_files, read_pairs, read_phototour
from hardnet_desc.descriptor import describe_patches
from hardnet_desc.fpr95 import pairs_fpr95
from hardnet_desc.core.model import HardNet
from hardnet_desc.train import AugmentConfig, PairDataset, TrainConfig, hardest_in_batch_loss, make_dataset, train
from hardnet_desc.core.weights import BUNDLED, load_weights

from conftest import EXAMPLE_FILES


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory) -> Path:
    """Six real photos: three crops of each bundled Sacré-Cœur photo."""
    root = tmp_path_factory.mktemp("photos")
    for k, path in enumerate(EXAMPLE_FILES):
        img = cv2.imread(str(path))
        h, w = img.shape[:2]
        for j, (y, x) in enumerate([(0, 0), (h // 3, w // 3), (0, w // 2)]):
            cv2.imwrite(str(root / f"photo{k}{j}.jpg"), img[y : y + h // 2 + 60, x : x + w // 2])
    return root


@pytest.fixture(scope="module")
def dataset(photo_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    summary = make_dataset(photo_dir, out, points=250, views=2, val_fraction=0.34, val_pairs=2000, workers=1,
                           progress=False)
    assert summary["train"]["photos"] == 4 and summary["val"]["photos"] == 2
    return out


def test_dataset_layout_and_split(dataset, photo_dir):
    split = json.loads((dataset / "split.json").read_text())
    assert not set(split["train"]) & set(split["val"]), "a photo is in both splits"
    train_data = read_phototour(dataset / "train")
    assert train_data.patches.shape[1:] == (32, 32) and len(train_data) > 500
    counts = np.bincount(train_data.point_ids)
    assert counts.min() >= 2, "every point must have at least two views"
    # info.txt's second column names each patch's photo; a point never spans two photos
    assert set(np.unique(train_data.source)) == set(range(len(split["train"])))
    first = np.unique(train_data.point_ids, return_index=True)[1]
    assert np.array_equal(train_data.source, train_data.source[first][train_data.point_ids])
    idx1, idx2, match = read_pairs(find_pair_files(dataset / "val")[0])
    n_val = len(read_phototour(dataset / "val"))
    assert 0.4 < match.mean() < 0.6 and len(match) == min(2000, n_val)  # capped at the patch count


def test_split_seed_keeps_the_split_and_draws_new_views(dataset, photo_dir, tmp_path):
    """--seed 1 --split-seed 0: new warps of the same photos, the validation photos unchanged."""
    make_dataset(photo_dir, tmp_path, points=250, views=2, val_fraction=0.34, val_pairs=2000, seed=1,
                 split_seed=0, workers=1, progress=False)
    assert json.loads((tmp_path / "split.json").read_text()) == json.loads((dataset / "split.json").read_text())
    assert json.loads((tmp_path / "meta.json").read_text())["split_seed"] == 0
    old, new = read_phototour(dataset / "train"), read_phototour(tmp_path / "train")
    n = min(len(old), len(new))
    assert not np.array_equal(old.patches[:n], new.patches[:n]), "seed 1 drew the same views as seed 0"


def test_min_kp_size_goes_from_the_data_into_the_weights(dataset, photo_dir, tmp_path):
    """make-dataset's min_kp_size widens small keypoints' patches, and the trained file records it."""
    make_dataset(photo_dir, tmp_path / "m4", points=250, views=2, val_fraction=0.34, val_pairs=2000, workers=1,
                 min_kp_size=4.0, progress=False)
    assert json.loads((tmp_path / "m4" / "meta.json").read_text())["min_kp_size"] == 4.0
    default = load_weights().min_kp_size if BUNDLED else 0.0
    assert json.loads((dataset / "meta.json").read_text())["min_kp_size"] == default  # the bundled weights' value
    old, new = read_phototour(dataset / "train"), read_phototour(tmp_path / "m4" / "train")
    assert len(old) == len(new)  # the same keypoints (same seed), cut differently where they are small
    same = (old.patches == new.patches).all(axis=(1, 2)).mean()
    assert 0.1 < same < 0.9, same
    small = dict(val=None, epochs=1, pairs_per_epoch=32 * 2, batch_size=32)
    weights = train(_config(tmp_path / "m4", tmp_path / "run", **small), progress=False)
    assert HardNetDescriptor(weights, device="cpu").min_kp_size == 4.0
    assert json.loads((tmp_path / "run" / "model_card.json").read_text())["min_kp_size"] == 4.0
    bad = tmp_path / "bad"  # a meta.json value no PatchSpec takes is refused, naming the file and the key
    (bad / "train").mkdir(parents=True)
    (bad / "meta.json").write_text(json.dumps({"patch_scale": 6.0, "min_kp_size": -1}))
    for f in (dataset / "train").iterdir():
        (bad / "train" / f.name).symlink_to(f)
    with pytest.raises(ValueError, match=r"bad/meta.json: metadata min_kp_size -1 "):
        train(_config(bad, tmp_path / "badrun", **small), progress=False)
    mixed = _config(dataset, tmp_path / "mixed", **small)
    mixed.data = [str(dataset / "train"), str(tmp_path / "m4" / "train")]
    with pytest.raises(ValueError, match="different min_kp_size"):
        train(mixed, progress=False)


def _config(dataset: Path, out: Path, **kw) -> TrainConfig:
    base = dict(data=str(dataset / "train"), out=str(out), val=str(dataset / "val"), epochs=2,
                pairs_per_epoch=32 * 50, batch_size=32, lr=1.0, precision="fp32", device="cpu",
                checkpoint_every=20)
    return TrainConfig(**{**base, **kw})


def test_training_lowers_fpr95_on_held_out_photos(dataset, tmp_path):
    val = read_phototour(dataset / "val")
    pairs = read_pairs(find_pair_files(dataset / "val")[0])
    torch.manual_seed(0)
    untrained = pairs_fpr95(lambda p: describe_patches(HardNet().eval(), p, device=torch.device("cpu")), val.patches,
                            pairs)

    weights = train(_config(dataset, tmp_path), progress=False)
    trained_net = HardNetDescriptor(weights, device="cpu")
    trained = pairs_fpr95(trained_net.describe_patches, val.patches, pairs)
    print(f"FPR95 untrained {untrained:.3f}, trained {trained:.3f}")
    assert trained < 0.6 * untrained, (untrained, trained)

    log = (tmp_path / "log.csv").read_text().splitlines()
    assert log[0].startswith("epoch,step,pairs_seen") and len(log) == 3
    card = json.loads((tmp_path / "model_card.json").read_text())
    assert card["pairs_seen"] == 2 * 50 * 32 and card["patch_scale"] == trained_net.patch_scale
    assert abs(card["val_fpr95"] - trained) < 0.02  # the trainer's own validation agrees


def test_resume_continues_exactly(dataset, tmp_path):
    small = dict(val=None, epochs=1, pairs_per_epoch=16 * 10, batch_size=16)
    straight = train(_config(dataset, tmp_path / "a", **small), progress=False)
    # the same run, stopped after 6 steps and resumed
    cfg = _config(dataset, tmp_path / "b", checkpoint_every=3, **small)
    train(TrainConfig(**{**cfg.__dict__, "max_steps": 6}), progress=False)
    resumed = train(cfg, resume=True, progress=False)
    a = HardNetDescriptor(straight, device="cpu").net.state_dict()
    b = HardNetDescriptor(resumed, device="cpu").net.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg, progress=False)


@pytest.mark.skipif(not BUNDLED, reason="this build ships no weights")
def test_init_fine_tunes_given_weights(dataset, tmp_path):
    val = read_phototour(dataset / "val")
    shipped = HardNetDescriptor(device="cpu")
    before = shipped.describe_patches(val.patches[:300])
    small = dict(val=None, epochs=1, pairs_per_epoch=32 * 4, batch_size=32, lr=0.01, photos_per_batch=2)
    shipped_name = next(iter(BUNDLED))
    tuned = HardNetDescriptor(train(_config(dataset, tmp_path / "a", init=shipped_name, **small), progress=False))
    fresh = HardNetDescriptor(train(_config(dataset, tmp_path / "b", **small), progress=False))
    cos_tuned = (tuned.describe_patches(val.patches[:300]) * before).sum(1).mean()
    cos_fresh = (fresh.describe_patches(val.patches[:300]) * before).sum(1).mean()
    print(f"mean cosine to the init: fine-tuned {cos_tuned:.3f}, fresh {cos_fresh:.3f}")
    assert cos_tuned > 0.95 and cos_fresh < 0.8
    card = json.loads((tmp_path / "a" / "model_card.json").read_text())
    assert card["recipe"]["init"] == shipped_name and card["recipe"]["photos_per_batch"] == 2
    other = tmp_path / "scale12"
    (other / "train").mkdir(parents=True)
    (other / "meta.json").write_text(json.dumps({"patch_scale": 12.0}))
    for f in (dataset / "train").iterdir():
        (other / "train" / f.name).symlink_to(f)
    with pytest.raises(ValueError, match="patch_scale 6.0.*patch_scale 12.0"):
        train(_config(dataset, tmp_path / "c", data=str(other / "train"), init=shipped_name, **small))


def test_cli_train_errors(tmp_path):
    assert main(["train", str(tmp_path / "missing"), str(tmp_path / "out"), "--quiet"]) == 2
    assert main(["make-dataset", str(tmp_path / "missing"), str(tmp_path / "out")]) == 2


def test_cli_mix_two_datasets_two_val_sets_with_augmentations(dataset, tmp_path, capsys):
    """Two data folders mixed 1:3, two named validation sets, all augmentations; exact resume through the CLI."""
    second = tmp_path / "other" / "train"  # a second data folder (the same patches under another name)
    second.mkdir(parents=True)
    for f in (dataset / "train").iterdir():
        (second / f.name).symlink_to(f)
    common = ["--data", str(dataset / "train"), "--data", str(second), "--mix", "0.25,0.75",
              "--val", str(dataset / "val"), "--val", f"again={dataset / 'val'}", "--aug",
              "noise,blur,jpeg=2,photometric,kpjitter", "--aug-strength", "1.5", "--epochs", "1",
              "--pairs-per-epoch", "96", "--batch-size", "16", "--lr", "0.5", "--precision", "fp32",
              "--device", "cpu", "--checkpoint-every", "2", "--photos-per-batch", "2,0", "--quiet"]
    assert main(["train", str(tmp_path / "a"), *common]) == 0
    rows = list(csv.DictReader(open(tmp_path / "a" / "log.csv")))
    name = dataset.name  # .../<name>/val is named after its parent
    assert list(rows[0])[-2:] == [f"val_fpr95_{name}", "val_fpr95_again"] and len(rows) == 1
    fprs = [float(rows[0][k]) for k in ("val_fpr95", f"val_fpr95_{name}", "val_fpr95_again")]
    assert 0 <= fprs[0] < 1 and fprs[0] == fprs[1] == fprs[2]  # the same pairs, scored three times
    card = json.loads((tmp_path / "a" / "model_card.json").read_text())
    assert card["recipe"]["mix"] == [0.25, 0.75] and card["recipe"]["augment"] == {
        "noise": 1.5, "blur": 1.5, "jpeg": 2.0, "photometric": 1.5, "kpjitter": 1.5, "flip_rot90": False,
        "rot_deg": 0.0, "scale": 0.0}
    assert card["recipe"]["data"] == [str(dataset / "train"), str(second)]
    assert card["recipe"]["photos_per_batch"] == [2, 0]

    # the same run stopped after 3 steps and resumed ends with the same weights
    assert main(["train", str(tmp_path / "b"), *common, "--max-steps", "3"]) == 0
    assert main(["train", str(tmp_path / "b"), *common, "--resume"]) == 0
    a = HardNetDescriptor(tmp_path / "a" / "hardnet.safetensors", device="cpu").net.state_dict()
    b = HardNetDescriptor(tmp_path / "b" / "hardnet.safetensors", device="cpu").net.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    # resuming with another recipe or other validation sets is refused
    capsys.readouterr()
    changed = [x if x != "0.25,0.75" else "0.5,0.5" for x in common]
    assert main(["train", str(tmp_path / "b"), *changed, "--resume"]) == 2
    assert "same recipe" in capsys.readouterr().err
    one_val = common[:6] + common[8:]
    assert main(["train", str(tmp_path / "b"), *one_val, "--resume"]) == 2
    assert "same --val sets" in capsys.readouterr().err


def test_cli_mix_errors(dataset, tmp_path, capsys):
    base = ["train", str(tmp_path / "out"), "--data", str(dataset / "train"), "--quiet", "--device", "cpu",
            "--batch-size", "16"]
    for extra, message in [(["--mix", "0.5,0.5"], "2 fractions for 1 data folders"),
                           (["--aug", "sharpen"], "unknown augmentation 'sharpen'"),
                           (["--photos-per-batch", "2,2"], "2 values for 1 data folders"),
                           (["--val", str(dataset / "val"), "--val", str(dataset / "val")], "NAME=PATH")]:
        assert main([*base, *extra]) == 2
        assert message in capsys.readouterr().err
    assert main(["train", str(tmp_path / "out"), "--quiet"]) == 2
    assert "give a training folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse's own error
        main([*base, "--mix", "half"])
    assert "comma-separated floats" in capsys.readouterr().err


def test_make_dataset_takes_any_point_budget_and_names_an_empty_validation_split(photo_dir, tmp_path):
    """--points 1e11 stopped in cv2.SIFT_create ("integer won't fit into a C int") after split.json was written; a
    validation split that kept no patch stopped with "n_pairs must be a positive integer, got 0"."""
    from hardnet_desc.train.datasets.synthetic import MatchConfig, detect

    image = cv2.imread(str(EXAMPLE_FILES[0]), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(detect(image, 10**11), detect(image, 2**31 - 1))
    assert len(detect(image, 10**11)) > 1000
    with pytest.raises(ValueError, match="no patch .* loosen --match-angle/--match-scale"):
        make_dataset(photo_dir, tmp_path / "ds", points=50, views=1, val_fraction=0.34, workers=1, progress=False,
                     match=MatchConfig(max_px=0.0, max_rel_px=0.0))  # no re-detection lands exactly on its projection


def test_config_takes_paths_and_numpy_numbers(dataset, tmp_path):
    """TrainConfig(out=Path(...)) (or data=[Path], batch_size=np.int64) trained every step, then failed at the
    export ("PosixPath is not JSON serializable"), and its checkpoint could not be resumed (the safe loader refused
    pathlib's globals); data=Path and val=Path stopped with "'PosixPath' object is not iterable"."""
    out = tmp_path / "run"
    cfg = _config(dataset, out, data=dataset / "train", val=[dataset / "val"], init=None, epochs=1,
                  batch_size=np.int64(32), pairs_per_epoch=np.int64(64), lr=np.float32(0.5), max_steps=1,
                  augment=AugmentConfig(noise=np.float32(0.5), flip_rot90=np.bool_(True)))
    cfg.out = out
    train(cfg, progress=False)
    cfg.max_steps = None
    weights = train(cfg, resume=True, progress=False)  # the checkpoint holds plain values only
    recipe = json.loads((out / "model_card.json").read_text())["recipe"]
    assert weights == out / "hardnet.safetensors" and recipe["out"] == str(out)
    assert recipe["data"] == str(dataset / "train") and recipe["val"] == [str(dataset / "val")]
    assert recipe["batch_size"] == 32 and recipe["augment"]["noise"] == 0.5 and recipe["augment"]["flip_rot90"] is True
    assert isinstance(cfg.out, Path)  # the caller's config is left as it was


@pytest.mark.parametrize("field, value, error, match", [
    ("epochs", 1.5, TypeError, "epochs must be an integer, got float 1.5"),
    ("epochs", "1", TypeError, "epochs must be an integer, got str '1'"),
    ("batch_size", 64.0, TypeError, "batch_size must be an integer, got float 64.0"),
    ("seed", None, TypeError, "seed must be an integer, got NoneType None"),
    ("photos_per_batch", 1.5, TypeError, "photos_per_batch must be an integer, got float 1.5"),
    ("anchor_swap", "no", TypeError, "anchor_swap must be True or False, got str 'no'"),
    ("out", 3, TypeError, "out must be a path (str or os.PathLike), got int 3"),
    ("data", [b"ds"], TypeError, "data must be a path"),
    ("mix", 0.5, TypeError, "mix must be a list of fractions"),
    ("lr", "0.1", TypeError, "lr must be a number, got str '0.1'"),
    ("extra", {"when": object()}, TypeError, "extra must hold JSON values"),
], ids=lambda v: repr(v)[:20])
def test_config_refuses_other_types_before_any_work(dataset, tmp_path, field, value, error, match):
    """epochs=1.5 trained 1.5 epochs, anchor_swap='no' was taken as True, seed=None, photos_per_batch=1.5,
    batch_size=64.0 and epochs='1' stopped in Python internals (TypeError: '<=' not supported ...)."""
    out = tmp_path / "run"
    cfg = _config(dataset, out, epochs=1, pairs_per_epoch=128, batch_size=32, val=None)
    setattr(cfg, field, value)
    with pytest.raises(error, match=re.escape(match)):
        train(cfg, progress=False)
    assert not out.exists()


def test_training_api_refuses_other_types(dataset):
    """AugmentConfig(flip_rot90='no') was taken as True, AugmentConfig(noise='1') stopped in a comparison,
    hardest_in_batch_loss(numpy arrays) with "'str' object has no attribute 'type'", and a PhotoTourData whose
    source is shorter than its patches with an IndexError in the sampler."""
    with pytest.raises(TypeError, match="flip_rot90 must be True or False"):
        AugmentConfig(flip_rot90="no")
    with pytest.raises(TypeError, match="noise must be a number, got str '1'"):
        AugmentConfig(noise="1")
    a = np.random.default_rng(0).standard_normal((8, 128)).astype(np.float32)
    with pytest.raises(TypeError, match="anchor and positive must be torch tensors"):
        hardest_in_batch_loss(a, a)
    with pytest.raises(TypeError, match="margin must be a number"):
        hardest_in_batch_loss(torch.from_numpy(a), torch.from_numpy(a), margin="1")
    data = read_phototour(dataset / "train")
    short = PhotoTourData(data.patches, data.point_ids, data.source[:10])
    with pytest.raises(ValueError, match=f"data.source has 10 entries for {len(data)} patches"):
        PairDataset(short, 64, batch_size=32, photos_per_batch=2)
