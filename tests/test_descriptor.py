"""HardNetDescriptor as an OpenCV Feature2D drop-in, on the bundled photos (untrained weights)."""

import sys
import warnings
from collections import Counter

import cv2
import numpy as np
import pytest
import torch

from hardnet_desc.descriptor import HardNetDescriptor
from hardnet_desc.core.device import choose_precision
from hardnet_desc.core.image import to_grey_tensor
from hardnet_desc.core.patches import extract_patches, keypoints_to_array


@pytest.fixture
def desc(hardnet) -> HardNetDescriptor:
    return HardNetDescriptor(hardnet, device="cpu", precision="fp32")  # exact comparisons below


@pytest.fixture(scope="module")
def keypoints(example_keypoints):
    return example_keypoints[:200]


def _unit_rows(d: np.ndarray) -> None:
    assert d.dtype == np.float32 and d.ndim == 2 and d.shape[1] == 128
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-5)


def test_compute_returns_opencv_layout(desc, example_image, keypoints):
    kps, d = desc.compute(example_image, keypoints)
    assert kps is keypoints
    assert d.shape == (len(keypoints), 128) and d.flags.c_contiguous
    _unit_rows(d)
    # rows follow the keypoint order
    perm = np.random.default_rng(0).permutation(len(keypoints))
    _, d_perm = desc.compute(example_image, [keypoints[i] for i in perm])
    np.testing.assert_allclose(d_perm, d[perm], atol=1e-5)
    # ... and each row describes its own keypoint
    single = desc.compute(example_image, [keypoints[7]])[1]
    np.testing.assert_allclose(single[0], d[7], atol=1e-5)
    assert np.abs(single[0] - d[8]).max() > 1e-2


@pytest.mark.parametrize("empty", [[], (), np.zeros((0, 4)), np.zeros((0, 2, 3), np.float32)])
def test_no_keypoints(desc, example_image, empty):
    kps, d = desc.compute(example_image, empty)
    assert kps is empty
    assert d.shape == (0, 128) and d.dtype == np.float32


def test_keypoint_array_and_frames_inputs(desc, example_image, keypoints):
    ref = desc.compute(example_image, keypoints)[1]
    arr = keypoints_to_array(keypoints)
    np.testing.assert_allclose(desc.compute(example_image, arr)[1], ref, atol=1e-6)
    np.testing.assert_allclose(desc.compute(example_image, torch.from_numpy(arr))[1], ref, atol=1e-6)


def test_batch_size_does_not_change_results(hardnet, example_image, keypoints):
    small = HardNetDescriptor(hardnet, device="cpu", precision="fp32", batch_size=7).compute(example_image, keypoints)[1]
    large = HardNetDescriptor(hardnet, device="cpu", precision="fp32", batch_size=1000).compute(example_image, keypoints)[1]
    np.testing.assert_allclose(small, large, atol=1e-5, rtol=0)
    # any larger than a batch can hold means one batch (2**63 overflowed: "index -5 is out of bounds")
    huge = HardNetDescriptor(hardnet, device="cpu", precision="fp32", batch_size=2**63)
    np.testing.assert_array_equal(huge.compute(example_image, keypoints)[1], large)


def test_batch_size_bounds_each_network_call(hardnet, example_image, keypoints, example_patches):
    # batch_size bounds the memory of a call: no forward pass sees more patches (300 patches, 64 per call).
    from hardnet_desc.descriptor import describe_patches

    seen: list[int] = []
    hook = hardnet.register_forward_hook(lambda module, inputs, output: seen.append(len(inputs[0])))
    describe_patches(hardnet, example_patches, device=torch.device("cpu"), batch_size=64)
    assert seen == [64, 64, 64, 64, 44]
    hook.remove()
    desc = HardNetDescriptor(hardnet, device="cpu", precision="fp32", batch_size=100)
    seen.clear()
    desc.net.register_forward_hook(lambda module, inputs, output: seen.append(len(inputs[0])))
    desc.describe_patches(example_patches)
    assert seen == [100, 100, 100]
    seen.clear()
    desc.compute(example_image, keypoints)
    assert len(seen) > 1 and max(seen) == 100


def test_bf16_agrees_with_fp32(hardnet, example_image, example_keypoints):
    fp32 = HardNetDescriptor(hardnet, device="cpu", precision="fp32").compute(example_image, example_keypoints)[1]
    bf16 = HardNetDescriptor(hardnet, device="cpu", precision="bf16").compute(example_image, example_keypoints)[1]
    _unit_rows(bf16)
    cosine = (fp32 * bf16).sum(1)
    nearest = (bf16 @ fp32.T).argmax(1)
    # measured with these untrained weights: mean cosine 0.9997, nearest-neighbour agreement 100 %
    assert cosine.mean() > 0.999 and cosine.min() > 0.99
    assert (nearest == np.arange(len(fp32))).mean() >= 0.98
    assert not np.array_equal(fp32, bf16)  # bf16 really ran


