"""Patch augmentations: what real photos have and synthetic pairs lack.

Pure functions on patch batches ``(B, H, W)``, each applied with its own
parameter per patch, plus ``augment_patches``, which draws those
parameters from a seeded RNG and chains them in the order a camera does:
exposure/contrast, optical blur, sensor noise, 8-bit quantisation, JPEG.
``warp_patches`` resamples patches under a small change of their frame
(rotation, zoom, shift): the trainer's rotation/zoom jitter and the keypoint
localisation noise of a detector such as SIFT.

Conventions: float patches hold intensities in [0, 1] (float32); uint8
patches hold 0..255. Every photometric function accepts either and returns
the dtype it was given (uint8 results are rounded and clipped). Per-patch
parameters are arrays of shape ``(B,)``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..core.patches import check_flag

APPLY_PROB = 0.5  # each photometric augmentation hits a patch with this probability
# Ranges at strength 1 (they scale linearly with the strength):
NOISE_SIGMA = 0.06  # Gaussian (read) noise std and shot-noise std at white, intensity units; 0.06 ~ 15/255
BLUR_SIGMA = 1.0  # Gaussian blur std, patch pixels
JPEG_MAX_QUALITY, JPEG_QUALITY_DROP, JPEG_MIN_QUALITY = 95, 60, 5  # quality in [95 - 60 * strength, 95], >= 5
LOG2_GAIN, LOG2_GAMMA, OFFSET = 0.5, 0.4, 0.05  # exposure gain 2^+-0.5, gamma 2^+-0.4, offset +-0.05
# Keypoint localisation noise of SIFT (stds per patch): position ~0.3 px of the keypoint's octave, which
# is ~0.06 kp.size; scale ~6 %; orientation ~3 degrees.
KP_SHIFT, KP_LOG_SCALE, KP_ANGLE_DEG = 0.06, 0.06, 3.0
#: The largest strength: at 10 a patch is blurred by up to 10 px, its exposure changed by up to 32x, its
#: keypoint moved by 0.6 kp.size; beyond, patches hold no signal (and a huge blur kernel never finishes).
MAX_STRENGTH = 10.0


@dataclass(frozen=True)
class AugmentConfig:
    """Every augmentation of training patches, as one object (``TrainConfig.augment``, ``PairDataset``).

    Per-patch strengths (``--aug``): 0 switches one off, 1 is the default range (see the module constants):

    Attributes:
        noise: Gaussian read noise and Poisson shot noise.
        blur: Gaussian blur.
        jpeg: JPEG compression artefacts.
        photometric: exposure gain, gamma and offset (clipped, so over-exposure saturates).
        kpjitter: keypoint position, scale and angle noise (a resampled patch frame).
        flip_rot90: the "+" of HardNet+ (``--augment``): a random flip and rot90 per pair, the same for
            anchor and positive.
        rot_deg: random rotation of each patch in [-rot_deg, rot_deg] degrees (``--rot-deg``; 0 = off).
        scale: random zoom of each patch in [1 - scale, 1 + scale] (``--scale-jitter``; 0 = off).

    Raises:
        TypeError: a strength, ``rot_deg`` or ``scale`` that is not a number, a ``flip_rot90`` not a bool.
        ValueError: a strength outside [0, ``MAX_STRENGTH``], a ``rot_deg`` that is not a finite number
            >= 0, or ``scale`` outside [0, 1).
    """

    noise: float = 0.0
    blur: float = 0.0
    jpeg: float = 0.0
    photometric: float = 0.0
    kpjitter: float = 0.0
    flip_rot90: bool = False
    rot_deg: float = 0.0
    scale: float = 0.0

    #: The per-patch augmentations ``--aug`` names, in camera order.
    STRENGTHS = ("noise", "blur", "jpeg", "photometric", "kpjitter")

    def __post_init__(self) -> None:
        for name in (*self.STRENGTHS, "rot_deg", "scale"):  # stored as float: a checkpoint holds only plain types
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
            object.__setattr__(self, name, float(value))
        check_flag(self.flip_rot90, "flip_rot90", " (--augment)")
        object.__setattr__(self, "flip_rot90", bool(self.flip_rot90))
        bad = [f"{k}={v}" for k, v in self.strengths().items() if not 0 <= v <= MAX_STRENGTH]  # also NaN
        if bad:
            raise ValueError(f"augmentation strengths must be numbers in [0, {MAX_STRENGTH:g}], got {', '.join(bad)}")
        if not (math.isfinite(self.rot_deg) and self.rot_deg >= 0):
            raise ValueError(f"rot_deg must be >= 0 (--rot-deg), got {self.rot_deg!r}")
        if not 0 <= self.scale < 1:
            raise ValueError(f"scale must be in [0, 1) (--scale-jitter), got {self.scale!r}")

    @classmethod
    def parse(cls, spec: str | Sequence[str] | None, strength: float = 1.0, *, flip_rot90: bool = False,
              rot_deg: float = 0.0, scale: float = 0.0) -> AugmentConfig:
        """From ``'noise,blur,jpeg=2'``: listed names get ``strength``, ``name=S`` sets its own; the
        geometric switches as given (the CLI's ``--aug``, ``--aug-strength``, ``--augment``, ``--rot-deg``,
        ``--scale-jitter``)."""
        items = spec.split(",") if isinstance(spec, str) else list(spec or [])
        values: dict[str, float] = {}
        for item in (s.strip() for s in items):
            if not item:
                continue
            name, _, value = item.partition("=")
            if name not in cls.STRENGTHS:
                raise ValueError(f"unknown augmentation {name!r}; choose from {', '.join(cls.STRENGTHS)}")
            try:
                values[name] = float(value) if value else float(strength)
            except ValueError:
                raise ValueError(f"augmentation strength must be a number, got {item!r}") from None
        return cls(**values, flip_rot90=bool(flip_rot90), rot_deg=float(rot_deg), scale=float(scale))

    def strengths(self) -> dict[str, float]:
        """The per-patch strengths by name (what ``--aug`` sets)."""
        return {name: getattr(self, name) for name in self.STRENGTHS}

    @property
    def photometric_chain(self) -> bool:
        """True if any augmentation other than the geometric ``kpjitter`` is on."""
        return any((self.noise, self.blur, self.jpeg, self.photometric))

    @property
    def frame_jitter(self) -> bool:
        """True if patches are resampled in a changed frame (``rot_deg``, ``scale`` or ``kpjitter``)."""
        return self.rot_deg > 0 or self.scale > 0 or self.kpjitter > 0


# --------------------------------------------------------------------------- #
# pure functions


def _to_float(x: np.ndarray) -> np.ndarray:
    if x.ndim != 3:
        raise ValueError(f"patches must be (B, H, W), got shape {x.shape}")
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    if x.dtype != np.float32:
        raise TypeError(f"patches must be uint8 or float32, got {x.dtype}")
    return x


def _like(y: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float ``y``, clipped to [0, 1] in place, as ``dtype`` (uint8: rounded to 0..255)."""
    y = np.clip(y, 0.0, 1.0, out=y)
    return (y * 255.0 + 0.5).astype(np.uint8) if dtype == np.uint8 else y


