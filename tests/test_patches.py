"""Patch geometry on a real photo: rotation, scale, anti-aliasing, borders, input checks."""

import dataclasses

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hardnet_desc.core.patches import (
    DEFAULT_PATCH_SCALE,
    PatchSpec,
    build_pyramid,
    check_frames,
    cut_frame_batch,
    extract_patches,
    frame_batches,
    keypoints_to_array,
    keypoints_to_frames,
    pyramid_depth,
    pyramid_levels,
    sample_frames,
)


@pytest.fixture(scope="module")
def grey(example_grey) -> np.ndarray:
    """The first bundled photo, grey float32 ``(H, W)`` in 0..1."""
    return example_grey[0, 0].numpy()


@pytest.fixture(scope="module")
def kp_array(example_keypoints, grey) -> np.ndarray:
    """SIFT keypoints ``(N, 4)`` whose whole (rotated) patch lies inside the photo."""
    kps = keypoints_to_array(example_keypoints)
    return kps[_inside(kps, *grey.shape)]


def _inside(kps: np.ndarray, h: int, w: int, patch_scale: float = DEFAULT_PATCH_SCALE) -> np.ndarray:
    r = 0.5 * patch_scale * kps[:, 2] * np.sqrt(2) + 1.0  # half diagonal of any rotation of the patch
    return (kps[:, 0] > r) & (kps[:, 0] < w - 1 - r) & (kps[:, 1] > r) & (kps[:, 1] < h - 1 - r)


def _mad(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference per patch, ``(N,)``."""
    return (a - b).abs().flatten(1).mean(1)


def _patches(image: np.ndarray, kps: np.ndarray, **kwargs) -> torch.Tensor:
    return extract_patches(torch.from_numpy(image), kps, **kwargs)


def _rotate(image: np.ndarray, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate counter-clockwise on screen by ``theta`` degrees onto a canvas holding the whole image."""
    h, w = image.shape
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), theta, 1.0)
    c, s = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(np.ceil(w * c + h * s)), int(np.ceil(w * s + h * c))
    m[:, 2] += [(nw - w) / 2, (nh - h) / 2]
    return cv2.warpAffine(image, m, (nw, nh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE), m


@pytest.mark.parametrize("theta", [30.0, 90.0])
def test_rotated_image_gives_the_same_patches(grey, kp_array, theta):
    rotated, m = _rotate(grey, theta)
    centres = kp_array[:, :2] @ m[:, :2].T + m[:, 2]
    size, angle = kp_array[:, 2], kp_array[:, 3]
    ref = _patches(grey, kp_array)
    same = _mad(_patches(rotated, np.c_[centres, size, angle - theta]), ref)
    wrong_sign = _mad(_patches(rotated, np.c_[centres, size, angle + theta]), ref)
    off_by_1px = _mad(_patches(rotated, np.c_[centres + 1.0, size, angle - theta]), ref)
    # only the interpolation of warpAffine separates the two (nothing at 90 degrees)
    assert same.median() < 0.02
    assert wrong_sign.median() > 8 * same.median() + 0.05
    assert off_by_1px.median() > 3 * same.median() + 0.03
    assert (same < wrong_sign).float().mean() > 0.95


@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_scaled_image_gives_the_same_patches(grey, kp_array, scale):
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=interp)
    kps = kp_array[kp_array[:, 2] * scale >= 2.0]  # keep patches of at least a few pixels
    assert len(kps) > 50
    ref = _patches(grey, kps)
    centres = (kps[:, :2] + 0.5) * scale - 0.5  # pixel centres at integers
    same = _mad(_patches(resized, np.c_[centres, kps[:, 2] * scale, kps[:, 3]]), ref)
    corner_convention = _mad(_patches(resized, np.c_[kps[:, :2] * scale, kps[:, 2] * scale, kps[:, 3]]), ref)
    size_not_scaled = _mad(_patches(resized, np.c_[centres, kps[:, 2], kps[:, 3]]), ref)
    assert same.median() < 0.02
    assert corner_convention.median() > 1.3 * same.median()
    assert size_not_scaled.median() > 5 * same.median()


