"""Wide-baseline matching: the search over steps, aligned centres, the rectified view, guided matching, match_pair
and the command line (the views, FGINN and verification have their own test files)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from hardnet_desc import HardNetDescriptor, wide_baseline
from hardnet_desc.core.image import to_grey_tensor
from hardnet_desc.data.warps import viewpoint_homography
from hardnet_desc.geometry import sampson_error_px
from hardnet_desc.pipeline import match_pair
from hardnet_desc.verification import scattered
from hardnet_desc.views import Features, make_views, model_tilt
from hardnet_desc.wide_baseline import (
    DEFAULT_VIEW_KEYPOINTS,
    RECTIFIED_TILT,
    ROTATION_STEP,
    STOP_INLIERS,
    VIEW_RATIO,
    _rectify,
    align_matches,
    guided_matches,
    match_wide,
)


@pytest.fixture(scope="module")
def hardnet() -> HardNetDescriptor:
    return HardNetDescriptor(device="cpu")  # the bundled weights: wide-baseline matching needs a trained net


def corner_error(model: np.ndarray, truth: np.ndarray, height: int, width: int) -> float:
    """Largest distance between image 1's corners mapped by ``model`` and by ``truth``, over image 2's diagonal
    (taken as image 1's size here: the canvases are equal)."""
    corners = np.float32([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]])[None]
    moved = cv2.perspectiveTransform(corners, model) - cv2.perspectiveTransform(corners, truth)
    return float(np.linalg.norm(moved[0], axis=1).max() / np.hypot(width, height))


# --- steps and views -------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [((), (0.5,)), ((), ((8, 0),)), ((), ((8, 1.5),)), ((), ("8",)), ((), ((8, 1, 1),)),
                                   ((), (float("inf"),)), ((), (100,)), ((), (True,))])  # inf: ZeroDivisionError
def test_bad_views_fail_before_any_work(steps):
    with pytest.raises(ValueError, match="a view is a tilt in \\[1, 64\\] or \\(tilt, scale\\)"):
        match_wide(np.zeros((8, 8)), np.zeros((8, 8)), descriptor=object(), steps=steps)


@pytest.mark.parametrize("steps, rotation_step, views", [(((), (60.0,)), 72.0, 150), (((), (2.0, 4.0)), 1e-3, "over a "
                                                         "million"), (((), (8.0,)), 2.0, 720)])
def test_a_step_of_too_many_views_fails_before_any_work(steps, rotation_step, views):
    """Tilt 1e5 made 250,000 views (still running after 300 s); rotation_step 1e-9 asked for 2.6 TiB."""
    if views == 150:  # within the bound: no error before the (missing) descriptor is used
        with pytest.raises(AttributeError):
            match_wide(np.zeros((8, 8)), np.zeros((8, 8)), object(), steps=steps, rotation_step=rotation_step)
        return
    with pytest.raises(ValueError, match=f"makes {views} views per image, more than 500: raise rotation_step"):
        match_wide(np.zeros((8, 8)), np.zeros((8, 8)), descriptor=object(), steps=steps, rotation_step=rotation_step)


# --- matching across steps, guided matching ---------------------------------------------------------