def _per_patch(v, n: int, name: str) -> np.ndarray:
    v = np.broadcast_to(np.asarray(v, np.float32), (n,))
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} must be finite")
    return v


def adjust_exposure(x: np.ndarray, gain, gamma, offset) -> np.ndarray:
    """Exposure and contrast change ``clip(gain * x ** gamma + offset, 0, 1)``.

    Args:
        x: (B, H, W) uint8 or float32 patches.
        gain, gamma, offset: scalars or (B,) arrays; gamma > 0.

    Returns:
        (B, H, W) patches of the input dtype.
    """
    f, n = _to_float(x), len(x)
    gain, gamma, offset = (_per_patch(v, n, k)[:, None, None] for v, k in
                           ((gain, "gain"), (gamma, "gamma"), (offset, "offset")))
    if np.any(gamma <= 0):
        raise ValueError("gamma must be > 0")
    return _like(gain * np.power(f, gamma) + offset, x.dtype)


def gaussian_blur(x: np.ndarray, sigma) -> np.ndarray:
    """Gaussian blur with its own std per patch (cv2, reflected borders).

    Args:
        x: (B, H, W) uint8 or float32 patches.
        sigma: scalar or (B,) std in pixels, >= 0 (0 leaves the patch unchanged).

    Returns:
        (B, H, W) patches of the input dtype.
    """
    f, n = _to_float(x), len(x)
    sigma = _per_patch(sigma, n, "sigma")
    if np.any(sigma < 0):
        raise ValueError("sigma must be >= 0")
    out = f.copy()
    for i in np.flatnonzero(sigma > 0):
        out[i] = cv2.GaussianBlur(f[i], (0, 0), float(sigma[i]), borderType=cv2.BORDER_REFLECT_101)
    return _like(out, x.dtype)


