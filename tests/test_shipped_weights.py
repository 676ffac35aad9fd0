"""The bundled default weights: integrity, and accuracy against RootSIFT on real photos."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from hardnet_desc import HardNetDescriptor
from hardnet_desc.evaluation import evaluate_sequences, make_sequences
from hardnet_desc.matching import match_descriptors
from hardnet_desc.core.weights import BUNDLED, bundled_path, load_weights, sha256_of

from conftest import DATA_DIR

pytestmark = pytest.mark.skipif(not BUNDLED, reason="this build ships no weights")


def test_bundled_file_matches_its_pinned_sha256():
    name, (filename, sha) = next(iter(BUNDLED.items()))
    path = bundled_path(name)
    assert path.name == filename and path.is_file()
    assert sha256_of(path) == sha
    weights = load_weights()  # the default
    assert weights.source == name
    card = json.loads(weights.metadata["model_card"])
    descriptor = HardNetDescriptor(device="cpu")
    assert card["patch_scale"] == weights.patch_scale == descriptor.patch_scale == 6.0
    # v4: trained on patches cut with kp.size >= 3.5 px, and the file says so
    assert card["min_kp_size"] == weights.min_kp_size == descriptor.min_kp_size == 3.5
    # v3's 4,070,400 pairs, then 409,600 (v4j) and 1,200 steps of 512 on real + synthetic correspondences
    assert card["pairs_seen"] == 1200 * 512 and card["pairs_seen_total"] == 4_070_400 + 409_600 + 614_400
    assert card["recipe"]["mix"] == [0.5, 0.5] and card["recipe"]["batch_size"] == 512
    assert [stage["name"] for stage in card["stages"]] == ["hardnet-desc-v3", "v4j", "v4k"]


def test_v3_stays_loadable_by_name():
    weights = load_weights("hardnet-desc-v3")
    assert weights.source == "hardnet-desc-v3" and weights.min_kp_size == 0.0  # cut as before min_kp_size
    assert sha256_of(bundled_path("hardnet-desc-v3")) == BUNDLED["hardnet-desc-v3"][1]


@pytest.fixture(scope="module")
def example_sequences(tmp_path_factory):
    """Synthetic HPatches-layout warps (viewpoint and illumination) of the two bundled photos."""
    out = tmp_path_factory.mktemp("sequences")
    make_sequences(DATA_DIR, out, seed=3, max_side=640)
    return out


def test_default_weights_beat_rootsift_on_warped_photos(example_sequences):
    """v4 measured MMA@3 0.886 vs RootSIFT 0.873 and 554.5 vs 534.0 correct matches per pair here
    (v3: 0.883, 551.8; v2: 0.879, 549.5); v1 (0.864, 538.4) fails both bounds."""
    results = evaluate_sequences(example_sequences, ["rootsift", "hardnet"], max_keypoints=1000, device="cpu")
    ours, base = results.summary["hardnet"]["overall"], results.summary["rootsift"]["overall"]
    print(f"MMA@3 HardNet {ours['mma@3']:.3f} vs RootSIFT {base['mma@3']:.3f}; "
          f"correct {ours['correct']:.1f} vs {base['correct']:.1f}")
    assert ours["mma@3"] > base["mma@3"]
    assert ours["correct"] >= 1.03 * base["correct"]


def test_default_weights_beat_rootsift_on_the_committed_multiview_scene(tmp_path):
    """Real multi-view photos with cameras from COLMAP (tests/data/multiview/bundler-et, 9 photos,
    24 pairs): the default weights find more correct matches than RootSIFT on the same keypoints.
    Measured: v4 179.6 vs RootSIFT 156.3 per pair (x1.15); v3 173.6 (x1.11). COLMAP's model (and so
    the pairs) can differ slightly from run to run: the bound leaves room for that, not for v3's level."""
    pycolmap = pytest.importorskip("pycolmap")
    from hardnet_desc.evaluation.poses import evaluate_pairs, load_scene

    photos = Path(__file__).resolve().parent / "data" / "multiview" / "bundler-et"
    pycolmap.extract_features(tmp_path / "database.db", photos)
    pycolmap.match_exhaustive(tmp_path / "database.db")
    pycolmap.incremental_mapping(tmp_path / "database.db", photos, tmp_path / "sparse")
    (tmp_path / "summary.json").write_text(json.dumps({"image_dir": str(photos)}))
    scene = load_scene(tmp_path, min_covisible=50)
    assert len(scene.pairs) >= 20
    summary = evaluate_pairs([scene], ["rootsift", "hardnet"], device="cpu").summary
    ours, base = summary["hardnet"]["overall"], summary["rootsift"]["overall"]
    print(f"correct {ours['correct']:.1f} vs RootSIFT {base['correct']:.1f}; "
          f"AUC@10 {ours['auc@10']:.3f} vs {base['auc@10']:.3f}")
    assert ours["correct"] >= 1.12 * base["correct"]
    assert ours["inliers"] > base["inliers"]


def test_default_weights_find_more_inliers_than_sift_on_the_bundled_pair(example_pair):
    """The README's use: one line changes from SIFT to HardNet on a real image pair."""
    sift = cv2.SIFT_create(2000)
    image1, image2 = example_pair
    kps1, kps2 = sift.detect(image1, None), sift.detect(image2, None)
    inliers = {}
    for name, extractor in (("sift", sift), ("hardnet", HardNetDescriptor(device="cpu"))):
        _, d1 = extractor.compute(image1, kps1)
        _, d2 = extractor.compute(image2, kps2)
        m = match_descriptors(d1, d2, ratio=0.8, mutual=True)
        p1 = np.float32([kps1[i].pt for i in m.query_idx])
        p2 = np.float32([kps2[i].pt for i in m.train_idx])
        _, mask = cv2.findFundamentalMat(p1, p2, cv2.USAC_MAGSAC, 1.0, 0.999, 10_000)
        inliers[name] = int(mask.sum())
    print(inliers)
    assert inliers["hardnet"] > inliers["sift"]