def test_image_types_agree(desc, example_image, keypoints):
    bgr = example_image
    ref = desc.compute(bgr, keypoints)[1]

    def same(image, atol=1e-5):
        np.testing.assert_allclose(desc.compute(image, keypoints)[1], ref, atol=atol, rtol=0)

    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    same(grey)
    same(grey[:, :, None])
    same(cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA))
    same(torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1])).permute(2, 0, 1))  # kornia: RGB (3, H, W)
    same(torch.from_numpy(grey)[None, None])
    # float (and 16-bit) input is converted to grey without cvtColor's rounding to 8 bits: nearly the same
    as_float = desc.compute(bgr.astype(np.float32) / 255.0, keypoints)[1]
    assert (as_float * ref).sum(1).min() > 0.999
    assert np.abs(as_float - ref).max() > 1e-5  # ... not exactly: the float path was taken
    np.testing.assert_allclose(desc.compute(bgr.astype(np.float32), keypoints)[1], as_float, atol=1e-5)  # 0..255
    np.testing.assert_allclose(desc.compute(bgr.astype(np.float64) / 255.0, keypoints)[1], as_float, atol=1e-5)
    np.testing.assert_allclose(desc.compute(bgr.astype(np.uint16) * 257, keypoints)[1], as_float, atol=1e-4)
    rgb = torch.from_numpy(bgr[:, :, ::-1] / 255.0).permute(2, 0, 1)[None].float()
    np.testing.assert_allclose(desc.compute(rgb, keypoints)[1], as_float, atol=1e-5)


@pytest.mark.parametrize(
    "image, error, match",
    [
        (np.zeros((64, 64), np.int64), TypeError, "dtype must be uint8, uint16 or float, got int64"),
        (np.zeros((64, 64), bool), TypeError, "dtype must be uint8, uint16 or float, got bool"),
        (np.full((64, 64), np.nan, np.float32), ValueError, "NaN or inf"),
        (np.zeros((1, 64, 64, 3), np.uint8), ValueError, r"must be \(H, W\) grey or \(H, W, 3\) BGR"),
        (torch.zeros(2, 3, 64, 64), ValueError, "one image at a time"),
        ([[0, 1], [2, 3]], TypeError, "numpy array or torch tensor"),
    ],
)
def test_bad_images_give_clear_errors(desc, image, error, match):
    kps = [cv2.KeyPoint(30.0, 30.0, 5.0)]
    with pytest.raises(error, match=match):
        desc.compute(image, kps)


def test_bad_settings_give_clear_errors(hardnet):
    with pytest.raises(ValueError, match="precision must be one of"):
        HardNetDescriptor(hardnet, precision="int4")
    with pytest.raises(ValueError, match="int8' runs on the CPU only"):  # the rule HardNetDescriptor applies
        choose_precision("int8", torch.device("cuda"), inference=True)  # (a CUDA-less machine stops at the device)
    with pytest.raises(ValueError, match="device 'meta' is not supported"):
        HardNetDescriptor(hardnet, device="meta", precision="int8")
    with pytest.raises(ValueError, match="int8' needs activation scales calibrated for these weights"):
        HardNetDescriptor(hardnet, device="cpu", precision="int8")  # untrained: nothing calibrated
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        HardNetDescriptor(hardnet, batch_size=0)
    with pytest.raises(ValueError, match="fp16' needs a CUDA device"):
        HardNetDescriptor(hardnet, device="cpu", precision="fp16")


def test_feature2d_properties(desc):
    assert desc.descriptorSize() == 128
    assert desc.descriptorType() == cv2.CV_32F
    assert desc.defaultNorm() == cv2.NORM_L2
    assert "HardNetDescriptor" in repr(desc) and "device='cpu'" in repr(desc)