def test_aligned_centres_are_kept_for_the_later_steps(example_pair, hardnet, monkeypatch):
    # With a cache (match_wide keeps one across its steps) the pairs aligned before take their centres from it, and
    # only the others are aligned: the centres are those of aligning all of them at once.
    w = match_wide(*example_pair, hardnet, geometry="fundamental", threshold=1.0)
    f1 = w.features1.frames.numpy()[w.matches.query_idx]
    f2 = w.features2.frames.numpy()[w.matches.train_idx]
    pairs = np.stack([w.matches.query_idx, w.matches.train_idx], 1)
    greys = [to_grey_tensor(image) for image in example_pair]
    rows = np.ones(len(pairs), bool)
    rows[::7] = False  # not aligned: their frames stay as they are
    at_once = align_matches(greys, f1, f2, rows)
    first = rows.copy()
    first[len(rows) // 2 :] = False
    cache = {}
    align_matches(greys, f1, f2, first, pairs, cache)
    assert len(cache) == first.sum() > 30
    seen = []
    real = wide_baseline.align_frames
    monkeypatch.setattr(wide_baseline, "align_frames", lambda *a, **k: seen.append(len(a[2])) or real(*a, **k))
    later = align_matches(greys, f1, f2, rows, pairs, cache)
    assert seen == [rows.sum() - first.sum()] and len(cache) == rows.sum()
    assert np.allclose(later, at_once, atol=1e-6) and np.array_equal(later[~rows], f2[~rows])
    assert (np.linalg.norm(later[:, :, 2] - f2[:, :, 2], axis=1) > 0).sum() > 30  # some did move


def _features(centres: list[list[float]], descriptors: np.ndarray, a: np.ndarray) -> Features:
    c = np.asarray(centres, np.float32)
    frames = np.concatenate([np.broadcast_to(a, (len(c), 2, 2)), c[:, :, None]], axis=2).astype(np.float32)
    return Features(torch.from_numpy(frames), torch.from_numpy(np.float32(descriptors)), np.zeros(len(c), np.int64))


def test_guided_matches_take_the_nearest_descriptor_where_the_model_points():
    """Image 2 is image 1 shifted by (50, 0) and scaled by 2. Feature 0's true partner has a worse descriptor than
    a decoy 20 px away, feature 1's partner is alone but its descriptor too far, feature 2's frame is turned by
    90 degrees, feature 3 has two candidates within 3 px: the nearer descriptor wins."""
    h = np.array([[2.0, 0, 50], [0, 2.0, 0], [0, 0, 1]])
    rng = np.random.default_rng(0)
    d = rng.normal(size=(4, 128))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    near = d + 0.02 * rng.normal(size=d.shape)
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    f1 = _features([[10, 10], [100, 40], [60, 80], [30, 30]], d, np.eye(2) * 3)
    image2 = [[70, 20], [90, 20], [250, 80], [170, 160], [111, 60], [109.5, 61]]
    desc2 = np.stack([near[0], d[0], -d[1], near[2], near[3] * 0.9 + d[0] * 0.1, near[3]])
    desc2 /= np.linalg.norm(desc2, axis=1, keepdims=True)
    f2 = _features(image2, desc2, np.eye(2) * 6)
    f2.frames[3, :, :2] = torch.tensor([[0.0, -6.0], [6.0, 0.0]])  # feature 2's partner turned by 90 degrees
    m = guided_matches(h, f1, f2, radius=3.0)
    assert m.pairs.tolist() == [[0, 0], [3, 5]]
    assert np.isnan(m.ratios).all() and (m.distances < 0.5).all()
    assert len(guided_matches(h, f1, _features([[0, 0]], d[:1], np.eye(2)), radius=3.0)) == 0


# --- the whole path -------------------------------------------------------------------------------------


def test_wide_baseline_solves_an_extreme_tilt_the_plain_pipeline_misses(example_image, hardnet):
    # The photo seen at 80.4 degrees (tilt 6) about an axis at 30 degrees, turned by 60 degrees in the picture.
    h, w = example_image.shape[:2]
    truth = viewpoint_homography((h, w), tilt=6, axis_deg=30, rotation_deg=60)
    other = cv2.warpPerspective(example_image, truth, (w, h))
    plain = match_pair(example_image, other, hardnet, geometry="homography")
    assert plain.model is None or corner_error(plain.model, truth, h, w) > 0.05
    lines: list[str] = []
    wide = match_pair(example_image, other, hardnet, geometry="homography", wide_baseline=True, progress=lines.append)
    assert wide.model is not None and wide.step >= 1 and wide.inliers.sum() >= 15
    assert corner_error(wide.model, truth, h, w) < 0.01
    assert len(lines) == wide.step + 1 and lines[-1].endswith("-> model")
    assert wide.views[0] > 1 and wide.timings["total"] > 0 and len(wide.keypoints1) >= len(plain.keypoints1)
    # The inliers agree with the true homography (points are frame centres in the original images).
    moved = cv2.perspectiveTransform(wide.points1[wide.inliers][None], truth)[0]
    assert np.median(np.linalg.norm(moved - wide.points2[wide.inliers], axis=1)) < 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.cuda
def test_wide_baseline_on_cuda_finds_what_the_cpu_finds(example_pair, hardnet):
    # HardNet, the distance table and the alignment on the GPU (SIFT and verification on the host): the extreme tilt
    # solved at the CPU's step within 1 % of the truth, the descriptors kept on the device; a fundamental matrix of
    # the bundled pair (aligned positions) with about the CPU's inliers (fp16 descriptors there).
    image = example_pair[0]
    h, w = image.shape[:2]
    truth = viewpoint_homography((h, w), tilt=6, axis_deg=30, rotation_deg=60)
    other = cv2.warpPerspective(image, truth, (w, h))
    gpu = HardNetDescriptor(device="cuda")
    on_gpu, on_cpu = match_wide(image, other, gpu), match_wide(image, other, hardnet)
    assert on_gpu.model is not None and on_gpu.step == on_cpu.step and corner_error(on_gpu.model, truth, h, w) < 0.01
    assert on_gpu.features1.descriptors.device.type == "cuda"
    f_gpu = match_wide(*example_pair, gpu, geometry="fundamental", threshold=1.0)
    f_cpu = match_wide(*example_pair, hardnet, geometry="fundamental", threshold=1.0)
    assert f_gpu.geometry == f_cpu.geometry and f_gpu.step == f_cpu.step == 0
    assert abs(int(f_gpu.inliers.sum()) - int(f_cpu.inliers.sum())) <= 0.2 * f_cpu.inliers.sum()


def test_rectify_corrects_a_model_off_by_more_than_the_threshold(example_image, hardnet):
    # The tilt-6 pair above; the model handed to the rectification is the truth turned by 3 degrees in image 2, 1.5 %
    # of the diagonal off at image 1's corners, with a third of the matches within the threshold. Matched on the
    # rectified view, the new model is within 0.5 % of the truth there, and its inliers are true.
    h, w = example_image.shape[:2]
    truth = viewpoint_homography((h, w), tilt=6, axis_deg=30, rotation_deg=60)
    other = cv2.warpPerspective(example_image, truth, (w, h))
    wide = match_wide(example_image, other, hardnet, steps=((), (2.0, 4.0, 6.0)))
    assert wide.model is not None and wide.step == 1
    feats = (wide.features1, wide.features2)
    views = [len(f.views) for f in feats]
    p1, p2 = feats[0].centres[wide.matches.query_idx], feats[1].centres[wide.matches.train_idx]
    c, a = p2[wide.inliers].mean(axis=0), np.radians(3.0)  # image 2 turned by 3 degrees about the inliers' centre
    turn = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    off = np.array([[1, 0, c[0]], [0, 1, c[1]], [0, 0, 1]]) @ turn @ np.array([[1, 0, -c[0]], [0, 1, -c[1]], [0, 0, 1]])
    off = off @ truth
    inliers = cv2.perspectiveTransform(p1[None], off)[0] - p2
    inliers = np.linalg.norm(inliers, axis=1) < 3.0
    assert inliers.sum() >= 15 and corner_error(off, truth, h, w) > 0.01
    matches, new_inliers, model = _rectify(off, wide.matches, inliers, feats,
                                           [to_grey_tensor(i, hardnet.device) for i in (example_image, other)],
                                           [cv2.cvtColor(i, cv2.COLOR_BGR2GRAY) for i in (example_image, other)],
                                           hardnet, 3.0, 15, 2000, 10.0, 2.0)
    assert model is not off and corner_error(model, truth, h, w) < 0.005
    assert new_inliers.sum() > inliers.sum()
    q1, q2 = feats[0].centres[matches.query_idx], feats[1].centres[matches.train_idx]
    moved = cv2.perspectiveTransform(q1[new_inliers][None], truth)[0]
    assert np.median(np.linalg.norm(moved - q2[new_inliers], axis=1)) < 1.5
    assert sum(len(f.views) for f in feats) == sum(views) + 1  # the rectified view, of one image
    drawn = [f.views[-1].matrix.shape == (3, 3) for f in feats].index(True)
    ends = (matches.query_idx, matches.train_idx)
    rect = feats[drawn].view_index[ends[drawn]] == len(feats[drawn].views) - 1
    # the rectified view's features are matched to the other image's own (step-0) features, which are placed
    # precisely, not to those of its synthesized views
    assert (rect & new_inliers).sum() >= 15 and (feats[1 - drawn].view_index[ends[1 - drawn][rect]] == 0).all()


@pytest.mark.parametrize("tilt, rectified", [(2.0, False), (3.0, True)])
def test_step_0_rectifies_an_oblique_homography_only(example_image, hardnet, tilt, rectified):
    # Tilt 3 about an axis at 30 degrees: the plain pipeline's model (32 inliers) is 1 % off at image 1's corners.
    # Its local tilt is above RECTIFIED_TILT, so step 0 matches a rectified view too, without synthesized views.
    # At tilt 2 the model's tilt where its inliers are is below RECTIFIED_TILT: no view is added (an easy pair costs
    # no more).
    h, w = example_image.shape[:2]
    truth = viewpoint_homography((h, w), tilt=tilt, axis_deg=30, rotation_deg=60)
    other = cv2.warpPerspective(example_image, truth, (w, h))
    wide = match_wide(example_image, other, hardnet, steps=((),))
    assert wide.step == 0 and corner_error(wide.model, truth, h, w) < 0.002
    views = [f.views for f in (wide.features1, wide.features2)]
    p1 = wide.features1.centres[wide.matches.query_idx][wide.inliers]
    if not rectified:
        assert list(map(len, views)) == [1, 1] and model_tilt(wide.model, p1) < RECTIFIED_TILT
        return
    assert wide.inliers.sum() > 100 and sorted(map(len, views))[0] == 1 and sum(map(len, views)) > 2
    assert all(v.matrix.shape == (3, 3) for v in views[0][1:] + views[1][1:])


@pytest.mark.parametrize("option, value, error", [
    ("min_inliers", 0, ValueError), ("min_inliers", -3, ValueError), ("min_inliers", 2.5, TypeError),
    ("min_inliers", "15", TypeError), ("view_keypoints", -1, ValueError), ("view_keypoints", (), ValueError),
    ("view_keypoints", (800, 2.5), TypeError),
])
@pytest.mark.parametrize("wide", [True, False])
def test_bad_wide_options_of_match_pair_fail_before_any_work(option, value, error, wide):
    # descriptor=object(): any work would fail on it; without wide_baseline the options are checked all the same
    with pytest.raises(error, match=option):
        match_pair(np.zeros((8, 8)), np.zeros((8, 8)), descriptor=object(), wide_baseline=wide, **{option: value})


def test_wide_baseline_stops_at_step_0_on_an_easy_pair(example_pair, hardnet):
    r = match_pair(*example_pair, hardnet, geometry="fundamental", wide_baseline=True)
    assert r.step == 0 and r.views == (1, 1) and r.model is not None and r.inliers.sum() >= 25


def _inlier_points(w) -> tuple[np.ndarray, np.ndarray]:
    """A ``WideMatch``'s inliers as pixel positions ``(K, 2)`` in each image."""
    return w.points1[w.inliers], w.points2[w.inliers]


def test_a_weak_fundamental_matrix_sends_the_search_on_and_guides_it(example_pair, hardnet):
    """300 keypoints per image: step 0 verifies a fundamental matrix with 25-49 inliers. Ending the search there
    (``stop_inliers=25``, the rule before) states it; by default the views are added, the correspondences that
    agree with it verified, and a model of many more inliers stated that step 0's inliers fit too."""
    options = dict(geometry="fundamental", threshold=1.0, max_keypoints=300)
    weak = match_wide(*example_pair, hardnet, stop_inliers=25, **options)
    assert weak.step == 0 and 25 <= weak.inliers.sum() < STOP_INLIERS["fundamental"]
    lines: list[str] = []
    more = match_wide(*example_pair, hardnet, progress=lines.append, **options)
    assert more.step == 1 and more.geometry == "fundamental" and more.inliers.sum() >= 10 * weak.inliers.sum()
    assert lines[0].endswith("-> model (fewer than 50: next step)") and lines[1].endswith("-> model")
    assert np.mean(sampson_error_px(*_inlier_points(weak), more.model) < 1.0) >= 0.8


def test_a_weak_fundamental_matrix_is_stated_when_no_later_step_finds_more(example_pair, hardnet, monkeypatch):
    """Once a weak model is kept, the later steps only look for correspondences that agree with it: when they
    find none, that model is the answer, with the step that found it, and no other model is fitted."""
    import hardnet_desc.wide_baseline as wb

    options = dict(geometry="fundamental", threshold=1.0, max_keypoints=300, steps=((), (2.0,)))
    weak = match_wide(*example_pair, hardnet, stop_inliers=25, **options)
    fits = []
    verify_ = wb.verify
    monkeypatch.setattr(wb, "verify", lambda *a, **k: fits.append(len(a[0])) or verify_(*a, **k))
    monkeypatch.setattr(wb, "verify_prior", lambda prior, p1, *a, **k: (None, np.zeros(len(p1), bool), "fundamental"))
    kept = match_wide(*example_pair, hardnet, **options)
    assert kept.step == 0 and len(fits) == 1  # step 0's fit alone
    assert np.array_equal(kept.model, weak.model) and np.array_equal(kept.inliers, weak.inliers)
    assert np.array_equal(kept.matches.query_idx, weak.matches.query_idx)


def test_match_wide_states_no_fundamental_matrix_of_few_scattered_inliers(example_pair, hardnet, monkeypatch):
    """300 keypoints per image, step 0 only: 25-39 inliers over a quarter of the images, but nearly all the
    matches, so the model is stated. Were they a minority (``SCATTERED_SHARE`` raised), they would look like a
    chance fit: no model, no step, the matches kept, and a line saying why."""
    from hardnet_desc import verification

    options = dict(geometry="fundamental", threshold=1.0, max_keypoints=300, steps=((),))
    kept = match_wide(*example_pair, hardnet, **options)
    assert kept.model is not None and kept.step == 0 and 25 <= kept.inliers.sum() < verification.SCATTERED_INLIERS
    assert kept.inliers.mean() >= verification.SCATTERED_SHARE
    assert not scattered(kept.points1, kept.points2, kept.inliers, example_pair[0].shape[:2], example_pair[1].shape[:2])
    monkeypatch.setattr(verification, "SCATTERED_SHARE", 1.0)
    lines: list[str] = []
    refused = match_wide(*example_pair, hardnet, progress=lines.append, **options)
    assert refused.model is None and refused.step is None and not refused.inliers.any()
    assert refused.geometry == "fundamental"
    assert np.array_equal(refused.matches.query_idx, kept.matches.query_idx)
    assert lines[-1].endswith("(a chance fit): no model")


@pytest.mark.parametrize("value, error", [(0, ValueError), (2.5, TypeError)])
def test_bad_stop_inliers_fail_before_any_work(value, error):
    with pytest.raises(error, match="stop_inliers"):
        match_wide(np.zeros((8, 8)), np.zeros((8, 8)), descriptor=object(), stop_inliers=value)


def test_a_homography_of_thin_support_is_refused_and_the_search_goes_on(example_image, hardnet, monkeypatch):
    """The photo against a mild warp of itself: step 0 states a homography. Were every support thin (the thresholds
    raised), it would be refused with a line saying so, and the next step would run; fundamental matrices are not
    checked so."""
    from hardnet_desc import verification

    small = cv2.resize(example_image, (400, 260), interpolation=cv2.INTER_AREA)
    h = viewpoint_homography((260, 400), tilt=1.3, axis_deg=20, rotation_deg=10, zoom=1.0)
    warped = cv2.warpPerspective(small, h, (400, 260))
    options = dict(geometry="homography", threshold=3.0, max_keypoints=500, steps=((), (2.0,)))
    kept = match_wide(small, warped, hardnet, **options)
    assert kept.model is not None and kept.step == 0
    monkeypatch.setattr(verification, "THIN_RATIO_INLIERS", 10**6)
    monkeypatch.setattr(verification, "THIN_FRAME_SHARE", 1.01)
    lines: list[str] = []
    refused = match_wide(small, warped, hardnet, progress=lines.append, **options)
    assert refused.model is None and refused.step is None and len(lines) == 2  # step 1 ran too
    assert all("with thin support refused" in line for line in lines)
    f = match_wide(small, warped, hardnet, **{**options, "geometry": "fundamental", "threshold": 1.0})
    assert f.model is not None


def test_a_homography_of_few_inliers_sends_the_search_on(example_image, hardnet):
    """A homography with fewer than ``stop_inliers`` at a step but the last is kept and the next step looks for a model
    of more inliers; the one of most inliers is stated, with its step."""
    small = cv2.resize(example_image, (400, 260), interpolation=cv2.INTER_AREA)
    h = viewpoint_homography((260, 400), tilt=1.3, axis_deg=20, rotation_deg=10, zoom=1.0)
    warped = cv2.warpPerspective(small, h, (400, 260))
    options = dict(geometry="homography", threshold=3.0, max_keypoints=500, steps=((), (2.0,)))
    first = match_wide(small, warped, hardnet, **options, stop_inliers=15)
    assert first.step == 0 and len(first.features1.views) == 1  # enough: step 1 never ran
    lines: list[str] = []
    more = match_wide(small, warped, hardnet, **options, stop_inliers=10**4, progress=lines.append)
    assert lines[0].endswith(f"-> model (fewer than {10**4}: next step)") and len(lines) == 2
    assert len(more.features1.views) == 6  # step 1's five views were described
    assert more.model is not None and more.step in (0, 1) and more.inliers.sum() >= first.inliers.sum()


def test_wide_baseline_finds_no_model_between_a_photo_and_noise(example_image, hardnet):
    small = cv2.resize(example_image, (400, 260), interpolation=cv2.INTER_AREA)
    noise = cv2.GaussianBlur(np.random.default_rng(1).integers(0, 256, (260, 400), np.uint8), (0, 0), 1.5)
    r = match_pair(small, noise, hardnet, geometry="homography", wide_baseline=True, max_keypoints=500)
    assert r.model is None and r.step is None and not r.inliers.any()
    assert r.views[0] == 1 + 15 + 35  # every step was tried


@pytest.mark.parametrize("flat_first", [True, False])
def test_an_image_without_keypoints_gets_no_model_at_every_step(example_image, hardnet, flat_first):
    # A flat image has no SIFT keypoint in any view: every step runs and says "no model" (it used to fail in
    # torch.cat when the first image was the flat one).
    small = cv2.resize(example_image, (200, 130), interpolation=cv2.INTER_AREA)
    flat = np.full((130, 200), 90, np.uint8)
    pair = (flat, small) if flat_first else (small, flat)
    w = match_wide(*pair, hardnet, steps=((), (2.0,)), max_keypoints=100, view_keypoints=50)
    empty = w.features1 if flat_first else w.features2
    assert w.model is None and w.step is None and len(w.matches) == 0 and len(empty.frames) == 0
    assert len(empty.views) == 6 and empty.descriptors.shape == (0, 128)


def test_view_keypoints_limit_each_step_s_views(example_image, hardnet):
    # A number limits every view; a sequence each step with views in turn, its last entry the later steps.
    small = cv2.resize(example_image, (400, 260), interpolation=cv2.INTER_AREA)
    noise = cv2.GaussianBlur(np.random.default_rng(1).integers(0, 256, (260, 400), np.uint8), (0, 0), 1.5)
    steps = ((), (2.0,), (4.0,), (6.0,))
    first = 1 + len(make_views((2.0,), small.shape[:2], ROTATION_STEP))  # views of steps 0 and 1
    second = first + len(make_views((4.0,), small.shape[:2], ROTATION_STEP))
    for limits, want in [(25, (25, 25, 25)), ((40, 12), (40, 12, 12)), ((40, 12, 30, 5), (40, 12, 30))]:
        w = match_wide(small, noise, hardnet, steps=steps, max_keypoints=60, view_keypoints=limits)
        per_view = np.bincount(w.features1.view_index, minlength=len(w.features1.views))
        assert w.step is None and per_view[0] == 60  # every step ran; step 0 keeps max_keypoints
        assert (per_view[1:first].max(), per_view[first:second].max(), per_view[second:].max()) == want


def test_match_pair_and_the_cli_pass_view_keypoints_on(example_image, hardnet, tmp_path, capsys):
    # match_pair(wide_baseline=True) and `match --view-keypoints` describe as many features per view as match_wide
    # with the same limits (the photo against noise runs every step).
    import json

    from hardnet_desc.cli import main

    small = cv2.resize(example_image, (400, 260), interpolation=cv2.INTER_AREA)
    noise = cv2.GaussianBlur(np.random.default_rng(1).integers(0, 256, (260, 400), np.uint8), (0, 0), 1.5)
    w = match_wide(small, noise, hardnet, max_keypoints=60, view_keypoints=(20, 5))
    per_view = np.bincount(w.features1.view_index, minlength=len(w.features1.views))
    assert w.step is None and per_view[0] == 60 and per_view[1:16].max() == 20 and per_view[16:].max() == 5
    r = match_pair(small, noise, hardnet, max_keypoints=60, geometry="homography", wide_baseline=True,
                   view_keypoints=(20, 5))
    assert (len(r.keypoints1), len(r.keypoints2)) == (len(w.features1.frames), len(w.features2.frames))
    paths = [tmp_path / "photo.png", tmp_path / "noise.png"]
    for path, image in zip(paths, (small, noise)):
        cv2.imwrite(str(path), image)
    args = ["match", *map(str, paths), "--out", str(tmp_path / "m.png"), "--device", "cpu", "--geometry",
            "homography", "--max-keypoints", "60", "--wide-baseline", "--json", str(tmp_path / "m.json")]
    assert main([*args, "--view-keypoints", "20,5"]) == 0
    data = json.loads((tmp_path / "m.json").read_text())
    assert data["keypoints"] == [len(r.keypoints1), len(r.keypoints2)]
    # the matches shown are the last step's, which passed the looser view_ratio: the CLI said the step-0 ratio
    assert w.ratio == r.ratio == data["ratio"] == VIEW_RATIO
    assert f"FGINN ratio < {VIEW_RATIO:g})" in capsys.readouterr().out
    assert main([*args, "--force", "--view-keypoints", "20,-1"]) == 2  # checked before any work
    assert "--view-keypoints[1] must be" in capsys.readouterr().err
    assert main([*args, "--force", "--view-keypoints", "1,2,3,4,5"]) == 2  # three of them silently ignored
    assert "--view-keypoints takes at most 2 numbers (one per step with views), got 5" in capsys.readouterr().err
    assert main([*args, "--force", "--view-keypoints", "20,-1"]) == 2
    assert "--view-keypoints[1] must be" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--view-keypoints", "20,x"])
    assert "expected comma-separated ints" in capsys.readouterr().err
    assert main([*args[:-3], "--view-keypoints", "20"]) == 2  # without --wide-baseline
    assert "--view-keypoints needs --wide-baseline" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["match", "--help"])
    assert f"default: {','.join(map(str, DEFAULT_VIEW_KEYPOINTS))})" in " ".join(capsys.readouterr().out.split())