def sensor_noise(x: np.ndarray, read_sigma, shot_sigma, rng: np.random.Generator) -> np.ndarray:
    """Camera sensor noise, Poisson-Gaussian model: ``y = x + sqrt(read_sigma**2 + shot_sigma**2 * x) * z``.

    ``read_sigma`` is signal-independent (Gaussian read/thermal) noise; ``shot_sigma`` is the Poisson
    photon noise of ``N = 1 / shot_sigma**2`` photons at white, whose variance grows linearly with the
    intensity (``shot_sigma**2 * x``), in its Gaussian approximation (exact in mean and variance; close in
    shape from ~10 photons on). ``z`` is standard normal; the result is clipped to [0, 1].

    Args:
        x: (B, H, W) uint8 or float32 patches.
        read_sigma: scalar or (B,) std of the read noise, intensity units ([0, 1] scale), >= 0.
        shot_sigma: scalar or (B,) std of the shot noise at intensity 1, >= 0.
        rng: the noise source.

    Returns:
        (B, H, W) patches of the input dtype.
    """
    f, n = _to_float(x), len(x)
    read, shot = _per_patch(read_sigma, n, "read_sigma"), _per_patch(shot_sigma, n, "shot_sigma")
    if np.any(read < 0) or np.any(shot < 0):
        raise ValueError("noise stds must be >= 0")
    var = read[:, None, None] ** 2 + shot[:, None, None] ** 2 * f
    return _like(f + np.sqrt(var) * rng.standard_normal(f.shape, dtype=np.float32), x.dtype)


def jpeg_compress(x: np.ndarray, quality) -> np.ndarray:
    """Encode and decode each patch as a JPEG (cv2) at its own quality; float patches are quantised first.

    Patches whose sides are multiples of 8 are coded as one tall image per quality: JPEG codes 8x8 blocks
    independently, so this equals coding each patch alone and is much faster.

    Args:
        x: (B, H, W) uint8 or float32 patches.
        quality: scalar or (B,) integer JPEG quality in [1, 100].

    Returns:
        (B, H, W) patches of the input dtype.
    """
    u8 = x if x.dtype == np.uint8 else _like(_to_float(x).copy(), np.uint8)
    if u8.ndim != 3:
        raise ValueError(f"patches must be (B, H, W), got shape {x.shape}")
    q = _per_patch(quality, len(x), "quality").astype(int)
    if np.any((q < 1) | (q > 100)):
        raise ValueError("quality must be in [1, 100]")
    h, w = u8.shape[1:]
    per_image = 65_500 // h if h % 8 == 0 and w % 8 == 0 else 1  # JPEG images are at most 65,535 rows
    out = np.empty_like(u8)
    for level in np.unique(q):
        idx = np.flatnonzero(q == level)
        for chunk in np.array_split(idx, math.ceil(len(idx) / per_image)):
            ok, buf = cv2.imencode(".jpg", u8[chunk].reshape(-1, w), [cv2.IMWRITE_JPEG_QUALITY, int(level)])
            if not ok:
                raise RuntimeError("cv2.imencode failed")
            out[chunk] = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE).reshape(-1, h, w)
    return out if x.dtype == np.uint8 else out.astype(np.float32) / 255.0