def test_detect_with_mask(hardnet, example_image):
    desc = HardNetDescriptor(hardnet, device="cpu", detector=cv2.SIFT_create(nfeatures=300))
    h, w = example_image.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    mask[:, : w // 2] = 255
    kps = desc.detect(example_image, mask)
    assert len(kps) > 50 and max(k.pt[0] for k in kps) < w // 2
    kps2, d = desc.detectAndCompute(example_image, mask)
    assert [k.pt for k in kps2] == [k.pt for k in kps]
    assert d.shape == (len(kps), 128)
    _unit_rows(d)
    assert len(desc.detect(example_image)) > len(kps) / 2  # no mask: both halves
    assert max(k.pt[0] for k in desc.detect(example_image)) > w // 2


def test_opencv_matching_pipeline(hardnet, example_pair):
    desc = HardNetDescriptor(hardnet, device="cpu", detector=cv2.SIFT_create(nfeatures=400))
    (kps1, d1), (kps2, d2) = (desc.detectAndCompute(image) for image in example_pair)
    knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(d1, d2, k=2)
    good = [m for m, n in knn if m.distance < 0.9 * n.distance]
    assert all(isinstance(m, cv2.DMatch) for m in good)
    assert len(good) >= 20  # random weights match worse than SIFT, but not hopelessly
    pts1 = np.float32([kps1[m.queryIdx].pt for m in good])
    pts2 = np.float32([kps2[m.trainIdx].pt for m in good])
    fmat, inliers = cv2.findFundamentalMat(pts1, pts2, cv2.FM_RANSAC, 1.0, 0.999)
    assert fmat.shape == (3, 3) and inliers.shape == (len(good), 1)
    hmat, mask = cv2.findHomography(pts1, pts2, cv2.RANSAC, 5.0)
    assert hmat.shape == (3, 3) and mask.sum() >= 4
    # FLANN's kd-tree takes the float32 rows as they are
    flann = cv2.FlannBasedMatcher({"algorithm": 1, "trees": 4}, {"checks": 64})
    assert len(flann.knnMatch(d1, d2, k=2)) == len(d1)


def test_custom_detector(hardnet, example_image):
    desc = HardNetDescriptor(hardnet, device="cpu", detector=cv2.ORB_create(nfeatures=200))
    kps, d = desc.detectAndCompute(example_image)
    assert 0 < len(kps) <= 200 and d.shape == (len(kps), 128)
    assert min(k.size for k in kps) == 31  # ORB's keypoints (31 px at level 0), not SIFT's
    _unit_rows(d)


def test_describe_patches(desc, example_grey, keypoints):
    p32 = extract_patches(example_grey, keypoints)  # (N, 1, 32, 32) in 0..1
    ref = desc.compute(example_grey[0, 0].numpy(), keypoints)[1]
    np.testing.assert_allclose(desc.describe_patches(p32.numpy()), ref, atol=1e-5)
    np.testing.assert_allclose(desc.describe_patches(p32[:, 0].numpy()), ref, atol=1e-5)
    as_tensor = desc.describe_patches(p32)
    assert isinstance(as_tensor, torch.Tensor) and as_tensor.shape == (len(keypoints), 128)
    np.testing.assert_allclose(as_tensor.numpy(), ref, atol=1e-5)
    # uint8 patches, as stored by datasets
    as_uint8 = (p32[:, 0] * 255).round().to(torch.uint8).numpy()
    assert (desc.describe_patches(as_uint8) * ref).sum(1).mean() > 0.999
    # 64x64 patches are area-resized: the same as the default 2x2-averaged patches
    p64 = extract_patches(example_grey, keypoints, patch_size=64, supersample=1)
    np.testing.assert_allclose(desc.describe_patches(p64.numpy()), ref, atol=1e-4)
    # HPatches-style 65x65: resized too, close to the 32x32 description
    p65 = extract_patches(example_grey, keypoints, patch_size=65, supersample=1)
    d65 = desc.describe_patches(p65.numpy())
    _unit_rows(d65)
    assert (d65 * ref).sum(1).mean() > 0.9


def test_describe_patches_errors(desc):
    with pytest.raises(ValueError, match=r"patches must be \(N, H, W\) or \(N, 1, H, W\)"):
        desc.describe_patches(np.zeros((4, 3, 32, 32), np.float32))
    with pytest.raises(ValueError, match="NaN or inf"):
        desc.describe_patches(np.full((2, 32, 32), np.nan, np.float32))
    assert desc.describe_patches(np.zeros((0, 32, 32), np.float32)).shape == (0, 128)


def test_patches_cut_in_a_worker_thread_give_the_same_descriptors(hardnet, example_image, keypoints):
    """compute() cuts batch i + 1 while the net describes batch i; the result is the serial one, bit for bit."""
    overlapped, serial = (
        HardNetDescriptor(hardnet, device="cpu", precision="fp32", batch_size=64, overlap=overlap)  # 4 batches
        .compute(example_image, keypoints)[1] for overlap in (True, False)
    )
    np.testing.assert_array_equal(overlapped, serial)


def test_patches_are_cut_in_a_worker_thread_only_where_a_core_is_spare(monkeypatch, hardnet, example_image, keypoints):
    """By default the worker thread runs only when torch's threads leave a CPU free (else it competes with them)."""
    import hardnet_desc.core.describe as describe

    threads = []
    real = describe._prefetched

    def spy(fn, items, enabled=True):
        threads.append(enabled)
        return real(fn, items, enabled)

    monkeypatch.setattr(describe, "_prefetched", spy)
    desc = HardNetDescriptor(hardnet, device="cpu", precision="fp32", batch_size=64)
    for spare in (True, False):
        monkeypatch.setattr(describe, "spare_core", lambda spare=spare: spare)
        desc.compute(example_image, keypoints)
    assert threads == [True, False]


def test_default_precision_and_batch_size_are_chosen_and_shown(hardnet):
    from hardnet_desc.core.device import choose_precision, default_batch_size

    desc = HardNetDescriptor(hardnet, device="cpu")
    cpu = torch.device("cpu")
    assert desc.precision == choose_precision("auto", cpu) in ("bf16", "fp32")
    assert desc.batch_size == default_batch_size(cpu, desc.precision)
    assert f"precision='{desc.precision}'" in repr(desc) and f"batch_size={desc.batch_size}" in repr(desc)
    assert HardNetDescriptor(hardnet, device="cpu", batch_size=5).batch_size == 5


def test_auto_runs_the_bundled_weights_in_int8_on_x86_cpus(monkeypatch, hardnet, example_image, keypoints):
    """On every x86 kind with AVX2 or more, "auto" is int8 for weights with shipped calibration (the bundled ones)
    and bf16 or fp32 for others; the int8 default describes like the explicit int8 and close to fp32."""
    import hardnet_desc.core.device as device
    from hardnet_desc.core.quantize import int8_available

    if not int8_available():
        pytest.skip("this torch build has no quantized CPU kernels")
    monkeypatch.setattr(device, "cpu_features", lambda: frozenset({"avx2"}))  # AMD Zen 3: no native bf16
    auto = HardNetDescriptor(device="cpu")
    assert auto.precision == "int8" and auto.batch_size == device.BATCH_SIZES[("cpu", "int8")]
    assert HardNetDescriptor(hardnet, device="cpu").precision == "fp32"  # no calibration for these weights
    assert HardNetDescriptor(device="cpu", precision="fp32").precision == "fp32"
    kps, d_auto = auto.compute(example_image, keypoints)
    d_int8 = HardNetDescriptor(device="cpu", precision="int8").compute(example_image, keypoints)[1]
    d_fp32 = HardNetDescriptor(device="cpu", precision="fp32").compute(example_image, keypoints)[1]
    np.testing.assert_array_equal(d_auto, d_int8)
    assert (d_auto * d_fp32).sum(1).mean() > 0.999
    monkeypatch.setattr(device, "cpu_features", lambda: frozenset({"avx512_bf16", "avx512_vnni", "avx2"}))  # Zen 4
    assert HardNetDescriptor(device="cpu").precision == "int8"
    assert HardNetDescriptor(hardnet, device="cpu").precision == "bf16"
def test_opencv_signatures(desc, example_image, keypoints):
    """compute(img, kps, descriptors) and detectAndCompute(img, mask, descriptors, useProvidedKeypoints)."""
    ref = desc.compute(example_image, keypoints)[1]
    np.testing.assert_array_equal(desc.compute(example_image, keypoints, None)[1], ref)
    np.testing.assert_array_equal(desc.compute(example_image, keypoints, descriptors=np.empty((0, 128)))[1], ref)
    kps, d = desc.detectAndCompute(example_image, None, None, False)
    kps2, d2 = desc.detectAndCompute(example_image, mask=None, descriptors=None, useProvidedKeypoints=False)
    assert len(kps) == len(kps2) == len(d) > 100
    np.testing.assert_array_equal(d, d2)
    with pytest.raises(ValueError, match="useProvidedKeypoints=True: there are no provided keypoints"):
        desc.detectAndCompute(example_image, None, useProvidedKeypoints=True)


def test_batch_form_like_opencv(desc, example_pair, keypoints):
    """compute([img1, img2], [kps1, kps2]) -> ([kps1, kps2], [desc1, desc2]), as cv2's batch form."""
    kps1, kps2 = keypoints[:50], list(cv2.SIFT_create(30).detect(example_pair[1], None))
    kps_out, descs = desc.compute(list(example_pair), [kps1, kps2])
    assert isinstance(kps_out, list) and isinstance(descs, list) and len(kps_out) == len(descs) == 2
    for image, kps, got_kps, got in zip(example_pair, (kps1, kps2), kps_out, descs):
        ref_kps, ref = desc.compute(image, kps)
        assert [k.pt for k in got_kps] == [k.pt for k in ref_kps]
        np.testing.assert_array_equal(got, ref)
    ref_kps, ref_descs = cv2.SIFT_create().compute(list(example_pair), [kps1, kps2])  # the same shapes as cv2
    assert [len(k) for k in kps_out] == [len(k) for k in ref_kps]
    assert [d.shape[0] for d in descs] == [d.shape[0] for d in ref_descs]
    with pytest.raises(TypeError, match="list of 2 images needs a list of as many keypoint lists"):
        desc.compute(list(example_pair), kps1)


def test_undescribable_keypoints_are_removed(desc, example_image, keypoints):
    """Centre outside the image or size <= 0: removed, descriptors row-aligned, nothing else dropped."""
    h, w = example_image.shape[:2]
    bad = [cv2.KeyPoint(-5.0, 100.0, 10.0), cv2.KeyPoint(200.0, 200.0, 0.0), cv2.KeyPoint(w + 3.0, 10.0, 4.0),
           cv2.KeyPoint(100.0, h - 0.5, 8.0, 30.0), cv2.KeyPoint(50.0, 60.0, -3.0), cv2.KeyPoint(-0.5, -0.5, 5.0)]
    mixed = [keypoints[0], bad[0], keypoints[1], bad[1], bad[2], keypoints[2], bad[3], bad[4], bad[5]]
    kept = [keypoints[0], keypoints[1], keypoints[2], bad[3], bad[5]]  # the last two lie on the image area's edge
    kps, d = desc.compute(example_image, mixed)
    assert isinstance(kps, list) and [(k.pt, k.size) for k in kps] == [(k.pt, k.size) for k in kept]
    np.testing.assert_array_equal(d, desc.compute(example_image, kept)[1])
    kps_t, d_t = desc.compute(example_image, tuple(mixed))
    assert isinstance(kps_t, tuple) and len(kps_t) == 5
    arr = keypoints_to_array(mixed)
    kps_a, d_a = desc.compute(example_image, arr)
    np.testing.assert_array_equal(kps_a, keypoints_to_array(kept))
    np.testing.assert_allclose(d_a, d, atol=1e-6)
    kps_tt, d_tt = desc.compute(example_image, torch.from_numpy(arr))
    assert isinstance(kps_tt, torch.Tensor) and kps_tt.shape == (5, 4)
    # all undescribable: empty, like cv2
    kps_e, d_e = desc.compute(example_image, bad[:3])
    assert list(kps_e) == [] and d_e.shape == (0, 128)
    # NaN is an error, not a silent drop
    with pytest.raises(ValueError, match="NaN or inf"):
        desc.compute(example_image, [keypoints[0], cv2.KeyPoint(float("nan"), 5.0, 5.0)])


def test_patch_scale_is_used(hardnet, example_image, keypoints, example_grey, tmp_path):
    """patch_scale from the argument and from the weight file changes what is described."""
    from hardnet_desc.core.weights import save_weights

    kps = keypoints[:60]
    d6 = HardNetDescriptor(hardnet, device="cpu").compute(example_image, kps)[1]
    d3 = HardNetDescriptor(hardnet, device="cpu", patch_scale=3.0).compute(example_image, kps)[1]
    assert (d3 * d6).sum(1).mean() < 0.95  # a different patch is described
    ref3 = HardNetDescriptor(hardnet, device="cpu").describe_patches(extract_patches(example_grey, kps, patch_scale=3.0))
    np.testing.assert_allclose(d3, ref3.numpy() if isinstance(ref3, torch.Tensor) else ref3, atol=1e-5)
    path = save_weights(hardnet, tmp_path / "w.safetensors", {"patch_scale": 3.0})
    from_file = HardNetDescriptor(str(path), device="cpu")
    assert from_file.patch_scale == 3.0
    np.testing.assert_allclose(from_file.compute(example_image, kps)[1], d3, atol=1e-6)
    assert HardNetDescriptor(str(path), device="cpu", patch_scale=6.0).patch_scale == 6.0


def test_min_kp_size_is_used(hardnet, example_image, keypoints, example_grey, tmp_path):
    """min_kp_size from the weight file (or the argument) widens the patches of small keypoints only."""
    from hardnet_desc.core.weights import save_weights

    kps = keypoints[:300]
    sizes = np.array([k.size for k in kps])
    floor = float(np.sort(sizes)[len(sizes) // 2])  # a size a cv2.KeyPoint holds exactly (float32)
    path = save_weights(hardnet, tmp_path / "w.safetensors", {"patch_scale": 6.0, "min_kp_size": floor})
    clamped = HardNetDescriptor(str(path), device="cpu")
    assert clamped.min_kp_size == floor and f"min_kp_size={floor}" in repr(clamped)
    out_kps, d = clamped.compute(example_image, kps)
    assert [k.size for k in out_kps] == [k.size for k in kps]  # keypoints come back as given
    plain = HardNetDescriptor(hardnet, device="cpu").compute(example_image, kps)[1]
    small = sizes < floor
    np.testing.assert_allclose(d[~small], plain[~small], atol=1e-5)
    assert (d[small] * plain[small]).sum(1).mean() < 0.95  # a different patch is described
    raised = [cv2.KeyPoint(k.pt[0], k.pt[1], max(k.size, floor), k.angle) for k in kps]
    np.testing.assert_allclose(d, HardNetDescriptor(hardnet, device="cpu").compute(example_image, raised)[1], atol=1e-5)
    np.testing.assert_allclose(
        HardNetDescriptor(hardnet, device="cpu", min_kp_size=floor).compute(example_image, kps)[1], d, atol=1e-6)
    np.testing.assert_allclose(HardNetDescriptor(str(path), device="cpu", min_kp_size=0).compute(example_image, kps)[1],
                               plain, atol=1e-6)
    # cut_patches and frames follow the same rule
    ref = extract_patches(example_grey, kps, min_kp_size=floor)
    torch.testing.assert_close(clamped.cut_patches(example_image, kps), ref, atol=1e-6, rtol=0)


def test_describe_patches_resizes_by_area(desc, example_grey, keypoints):
    """65x65 (HPatches) patches are area-averaged to 32x32, not bilinearly sampled."""
    p65 = extract_patches(example_grey, keypoints[:80], patch_size=65, supersample=1)
    area = torch.nn.functional.adaptive_avg_pool2d(p65, 32)
    bilinear = torch.nn.functional.interpolate(p65, size=(32, 32), mode="bilinear")
    got = desc.describe_patches(p65.numpy())
    np.testing.assert_allclose(got, desc.describe_patches(area.numpy()), atol=1e-5)
    assert np.abs(got - desc.describe_patches(bilinear.numpy())).max() > 1e-3


def test_pickle_round_trip(hardnet, example_image, keypoints):
    """Pickling (multiprocessing pools) keeps weights and settings; the default SIFT is rebuilt."""
    import pickle

    desc = HardNetDescriptor(hardnet, device="cpu", batch_size=64, patch_scale=5.0, min_kp_size=4.0)
    copy = pickle.loads(pickle.dumps(desc))
    assert copy.min_kp_size == 4.0
    assert repr(copy) == repr(desc)
    np.testing.assert_array_equal(copy.compute(example_image, keypoints)[1], desc.compute(example_image, keypoints)[1])
    assert len(copy.detect(example_image)) == len(desc.detect(example_image))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"patch_scale": 0}, ValueError, "patch_scale must be a positive finite number, got 0"),
        ({"patch_scale": -2.0}, ValueError, "patch_scale must be a positive"),
        ({"patch_scale": float("nan")}, ValueError, "patch_scale must be a positive"),
        ({"patch_scale": "6"}, TypeError, "patch_scale must be a number"),
        ({"min_kp_size": -1.0}, ValueError, "min_kp_size must be a finite number >= 0"),
        ({"min_kp_size": "3.5"}, TypeError, "min_kp_size must be a number"),
        ({"batch_size": 2.5}, TypeError, "batch_size must be an integer or None, got float"),
        ({"batch_size": "256"}, TypeError, "batch_size must be an integer or None, got str"),
        ({"batch_size": True}, TypeError, "batch_size must be an integer"),
        ({"device": "gpu"}, ValueError, "unknown device 'gpu'"),
        ({"device": 0}, TypeError, "device must be a string"),
        ({"detector": "sift"}, TypeError, "detector must have a detect"),
    ],
)
def test_constructor_arguments_are_validated(hardnet, kwargs, error, match):
    with pytest.raises(error, match=match):
        HardNetDescriptor(hardnet, **kwargs)