def test_view_ratio_applies_to_the_view_steps_only(example_pair, example_image, hardnet):
    # Step 0 is the plain pipeline with ``ratio``: an extreme view_ratio leaves an easy pair's result as it was.
    easy = [match_wide(*example_pair, hardnet, geometry="fundamental", view_ratio=v) for v in (VIEW_RATIO, 0.05)]
    assert easy[0].step == easy[1].step == 0 and easy[0].ratio == easy[1].ratio == 0.8
    assert np.array_equal(easy[0].matches.query_idx, easy[1].matches.query_idx)
    assert np.array_equal(easy[0].inliers, easy[1].inliers)
    # The later steps match with ``view_ratio``: a stricter one keeps fewer of the same tentative matches.
    small = cv2.resize(example_image, (400, 260), interpolation=cv2.INTER_AREA)
    noise = cv2.GaussianBlur(np.random.default_rng(1).integers(0, 256, (260, 400), np.uint8), (0, 0), 1.5)
    loose, strict = [match_wide(small, noise, hardnet, steps=((), (2.0,)), max_keypoints=500, view_ratio=v)
                     for v in (None, 0.8)]
    assert loose.step is None and strict.step is None and loose.ratio is None and strict.ratio == 0.8
    assert len(strict.matches) < len(loose.matches)
    assert set(strict.matches.query_idx.tolist()) <= set(loose.matches.query_idx.tolist())


