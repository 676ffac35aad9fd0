"""Patch augmentations: each changes patches the intended way and keeps dtype, range and shape."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from hardnet_desc.train.augment import (
    KP_ANGLE_DEG,
    KP_LOG_SCALE,
    KP_SHIFT,
    AugmentConfig,
    adjust_exposure,
    augment_patches,
    gaussian_blur,
    jpeg_compress,
    kp_jitter,
    sensor_noise,
    warp_patches,
)

from conftest import EXAMPLE_FILES


@pytest.fixture(scope="module")
def photo_patches() -> np.ndarray:
    """(384, 32, 32) uint8 tiles of a bundled photo (a 16x24 grid of its central part)."""
    img = cv2.imread(str(EXAMPLE_FILES[0]), cv2.IMREAD_GRAYSCALE)
    h, w = img.shape
    y0, x0 = (h - 512) // 2, (w - 768) // 2
    tiles = img[y0 : y0 + 512, x0 : x0 + 768].reshape(16, 32, 24, 32).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(tiles.reshape(384, 32, 32))


def grey(n: int, level: float) -> np.ndarray:
    return np.full((n, 32, 32), level, np.float32)


def check_kept(y: np.ndarray, x: np.ndarray) -> None:
    assert y.dtype == x.dtype and y.shape == x.shape
    if y.dtype == np.float32:
        assert 0.0 <= y.min() and y.max() <= 1.0


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_every_function_keeps_dtype_shape_range(photo_patches, dtype):
    x = photo_patches[:50] if dtype == np.uint8 else photo_patches[:50].astype(np.float32) / 255
    rng = np.random.default_rng(0)
    check_kept(adjust_exposure(x, 2.0, 0.5, 0.1), x)
    check_kept(gaussian_blur(x, 1.0), x)
    check_kept(sensor_noise(x, 0.1, 0.1, rng), x)
    check_kept(jpeg_compress(x, 10), x)
    cfg = AugmentConfig.parse("noise,blur,jpeg,photometric", strength=2.0)
    y = augment_patches(x, rng, cfg)
    check_kept(y, x)
    if dtype == np.float32:  # quantised to the 8-bit levels that inference patches have
        np.testing.assert_allclose(y * 255, np.round(y * 255), atol=1e-4)


def test_read_noise_adds_its_variance(photo_patches):
    rng = np.random.default_rng(1)
    flat = grey(200, 0.5)
    for sigma in (0.02, 0.05, 0.1):
        y = sensor_noise(flat, sigma, 0.0, rng)
        assert abs(y.var() - sigma**2) < 0.05 * sigma**2, (sigma, y.var())
        assert abs(y.mean() - 0.5) < 0.01
    # on real patches: the residual has the requested variance (pixels away from 0 and 255, so unclipped)
    x = photo_patches.astype(np.float32) / 255
    y = sensor_noise(x, 0.05, 0.0, rng)
    inner = (x > 0.2) & (x < 0.8)
    assert abs((y - x)[inner].var() / 0.05**2 - 1) < 0.05
    assert np.array_equal(sensor_noise(x, 0.0, 0.0, rng), x)


def test_shot_noise_variance_grows_with_intensity():
    rng = np.random.default_rng(2)
    s = 0.1  # 100 photons at white
    var = {level: sensor_noise(grey(200, level), 0.0, s, rng).var() for level in (0.1, 0.2, 0.4, 0.8)}
    for level, v in var.items():
        assert abs(v / (level * s**2) - 1) < 0.05, (level, v)
    assert var[0.8] > 7 * var[0.1]


def test_blur_smooths_and_keeps_the_mean(photo_patches):
    x = photo_patches.astype(np.float32) / 255

    def sharpness(p: np.ndarray) -> float:
        return float(np.mean([cv2.Laplacian(q, cv2.CV_32F).var() for q in p]))

    soft, softer = gaussian_blur(x, 0.7), gaussian_blur(x, 1.5)
    assert sharpness(softer) < 0.5 * sharpness(soft) < 0.5 * sharpness(x)
    np.testing.assert_allclose(softer.mean((1, 2)), x.mean((1, 2)), atol=0.01)
    assert np.array_equal(gaussian_blur(x, 0.0), x)
    per_patch = gaussian_blur(x[:2], np.array([0.0, 1.5]))
    assert np.array_equal(per_patch[0], x[0]) and np.allclose(per_patch[1], softer[1], atol=1e-6)


def test_jpeg_artefacts(photo_patches):
    x = photo_patches
    low, high = jpeg_compress(x, 10), jpeg_compress(x, 95)
    err_low = np.abs(low.astype(int) - x).mean()
    err_high = np.abs(high.astype(int) - x).mean()
    assert err_low > 3 * err_high and err_low > 2.0, (err_low, err_high)
    # coded as one tall image per quality: the same bytes as coding each patch alone
    q = np.random.default_rng(3).integers(5, 96, len(x))
    alone = np.stack([cv2.imdecode(cv2.imencode(".jpg", p, [cv2.IMWRITE_JPEG_QUALITY, int(k)])[1], 0)
                      for p, k in zip(x, q)])
    assert np.array_equal(jpeg_compress(x, q), alone)
    with pytest.raises(ValueError, match="quality"):
        jpeg_compress(x, 0)


def test_exposure(photo_patches):
    x = photo_patches.astype(np.float32) / 255
    assert np.array_equal(adjust_exposure(x, 1.0, 1.0, 0.0), x)
    assert adjust_exposure(x, 1.0, 0.5, 0.0).mean() > x.mean() + 0.05  # gamma < 1 brightens
    over = adjust_exposure(x, 3.0, 1.0, 0.0)
    assert (over == 1.0).mean() > 0.3 and over.max() == 1.0  # over-exposure saturates
    np.testing.assert_allclose(adjust_exposure(x, 0.5, 1.0, 0.1), 0.5 * x + 0.1, atol=1e-6)
    with pytest.raises(ValueError, match="gamma"):
        adjust_exposure(x, 1.0, 0.0, 0.0)


def test_warp_patches_identity_and_shift(photo_patches):
    x = torch.from_numpy(photo_patches[:20]).float().unsqueeze(1) / 255
    n = len(x)
    same = warp_patches(x, torch.zeros(n), torch.ones(n), torch.zeros(n, 2))
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)
    # a shift of (1, 2) px samples the input 1 px right and 2 px down
    moved = warp_patches(x, torch.zeros(n), torch.ones(n), torch.tensor([[1.0, 2.0]]).expand(n, 2))
    torch.testing.assert_close(moved[:, :, 4:-4, 4:-4], x[:, :, 6:-2, 5:-3], atol=1e-5, rtol=0)


def test_kp_jitter_scales_with_strength_and_zero_is_identity(photo_patches):
    rng = np.random.default_rng(4)
    angle, zoom, shift = kp_jitter(rng, 20_000, 1.0, 32, 6.0)
    assert abs(np.rad2deg(angle).std() / KP_ANGLE_DEG - 1) < 0.03
    assert abs(np.log(zoom).std() / KP_LOG_SCALE - 1) < 0.03
    assert abs(shift.std() / (KP_SHIFT * 32 / 6.0) - 1) < 0.03
    angle, zoom, shift = kp_jitter(rng, 20, 0.0, 32, 6.0)
    x = torch.from_numpy(photo_patches[:20]).float().unsqueeze(1) / 255
    out = warp_patches(x, torch.from_numpy(angle).float(), torch.from_numpy(zoom).float(),
                       torch.from_numpy(shift).float())
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_augment_patches_hits_about_half_and_is_seeded(photo_patches):
    x = photo_patches
    for name in ("noise", "blur", "jpeg", "photometric"):
        y = augment_patches(x, np.random.default_rng(5), AugmentConfig.parse(name))
        changed = np.mean([not np.array_equal(a, b) for a, b in zip(x, y)])
        assert 0.3 < changed < 0.65, (name, changed)  # half are hit; the faintest blurs round back to the input
        again = augment_patches(x, np.random.default_rng(5), AugmentConfig.parse(name))
        assert np.array_equal(y, again)
    assert np.array_equal(augment_patches(x, np.random.default_rng(5), AugmentConfig()), x)
    # stronger noise changes patches more
    mild = augment_patches(x, np.random.default_rng(6), AugmentConfig(noise=0.5)).astype(int) - x
    strong = augment_patches(x, np.random.default_rng(6), AugmentConfig(noise=2.0)).astype(int) - x
    assert strong.std() > 2.5 * mild.std()


def test_augment_config_parse():
    cfg = AugmentConfig.parse("noise, jpeg=2,kpjitter", strength=0.5)
    assert cfg.strengths() == {"noise": 0.5, "blur": 0.0, "jpeg": 2.0, "photometric": 0.0, "kpjitter": 0.5}
    assert cfg.photometric_chain and not AugmentConfig(kpjitter=1.0).photometric_chain
    assert AugmentConfig.parse(None) == AugmentConfig() == AugmentConfig.parse("")
    with pytest.raises(ValueError, match="unknown augmentation 'sharpen'"):
        AugmentConfig.parse("noise,sharpen")
    with pytest.raises(ValueError, match="number"):
        AugmentConfig.parse("noise=strong")
    for bad in ("blur=-1", "blur=1e6", "photometric=nan", "kpjitter=inf"):  # blur=1e6 never finished a batch,
        with pytest.raises(ValueError, match=r"strengths must be numbers in \[0, 10\], got"):  # photometric=1e6
            AugmentConfig.parse(bad)  # stopped in adjust_exposure ("gain must be finite")
    strongest = AugmentConfig.parse("noise,blur,jpeg,photometric,kpjitter", strength=10)
    x = (np.random.default_rng(0).random((4, 64, 64)) * 255).astype(np.uint8)
    assert augment_patches(x, np.random.default_rng(1), strongest).shape == x.shape
    # the geometric switches travel in the same object, checked when it is made
    geo = AugmentConfig.parse("noise", flip_rot90=True, rot_deg=10, scale=0.1)
    assert (geo.noise, geo.flip_rot90, geo.rot_deg, geo.scale) == (1.0, True, 10.0, 0.1) and geo.frame_jitter
    assert not AugmentConfig(noise=1.0).frame_jitter and AugmentConfig(kpjitter=0.5).frame_jitter
    with pytest.raises(ValueError, match=r"rot_deg must be >= 0 \(--rot-deg\)"):
        AugmentConfig(rot_deg=-1.0)
    with pytest.raises(ValueError, match=r"scale must be in \[0, 1\) \(--scale-jitter\)"):
        AugmentConfig.parse(None, scale=1.0)
    with pytest.raises(ValueError, match="rot_deg"):
        AugmentConfig(rot_deg=float("nan"))
    with pytest.raises(ValueError, match="unknown augmentation 'rot_deg'"):  # not a per-patch strength
        AugmentConfig.parse("rot_deg=3")
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        gaussian_blur(np.zeros((32, 32), np.uint8), 1.0)
    with pytest.raises(TypeError, match="uint8 or float32"):
        gaussian_blur(np.zeros((1, 32, 32), np.float64), 1.0)