@pytest.mark.parametrize(
    "mask, error, match",
    [
        (np.ones((10, 10), np.uint8), ValueError, r"mask has shape \(10, 10\), the image is \(520, 800\)"),
        (np.ones((800, 520), np.uint8), ValueError, "mask has shape"),
        (np.ones((520, 800, 3), np.uint8), ValueError, "mask has shape"),
        (np.ones((520, 800), np.float32), TypeError, "mask must be uint8 or bool"),
        ([[1]], TypeError, "mask must be None or a uint8"),
    ],
)
def test_bad_masks_are_refused(desc, example_image, mask, error, match):
    with pytest.raises(error, match=match):
        desc.detect(example_image, mask)


def test_bool_mask(hardnet, example_image):
    desc = HardNetDescriptor(hardnet, device="cpu", detector=cv2.SIFT_create(nfeatures=300))
    mask = np.zeros(example_image.shape[:2], bool)
    mask[:, :400] = True
    assert [k.pt for k in desc.detect(example_image, mask)] == [k.pt for k in desc.detect(example_image, mask.astype(np.uint8) * 255)]


@pytest.mark.parametrize(
    "kps, error, match",
    [
        (5, TypeError, "keypoints must be a sequence of cv2.KeyPoint"),
        ("abc", TypeError, "keypoints must be a sequence of cv2.KeyPoint"),
        (cv2.KeyPoint(5, 5, 5), TypeError, "got KeyPoint"),
        (np.ones((3, 4), complex), TypeError, "numeric"),
        (np.ones((3, 2, 3), complex), TypeError, "real numbers"),
    ],
)
def test_bad_keypoint_inputs_are_type_errors(desc, example_image, kps, error, match):
    with pytest.raises(error, match=match):
        desc.compute(example_image, kps)