# --- the command line -----------------------------------------------------------------------------------


def test_match_cli_wide_baseline_writes_json_and_keeps_foreign_files(example_files, tmp_path, capsys):
    import json

    from hardnet_desc.cli import main

    foreign = tmp_path / "mine.json"
    foreign.write_text('{"my": "data"}')
    args = ["match", *map(str, example_files), "--out", str(tmp_path / "m.png"), "--device", "cpu",
            "--max-keypoints", "800", "--wide-baseline"]
    assert main([*args, "--json", str(foreign)]) == 2  # checked before any work
    assert foreign.read_text() == '{"my": "data"}' and "--force" in capsys.readouterr().err
    out = tmp_path / "m.json"
    assert main([*args, "--json", str(out), "--verbose"]) == 0
    text = capsys.readouterr()
    assert "step 0 (tilts 1)" in text.err and "step 0 verified the model" in text.out
    data = json.loads(out.read_text())
    assert data["written_by"] == "hardnet-desc" and data["step"] == 0 and data["views"] == [1, 1]
    assert data["ratio"] == 0.8 and "FGINN ratio < 0.8)" in text.out
    assert data["geometry"] == "fundamental" and len(data["model"]) == 3
    assert data["inliers"] == sum(data["matches"]["inlier"]) >= 25
    assert len(data["matches"]["points1"]) == len(data["matches"]["points2"]) == len(data["matches"]["inlier"])
    assert main([*args, "--json", str(out)]) == 0  # its own file: replaced without --force
    assert main(["match", *map(str, example_files), "--out", str(tmp_path / "n.png"), "--min-inliers", "5"]) == 2
    assert "--min-inliers needs --wide-baseline" in capsys.readouterr().err


