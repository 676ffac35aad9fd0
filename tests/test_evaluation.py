"""Evaluation toolkit: metrics with known answers, sequence layouts, methods, generator, FPR95."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from hardnet_desc import HardNetDescriptor
from hardnet_desc.evaluation import (
    evaluate_fpr95,
    evaluate_sequences,
    find_sequences,
    format_table,
    make_sequences,
    matching_accuracy,
    read_homography,
    read_sequence,
    summarize,
)
from hardnet_desc.evaluation import methods as methods_module
from hardnet_desc.evaluation.methods import build_methods
from hardnet_desc.evaluation.metrics import corner_error, match_errors, matchable_pairs, pair_metrics, project
from hardnet_desc.evaluation.synthetic_sequences import MIN_COVERAGE, NOISE_SIGMAS, coverage
from hardnet_desc.detection import detect_sift
from hardnet_desc.matching import match_descriptors
from hardnet_desc.data.phototour import make_pairs, write_phototour

from conftest import DATA_DIR, make_hardnet

SHIFT = np.array([[1.0, 0, 150], [0, 1, 0], [0, 0, 1]])  # a deliberately wrong ground truth


def small_photo(seed: int = 0, size: tuple[int, int] = (160, 240)) -> np.ndarray:
    """A grey uint8 photo ``size`` (h, w): a crop of a bundled photo, else a smooth random texture."""
    h, w = size
    photos = sorted(DATA_DIR.glob("*.jpg"))
    if photos:
        image = cv2.imread(str(photos[seed % len(photos)]), cv2.IMREAD_GRAYSCALE)
        image = cv2.resize(image, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
        y, x = (np.array(image.shape) - size) // 2
        return np.ascontiguousarray(image[y : y + h, x : x + w])
    rng = np.random.default_rng(seed)
    noise = sum(cv2.resize(rng.random((h // s, w // s)).astype(np.float32), (w, h)) for s in (2, 4, 8, 16))
    return cv2.normalize(noise, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def write_sequence(folder: Path, image: np.ndarray, warps: list[np.ndarray], layout: str = "hpatches",
                   suffix: str = ".png", written_h: list[np.ndarray] | None = None) -> None:
    """Image 1 plus one view per warp (same canvas size), with ``written_h`` (default: the warps) as ground truth."""
    folder.mkdir(parents=True)
    name = (lambda k: f"{k}{suffix}") if layout == "hpatches" else (lambda k: f"img{k}{suffix}")
    h_name = (lambda k: f"H_1_{k}") if layout == "hpatches" else (lambda k: f"H1to{k}p")
    for k, (H, H_file) in enumerate(zip([np.eye(3), *warps], [None, *(written_h or warps)]), start=1):
        view = cv2.warpPerspective(image, H, image.shape[::-1], flags=cv2.INTER_LINEAR)
        assert cv2.imwrite(str(folder / name(k)), cv2.cvtColor(view, cv2.COLOR_GRAY2BGR) if suffix == ".ppm" else view)
        if H_file is not None:
            np.savetxt(folder / h_name(k), H_file)


def rotation(deg: float, shape: tuple[int, int], scale: float = 1.0) -> np.ndarray:
    h, w = shape
    return np.vstack([cv2.getRotationMatrix2D((w / 2, h / 2), deg, scale), [0, 0, 1]])


# --------------------------------------------------------------------------- metrics


def test_matching_accuracy_hand_case():
    errors = [0.5, 1.0, 2.5, 4.0, np.inf]
    # <= t: t=1 -> {0.5, 1.0}; t=2 -> same; t=3 -> + 2.5; t=5 -> + 4.0; inf never
    np.testing.assert_allclose(matching_accuracy(errors, [1, 2, 3, 5]), [0.4, 0.4, 0.6, 0.8])
    np.testing.assert_array_equal(matching_accuracy([], [1, 2, 3]), [0, 0, 0])


def test_match_errors_and_projection():
    H = np.array([[2.0, 0, 5], [0, 2, -2], [0, 0, 1]])  # x -> 2x + (5, -2)
    p1 = np.array([[0.0, 0], [1, 1], [10, 5]])  # -> (5, -2), (7, 0), (25, 8)
    p2 = np.array([[5.0, -2], [7, 3], [22, 12]])
    np.testing.assert_allclose(match_errors(p1, p2, H), [0.0, 3.0, 5.0])
    # a point sent to or behind infinity (w <= 0) has infinite error
    assert np.isinf(project(np.array([[1.0, 0, 0], [0, 1, 0], [-1, 0, 0.5]]), [[1.0, 0]])).all()
    # -H is the same homography: every point was "behind" it, scoring perfect matches 0 (h_error inf)
    np.testing.assert_allclose(match_errors(p1, p2, -H), [0.0, 3.0, 5.0])
    assert np.isinf(project(-np.array([[1.0, 0, 0], [0, 1, 0], [-1, 0, 0.5]]), [[1.0, 0]])).all()
    metrics = pair_metrics(p1, project(H, p1), -H, (20, 20))
    assert metrics["correct"] == 3 and len(matchable_pairs(p1, project(H, p1), -H)[0]) == 3
    for bad, shape in ((np.full((3, 3), np.nan), r"\(3, 3\) with NaN or inf"), (np.eye(2), r"\(2, 2\)")):
        with pytest.raises(ValueError, match=f"H must be a finite \\(3, 3\\) homography, got shape {shape}"):
            match_errors(p1, p2, bad)  # NaN scored 0 without a word, (2, 2) stopped in an IndexError
    with pytest.raises(ValueError, match="threshold must be a finite number >= 0, got -3"):
        matchable_pairs(p1, p2, H, threshold=-3)  # paired every point


def test_matchable_pairs_hand_case():
    H = np.array([[1.0, 0, 5], [0, 1, 0], [0, 0, 1]])  # x -> x + 5
    # two detections at one place (SIFT's two orientations) and two near its image: both pair up;
    # (10, 10) -> (15, 10) is 4 px from (15, 14): not within 3; (30, 0) has no counterpart.
    p1 = np.array([[0.0, 0], [0, 0.5], [10, 10], [30, 0]])
    p2 = np.array([[5.0, 0.2], [5.3, 0.4], [15, 14], [100, 100]])
    i1, i2 = matchable_pairs(p1, p2, H)
    assert sorted(i1.tolist()) == [0, 1] and sorted(i2.tolist()) == [0, 1]
    assert len(matchable_pairs(p1, p2, H, threshold=4.5)[0]) == 3
    # a greedy nearest-first pairing would give 1 here; the maximum matching finds 2
    i1, _ = matchable_pairs(np.array([[0.0, 0], [2.0, 0]]), np.array([[6.0, 0], [4.0, 0]]), H)
    assert len(i1) == 2
    behind = np.array([[1.0, 0, 0], [0, 1, 0], [-1, 0, 0.5]])  # sends x >= 0.5 to or behind infinity
    assert len(matchable_pairs([[1.0, 0]], [[1.0, 0]], behind)[0]) == 0
    assert len(matchable_pairs(np.zeros((0, 2)), p2, H)[0]) == 0


def test_summarize_averages_per_pair_and_counts_empty_pairs_as_zero():
    pairs = [
        {"matches": 1, "correct": 1, "accuracy": [1.0, 1.0], "h_error": 0.5},
        {"matches": 0, "correct": 0, "accuracy": [0.0, 0.0], "h_error": math.inf},  # no match: failure
        {"matches": 3, "correct": 1, "accuracy": [0.0, 1 / 3], "h_error": 4.0},
    ]
    s = summarize(pairs, thresholds=[1, 3])
    # mean over pairs (1 + 0 + 1/3) / 3, not pooled over matches (2 / 4)
    assert s["mma@3"] == pytest.approx((1 + 0 + 1 / 3) / 3)
    assert s["mma@1"] == pytest.approx(1 / 3)
    assert s["matches"] == pytest.approx(4 / 3) and s["correct"] == pytest.approx(2 / 3)
    assert (s["h_acc@1"], s["h_acc@3"], s["h_acc@5"]) == pytest.approx((1 / 3, 1 / 3, 2 / 3))
    assert s["pairs"] == 3


def test_corner_error_and_homography_failure():
    H = rotation(10, (100, 200))
    assert corner_error(H, H, 100, 200) == pytest.approx(0, abs=1e-9)
    shifted = np.array([[1.0, 0, 2], [0, 1, 0], [0, 0, 1]]) @ H
    assert corner_error(shifted, H, 100, 200) == pytest.approx(2.0)
    assert corner_error(None, H, 100, 200) == math.inf
    pts = np.random.default_rng(0).random((3, 2)) * 100
    assert pair_metrics(pts, pts, H, (100, 200))["h_error"] == math.inf  # fewer than 4 matches: no estimate


# --------------------------------------------------------------------------- layouts


def test_both_layouts_parsed(tmp_path):
    image = small_photo()
    warps = [rotation(5 * k, image.shape) for k in range(1, 4)]
    write_sequence(tmp_path / "v_hp", image, warps, "hpatches", ".png")
    write_sequence(tmp_path / "i_hp", image, [np.eye(3)] * 2, "hpatches", ".jpg")
    write_sequence(tmp_path / "graf", image, warps[:2], "oxford", ".ppm")
    write_sequence(tmp_path / "boat", image, warps[:2], "oxford", ".pgm")
    (tmp_path / "notes").mkdir()  # neither layout: ignored in a folder of sequences

    seqs = {s.name: s for s in find_sequences(tmp_path)}
    assert sorted(seqs) == ["boat", "graf", "i_hp", "v_hp"]
    assert [seqs[n].layout for n in ("v_hp", "i_hp", "graf", "boat")] == ["hpatches", "hpatches", "oxford", "oxford"]
    assert [seqs[n].group for n in ("v_hp", "i_hp", "graf")] == ["v", "i", "other"]
    assert len(seqs["v_hp"]) == 4 and [p.name for p in seqs["graf"].images] == ["img1.ppm", "img2.ppm", "img3.ppm"]
    np.testing.assert_allclose(seqs["v_hp"].homographies[2], warps[2] / warps[2][2, 2])
    # ROOT may be one sequence
    (one,) = find_sequences(tmp_path / "graf")
    assert one.layout == "oxford" and len(one.homographies) == 2

    with pytest.raises(ValueError, match="neither an image sequence nor a folder of sequences"):
        find_sequences(tmp_path / "notes")
    with pytest.raises(ValueError, match="not an image sequence in the HPatches layout"):
        read_sequence(tmp_path / "notes")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        find_sequences(tmp_path / "missing")
    (tmp_path / "v_hp" / "H_1_3").unlink()
    with pytest.raises(FileNotFoundError, match="H_1_3"):
        read_sequence(tmp_path / "v_hp")


@pytest.mark.parametrize(
    "text, message",
    [("1 0 0\n0 1 0\n0 0", "expected 3x3 = 9 numbers, found 8"),
     ("1 0 0\n0 1 x\n0 0 1", "'x' is not a number"),
     ("1 0 0\n0 1 0\n0 0 nan", "NaN or inf"),
     ("1 2 3\n2 4 6\n0 0 1", "singular")],
)
def test_malformed_homography_is_a_clear_error(tmp_path, text, message):
    path = tmp_path / "H_1_2"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        read_homography(path)
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------- benchmark known answers


@pytest.fixture(scope="module")
def identity_root(tmp_path_factory):
    """The photo against itself twice: v_same with the identity as ground truth, i_wrong with a wrong one.

    (The v_/i_ prefixes only put the two cases in different summary groups.)
    """
    root = tmp_path_factory.mktemp("seqs")
    image = small_photo()
    write_sequence(root / "v_same", image, [np.eye(3)])
    write_sequence(root / "i_wrong", image, [np.eye(3)], written_h=[SHIFT])
    return root


def test_identity_pair_scores_one_and_wrong_homography_scores_zero(identity_root):
    methods, _ = build_methods(["sift", "rootsift", "hardnet", "kornia"], weights=make_hardnet(), device="cpu")
    results = evaluate_sequences(identity_root, methods, max_keypoints=150, device="cpu")
    for name in methods:
        same, wrong = results.summary[name]["v"], results.summary[name]["i"]
        assert same["mma"] == [1.0] * 10, name
        assert same["h_acc@1"] == 1.0 and same["matches"] > 50, name
        assert max(wrong["mma"]) < 0.05 and wrong["h_acc@5"] == 0.0, name
    table = format_table(results)
    assert "MMA@3" in table and "viewpoint (v_): 1 sequences, 1 pairs" in table


def test_no_method_beats_the_matchable_count_on_a_real_warp():
    image = small_photo()
    h, w = image.shape
    H = rotation(25, (h, w), 0.8)
    warped = cv2.warpPerspective(image, H, (w, h))
    k1, k2 = detect_sift(image, 400), detect_sift(warped, 400)
    xy1, xy2 = np.array([k.pt for k in k1]), np.array([k.pt for k in k2])
    i1, i2 = matchable_pairs(xy1, xy2, H)
    assert len(np.unique(i1)) == len(np.unique(i2)) == len(i1) > 50  # one-to-one, and plenty on a mild warp
    assert (match_errors(xy1[i1], xy2[i2], H) <= 3).all()
    methods, _ = build_methods(["rootsift", "hardnet"], device="cpu")
    for name, fn in methods.items():
        m = match_descriptors(fn(image, k1), fn(warped, k2), mutual=True)
        correct = np.count_nonzero(match_errors(xy1[m.query_idx], xy2[m.train_idx], H) <= 3)
        assert 0.5 * len(i1) < correct <= len(i1), name


def test_methods_share_keypoints_and_weights():
    image = small_photo()
    kps = detect_sift(image, 120)
    methods, _ = build_methods(["sift", "rootsift", "hardnet", "kornia"], weights=make_hardnet(), device="cpu")
    sift, root = methods["sift"](image, kps), methods["rootsift"](image, kps)
    np.testing.assert_allclose(root, np.sqrt(sift / sift.sum(1, keepdims=True)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(root, axis=1), 1.0, atol=1e-5)
    ours, kornia = methods["hardnet"](image, kps), methods["kornia"](image, kps)
    assert ours.shape == kornia.shape == (len(kps), 128)
    # same weights and patch regions: only the sampling differs (a flipped angle gives ~0.2)
    assert np.median((ours * kornia).sum(1)) > 0.97


def test_build_methods_errors_and_kornia_skip(monkeypatch):
    with pytest.raises(ValueError, match="unknown method"):
        build_methods(["sift", "surf"])
    monkeypatch.setattr(methods_module, "kornia_available", lambda: False)
    methods, skipped = build_methods(["sift", "kornia"], weights=make_hardnet(), device="cpu")
    assert list(methods) == ["sift"] and "not installed" in skipped["kornia"]


# --------------------------------------------------------------------------- generator


def test_make_sequences_writes_readable_reproducible_sequences(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        cv2.imwrite(str(photos / f"photo {i}.jpg"), small_photo(i))
    written = make_sequences(photos, tmp_path / "a", n_images=1, seed=3)
    assert sorted(p.name for p in written) in (["i_photo_0", "v_photo_0"], ["i_photo_1", "v_photo_1"])
    seqs = {s.group: s for s in find_sequences(tmp_path / "a")}
    assert len(seqs["v"]) == len(seqs["i"]) == 6
    for H in seqs["i"].homographies:
        np.testing.assert_allclose(H, np.eye(3))
    ref = cv2.imread(str(seqs["v"].images[0]), cv2.IMREAD_GRAYSCALE)
    h, w = ref.shape
    for path, H in zip(seqs["v"].images[1:], seqs["v"].homographies):
        view = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        assert coverage(H, h, w, *view.shape) >= MIN_COVERAGE
        # the written H is the one that made the view: the reference warped by it correlates with the view
        inside = cv2.warpPerspective(np.ones_like(ref), H, view.shape[::-1], flags=cv2.INTER_NEAREST) > 0
        inside = cv2.erode(inside.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        warped = cv2.warpPerspective(ref, H, view.shape[::-1]).astype(float)
        assert np.corrcoef(warped[inside], view[inside].astype(float))[0, 1] > 0.8
    assert not all(np.allclose(H, np.eye(3)) for H in seqs["v"].homographies)
    again = make_sequences(photos, tmp_path / "b", n_images=1, seed=3)
    for p, q in zip(written, again):
        np.testing.assert_array_equal(read_homography(p / "H_1_6"), read_homography(q / "H_1_6"))


def test_a_rerun_in_another_format_leaves_no_views_of_the_first(tmp_path):
    # The old 1.ppm ... 6.ppm next to the new .png views and homographies were read by the evaluation, which then
    # scored the old views against the new homographies (MMA@3 near 0) without a word.
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "p.png"), small_photo(0))
    make_sequences(photos, tmp_path / "a", seed=1, illumination=False, suffix=".ppm")
    (written,) = make_sequences(photos, tmp_path / "a", seed=7, illumination=False, suffix=".png")
    assert sorted(p.suffix for p in written.iterdir() if p.stem.isdigit()) == [".png"] * 6
    (seq,) = find_sequences(tmp_path / "a")
    assert [p.name for p in seq.images] == [f"{k}.png" for k in range(1, 7)]
    np.testing.assert_array_equal(seq.homographies[-1], read_homography(written / "H_1_6"))


def test_noise_sequences_add_gaussian_noise_of_growing_strength_and_nothing_else(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "p.png"), small_photo(0))
    written = make_sequences(photos, tmp_path / "a", seed=1, illumination=False, noise=True)
    assert sorted(p.name for p in written) == ["n_p", "v_p"]
    (seq,) = [s for s in find_sequences(tmp_path / "a") if s.group == "n"]
    ref = cv2.imread(str(seq.images[0]), cv2.IMREAD_GRAYSCALE).astype(float)
    inner = (ref > 30) & (ref < 225)  # away from clipping
    stds = []
    for path, H, sigma in zip(seq.images[1:], seq.homographies, NOISE_SIGMAS):
        np.testing.assert_allclose(H, np.eye(3))
        residual = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(float) - ref
        assert abs(residual[inner].mean()) < 0.5  # zero mean: no brightness change
        assert residual[inner].std() == pytest.approx(sigma, rel=0.1)
        stds.append(residual[inner].std())
    assert stds == sorted(stds)


# --------------------------------------------------------------------------- FPR95


def write_pair_fixture(root: Path, n_points: int = 40) -> None:
    """Two identical 64x64 patches per point (distinct random textures per point)."""
    rng = np.random.default_rng(0)
    textures = rng.integers(0, 256, (n_points, 64, 64), dtype=np.uint8)
    patches = np.repeat(textures, 2, axis=0)
    ids = np.repeat(np.arange(n_points), 2)
    write_phototour(root, patches, ids, {"m50_100_100_0.txt": make_pairs(ids, 100, 0)})


def test_fpr95_zero_when_matching_patches_are_identical(tmp_path):
    write_pair_fixture(tmp_path)
    result = evaluate_fpr95(tmp_path, HardNetDescriptor(make_hardnet(), device="cpu"))
    assert result == {"m50_100_100_0.txt": 0.0}
    with pytest.raises(FileNotFoundError, match="not found"):
        evaluate_fpr95(tmp_path, HardNetDescriptor(make_hardnet(), device="cpu"), ["m50_missing.txt"])


def test_hard_training_warp_covers_the_hardest_evaluation_level():
    """make-dataset --warp hard promises views at least as hard as the evaluation's level 5."""
    from dataclasses import fields

    from hardnet_desc.evaluation.synthetic_sequences import level_config
    from hardnet_desc.data.warps import HARD_WARP

    for geometric in (True, False):
        hardest = level_config(5, geometric)
        for f in fields(hardest):
            ours, theirs = getattr(HARD_WARP, f.name), getattr(hardest, f.name)
            if f.name == "min_jpeg_quality":
                assert ours <= theirs, f.name
            else:
                assert ours >= theirs, (f.name, ours, theirs)