def test_mixed_keypoints_none_and_generators(desc, example_image, keypoints):
    with pytest.raises(TypeError, match="got a sequence holding tuple"):
        desc.compute(example_image, [keypoints[0], (10.0, 10.0, 5.0, 0.0)])
    kps, d = desc.compute(example_image, None)  # cv2 takes None as no keypoints
    assert len(kps) == 0 and d.shape == (0, 128)
    kps, d = desc.compute(example_image, (k for k in keypoints[:5]))
    assert [k.pt for k in kps] == [k.pt for k in keypoints[:5]]
    np.testing.assert_array_equal(d, desc.compute(example_image, keypoints[:5])[1])


@pytest.mark.parametrize("peak", [1e30, 1e38, 3e38])
def test_huge_float_images(desc, example_image, keypoints, peak):
    """Finite float images with huge values give the same descriptors as the image in 0..1."""
    ref = desc.compute(example_image.astype(np.float32) / 255, keypoints)[1]
    for dtype in (np.float32, np.float64):
        image = (example_image.astype(np.float64) / 255 * peak).astype(dtype)
        d = desc.compute(image, keypoints)[1]
        assert np.isfinite(d).all()
        assert (d * ref).sum(1).min() > 0.99


def test_pickle_keeps_the_resolved_defaults(hardnet, example_image, keypoints):
    """precision="auto" and batch_size=None are pickled as what they resolved to, so the copy describes the same."""
    import pickle

    desc = HardNetDescriptor(hardnet, device="cpu")
    state = desc.__getstate__()
    assert (state["precision"], state["batch_size"]) == (desc.precision, desc.batch_size) and state["precision"] != "auto"
    copy = pickle.loads(pickle.dumps(desc))
    assert (copy.precision, copy.batch_size) == (desc.precision, desc.batch_size)
    np.testing.assert_array_equal(copy.compute(example_image, keypoints)[1], desc.compute(example_image, keypoints)[1])


