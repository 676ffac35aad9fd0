"""HardNetDescriptor as an OpenCV Feature2D drop-in, on the bundled photos (untrained weights)."""

import cv2
import numpy as np
import pytest
import torch

from hardnet_desc.descriptor import HardNetDescriptor
from hardnet_desc.patches import extract_patches, keypoints_to_array


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
    with pytest.raises(ValueError, match="int8' runs on the CPU only"):
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
    desc = HardNetDescriptor(hardnet, device="cpu", precision="fp32", batch_size=64)  # 4 batches
    overlapped = desc.compute(example_image, keypoints)[1]
    desc._overlap = False
    serial = desc.compute(example_image, keypoints)[1]
    np.testing.assert_array_equal(overlapped, serial)


def test_default_precision_and_batch_size_are_chosen_and_shown(hardnet):
    from hardnet_desc.device import choose_precision, default_batch_size

    desc = HardNetDescriptor(hardnet, device="cpu")
    cpu = torch.device("cpu")
    assert desc.precision == choose_precision("auto", cpu) in ("bf16", "fp32")
    assert desc.batch_size == default_batch_size(cpu, desc.precision)
    assert f"precision='{desc.precision}'" in repr(desc) and f"batch_size={desc.batch_size}" in repr(desc)
    assert HardNetDescriptor(hardnet, device="cpu", batch_size=5).batch_size == 5