def test_large_keypoints_are_read_from_a_blurred_level(grey):
    """A 4x-downscaled photo (area average) gives about the patch of the full photo."""
    small = cv2.resize(grey, (grey.shape[1] // 4, grey.shape[0] // 4), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(0)
    n = 400
    full = np.c_[rng.uniform(0, grey.shape[1] - 1, n), rng.uniform(0, grey.shape[0] - 1, n),
                 rng.uniform(24, 48, n), rng.uniform(0, 360, n)]
    down = np.c_[(full[:, :2] + 0.5) / 4 - 0.5, full[:, 2] / 4, full[:, 3]]
    keep = _inside(down, *small.shape)
    full, down = full[keep], down[keep]
    frames = keypoints_to_frames(full)
    assert len(full) > 30 and bool((pyramid_levels(frames, 64) >= 1).all())

    target = _patches(small, down)
    with_pyramid = _mad(_patches(grey, full), target)
    image = torch.from_numpy(grey)[None, None]
    point_sampled = _mad(F.avg_pool2d(sample_frames([image], frames, 64), 2), target)
    assert with_pyramid.median() < 0.015
    assert with_pyramid.median() < 0.7 * point_sampled.median()


def test_pyramid_is_the_binomial_pyrdown(grey):
    """Reference: separable [1 4 6 4 1] / 16 filter, reflect-101 border, even rows and columns kept."""
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
    image = torch.from_numpy(grey[:517, :797].copy())[None, None]  # odd sizes
    pyramid = build_pyramid(image, 3)
    x = image
    for level in pyramid[1:]:
        x = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), (k[:, None] * k[None, :])[None, None])[..., ::2, ::2]
        assert level.shape == x.shape
        torch.testing.assert_close(level, x, atol=1e-5, rtol=0)
    assert [p.shape[-1] for p in pyramid] == [797, 399, 200, 100]