def _network_batches(desc: HardNetDescriptor) -> list[int]:
    """Records the batch size of every network call of ``desc`` (a list that fills as it runs)."""
    sizes: list[int] = []
    desc.net.register_forward_pre_hook(lambda module, args: sizes.append(len(args[0])))
    return sizes


def test_many_images_share_network_calls(hardnet, example_pair, keypoints):
    """Packed, the patches of consecutive images fill whole batches, and the descriptors are the image-by-image ones."""
    desc = HardNetDescriptor(hardnet, device="cpu", precision="fp32", batch_size=64)
    kps2 = list(cv2.SIFT_create(130).detect(example_pair[1], None))[:130]
    images = [example_pair[0], example_pair[1], example_pair[0], example_pair[1], example_pair[0]]
    lists = [keypoints, kps2, [], kps2[:30], keypoints[:5]]  # 200 + 130 + 0 + 30 + 5 = 365
    sizes = _network_batches(desc)
    refs = [desc.compute(image, kps)[1] for image, kps in zip(images, lists)]
    assert sizes == [64, 64, 64, 8, 64, 64, 2, 30, 5]  # on the CPU each image has its own batches
    desc = HardNetDescriptor(hardnet, device="cpu", precision="fp32", batch_size=64, pack=True)  # what runs off the CPU
    sizes = _network_batches(desc)
    kept, descs = desc.compute(images, lists)
    assert sizes == [64] * 5 + [45]
    for got, ref in zip(descs, refs):
        np.testing.assert_array_equal(got, ref)
    assert [len(k) for k in kept] == [200, 130, 0, 30, 5]
    greys = [to_grey_tensor(image) for image in images]
    tensors = desc.describe_many(greys, [desc.frames(kps) if len(kps) else torch.zeros(0, 2, 3) for kps in lists])
    assert all(isinstance(t, torch.Tensor) and t.dtype == torch.float32 for t in tensors)
    for got, ref in zip(tensors, refs):
        np.testing.assert_array_equal(got.numpy(), ref)
    with pytest.raises(ValueError, match="2 images and 1 frame sets"):
        desc.describe_many(greys[:2], [desc.frames(keypoints)])
    with pytest.raises(ValueError, match="lie outside the 800x520 image"):
        desc.describe_many(greys[:1], [desc.frames(keypoints) + torch.tensor([0.0, 0.0, 1000.0])])