def test_sift_patches_match_sift_on_the_image():
    """SIFT of a patch cut at the keypoint (64 px, patch_scale 6) ~ SIFT at that keypoint in the image;
    the keypoint size convention shows: a wrong patch_scale lowers the agreement."""
    from hardnet_desc.detection import detect_sift
    from hardnet_desc.evaluation.methods import sift, sift_octave, sift_patches
    from hardnet_desc.core.image import to_grey_tensor
    from hardnet_desc.core.patches import extract_patches

    img = cv2.imread(str(DATA_DIR / "sacre_coeur_1.jpg"), cv2.IMREAD_GRAYSCALE)
    kps = detect_sift(img, 200)
    assert all(sift_octave(k.size) == k.octave & 0xFFFF for k in kps)  # OpenCV's own (octave, layer)
    ref = sift(img, kps)
    patches = extract_patches(to_grey_tensor(img), kps, patch_size=64, supersample=1, patch_scale=6.0)
    patches = (patches[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()

    def agreement(patch_scale):
        d = sift_patches(patches, patch_scale)
        return np.median(np.sum(d * ref, axis=1) / np.linalg.norm(d, axis=1) / np.linalg.norm(ref, axis=1))

    assert agreement(6.0) > 0.93
    assert agreement(9.0) < agreement(6.0) - 0.1 and agreement(4.0) < agreement(6.0) - 0.1
    root = sift_patches(patches[:5], root=True)
    np.testing.assert_allclose(np.linalg.norm(root, axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        sift_patches(patches.astype(np.float32))
@pytest.fixture(scope="module")
def incomplete_root(tmp_path_factory):
    """One complete sequence, one with the reference image only, one whose H_1_2 is missing."""
    root = tmp_path_factory.mktemp("incomplete")
    image = small_photo()
    write_sequence(root / "v_ok", image, [rotation(5, image.shape)])
    write_sequence(root / "v_reference_only", image, [])
    write_sequence(root / "i_no_h", image, [np.eye(3)])
    (root / "i_no_h" / "H_1_2").unlink()
    write_sequence(root / "v_gap", image, [rotation(5, image.shape)] * 3)
    (root / "v_gap" / "3.png").unlink()  # read up to the gap, it passed as a sequence of two images
    return root


def test_incomplete_sequences_are_skipped_unless_strict(incomplete_root):
    skipped = []
    seqs = find_sequences(incomplete_root, strict=False, on_skip=lambda name, why: skipped.append((name, why)))
    assert [s.name for s in seqs] == ["v_ok"]
    assert [name for name, _ in skipped] == ["i_no_h", "v_gap", "v_reference_only"]
    assert "H_1_2" in skipped[0][1] and "only the reference image" in skipped[2][1]
    assert skipped[1][1].endswith("missing image 3.* (the sequence goes on with 4.png)")
    with pytest.raises(FileNotFoundError, match="H_1_2"):
        find_sequences(incomplete_root)  # strict by default for the reader
    with pytest.raises(FileNotFoundError, match=r"v_gap: missing image 3\.\*"):
        find_sequences(incomplete_root / "v_gap")
    with pytest.warns(UserWarning) as caught:
        results = evaluate_sequences(incomplete_root, ["sift"], max_keypoints=100, device="cpu")
    messages = sorted(str(w.message) for w in caught)
    assert messages[0].startswith("skipped sequence i_no_h: missing homography file")
    assert messages[1].startswith("skipped sequence v_gap: ") and len(messages) == 3
    assert [s["name"] for s in results.sequences] == ["v_ok"]
    assert sorted(results.config["skipped_sequences"]) == ["i_no_h", "v_gap", "v_reference_only"]
    with pytest.raises(FileNotFoundError, match="H_1_2"):
        evaluate_sequences(incomplete_root, ["sift"], max_keypoints=100, device="cpu", strict=True)


# --------------------------------------------------------------------------- bad photos and images


def photos_folder(root: Path, **photos: np.ndarray | bytes) -> Path:
    """``root/photos`` holding ``name.png`` per keyword: an image, or raw bytes."""
    folder = root / "photos"
    folder.mkdir()
    for name, photo in photos.items():
        path = folder / f"{name}.png"
        if isinstance(photo, bytes):
            path.write_bytes(photo)
        else:
            assert cv2.imwrite(str(path), photo)
    return folder


def test_make_sequences_skips_an_unreadable_photo_and_does_the_others(tmp_path, capsys):
    # The empty b.png stopped the run after a's sequences were written, and c was never done.
    from hardnet_desc.cli import main

    photos = photos_folder(tmp_path, a=small_photo(0), b=b"", c=small_photo(1))
    errors = []
    written = make_sequences(photos, tmp_path / "a", illumination=False, on_error=lambda *e: errors.append(e))
    assert [p.name for p in written] == ["v_a", "v_c"] and [e[0] for e in errors] == ["b.png"]
    assert errors[0][1].startswith("cannot decode image file") and not (tmp_path / "a" / "v_b").exists()
    with pytest.raises(ValueError, match=r"^1 of 3 photos cannot be used .*: b\.png: cannot decode image file"):
        make_sequences(photos, tmp_path / "b", illumination=False)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["v_a", "v_c"]
    assert main(["make-sequences", str(photos), str(tmp_path / "c"), "--no-illumination"]) == 1  # as extract
    out, err = capsys.readouterr()
    assert err.strip() == f"hardnet-desc make-sequences: error: b.png: {errors[0][1]}"
    assert out.strip().endswith("2 sequences -> " + str(tmp_path / "c") + ", 1 photos failed")
    assert len(find_sequences(tmp_path / "c")) == 2


def test_make_sequences_refuses_a_file_where_a_sequence_folder_goes_before_any_work(tmp_path):
    # v_b as a file failed with "File exists" after v_a had been written.
    photos = photos_folder(tmp_path, a=small_photo(0), b=small_photo(1))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "v_b").write_text("x")
    for force in (False, True):
        with pytest.raises(FileExistsError, match=r"v_b is a file, not a sequence folder"):
            make_sequences(photos, tmp_path / "out", illumination=False, force=force)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["v_b"]
    with pytest.raises(NotADirectoryError, match="is a file, not an output folder"):
        make_sequences(photos, tmp_path / "out" / "v_b", illumination=False)


def test_make_sequences_never_leaves_a_half_written_sequence(tmp_path, monkeypatch):
    # A photo no warp could cover raised a RuntimeError and left v_thin with 1.png and our mark only.
    from hardnet_desc.evaluation import synthetic_sequences

    thin = cv2.resize(small_photo(0), (600, 3), interpolation=cv2.INTER_AREA)
    photos = photos_folder(tmp_path, p=small_photo(0), thin=thin)
    out = tmp_path / "out"
    errors = []
    written = make_sequences(photos, out, illumination=False, on_error=lambda *e: errors.append(e))
    assert [p.name for p in written] == ["v_p"] and sorted(p.name for p in out.iterdir()) == ["v_p"]
    assert errors[0][0] == "thin.png" and "reached 35% coverage" in errors[0][1]
    before = {p.name: p.read_bytes() for p in (out / "v_p").iterdir()}

    real, calls = synthetic_sequences._write_image, []

    def full_disk(path, image):
        calls.append(path)
        if len(calls) == 4:
            raise OSError(f"cannot write {path}")
        real(path, image)

    monkeypatch.setattr(synthetic_sequences, "_write_image", full_disk)
    with pytest.raises(OSError, match="cannot write"):
        make_sequences(photos, out, illumination=False, seed=5, on_error=lambda *e: None)
    assert sorted(p.name for p in out.iterdir()) == ["v_p"]  # no temporary folder left
    assert {p.name: p.read_bytes() for p in (out / "v_p").iterdir()} == before  # the old sequence, whole
    (out / "v_p").rename(out / ".v_p.0123abcd.tmp")  # what a killed run leaves: not a sequence to evaluate
    with pytest.raises(ValueError, match="neither an image sequence"):
        find_sequences(out)


def test_evaluate_sequences_skips_a_sequence_with_an_unreadable_image(tmp_path):
    # An empty or 1x1 image stopped the whole run (without --strict) after the sequences before it were scored.
    image = small_photo()
    for name in ("v_broken", "v_ok", "v_tiny"):
        write_sequence(tmp_path / name, image, [rotation(5, image.shape)] * 2)
    (tmp_path / "v_broken" / "2.png").write_bytes(b"")
    cv2.imwrite(str(tmp_path / "v_tiny" / "3.png"), np.zeros((1, 1), np.uint8))
    skipped = []
    results = evaluate_sequences(tmp_path, ["sift"], max_keypoints=100, device="cpu",
                                 on_skip=lambda *s: skipped.append(s))
    assert [s["name"] for s in results.sequences] == ["v_ok"]
    assert [name for name, _ in skipped] == ["v_broken", "v_tiny"] == sorted(results.config["skipped_sequences"])
    assert skipped[0][1] == f"cannot decode image file: {tmp_path / 'v_broken' / '2.png'}"
    assert skipped[1][1] == f"{tmp_path / 'v_tiny' / '3.png'}: image is too small: (1, 1)"
    with pytest.raises(ValueError, match=r"v_broken/2\.png"):
        evaluate_sequences(tmp_path, ["sift"], max_keypoints=100, device="cpu", strict=True)
    with pytest.raises(ValueError, match=r"none of the 1 sequences can be read: v_tiny: "):
        evaluate_sequences(tmp_path / "v_tiny", ["sift"], max_keypoints=100, device="cpu", on_skip=print)


def test_a_custom_method_of_the_wrong_shape_is_named(incomplete_root):
    """One row too many stopped in an IndexError deep in the matching; None was scored as no match at all."""
    for bad in (lambda image, kps: np.zeros((len(kps) + 1, 8), np.float32), lambda image, kps: None):
        with pytest.raises(ValueError, match=r"method 'bad' must return \(100, D\) real descriptors for 100 "):
            evaluate_sequences(incomplete_root / "v_ok", {"bad": bad}, max_keypoints=100, device="cpu")