def test_patches_near_the_border_replicate_it(grey):
    h, w = grey.shape
    # size 8 at patch scale 6: 48 px patch read at full resolution (pyramid level 0)
    kps = np.array([[0, 0, 8, -1], [w - 1, h - 1, 8, -1], [3, h / 2, 8, 30], [w - 0.6, 5, 8, 200], [-0.5, -0.5, 8, 0]])
    patches = _patches(grey, kps)
    assert torch.isfinite(patches).all()
    # the same keypoints in an explicitly border-replicated copy of the photo
    pad = 40
    padded = cv2.copyMakeBorder(grey, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    shifted = kps + [pad, pad, 0, 0]
    torch.testing.assert_close(patches, _patches(padded, shifted), atol=1e-5, rtol=0)
    # upright keypoint on the top-left pixel: the outside quadrant is that pixel
    torch.testing.assert_close(patches[0, 0, :16, :16], torch.full((16, 16), float(grey[0, 0])))
    torch.testing.assert_close(patches[1, 0, 16:, 16:], torch.full((16, 16), float(grey[h - 1, w - 1])))


def test_keypoint_outside_the_image_is_an_error(grey):
    h, w = grey.shape
    for x, y in [(-1.0, 10.0), (10.0, h + 0.1), (w - 0.4, 10.0)]:
        with pytest.raises(ValueError, match=r"1 keypoint\(s\) lie outside the 800x520 image"):
            _patches(grey, np.array([[100, 100, 5, 0], [x, y, 5, 0]]))


@pytest.mark.parametrize(
    "kps, error, match",
    [
        (np.array([[10, 10, 0, 0]]), ValueError, r"size <= 0 \(first: index 0"),
        (np.array([[10, 10, 5, 0], [10, 10, -2, 0]]), ValueError, r"size <= 0 \(first: index 1"),
        (np.array([[10, np.nan, 5, 0]]), ValueError, "NaN or inf"),
        (np.array([[10, 10, 5, np.inf]]), ValueError, "NaN or inf"),
        (np.zeros((3, 3)), ValueError, r"shape \(N, 4\)"),
        (np.zeros(4), ValueError, r"shape \(N, 4\)"),
        (np.array([["a", "b", "c", "d"]]), TypeError, "numeric"),
        ([(10, 10, 5, 0)], TypeError, "cv2.KeyPoint"),
        (np.full((1, 2, 3), np.nan), ValueError, "NaN or inf"),
    ],
)
def test_bad_keypoints_give_clear_errors(grey, kps, error, match):
    with pytest.raises(error, match=match):
        _patches(grey, kps)


def test_bad_image_and_patch_scale_give_clear_errors(grey):
    kps = np.array([[10.0, 10.0, 5.0, 0.0]])
    with pytest.raises(ValueError, match=r"image must be \(H, W\) or \(1, 1, H, W\)"):
        extract_patches(torch.from_numpy(grey)[None], kps)
    with pytest.raises(ValueError, match="patch_scale must be a positive finite number, got 0.0"):
        _patches(grey, kps, patch_scale=0.0)


def test_affine_frames_equal_keypoints(grey, kp_array):
    kps = kp_array[:50]
    theta = np.deg2rad(kps[:, 3])
    half = DEFAULT_PATCH_SCALE * kps[:, 2] / 2
    rot = np.stack([np.stack([np.cos(theta), -np.sin(theta)], -1), np.stack([np.sin(theta), np.cos(theta)], -1)], 1)
    lafs = np.concatenate([half[:, None, None] * rot, kps[:, :2, None]], 2)  # (N, 2, 3)
    ref = _patches(grey, kps)
    torch.testing.assert_close(_patches(grey, lafs), ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(_patches(grey, torch.from_numpy(lafs).float()), ref, atol=1e-5, rtol=0)
    # frames are used as given: patch_scale and min_kp_size do not apply to them
    torch.testing.assert_close(_patches(grey, lafs, patch_scale=3.0, min_kp_size=100.0), ref, atol=1e-5, rtol=0)


def test_min_kp_size_raises_small_sizes_only(grey, kp_array):
    """Keypoints below min_kp_size get the patch of a keypoint of that size; larger ones are untouched."""
    kps = kp_array[:200]
    floor = float(np.median(kps[:, 2]))
    small, large = kps[:, 2] < floor, kps[:, 2] >= floor
    assert small.sum() > 20 and large.sum() > 20
    got = _patches(grey, kps, min_kp_size=floor)
    raised = kps.copy()
    raised[small, 2] = floor
    torch.testing.assert_close(got, _patches(grey, raised), atol=0, rtol=0)
    plain = _patches(grey, kps)
    torch.testing.assert_close(got[large], plain[large], atol=0, rtol=0)
    assert (got[small] - plain[small]).abs().mean() > 0.02  # a wider support is really described
    frames = keypoints_to_frames(kps, PatchSpec(DEFAULT_PATCH_SCALE, floor))
    scale = torch.sqrt(torch.det(frames[:, :, :2].double())).numpy()
    np.testing.assert_allclose(scale, DEFAULT_PATCH_SCALE * np.maximum(kps[:, 2], floor) / 2, rtol=1e-6)
    assert kps[small, 2].max() < floor  # the caller's keypoints are not changed


@pytest.mark.parametrize(
    "value, error, match",
    [(-1.0, ValueError, "min_kp_size must be a finite number >= 0"), (float("nan"), ValueError, "got nan"),
     (float("inf"), ValueError, "got inf"), ("3", TypeError, "min_kp_size must be a number"),
     (None, TypeError, "got NoneType")],
)
def test_bad_min_kp_size_gives_clear_errors(grey, value, error, match):
    with pytest.raises(error, match=match):
        _patches(grey, np.array([[10.0, 10.0, 5.0, 0.0]]), min_kp_size=value)


def test_keypoint_forms_agree(grey, example_keypoints):
    kps = example_keypoints[:40]
    ref = extract_patches(torch.from_numpy(grey), kps)
    assert ref.shape == (40, 1, 32, 32) and ref.dtype == torch.float32
    arr = keypoints_to_array(kps)
    torch.testing.assert_close(_patches(grey, arr), ref, atol=0, rtol=0)
    torch.testing.assert_close(_patches(grey, torch.from_numpy(arr)), ref, atol=0, rtol=0)
    image = torch.from_numpy(grey)[None, None]
    pyramid = build_pyramid(image, 4)
    torch.testing.assert_close(extract_patches(image, kps, pyramid=pyramid), ref, atol=0, rtol=0)
    assert _patches(grey, []).shape == (0, 1, 32, 32)
    assert _patches(grey, np.zeros((0, 4)), patch_size=64).shape == (0, 1, 64, 64)


def test_angle_minus_one_is_upright(grey, kp_array):
    kps = kp_array[:30].copy()
    kps[:, 3] = -1
    upright = _patches(grey, kps)
    torch.testing.assert_close(upright, _patches(grey, np.c_[kps[:, :3], np.zeros(len(kps))]), atol=0, rtol=0)
    # not read as -1 degree (= 359 degrees)
    assert _mad(upright, _patches(grey, np.c_[kps[:, :3], np.full(len(kps), 359.0)])).mean() > 1e-3


def test_training_patches_pool_to_the_default_patches(grey, kp_array, example_keypoints):
    """Training data: 64x64 without supersampling; its 2x2 mean is the default 32x32 patch."""
    kps = np.concatenate([kp_array, keypoints_to_array(example_keypoints)])  # incl. border ones
    for scale in (DEFAULT_PATCH_SCALE, 4.0):
        p64 = _patches(grey, kps, patch_size=64, supersample=1, patch_scale=scale)
        assert p64.shape == (len(kps), 1, 64, 64)
        ref = _patches(grey, kps, patch_scale=scale)
        torch.testing.assert_close(F.avg_pool2d(p64, 2), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("batch_size", "first"), [(64, None), (64, 10), (1000, None), (7, 7)])
def test_frame_batches_cut_the_patches_of_extract_patches(example_grey, example_keypoints, batch_size, first):
    """Checked and grouped once per image, each batch's patches are extract_patches', bit for bit."""
    frames = keypoints_to_frames(example_keypoints, PatchSpec(DEFAULT_PATCH_SCALE))[:150]
    frames[::9, :, :2] *= 7.0  # large patches: read from coarse pyramid levels
    max_level, batches = frame_batches(frames, 520, 800, batch_size, first)
    assert max_level == int(pyramid_levels(frames, 64).max()) > 2
    first = min(150, first or batch_size)
    starts = [0] + list(range(first, 150, batch_size))
    assert [(a, b) for a, b, _ in batches] == list(zip(starts, starts[1:] + [150]))
    pyramid = build_pyramid(example_grey, max_level)
    for start, stop, groups in batches:
        assert sorted(torch.cat([idx for _, idx in groups]).tolist()) == list(range(stop - start))
        ref = extract_patches(example_grey, frames[start:stop], pyramid=pyramid)
        torch.testing.assert_close(cut_frame_batch(pyramid, frames[start:stop], groups), ref, rtol=0, atol=0)
    assert frame_batches(frames[:0], 520, 800, 64) == (0, [])


def test_check_frames_refuses_bad_frames(example_keypoints):
    """The one check of given frames (describe_many's, before frame_batches, which trusts them)."""
    frames = keypoints_to_frames(example_keypoints[:20])
    check_frames(frames, 520, 800)
    outside = frames.clone()
    outside[5, 0, 2] = 900.0
    with pytest.raises(ValueError, match=r"1 keypoint\(s\) lie outside the 800x520 image \(first: index 5"):
        check_frames(outside, 520, 800)
    for value in (float("nan"), float("inf")):
        bad = frames.clone()
        bad[3, 1, 0] = value
        with pytest.raises(ValueError, match="NaN or inf"):
            check_frames(bad, 520, 800)
    with pytest.raises(ValueError, match="must be >= 1"):
        frame_batches(frames, 520, 800, 8, 0)


def test_pyramid_depth_is_what_build_pyramid_builds():
    for h, w in [(520, 800), (7, 100), (8, 8), (15, 33), (1000, 9)]:
        assert len(build_pyramid(torch.zeros(1, 1, h, w), 50)) == pyramid_depth(h, w) + 1


def test_patch_spec_defaults_checks_and_metadata_round_trip():
    spec = PatchSpec()
    assert (spec.scale, spec.min_kp_size, spec.size, spec.supersample, spec.grid_size) == (6.0, 0.0, 32, 2, 64)
    spec = PatchSpec(scale=12, min_kp_size=np.float32(3.5))
    assert isinstance(spec.scale, float) and spec.scale == 12.0 and spec.min_kp_size == 3.5
    meta = spec.to_metadata()
    assert meta == {"patch_scale": "12.0", "min_kp_size": "3.5"}
    assert PatchSpec.from_metadata(meta) == spec
    assert PatchSpec.from_metadata({"patch_scale": 12.0, "min_kp_size": 3.5, "other": "x"}) == spec  # h5 attrs: numbers
    assert PatchSpec.from_metadata({}) == PatchSpec()  # files from before min_kp_size: the defaults
    assert spec.replace(min_kp_size=None, size=64) == PatchSpec(12.0, 3.5, 64, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.scale = 3.0


@pytest.mark.parametrize(
    "fields, error, match",
    [({"scale": 0}, ValueError, "patch_scale must be a positive finite number, got 0"),
     ({"scale": float("inf")}, ValueError, "patch_scale must be a positive finite number, got inf"),
     ({"scale": "6"}, TypeError, "patch_scale must be a number, got str"),
     ({"scale": True}, TypeError, "patch_scale must be a number, got bool"),
     ({"min_kp_size": -1.0}, ValueError, "min_kp_size must be a finite number >= 0"),
     ({"min_kp_size": None}, TypeError, "min_kp_size must be a number"),
     ({"size": 0}, ValueError, "patch_size must be an integer >= 1, got 0"),
     ({"size": 32.0}, ValueError, "patch_size must be an integer >= 1, got 32.0"),
     ({"supersample": 0}, ValueError, "supersample must be an integer >= 1, got 0")],
)
def test_patch_spec_refuses_bad_fields(fields, error, match):
    with pytest.raises(error, match=match):
        PatchSpec(**fields)


@pytest.mark.parametrize(
    "meta, match",
    [({"patch_scale": "-6"}, "w.onnx: metadata patch_scale '-6' is not a positive number"),
     ({"patch_scale": "six"}, "w.onnx: metadata patch_scale 'six' is not a positive number"),
     ({"min_kp_size": "nan"}, "w.onnx: metadata min_kp_size 'nan' is not a number >= 0 of pixels"),
     ({"min_kp_size": None}, "w.onnx: metadata min_kp_size None is not a number >= 0")],
)
def test_patch_spec_from_bad_metadata_names_source_and_key(meta, match):
    with pytest.raises(ValueError, match=match):
        PatchSpec.from_metadata(meta, source="w.onnx")