def test_batched_lafs_share_network_calls(hardnet, example_pair, keypoints):
    """kornia's (B, N, 2, 3) LAFs of a (B, C, H, W) batch: one describe_many, descriptors (B, N, 128) as kornia's."""
    desc = HardNetDescriptor(hardnet, device="cpu", precision="fp32", batch_size=128)
    image = example_pair[0]
    images = torch.stack([torch.from_numpy(im[:, :, ::-1].copy()).permute(2, 0, 1) for im in (image, image[::-1])])
    lafs = desc.frames(keypoints[:100])[None].repeat(2, 1, 1, 1)
    refs = [desc.compute(images[b], lafs[b])[1] for b in range(2)]
    desc = HardNetDescriptor(hardnet, device="cpu", precision="fp32", batch_size=128, pack=True)
    sizes = _network_batches(desc)
    _, got = desc.compute(images, lafs)
    assert sizes == [128, 72] and got.shape == (2, 100, 128) and isinstance(got, torch.Tensor)
    torch.testing.assert_close(got, torch.stack(refs), rtol=0, atol=0)
    # a list of such batches: the second's LAFs were read at the first's count ("index 2 is out of bounds")
    _, (first, second) = desc.compute([images[:1], images], [lafs[:1], lafs])
    torch.testing.assert_close(first[0], refs[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(second, torch.stack(refs), rtol=0, atol=1e-6)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def pair_keypoints(example_pair):
    return [list(cv2.SIFT_create(1000).detect(image, None))[:1000] for image in example_pair]


@cuda
@pytest.mark.cuda
def test_cuda_fp32_descriptors_equal_the_cpu(monkeypatch, example_pair, pair_keypoints):
    """Bundled weights, fp32 on the GPU (TF32 off) against the CPU's fp32, from numpy and from a CUDA tensor image."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    image, kps = example_pair[0], pair_keypoints[0]
    cpu = HardNetDescriptor(device="cpu", precision="fp32").compute(image, kps)[1]
    gpu = HardNetDescriptor(device="cuda", precision="fp32")
    got = gpu.compute(image, kps)[1]
    assert isinstance(got, np.ndarray) and got.shape == cpu.shape
    assert np.abs(got - cpu).max() < 1e-4
    tensor = torch.from_numpy(image[:, :, ::-1].copy()).permute(2, 0, 1).cuda()  # RGB uint8 on the GPU
    on_device = gpu.compute(tensor, kps)[1]
    assert isinstance(on_device, torch.Tensor) and on_device.device.type == "cuda"
    assert np.abs(on_device.cpu().numpy() - cpu).max() < 1e-4


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_cuda_half_precision_finds_the_same_nearest_neighbours(example_pair, pair_keypoints, precision):
    """fp16/bf16 on the GPU against the CPU's fp32 on the bundled pair: the same nearest neighbour for >= 99 %."""
    cpu = HardNetDescriptor(device="cpu", precision="fp32")
    gpu = HardNetDescriptor(device="cuda", precision=precision)
    ref = [cpu.compute(image, kps)[1] for image, kps in zip(example_pair, pair_keypoints)]
    got = gpu.compute(list(example_pair), pair_keypoints)[1]
    assert np.abs(got[0] - ref[0]).mean() < 2e-3  # CPU bf16 measured 4e-4

    def nearest(d1, d2):
        return np.argmin(((d1[:, None] - d2[None]) ** 2).sum(-1), axis=1)

    agreement = (nearest(got[0], got[1]) == nearest(ref[0], ref[1])).mean()
    assert agreement >= (0.99 if precision == "fp16" else 0.98), agreement  # CPU bf16 measured 0.994


@cuda
@pytest.mark.cuda
def test_cuda_describing_stays_on_the_device(example_pair, pair_keypoints):
    """A CUDA image: descriptors on the GPU, host syncs per image and not per batch; images packed into full batches."""
    tensors = [torch.from_numpy(im[:, :, ::-1].copy()).permute(2, 0, 1).cuda() for im in example_pair]
    syncs = {}
    for batch_size in (64, 1024):
        # overlap=False: every sync in this thread, where the warnings are caught
        desc = HardNetDescriptor(device="cuda", precision="fp16", batch_size=batch_size, overlap=False)
        desc.compute(tensors[0], pair_keypoints[0])  # warm-up: cuDNN, caches
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                _, out = desc.compute(tensors, pair_keypoints)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        syncs[batch_size] = sum("synchroniz" in str(w.message) for w in caught)
        assert all(isinstance(d, torch.Tensor) and d.device.type == "cuda" for d in out)
    # 32 batches or 2: the same few syncs, per image and not per batch (an H200 counted 11 for these 2 images:
    # uploads of host frames, the frame check, the level counts, the output)
    assert 1 <= syncs[64] == syncs[1024] <= 6 * len(tensors), syncs
    desc = HardNetDescriptor(device="cuda", precision="fp16", batch_size=300)
    sizes = _network_batches(desc)
    desc.compute(tensors, pair_keypoints)
    total = sum(len(kps) for kps in pair_keypoints)
    assert total > 1500 and sizes == [300] * (total // 300) + [total % 300]  # packed: every call full but the last


def test_one_compute_enters_each_step_once(hardnet, example_image, keypoints):
    """Following one compute call: the facade converts the image and the keypoints once (image, then
    patches), then the torch core (describe) cuts and describes; nothing is converted or checked twice."""
    desc = HardNetDescriptor(hardnet, device="cpu", precision="fp32", batch_size=64, overlap=False)  # 4 batches
    calls: list[tuple[str, str]] = []

    def profile(frame, event, arg):
        module = frame.f_globals.get("__name__", "")
        if event == "call" and module.startswith("hardnet_desc."):
            calls.append((module.removeprefix("hardnet_desc."), frame.f_code.co_name))

    sys.setprofile(profile)
    try:
        _, got = desc.compute(example_image, keypoints)
    finally:
        sys.setprofile(None)
    assert got.shape == (len(keypoints), 128)
    count = Counter(name for _, name in calls)
    for name in ("to_grey_tensor", "describable_frames", "keypoints_to_array", "_frames_of", "inside_image",
                 "describe", "frame_batches", "pyramid_levels", "build_pyramid"):
        assert count[name] == 1, (name, count[name])
    for name in ("keypoints_to_frames", "check_inside", "check_frames", "describe_many", "sample_frames"):
        assert count[name] == 0, (name, count[name])
    assert count["cut_frame_batch"] == 4
    core = next(i for i, (module, name) in enumerate(calls) if name == "describe")
    facade = [module for module, _ in calls[:core] if module != "descriptor"]
    assert [m for k, m in enumerate(facade) if k == 0 or facade[k - 1] != m] == ["core.image", "core.patches"]
    assert calls[-1] == ("descriptor", "_output")  # then back in the facade only for the result
    assert {module for module, _ in calls[core:-1]} <= {"core.describe", "core.patches", "core.device", "core.model"}


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_a_torch_image_is_not_copied_off_its_device(monkeypatch, desc, example_image, keypoints, dtype):
    """compute of a CPU torch image reads it in place (every .cpu()/.numpy() of the image is a view of
    its memory; no .tolist() or __array__ copy of it) and describes it as the same image in numpy, bit
    for bit. (A CUDA image: test_cuda_describing_stays_on_the_device.)"""
    bgr = example_image if dtype == "uint8" else example_image.astype(np.float32) / 255
    rgb = torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1])).permute(2, 0, 1)
    copies: list[str] = []

    def spy(method, shares):
        real = getattr(torch.Tensor, method)

        def wrapped(self, *args, **kwargs):
            out = real(self, *args, **kwargs)
            if self.data_ptr() == rgb.data_ptr() and not shares(self, out):
                copies.append(method)
            return out

        monkeypatch.setattr(torch.Tensor, method, wrapped)

    spy("cpu", lambda t, out: out.data_ptr() == t.data_ptr())
    spy("numpy", lambda t, out: out.__array_interface__["data"][0] == t.data_ptr())
    spy("__array__", lambda t, out: False)
    spy("tolist", lambda t, out: False)
    _, got = desc.compute(rgb, keypoints)
    monkeypatch.undo()
    assert copies == []
    assert isinstance(got, torch.Tensor) and got.device == rgb.device
    np.testing.assert_array_equal(got.numpy(), desc.compute(bgr, keypoints)[1])