@pytest.mark.parametrize("option, value, error", [
    ("rotation_step", 0, ValueError), ("rotation_step", float("nan"), ValueError), ("rotation_step", "72", TypeError),
    ("view_max_side", 0, ValueError), ("view_max_side", -3, ValueError), ("fginn_radius", -1, ValueError),
    ("duplicate_radius", float("nan"), ValueError), ("ratio", 2.0, ValueError), ("view_ratio", 0, ValueError),
    ("view_keypoints", -1, ValueError), ("view_keypoints", 2.5, TypeError), ("view_keypoints", (), ValueError),
    ("view_keypoints", (800, -1), ValueError), ("view_keypoints", (800, 2.5), TypeError),
    ("threshold", None, TypeError), ("threshold", -1, ValueError), ("steps", (), ValueError), ("steps", 5, ValueError),
    ("steps", ((), 2), ValueError),
    ("steps", ((), (0.5,)), ValueError), ("geometry", "affine", ValueError),
])
def test_bad_options_of_match_wide_fail_before_any_work(option, value, error):
    # descriptor=object(): any work would fail on it, so the error must come from the check, naming the option
    with pytest.raises(error, match="steps|a view is" if option == "steps" else option):
        match_wide(np.zeros((8, 8)), np.zeros((8, 8)), object(), **{option: value})


def test_a_fundamental_matrix_is_fitted_to_aligned_positions(example_pair, hardnet):
    # The correspondences' positions in image 2 are moved onto image 1's patches (align_matches): some move, by
    # less than a pixel in the median, and the pair's PairMatch carries the same positions.
    w = match_wide(*example_pair, hardnet, geometry="fundamental", threshold=1.0)
    centres = w.features2.centres[w.matches.train_idx]
    shift = np.linalg.norm(w.points2 - centres, axis=1)
    assert w.model is not None and (w.points1 == w.features1.centres[w.matches.query_idx]).all()
    assert (shift > 0).mean() > 0.3 and np.median(shift[shift > 0]) < 1.0
    r = match_pair(*example_pair, hardnet, geometry="fundamental", threshold=1.0, wide_baseline=True)
    assert np.array_equal(r.points2, w.points2) and np.array_equal(r.inliers, w.inliers)