def warp_patches(x: torch.Tensor, angle: torch.Tensor, zoom: torch.Tensor, shift: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """Resample each patch in a changed frame: rotated, zoomed and shifted about its centre.

    Output pixel ``u`` (relative to the centre) samples the input at ``R(angle) u / zoom + shift``: the view
    of a keypoint whose detected angle, size and position were off by that much. Borders are reflected, so
    no black corners give the network an easy cue.

    Args:
        x: (B, 1, S, S) float patches.
        angle: (B,) radians.
        zoom: (B,) > 0; above 1 magnifies.
        shift: (B, 2) x, y offsets in patch pixels, or None.

    Returns:
        (B, 1, S, S) float, bilinear.
    """
    size = x.shape[-1]
    cos = (torch.cos(angle) / zoom)[:, None, None]
    sin = (torch.sin(angle) / zoom)[:, None, None]
    # Pixel centres in [-1, 1] (align_corners=False). Built elementwise: as
    # fast as it gets here, F.affine_grid's batched 3x2 matmul is ~3x slower.
    c = (torch.arange(size, dtype=torch.float32) + 0.5) * (2.0 / size) - 1.0
    gx, gy = c[None, None, :], c[None, :, None]
    grid = torch.stack([cos * gx - sin * gy, sin * gx + cos * gy], dim=-1)  # (B, S, S, 2)
    if shift is not None:
        grid = grid + (shift * (2.0 / size))[:, None, None, :]
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


# --------------------------------------------------------------------------- #
# random draws


def kp_jitter(rng: np.random.Generator, n: int, strength: float, patch_size: int, patch_scale: float
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SIFT-like keypoint localisation noise for ``n`` patches, as ``warp_patches`` arguments.

    Args:
        rng: the random source.
        n: patches.
        strength: multiplies the stds ``KP_SHIFT`` (of kp.size), ``KP_LOG_SCALE``, ``KP_ANGLE_DEG``.
        patch_size: patch side S in pixels.
        patch_scale: patch side in units of kp.size, to turn the position noise into patch pixels.

    Returns:
        angle (n,) radians, zoom (n,), shift (n, 2) patch pixels; float64.
    """
    angle = np.deg2rad(rng.normal(0.0, KP_ANGLE_DEG * strength, n))
    zoom = np.exp(rng.normal(0.0, KP_LOG_SCALE * strength, n))
    shift = rng.normal(0.0, KP_SHIFT * strength * patch_size / patch_scale, (n, 2))
    return angle, zoom, shift


def augment_patches(x: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Photometric augmentations of ``cfg`` with random per-patch parameters (geometry: ``warp_patches``).

    Each enabled augmentation hits each patch with probability ``APPLY_PROB``, at a level drawn uniformly up to
    its range times its strength, in camera order: exposure/contrast, blur, read and shot noise, JPEG. The
    result is quantised to 8-bit levels, as the patches cut at inference are.

    Args:
        x: (B, H, W) uint8 or float32 patches; anchors and positives alike (each gets its own draws).
        rng: the random source (the batch's, so a batch is rebuilt exactly).
        cfg: strengths.

    Returns:
        (B, H, W) patches of the input dtype, float values on the 1/255 grid.
    """
    f, n = _to_float(x).copy(), len(x)

    def pick() -> np.ndarray:
        return np.flatnonzero(rng.random(n) < APPLY_PROB)

    if cfg.photometric:
        i, s = pick(), cfg.photometric
        gain = 2.0 ** rng.uniform(-LOG2_GAIN * s, LOG2_GAIN * s, len(i))
        gamma = 2.0 ** rng.uniform(-LOG2_GAMMA * s, LOG2_GAMMA * s, len(i))
        f[i] = adjust_exposure(f[i], gain, gamma, rng.uniform(-OFFSET * s, OFFSET * s, len(i)))
    if cfg.blur:
        i = pick()
        f[i] = gaussian_blur(f[i], rng.uniform(0.0, BLUR_SIGMA * cfg.blur, len(i)))
    if cfg.noise:  # read and shot noise at independent levels
        i, s = pick(), NOISE_SIGMA * cfg.noise
        f[i] = sensor_noise(f[i], rng.uniform(0.0, s, len(i)), rng.uniform(0.0, s, len(i)), rng)
    u8 = _like(f, np.uint8)
    if cfg.jpeg:
        i = pick()
        low = max(JPEG_MIN_QUALITY, round(JPEG_MAX_QUALITY - JPEG_QUALITY_DROP * cfg.jpeg))
        u8[i] = jpeg_compress(u8[i], rng.integers(low, JPEG_MAX_QUALITY + 1, len(i)))
    return u8 if x.dtype == np.uint8 else u8.astype(np.float32) / 255.0