def test_describe_frames_checks_its_image_and_frames_as_compute_does(hardnet, example_image, example_grey,
                                                                     example_keypoints):
    """describe_frames took a NaN image (NaN or, in int8, finite garbage descriptors), described a 1e-30 image
    unlike the same image at 0..1, and met cv2 keypoints, (N, 4) arrays or numpy images deep in torch."""
    d = HardNetDescriptor(hardnet, device="cpu", precision="fp32")
    frames = d.frames(example_keypoints[:50])
    want = d.describe_frames(example_grey, frames)
    _, computed = d.compute(example_image, example_keypoints[:50])
    np.testing.assert_allclose(want.numpy(), computed, atol=1e-5)
    np.testing.assert_allclose(d.describe_frames(example_grey * 1e-30, frames).numpy(), want.numpy(), atol=1e-5)
    nan = example_grey.clone()
    nan[0, 0, 5, 5] = float("nan")
    with pytest.raises(ValueError, match=r"the image contains NaN or inf \(1 pixels\)"):
        d.describe_frames(nan, frames)
    for grey, got in ((example_grey[0, 0].numpy(), "ndarray"), ((example_grey * 255).to(torch.uint8), "torch.uint8")):
        with pytest.raises(TypeError, match=rf"grey images must be float tensors \(1, 1, H, W\).* got {got}"):
            d.describe_frames(grey, frames)
    with pytest.raises(TypeError, match="got cv2.KeyPoint objects: use frames"):
        d.describe_frames(example_grey, example_keypoints[:50])
    with pytest.raises(ValueError, match=r"affine frames must be \(N, 2, 3\), got shape \(50, 4\)"):
        d.describe_frames(example_grey, np.zeros((50, 4), np.float32))


def test_big_endian_frames_and_patches_describe_as_native_ones(hardnet, example_image, example_keypoints):
    """numpy data in big-endian order stopped in torch ("byte order different from the native"); float64 frames
    beyond float32 were said to hold NaN or inf, and object arrays met a torch dtype error."""
    d = HardNetDescriptor(hardnet, device="cpu", precision="fp32")
    frames = d.frames(example_keypoints[:40]).numpy()
    want = d.compute(example_image, frames)[1]
    np.testing.assert_array_equal(d.compute(example_image, frames.astype(">f4"))[1], want)
    patches = np.random.default_rng(0).random((5, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(d.describe_patches(patches.astype(">f4")), d.describe_patches(patches))
    with pytest.raises(ValueError, match="affine frames hold values up to .*e\\+41, beyond float32's range"):
        d.compute(example_image, frames.astype(np.float64) * 1e39)
    with pytest.raises(TypeError, match="affine frames must hold real numbers, got dtype object"):
        d.compute(example_image, frames.astype(object))
