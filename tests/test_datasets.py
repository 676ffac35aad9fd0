import json
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from hardnet_desc.cli import main
from hardnet_desc.data.hpatches import HPATCHES_IMAGES, read_hpatches
from hardnet_desc.data.phototour import (
    PhotoTourData,
    PhotoTourWriter,
    find_pair_files,
    make_pairs,
    read_pairs,
    read_phototour,
    write_phototour,
)
from hardnet_desc.data.warps import HARD_WARP
from hardnet_desc.train.augment import AugmentConfig
from hardnet_desc.train.datasets import synthetic
from hardnet_desc.train.datasets.synthetic import make_dataset
from hardnet_desc.train.datasets.writer import StagedDataset, write_split
from hardnet_desc.train.sampler import MixedPairs, PairDataset, split_batch

N = 300  # two bmp files, the second holds 44 patches


def make_patches(n, seed=0):
    """Random (asymmetric) content with the index stamped in the first pixels."""
    p = np.random.default_rng(seed).integers(0, 256, (n, 64, 64), dtype=np.uint8)
    p[:, 0, 0] = np.arange(n) // 256
    p[:, 0, 1] = np.arange(n) % 256
    return p


def point_ids(n):
    ids = np.arange(n) // 3  # 3 patches per point ...
    ids[-2:] = [1000, 1001]  # ... and two single-patch points
    return ids.astype(np.int64)


