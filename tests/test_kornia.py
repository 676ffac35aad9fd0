"""kornia users: batched LAFs and torch images in HardNetDescriptor, our weights in kornia's LAFDescriptor."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from conftest import make_hardnet

from hardnet_desc import HardNetDescriptor
from hardnet_desc.core.patches import PatchSpec
from hardnet_desc.integrations.kornia import keypoints_to_lafs, laf_descriptor
from hardnet_desc.core.weights import save_weights

KF = pytest.importorskip("kornia.feature")


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    return save_weights(make_hardnet(), tmp_path_factory.mktemp("w") / "net.safetensors", {"patch_scale": 5.0, "min_kp_size": 3.0})


@pytest.fixture(scope="module")
def desc():
    # The shipped weights: trained nets are smooth in their input, so the resampling differences
    # below stay small; an untrained net amplifies them (mean cosine 0.98 instead of 0.9995).
    return HardNetDescriptor("default", device="cpu", precision="fp32")  # kornia runs fp32


@pytest.fixture(scope="module")
def kps(example_image):
    return cv2.SIFT_create(nfeatures=300).detect(example_image, None)


def rgb_tensor(bgr: np.ndarray) -> torch.Tensor:
    """kornia's image layout: RGB float (1, 3, H, W) in 0..1."""
    return torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1])).permute(2, 0, 1)[None].float() / 255.0


def test_lafs_are_kornias_own_construction(kps):
    # kornia's laf_from_center_scale_ori: scale = half the patch side, orientation negated (see hardnet_desc.integrations.kornia)
    arr = np.array([(*k.pt, k.size, k.angle) for k in kps], np.float32)
    xy, size, angle = torch.from_numpy(arr[None, :, :2]), torch.from_numpy(arr[:, 2]), torch.from_numpy(arr[:, 3])
    theirs = KF.laf_from_center_scale_ori(xy, (6.0 * size / 2).view(1, -1, 1, 1), (-angle).view(1, -1, 1))
    ours = keypoints_to_lafs(kps, PatchSpec(scale=6.0))
    assert ours.shape == (1, len(kps), 2, 3)
    torch.testing.assert_close(ours, theirs, atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(KF.get_laf_scale(ours)[0, :, 0, 0], 3.0 * size, atol=1e-3, rtol=1e-5)
    floor = float(np.median(size.numpy()))
    clamped = KF.get_laf_scale(keypoints_to_lafs(kps, PatchSpec(scale=6.0, min_kp_size=floor)))[0, :, 0, 0]
    torch.testing.assert_close(clamped, 3.0 * size.clamp(min=floor), atol=1e-3, rtol=1e-5)


def test_keypoints_to_lafs_keeps_lafs(kps):
    """LAFs (1, N, 2, 3) came back as (1, 1, N, 2, 3)."""
    lafs = keypoints_to_lafs(kps)
    assert keypoints_to_lafs(lafs).shape == lafs.shape and torch.equal(keypoints_to_lafs(lafs), lafs)


def test_kornia_laf_descriptor_gives_our_descriptors(weights_file, desc, example_image, kps):
    from_file = laf_descriptor(weights_file)
    assert (from_file.patch_scale, from_file.min_kp_size) == (5.0, 3.0)  # read from the weight file
    module = laf_descriptor("default")
    assert module.patch_scale == desc.patch_scale == 6.0
    with torch.inference_mode():
        assert module.patch_spec == desc.patch_spec and module.patch_spec.to_metadata() == {"patch_scale": "6.0", "min_kp_size": "3.5"}
        lafs = keypoints_to_lafs(kps, module.patch_spec)  # the weights' own patch regions
        theirs = module(rgb_tensor(example_image), lafs)[0].numpy()
    ours = desc.compute(example_image, kps)[1]
    cosine = (theirs * ours).sum(1)
    # Same regions, different resampling: kornia reads each patch bilinearly at 32x32 from its own
    # pyramid level, we sample 64x64 and average 2x2 (and kornia converts RGB to grey in float,
    # OpenCV in uint8). Measured (shipped weights, 300 keypoints): mean cosine 0.9995, min 0.98
    # (large keypoints, where the two pyramids differ most), nearest neighbour always the same.
    assert cosine.mean() > 0.998 and cosine.min() > 0.95
    assert ((theirs @ ours.T).argmax(1) == np.arange(len(ours))).mean() >= 0.99
    assert np.abs(theirs - ours).max() > 1e-6  # kornia's own sampling really ran


def test_batched_lafs_and_torch_images(desc, example_pair, kps):
    # kornia's calling convention: (B, C, H, W) images and (B, N, 2, 3) LAFs -> (B, N, 128) tensors
    h, w = (min(s) for s in zip(*(im.shape[:2] for im in example_pair)))
    images = [im[:h, :w] for im in example_pair]
    kps = [k for k in kps if k.pt[0] < w - 1 and k.pt[1] < h - 1]
    lafs = torch.stack([keypoints_to_lafs(kps[:100], desc.patch_spec)[0]] * 2)  # (2, 100, 2, 3)
    batch = torch.cat([rgb_tensor(im) for im in images])
    _, out = desc.compute(batch, lafs)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 100, 128) and out.device == batch.device
    for b, image in enumerate(images):
        # one torch image with cv2 keypoints: a (N, 128) tensor, the same as its row of the batch
        single = desc.compute(rgb_tensor(image), kps[:100])[1]
        assert isinstance(single, torch.Tensor) and single.shape == (100, 128)
        torch.testing.assert_close(out[b], single, atol=1e-5, rtol=0)
    assert not torch.allclose(out[0], out[1], atol=1e-2)  # two photos, two results
    # a numpy image with (1, N, 2, 3) LAFs: numpy (1, N, 128), the same as with the keypoints
    as_numpy = desc.compute(images[0], lafs[:1].numpy())[1]
    assert isinstance(as_numpy, np.ndarray) and as_numpy.shape == (1, 100, 128)
    np.testing.assert_allclose(as_numpy[0], desc.compute(images[0], kps[:100])[1], atol=1e-5, rtol=0)


def test_batch_mismatch_gives_clear_errors(desc, example_image, kps):
    lafs = keypoints_to_lafs(kps[:10], desc.patch_spec)
    with pytest.raises(ValueError, match=r"1 keypoint set\(s\) for a batch of 2 image"):
        desc.compute(torch.zeros(2, 1, 64, 64), lafs)
    with pytest.raises(ValueError, match="2 keypoint sets for one image"):
        desc.compute(example_image, torch.cat([lafs, lafs]))


@pytest.mark.slow
def test_kornia_example_runs(capsys, monkeypatch):
    import runpy
    import sys
    from pathlib import Path

    monkeypatch.setattr(sys, "argv", ["kornia_lafs.py"])
    runpy.run_path(str(Path(__file__).resolve().parents[1] / "examples" / "kornia_lafs.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "HardNetDescriptor: (1, 501, 128) Tensor" in out
    assert float(out.split("cosine to ours: mean ")[1].split()[0]) > 0.998
    assert "kornia DoG frames: (1, 500, 128)" in out