def write_by_hand(root, patches, ids):
    """The PhotoTour layout written independently of PhotoTourWriter."""
    root.mkdir(parents=True, exist_ok=True)
    for f in range((len(patches) + 255) // 256):
        img = np.zeros((1024, 1024), np.uint8)
        for k in range(256):
            g = f * 256 + k
            if g < len(patches):
                r, c = k // 16, k % 16
                img[64 * r : 64 * r + 64, 64 * c : 64 * c + 64] = patches[g]
        cv2.imwrite(str(root / f"patches{f:04d}.bmp"), img)
    (root / "info.txt").write_text("".join(f"{i} 0\n" for i in ids))


@pytest.fixture
def tour(tmp_path):
    patches, ids = make_patches(N), point_ids(N)
    write_by_hand(tmp_path / "tour", patches, ids)
    return tmp_path / "tour", patches, ids


def mean2x2(p):
    s = p.reshape(len(p), 32, 2, 32, 2).astype(np.int32).sum((2, 4))
    return ((s + 2) // 4).astype(np.uint8)  # round half up


def test_read_grid_layout(tour):
    root, patches, ids = tour
    data = read_phototour(root, patch_size=64)
    assert data.patches.shape == (N, 64, 64) and data.patches.dtype == np.uint8
    np.testing.assert_array_equal(data.patches, patches)  # incl. the partial last file
    np.testing.assert_array_equal(data.point_ids, ids)
    assert data.point_ids.dtype == np.int64
    # stamped index of patch 290 = file 1, cell 34 = row 2, col 2
    assert data.patches[290, 0, 0] == 1 and data.patches[290, 0, 1] == 290 % 256


def test_read_32_is_2x2_mean(tour):
    root, patches, _ = tour
    data = read_phototour(root)
    assert data.patches.shape == (N, 32, 32)
    np.testing.assert_array_equal(data.patches, mean2x2(patches))


def test_writer_round_trip_and_layout(tmp_path, tour):
    hand_root, patches, ids = tour
    pairs = {"m50_20_20_0.txt": make_pairs(ids, 20, seed=1)}
    write_phototour(tmp_path / "w", patches, ids, pairs)
    for f in ("patches0000.bmp", "patches0001.bmp"):  # identical to the hand-made layout
        np.testing.assert_array_equal(
            cv2.imread(str(tmp_path / "w" / f), 0), cv2.imread(str(hand_root / f), 0)
        )
    last = cv2.imread(str(tmp_path / "w" / "patches0001.bmp"), 0)
    # 44 patches fill grid rows 0-1 and row 2 up to col 11; the rest is black
    assert last[192:].max() == 0 and last[128:192, 64 * 12 :].max() == 0
    assert last[128:192, 64 * 11 : 64 * 12].max() > 0
    data = read_phototour(tmp_path / "w", patch_size=64)
    np.testing.assert_array_equal(data.patches, patches)
    np.testing.assert_array_equal(data.point_ids, ids)
    i1, i2, m = read_pairs(tmp_path / "w" / "m50_20_20_0.txt")
    for got, want in zip((i1, i2, m), pairs["m50_20_20_0.txt"]):
        np.testing.assert_array_equal(got, want)
    assert find_pair_files(tmp_path / "w") == [tmp_path / "w" / "m50_20_20_0.txt"]


def test_split_writer_runs_labels_on_across_parts(tmp_path):
    """train.datasets.writer.write_split (both builders'): part labels run on, the part index is the photo column."""
    patches = make_patches(300)
    local = [np.repeat(np.arange(50), 2), np.zeros(0, np.int64), np.repeat(np.arange(100), [1, 2] * 50)[:150]]
    parts = [(patches[:100], local[0], 0), (patches[:0], local[1], 1), (patches[100:250], local[2], 2)]
    seen = []

    def pair_files(ids):
        seen.append(ids)
        return {"m50_30_30_0.txt": make_pairs(ids, 30, seed=0)}

    ids = write_split(tmp_path / "val", iter(parts), first_label=7, pair_files=pair_files, progress=False)
    want = np.concatenate([local[0] + 7, local[2] + 57])
    np.testing.assert_array_equal(ids, want)
    np.testing.assert_array_equal(seen[0], want)
    data = read_phototour(tmp_path / "val", patch_size=64)
    np.testing.assert_array_equal(data.patches, patches[:250])
    np.testing.assert_array_equal(data.point_ids, want)
    np.testing.assert_array_equal(data.source, np.repeat([0, 2], [100, 150]))
    assert find_pair_files(tmp_path / "val") == [tmp_path / "val" / "m50_30_30_0.txt"]
    assert len(write_split(tmp_path / "empty", [], progress=False)) == 0 and not find_pair_files(tmp_path / "empty")


def test_streaming_writer_in_pieces(tmp_path):
    patches, ids = make_patches(600), point_ids(600)
    with PhotoTourWriter(tmp_path) as w:
        for s in range(0, 600, 100):
            w.add(patches[s : s + 100], ids[s : s + 100])
        # full files are already on disk before close
        assert (tmp_path / "patches0001.bmp").exists() and not (tmp_path / "patches0002.bmp").exists()
    data = read_phototour(tmp_path, patch_size=64)
    np.testing.assert_array_equal(data.patches, patches)


def test_rewrite_removes_what_the_earlier_dataset_left(tmp_path):
    """A smaller dataset written over a larger one (make-dataset run again with other numbers) leaves none of
    the old bmp or pair files: readers would take a stale m50_*.txt for this dataset's pairs."""
    patches, ids = make_patches(600), point_ids(600)
    write_phototour(tmp_path, patches, ids, {"m50_600_600_0.txt": make_pairs(ids, 600, 0)})
    (tmp_path / "notes.txt").write_text("not part of the layout")
    write_phototour(tmp_path, patches[:300], ids[:300], {"m50_300_300_0.txt": make_pairs(ids[:300], 300, 0)})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "info.txt", "m50_300_300_0.txt", "notes.txt", "patches0000.bmp", "patches0001.bmp"]
    np.testing.assert_array_equal(read_phototour(tmp_path, patch_size=64).patches, patches[:300])
    write_phototour(tmp_path, patches[:10], ids[:10])
    assert not find_pair_files(tmp_path) and not (tmp_path / "patches0001.bmp").exists()


def test_writer_rejects_inconsistent_pairs(tmp_path):
    patches, ids = make_patches(6), np.array([0, 0, 1, 1, 2, 2])
    with pytest.raises(ValueError, match="is_match disagrees"):
        write_phototour(tmp_path, patches, ids, {"m50.txt": ([0], [1], [False])})
    with pytest.raises(ValueError, match=r"uint8 \(k, 64, 64\)"):
        PhotoTourWriter(tmp_path).add(patches[:, :32], ids)


def test_pair_file_parsing(tmp_path):
    path = tmp_path / "m50_3_3_0.txt"
    path.write_text("5 7 0 9 7 0\n1 2 0 3 4 0\n\n10 11 0 12 11 0\n")
    i1, i2, m = read_pairs(path)
    np.testing.assert_array_equal(i1, [5, 1, 10])
    np.testing.assert_array_equal(i2, [9, 3, 12])
    np.testing.assert_array_equal(m, [True, False, True])
    path.write_text("5 7 0 9 7 0\n1 2 0 3 x 0\n")
    with pytest.raises(ValueError, match=r"m50_3_3_0.txt:2: expected"):
        read_pairs(path)


def test_read_errors(tour):
    root, _, _ = tour
    info = root / "info.txt"
    text = info.read_text()
    info.write_text(text.replace("5 0\n", "5\n", 1))
    with pytest.raises(ValueError, match=r"info.txt:16: expected 'pointID photo'"):
        read_phototour(root)
    info.write_text(text + "".join("7 0\n" for _ in range(300)))  # needs a 3rd bmp
    with pytest.raises(FileNotFoundError, match="patches0002.bmp"):
        read_phototour(root)
    info.unlink()
    with pytest.raises(FileNotFoundError, match="missing file: .*info.txt"):
        read_phototour(root)
    with pytest.raises(FileNotFoundError, match="folder not found"):
        read_phototour(root / "nope")


def test_make_pairs():
    ids = point_ids(N)
    i1, i2, m = make_pairs(ids, 1001, seed=0)
    assert len(i1) == 1001 and m.sum() == 500
    assert np.array_equal(m, ids[i1] == ids[i2])
    assert np.all(i1[m] != i2[m])
    for got, want in zip((i1, i2, m), make_pairs(ids, 1001, seed=0)):
        np.testing.assert_array_equal(got, want)


# --------------------------------------------------------------------------- HPatches


def write_hpatches(root, rows, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for seq, n in rows.items():
        (root / seq).mkdir(parents=True)
        for name in HPATCHES_IMAGES:
            img = rng.integers(0, 256, (65 * n, 65), dtype=np.uint8)
            cv2.imwrite(str(root / seq / f"{name}.png"), img)
            out[seq, name] = img
    return out


def test_read_hpatches(tmp_path):
    imgs = write_hpatches(tmp_path, {"i_a": 5, "v_b": 3})
    data = read_hpatches(tmp_path)
    assert data.patches.shape == (16 * 8, 32, 32)
    # order: sequence, image, row; point ids unique across sequences
    np.testing.assert_array_equal(data.point_ids[:10], [0, 1, 2, 3, 4, 0, 1, 2, 3, 4])
    np.testing.assert_array_equal(data.point_ids[80:86], [5, 6, 7, 5, 6, 7])
    # patch 2 of v_b/e1 = ref block + e1 offset; INTER_AREA per patch
    k = 80 + 3 + 2
    assert data.source_names[data.source[k]] == "v_b/e1"
    want = cv2.resize(imgs["v_b", "e1"][130:195], (32, 32), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(data.patches[k], want)
    full = read_hpatches(tmp_path, patch_size=65, sequences=["v_b"], images=["ref", "h3"])
    np.testing.assert_array_equal(full.patches[3:], imgs["v_b", "h3"].reshape(3, 65, 65))


def test_hpatches_count_mismatch(tmp_path):
    write_hpatches(tmp_path, {"i_a": 4})
    cv2.imwrite(str(tmp_path / "i_a" / "t2.png"), np.zeros((65 * 3, 65), np.uint8))
    with pytest.raises(ValueError, match="disagree in patch count"):
        read_hpatches(tmp_path)
    (tmp_path / "i_a" / "t2.png").unlink()
    with pytest.raises(FileNotFoundError, match="t2.png"):
        read_hpatches(tmp_path)


# --------------------------------------------------------------------------- PairDataset


@pytest.fixture
def data():
    ids = point_ids(N)
    return PhotoTourData(mean2x2(make_patches(N)), ids)


def test_pair_invariants(data):
    ds = PairDataset(data, n_pairs=100, batch_size=32, seed=0)
    assert len(ds) == 3
    for b in range(len(ds)):
        ia, ip = ds.pair_indices(0, b)
        pa, pp = data.point_ids[ia], data.point_ids[ip]
        assert np.array_equal(pa, pp) and np.all(ia != ip)
        assert len(np.unique(pa)) == 32
        assert not np.isin(pa, [1000, 1001]).any()  # single-patch points skipped
    a, p = ds.get_batch(0, 1)
    assert a.shape == p.shape == (32, 1, 32, 32) and a.dtype == torch.float32
    ia, _ = ds.pair_indices(0, 1)
    torch.testing.assert_close(a[:, 0], torch.from_numpy(data.patches[ia]).float() / 255)


def test_deterministic_and_resumable(data):
    ds = PairDataset(data, n_pairs=128, batch_size=32, seed=5)
    full = list(ds.batches(epoch=2))
    again = list(PairDataset(data, n_pairs=128, batch_size=32, seed=5).batches(epoch=2, start=2))
    for x, y in zip(full[2:], again, strict=True):
        assert torch.equal(x[0], y[0]) and torch.equal(x[1], y[1])
    other_epoch = ds.get_batch(3, 0)[0]
    other_seed = PairDataset(data, n_pairs=128, batch_size=32, seed=6).get_batch(2, 0)[0]
    assert not torch.equal(full[0][0], other_epoch) and not torch.equal(full[0][0], other_seed)


def dihedral(x):
    return [np.rot90(y, k) for y in (x, x[:, ::-1]) for k in range(4)]


def test_augment_same_transform_for_pair():
    # the two patches of a point are identical, so a == p iff both got the same transform
    base = np.random.default_rng(1).integers(0, 256, (50, 32, 32), dtype=np.uint8)
    data = PhotoTourData(np.repeat(base, 2, axis=0), np.repeat(np.arange(50), 2))
    ds = PairDataset(data, n_pairs=40, batch_size=40, seed=0, augment=AugmentConfig(flip_rot90=True))
    a, p = ds.get_batch(0, 0)
    assert torch.equal(a, p)
    ia, _ = ds.pair_indices(0, 0)
    a8 = (a[:, 0] * 255).round().to(torch.uint8).numpy()
    changed = 0
    for x, i in zip(a8, ia):
        orig = data.patches[i]
        assert any(np.array_equal(x, t) for t in dihedral(orig))
        changed += not np.array_equal(x, orig)
    assert changed > 0


def test_jitter(data):
    ds = PairDataset(data, n_pairs=64, batch_size=32, seed=0, augment=AugmentConfig(rot_deg=10, scale=0.1))
    a, p = ds.get_batch(0, 0)
    assert a.shape == (32, 1, 32, 32) and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, ds.get_batch(0, 0)[0])
    plain = PairDataset(data, n_pairs=64, batch_size=32, seed=0).get_batch(0, 0)[0]
    assert not torch.equal(a, plain)


def test_pair_dataset_errors(data):
    with pytest.raises(ValueError, match="distinct points"):
        PairDataset(data, n_pairs=1000, batch_size=500, seed=0)
    with pytest.raises(IndexError, match="batch index"):
        PairDataset(data, n_pairs=64, batch_size=32, seed=0).get_batch(0, 2)


def test_photo_column_round_trip(tmp_path, tour):
    hand_root, patches, ids = tour
    assert not read_phototour(hand_root).source.any()  # Brown's files: second column 0
    with PhotoTourWriter(tmp_path / "w") as w:
        w.add(patches[:100], ids[:100], photo=3)
        w.add(patches[100:], ids[100:], photo=7)
        with pytest.raises(ValueError, match="photo"):
            w.add(patches[:1], ids[:1], photo=-1)
    source = read_phototour(tmp_path / "w").source
    np.testing.assert_array_equal(source, np.r_[np.full(100, 3), np.full(N - 100, 7)])


@pytest.fixture
def photo_data():
    """Points of 3 patches, 10 per photo (photo 9: 9, its last point and 2 more have 1 patch)."""
    ids = point_ids(N)
    return PhotoTourData(mean2x2(make_patches(N)), ids, (np.minimum(ids, 99) // 10).astype(np.int32))


@pytest.mark.parametrize("k, n_photos, most", [(4, 4, 8), (2, 4, 10)])
def test_photos_per_batch(photo_data, k, n_photos, most):
    # k=2 asks 16 points of photos holding 10: each gives all it has, further photos fill the batch
    ds = PairDataset(photo_data, n_pairs=96, batch_size=32, seed=0, photos_per_batch=k)
    seen = set()
    for b in range(len(ds)):
        ia, ip = ds.pair_indices(0, b)
        pa = photo_data.point_ids[ia]
        assert np.array_equal(pa, photo_data.point_ids[ip]) and np.all(ia != ip)
        assert len(np.unique(pa)) == 32
        photos, counts = np.unique(photo_data.source[ia], return_counts=True)
        assert len(photos) == n_photos and counts.max() == most
        seen.update(photos)
    assert len(seen) > k  # batches differ in their photos
    np.testing.assert_array_equal(ds.pair_indices(0, 1)[0], PairDataset(
        photo_data, n_pairs=96, batch_size=32, seed=0, photos_per_batch=k).pair_indices(0, 1)[0])


def test_photos_per_batch_fills_the_batch_when_photos_run_out():
    # 3 "photos" (e.g. scenes) of 40 points; 32 points from 8 photos asks 4 per photo: 3 * 4 < 32
    ids = np.repeat(np.arange(120), 2)
    data = PhotoTourData(np.zeros((240, 32, 32), np.uint8), ids, (ids // 40).astype(np.int32))
    ds = PairDataset(data, n_pairs=64, batch_size=32, seed=0, photos_per_batch=8)
    for b in range(len(ds)):
        ia, _ = ds.pair_indices(0, b)
        assert len(ia) == 32 and len(np.unique(ids[ia])) == 32


def test_photos_per_batch_errors(data, photo_data):
    with pytest.raises(ValueError, match="data.source"):
        PairDataset(data, n_pairs=64, batch_size=32, seed=0, photos_per_batch=4)
    with pytest.raises(ValueError, match="photos_per_batch"):
        PairDataset(photo_data, n_pairs=64, batch_size=32, seed=0, photos_per_batch=-1)


ALL_AUG = AugmentConfig.parse("noise,blur,jpeg,photometric,kpjitter")


def test_augmented_batches_resume_exactly(data):
    kw = dict(n_pairs=128, batch_size=32, seed=5, augment=replace(ALL_AUG, rot_deg=10, scale=0.1))
    full = list(PairDataset(data, **kw).batches(epoch=1))
    again = list(PairDataset(data, **kw).batches(epoch=1, start=2))
    for x, y in zip(full[2:], again, strict=True):
        assert torch.equal(x[0], y[0]) and torch.equal(x[1], y[1])
    plain = PairDataset(data, n_pairs=128, batch_size=32, seed=5,
                        augment=AugmentConfig(rot_deg=10, scale=0.1)).get_batch(1, 0)
    assert not torch.equal(full[0][0], plain[0])
    # anchor and positive get independent draws: two copies of one patch come out different
    base = np.random.default_rng(1).integers(0, 256, (40, 32, 32), dtype=np.uint8)
    twins = PhotoTourData(np.repeat(base, 2, axis=0), np.repeat(np.arange(40), 2))
    a, p = PairDataset(twins, n_pairs=40, batch_size=40, seed=0, augment=ALL_AUG).get_batch(0, 0)
    assert (a != p).flatten(1).any(1).float().mean() > 0.9


def test_kpjitter_zero_is_identity_and_rot_jitter_unchanged(data):
    plain = PairDataset(data, n_pairs=64, batch_size=32, seed=0).get_batch(0, 1)
    zero = PairDataset(data, n_pairs=64, batch_size=32, seed=0, augment=AugmentConfig(kpjitter=0.0))
    for x, y in zip(plain, zero.get_batch(0, 1)):
        assert torch.equal(x, y)
    # kpjitter adds its noise to the same rotation/zoom draws
    rot = PairDataset(data, n_pairs=64, batch_size=32, seed=0, augment=AugmentConfig(rot_deg=10)).get_batch(0, 1)[0]
    both = PairDataset(data, n_pairs=64, batch_size=32, seed=0,
                       augment=AugmentConfig(kpjitter=1.0, rot_deg=10)).get_batch(0, 1)[0]
    diff = (both - rot).abs().mean().item()
    assert 0 < diff < (rot - plain[0]).abs().mean().item()


def test_split_batch():
    assert split_batch(1024, [0.5, 0.5]) == [512, 512]
    assert split_batch(10, [0.3, 0.7]) == [3, 7]
    assert split_batch(1024, [1, 1, 1]) == [342, 341, 341]
    assert split_batch(100, [2, 6]) == [25, 75]  # normalised
    with pytest.raises(ValueError, match="positive"):
        split_batch(10, [0.5, 0.0])


def test_mixed_pairs_draw_the_requested_fractions(data, photo_data):
    sizes = split_batch(40, [0.25, 0.75])
    parts = [PairDataset(data, 3 * sizes[0], batch_size=sizes[0], seed=2, augment=ALL_AUG),
             PairDataset(photo_data, 3 * sizes[1], batch_size=sizes[1], seed=2, photos_per_batch=3, stream=1)]
    mix = MixedPairs(parts)
    assert len(mix) == 3 and mix.batch_size == 40
    a, p = mix.get_batch(1, 2)
    assert a.shape == p.shape == (40, 1, 32, 32)
    for rows, part in zip((slice(0, 10), slice(10, 40)), parts):  # part 0's rows first, each drawn as alone
        alone = part.get_batch(1, 2)
        assert torch.equal(a[rows], alone[0]) and torch.equal(p[rows], alone[1])
    ia, _ = parts[1].pair_indices(1, 2)
    assert len(np.unique(photo_data.source[ia])) == 3  # the part keeps its photos-per-batch sampling
    # resumable: a batch rebuilt later is the same
    assert torch.equal(list(mix.batches(1, start=2))[0][0], a)
    # a second stream draws other points than the same data with stream 0
    same = PairDataset(photo_data, 3 * sizes[1], batch_size=sizes[1], seed=2, photos_per_batch=3)
    assert not np.array_equal(same.pair_indices(1, 2)[0], ia)
    with pytest.raises(ValueError, match="distinct streams"):
        MixedPairs([parts[0], PairDataset(data, 3 * sizes[0], batch_size=sizes[0], seed=2)])
    with pytest.raises(ValueError, match="equal lengths"):
        MixedPairs([parts[0], PairDataset(data, 4 * sizes[0], batch_size=sizes[0], seed=2, stream=1)])


# --------------------------------------------------------------------------- make-dataset's outputs (synthetic builder)


FAST = dict(points=60, views=2, val_fraction=0.25, val_pairs=100, workers=1, progress=False)  # 3 train, 1 val photo


def snapshot(folder):
    """Every file below ``folder`` (hidden ones too) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("error", [ValueError("cannot decode image file: p11.jpg"), KeyboardInterrupt()])
def test_failed_or_interrupted_rebuild_leaves_the_old_dataset(photo_crops, tmp_path, monkeypatch, error):
    """Finding 1: a rebuild that stopped at a validation photo (a corrupt photo, Ctrl-C) had already written the new
    train split over the old one, beside the old meta.json: a mixed dataset that loads without a word."""
    out = tmp_path / "ds"
    make_dataset(photo_crops, out, **FAST)
    before = snapshot(out)
    cut, calls = synthetic.correspondences_from_image, []

    def fails_at_the_validation_photo(job):
        calls.append(job.path)
        if len(calls) > 3:  # the three training photos are cut, and written
            raise error
        return cut(job)

    monkeypatch.setattr(synthetic, "correspondences_from_image", fails_at_the_validation_photo)
    with pytest.raises(type(error)):
        make_dataset(photo_crops, out, seed=1, **FAST)
    assert len(calls) == 4 and snapshot(out) == before
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "split.json", "train", "val"]  # no temporary folder
    monkeypatch.undo()
    assert make_dataset(photo_crops, out, seed=1, **FAST)["seed"] == 1
    assert json.loads((out / "meta.json").read_text())["seed"] == 1 and snapshot(out) != before


def test_a_rebuild_removes_what_a_killed_build_left(photo_crops, tmp_path):
    """The temporary folders a killed build leaves (named as ours) are removed by the next; others stay."""
    out = tmp_path / "ds"
    for name in (".train.partial", ".val.old", ".cache"):
        (out / name).mkdir(parents=True)
        (out / name / "patches0000.bmp").write_bytes(b"half")
    (out / ".meta.json.partial").write_text("{}")
    make_dataset(photo_crops, out, **FAST)
    assert sorted(p.name for p in out.iterdir()) == [".cache", "meta.json", "split.json", "train", "val"]
    assert len(read_phototour(out / "train")) > 50 and (out / ".cache" / "patches0000.bmp").read_bytes() == b"half"


def test_failed_sfm_rebuild_leaves_the_old_dataset(tmp_path, monkeypatch):
    """Finding 1, --from-sfm: the same writer; a scene that fails (here the validation scene, built last) left the
    new train split beside the old val split and records. A split not rebuilt (no validation scene) is removed."""
    pycolmap = pytest.importorskip("pycolmap")
    from hardnet_desc.train.datasets import sfm

    photos = Path(__file__).resolve().parent / "data" / "multiview" / "bundler-et"
    scene = tmp_path / "scenes" / "bundler-et"
    (scene / "sparse").mkdir(parents=True)
    names = sorted(p.name for p in photos.glob("*.jpg"))[:5]
    pycolmap.set_random_seed(0)
    pycolmap.extract_features(scene / "database.db", photos, image_names=names)
    pycolmap.match_exhaustive(scene / "database.db")
    pycolmap.incremental_mapping(scene / "database.db", photos, scene / "sparse")
    (scene / "summary.json").write_text(json.dumps({"image_dir": str(photos), "num_images": len(names)}))
    shutil.copytree(scene, tmp_path / "scenes" / "other-et")
    out, options = tmp_path / "data", dict(val_scenes=["bundler-et"], max_points_per_scene=200, progress=False)
    sfm.make_sfm_dataset(tmp_path / "scenes", out, **options)
    before = snapshot(out)
    cut = sfm.scene_patches

    def fails_at_the_validation_scene(scene, **kwargs):
        if scene.name == "bundler-et":
            raise FileNotFoundError(f"missing photo {scene.image_dir / names[0]}")
        return cut(scene, **kwargs)

    monkeypatch.setattr(sfm, "scene_patches", fails_at_the_validation_scene)
    with pytest.raises(FileNotFoundError, match="missing photo"):
        sfm.make_sfm_dataset(tmp_path / "scenes", out, seed=1, **options)
    assert snapshot(out) == before
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "record.json", "train", "val"]
    monkeypatch.undo()
    sfm.make_sfm_dataset(tmp_path / "scenes", out, **{**options, "val_scenes": []})
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "record.json", "train"]


@pytest.mark.parametrize("inside", ["ds", "."])
def test_make_dataset_refuses_an_output_folder_in_the_photo_folder(photo_crops, tmp_path, inside):
    """Finding 3: OUT inside IMAGES (or IMAGES itself): the next run listed its own patch grids as photos."""
    photos = tmp_path / "photos"
    shutil.copytree(photo_crops, photos)
    with pytest.raises(ValueError, match="photo folder .*: a later run would take its patch files for input"):
        make_dataset(photos, photos / inside, **FAST)
    assert sorted(p.name for p in photos.iterdir()) == sorted(p.name for p in photo_crops.iterdir())  # nothing written
    assert main(["make-dataset", "--from-sfm", str(tmp_path), str(tmp_path / "data")]) == 2  # OUT in SCENES_DIR
    assert not (tmp_path / "data").exists()


def test_make_dataset_refuses_an_empty_training_split(photo_crops, tmp_path):
    """Finding 8: a val_fraction leaving no training photo, or training photos that give no patch, made an empty
    train split (exit 0) while the same for the validation split was refused."""
    two = tmp_path / "two"
    two.mkdir()
    for name in ("p00.jpg", "p01.jpg"):
        shutil.copy(photo_crops / name, two / name)
    with pytest.raises(ValueError, match="val_fraction=0.9 leaves no training photo out of 2"):
        make_dataset(two, tmp_path / "ds", **{**FAST, "val_fraction": 0.9})
    assert not (tmp_path / "ds").exists()
    # flat photos (no keypoint) for training, a real one for validation
    photos = tmp_path / "photos"
    photos.mkdir()
    for k in range(3):
        cv2.imwrite(str(photos / f"flat{k}.png"), np.full((260, 260), 60 * k, np.uint8))
    shutil.copy(photo_crops / "p00.jpg", photos / "real.jpg")
    split_seed = next(s for s in range(50) if synthetic.split_images(sorted(photos.iterdir()), 0.25, s)[1][0].name
                      == "real.jpg")
    out = tmp_path / "old"
    make_dataset(photo_crops, out, **FAST)
    before = snapshot(out)
    with pytest.raises(ValueError, match="old/train: the training photos gave no patch"):
        make_dataset(photos, out, split_seed=split_seed, **FAST)
    assert snapshot(out) == before


def test_make_dataset_refuses_a_file_for_a_split_folder_before_work(photo_crops, tmp_path):
    """From finding 13: OUT/val a file was reported ([Errno 17] File exists) after the train split was built."""
    out = tmp_path / "ds"
    out.mkdir()
    (out / "val").write_text("mine")
    with pytest.raises(FileExistsError, match="ds/val is a file, not a dataset folder; pass --force"):
        make_dataset(photo_crops, out, **FAST)
    assert sorted(p.name for p in out.iterdir()) == ["val"] and (out / "val").read_text() == "mine"


def test_make_dataset_workers(photo_crops, tmp_path, monkeypatch, capsys):
    """From finding 13: --workers -3 was taken (serial) and 0 meant the default 2 processes; 0 now runs in this
    process, as 1 does, and a negative count is refused before any work."""
    with pytest.raises(ValueError, match="workers must be >= 0"):
        make_dataset(photo_crops, tmp_path / "w", **{**FAST, "workers": -3})
    assert main(["make-dataset", str(photo_crops), str(tmp_path / "w"), "--workers", "-3"]) == 2
    assert "error: workers must be >= 0 (None: up to 2), got -3" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()

    def no_pool(*args, **kwargs):
        raise AssertionError("workers=0 starts no process")

    monkeypatch.setattr(synthetic, "WorkerPool", no_pool)
    assert make_dataset(photo_crops, tmp_path / "w", **{**FAST, "workers": 0})["val"]["patches"] > 0


def test_make_dataset_takes_the_warp_names_of_the_cli(photo_crops, tmp_path):
    """From finding 13: make_dataset(warp='hard') failed inside asdict() after writing split.json."""
    with pytest.raises(ValueError, match="warp must be a WarpConfig or one of \\['default', 'hard'\\], got 'harder'"):
        make_dataset(photo_crops, tmp_path / "w", warp="harder", **FAST)
    assert not (tmp_path / "w").exists()
    summary = make_dataset(photo_crops, tmp_path / "hard", warp="hard", **FAST)
    assert summary["warp"] == asdict(HARD_WARP) == json.loads((tmp_path / "hard" / "meta.json").read_text())["warp"]


def test_full_disk_names_the_file_and_the_reason(tmp_path):
    """Finding 12: a full disk gave 'cannot write .../patches0000.bmp' without the reason."""
    (tmp_path / "patches0000.bmp").symlink_to("/dev/full")
    writer = PhotoTourWriter(tmp_path)
    with pytest.raises(OSError, match=f"cannot write {tmp_path / 'patches0000.bmp'}: No space left on device"):
        writer.add(make_patches(256), np.arange(256))


def test_a_swap_that_fails_half_way_is_undone(photo_crops, tmp_path, monkeypatch):
    """A rename of the swap that fails (Windows: a file of the new folder held by a scanner) left the new train
    split, no val split and the old meta.json: the swap is now undone, the old dataset left whole."""
    out = tmp_path / "ds"
    make_dataset(photo_crops, out, **FAST)
    before, rename = snapshot(out), Path.rename

    def held(self, target):
        if self.name == ".val.partial":
            raise PermissionError(13, "in use by another process", str(self))
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", held)
    with pytest.raises(PermissionError):
        make_dataset(photo_crops, out, seed=1, **FAST)
    assert snapshot(out) == before
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "split.json", "train", "val"]


def test_a_swap_a_killed_process_left_is_undone_or_finished(photo_crops, tmp_path):
    out = tmp_path / "ds"
    make_dataset(photo_crops, out, **FAST)
    before = snapshot(out)
    # killed after the new train split went in, before the records: the old dataset comes back
    (out / "train").rename(out / ".train.old")
    shutil.copytree(out / ".train.old", out / "train")
    (out / "train" / "info.txt").write_text("0 0\n")
    (out / ".meta.json.partial").write_text("{}")
    StagedDataset(out)
    assert snapshot(out) == before
    # killed after every record went in, before the clean-up: the new dataset stays
    shutil.copytree(out / "val", out / ".val.old")
    StagedDataset(out)
    assert snapshot(out) == before and not (out / ".val.old").exists()


def test_a_failed_first_build_leaves_no_folder(photo_crops, tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic, "correspondences_from_image", lambda job: (_ for _ in ()).throw(ValueError("bad")))
    with pytest.raises(ValueError, match="bad"):
        make_dataset(photo_crops, tmp_path / "new" / "ds", **FAST)
    assert not (tmp_path / "new" / "ds").exists()


def test_a_split_folder_of_os_files_or_a_link(photo_crops, tmp_path):
    """A .DS_Store that macOS's Finder left in a split folder was refused as 'not part of a PhotoTour dataset';
    a linked split folder (patches on another disk) was replaced by a folder, the old patches left behind."""
    out = tmp_path / "ds"
    make_dataset(photo_crops, out, **FAST)
    (out / "train" / ".DS_Store").write_bytes(b"\0")
    (out / "val" / "Thumbs.db").write_bytes(b"\0")
    make_dataset(photo_crops, out, seed=1, **FAST)  # rebuilt, the folders replaced whole
    elsewhere = tmp_path / "disk" / "train"
    shutil.move(out / "train", elsewhere)
    (out / "train").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(FileExistsError, match="is a link"):
        make_dataset(photo_crops, out, **FAST)
    make_dataset(photo_crops, out, force=True, **FAST)
    assert not (out / "train").is_symlink() and (out / "train" / "info.txt").is_file()
