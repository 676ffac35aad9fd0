"""Image input: reading files and converting arrays to a grey float tensor."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Union

import cv2
import numpy as np
import torch

ImageLike = Union[np.ndarray, torch.Tensor]


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as OpenCV does (BGR uint8, or uint16 if stored so).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for one
    OpenCV cannot decode, or one of more pixels than it reads (``CV_IO_MAX_IMAGE_PIXELS``, 2^30).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such image file: {path}")
    try:
        image = imread_quiet(path, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_COLOR)
    except cv2.error as err:  # OpenCV refuses the header before decoding: an assertion, not None
        why = ("more pixels than OpenCV reads (2^30)" if "CV_IO_MAX_IMAGE_PIXELS" in str(err)
               else str(err).strip().splitlines()[-1])
        raise ValueError(f"cannot read image file {path}: {why}") from None
    if image is None:  # OpenCV's TIFF reader cannot turn a one-channel float image into colour: read it as stored
        stored = imread_quiet(path, cv2.IMREAD_UNCHANGED)
        channels = None if stored is None else (1 if stored.ndim == 2 else stored.shape[2])
        if channels not in (1, 3, 4):
            raise ValueError(f"cannot decode image file: {path}")
        if channels == 1:  # cvtColor takes no float64: repeat the channel instead
            image = np.repeat(stored.reshape(*stored.shape[:2], 1), 3, axis=2)
        else:
            image = stored[:, :, :3]  # BGR of BGR or BGRA, as IMREAD_COLOR gives
    return image


def imread_quiet(path: str | Path, flags: int) -> np.ndarray | None:
    """``cv2.imread`` without OpenCV's own log line for a file it cannot decode (the caller reports it).

    A name that is not valid UTF-8 (bytes Python keeps as surrogates) crashes OpenCV's ``imread``; such a file is
    read by Python and decoded with ``cv2.imdecode``.
    """
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        try:
            str(path).encode("utf-8")
        except UnicodeEncodeError:
            data = np.fromfile(path, np.uint8)
            return cv2.imdecode(data, flags) if data.size else None
        return cv2.imread(str(path), flags)
    finally:
        cv2.utils.logging.setLogLevel(level)


def to_grey_numpy(image: ImageLike) -> np.ndarray:
    """Grey ``(H, W)`` array in the input's dtype family, for OpenCV detectors.

    numpy input follows OpenCV: ``(H, W)``, ``(H, W, 1)``, BGR ``(H, W, 3)`` or
    BGRA ``(H, W, 4)``. torch input follows kornia: ``(H, W)``, ``(C, H, W)`` or
    ``(1, C, H, W)`` with C = 1 or RGB C = 3.
    """
    return _to_grey(image)[0]


def _to_grey(image: ImageLike) -> tuple[np.ndarray, bool]:
    """``to_grey_numpy``, and whether a float image was tamed (scaled by a power of two, ``_tame_float``)."""
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.dim() == 4:
            if t.shape[0] != 1:
                raise ValueError(f"one image at a time: got a batch of shape {tuple(t.shape)}")
            t = t[0]
        if t.dim() == 3:
            if t.shape[0] == 3:
                t = t[[2, 1, 0]]  # RGB -> BGR, then OpenCV's conversion below
            elif t.shape[0] != 1:
                raise ValueError(f"torch image must have 1 or 3 channels first, got shape {tuple(image.shape)}")
            t = t.permute(1, 2, 0)
        if t.dtype == torch.bfloat16:
            t = t.float()
        image = t.numpy()
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array or torch tensor, got {type(image).__name__}")
    image = native_order(image)
    tamed = False
    if image.dtype == np.float64 or image.dtype == np.float16:
        image, tamed = _tame_float(image)  # tamed before the cast: 1e300 would become inf
        image = image.astype(np.float32)
    if not tamed:
        image, tamed = _tame_float(image)
    if image.dtype not in (np.uint8, np.uint16, np.float32):
        raise TypeError(f"image dtype must be uint8, uint16 or float, got {image.dtype}")
    if image.ndim in (2, 3) and 0 in image.shape[:2]:
        raise ValueError(f"image is empty ({image.shape[0]}x{image.shape[1]})")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3 and image.shape[2] in (3, 4):
        code = cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
        image = cv2.cvtColor(np.ascontiguousarray(image), code)
    if image.ndim != 2:
        raise ValueError(f"image must be (H, W) grey or (H, W, 3) BGR, got shape {image.shape}")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise ValueError(f"image is too small: {image.shape}")
    if image.dtype == np.float32 and not np.isfinite(image).all():
        raise ValueError("image contains NaN or inf")
    return image, tamed


def split_batch(image: ImageLike, size: int) -> list[ImageLike]:
    """The ``size`` images of a kornia-style batch, for keypoints batched as ``(size, N, ...)``.

    A torch ``(B, C, H, W)`` image gives its ``B`` images (``B`` must be ``size``); any other
    image is one image, so ``size`` must be 1.
    """
    if isinstance(image, torch.Tensor) and image.dim() == 4:
        if image.shape[0] != size:
            raise ValueError(f"{size} keypoint set(s) for a batch of {image.shape[0]} image(s) {tuple(image.shape)}")
        return list(image)
    if size != 1:
        raise ValueError(f"{size} keypoint sets for one image: pass a (B, C, H, W) torch batch with B = {size}")
    return [image]


#: Float images whose largest magnitude lies outside this range are scaled by a power of two into [0.5, 1).
TAME_RANGE = (2.0**-8, 2.0**32)


def outside_tame_range(peak: float) -> bool:
    """Whether an image (or patch) of largest magnitude ``peak`` (finite) is to be tamed: ``peak`` is not 0 and lies
    outside ``TAME_RANGE``."""
    return peak != 0 and not TAME_RANGE[0] <= peak <= TAME_RANGE[1]


def native_order(array: np.ndarray) -> np.ndarray:
    """``array`` in this machine's byte order (big-endian data as the same values): torch takes no other."""
    return array if array.dtype.isnative else array.astype(array.dtype.newbyteorder("="))


def _tame_float(image: np.ndarray) -> tuple[np.ndarray, bool]:
    """Float images with huge or tiny values multiplied by a power of two (exact) into ``[0.5, 1)``; and whether
    this one was.

    Huge values would overflow sums and squares in float32; tiny ones (1e-30) would vanish next
    to the ``eps`` of the per-patch standardisation. Patches are standardised, so the descriptors
    are those of the same image at a normal range."""
    if image.dtype.kind != "f" or image.size == 0:
        return image, False
    peak = float(np.abs(image).max())
    if not np.isfinite(peak) or not outside_tame_range(peak):
        return image, False
    return np.ldexp(image, -math.frexp(peak)[1]).astype(image.dtype, copy=False), True


def tame_tensor(t: torch.Tensor, peak: torch.Tensor) -> torch.Tensor:
    """``_tame_float`` for torch: each item of ``t`` whose finite ``peak`` (its largest magnitude, broadcastable
    to ``t``, e.g. ``(N, 1, 1, 1)`` for ``N`` patches) lies outside ``TAME_RANGE`` multiplied by a power of two
    into ``[0.5, 1)``, exactly. The power is applied as two factors: ``2^126`` alone (a subnormal peak such as
    1e-39) does not fit in float32. ``t`` is returned as it is when no item needs it."""
    off = (peak > 0) & ((peak < TAME_RANGE[0]) | (peak > TAME_RANGE[1]))
    if not bool(off.any()):
        return t
    shift = torch.where(off, -torch.frexp(peak).exponent, 0).to(t.dtype)
    half = torch.div(shift, 2, rounding_mode="floor")
    return t * torch.exp2(half) * torch.exp2(shift - half)


def check_mask(mask: np.ndarray | torch.Tensor | None, shape: tuple[int, int]) -> np.ndarray | None:
    """A detection mask as OpenCV wants it: ``None`` or uint8 ``(H, W)`` of the image's size.

    Accepts uint8 or bool arrays and tensors; raises ``TypeError`` for other types or dtypes and
    ``ValueError`` for another shape (OpenCV would read outside such a mask).
    """
    if mask is None:
        return None
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"mask must be None or a uint8 (H, W) array, got {type(mask).__name__}")
    if mask.dtype not in (np.uint8, np.bool_):
        raise TypeError(f"mask must be uint8 or bool (non-zero: detect here), got dtype {mask.dtype}")
    if mask.shape != tuple(shape):
        raise ValueError(f"mask has shape {mask.shape}, the image is {tuple(shape)}")
    return np.ascontiguousarray(mask, dtype=np.uint8)


def to_grey_tensor(image: ImageLike, device: torch.device | str = "cpu") -> torch.Tensor:
    """Grey float32 tensor ``(1, 1, H, W)`` on ``device``.

    A torch image on a GPU (any device but the CPU) is converted there, with OpenCV's weights, and
    only the grey result moves (to ``device``): it is never copied to the host and back. numpy
    images and CPU tensors (read in place, as a numpy view) go through ``to_grey_numpy``
    (``cv2.cvtColor``), so a CPU tensor describes bit for bit as the same image in numpy. uint8 is scaled
    by 1/255 and uint16 by 1/65535; floats are kept as they are (the network standardises each
    patch, so the intensity range does not matter), except that float images whose largest
    magnitude lies outside ``TAME_RANGE`` are first scaled by a power of two into [0.5, 1).
    """
    if isinstance(image, torch.Tensor) and image.device.type != "cpu":
        return _grey_on_device(image).to(device)  # converted where it lies: no trip to the host
    grey = to_grey_numpy(image)
    scale = {np.dtype(np.uint8): 1 / 255.0, np.dtype(np.uint16): 1 / 65535.0}.get(grey.dtype, 1.0)
    t = torch.from_numpy(np.ascontiguousarray(grey))
    if torch.device(device).type == "cuda":  # the image as it is (uint8: 4x fewer bytes), without stalling the host
        t = t.pin_memory().to(device, non_blocking=True)
    return (t.to(device=device, dtype=torch.float32) * scale)[None, None]


# OpenCV's integer RGB -> grey weights (Q15, rounded; bit-exact with cv2.cvtColor for uint8 and uint16)
# and its float ones.
_GREY_Q15 = (9798, 19235, 3735)
_GREY_FLOAT = (0.299, 0.587, 0.114)


def _grey_on_device(image: torch.Tensor) -> torch.Tensor:
    """``to_grey_tensor`` of a torch image, computed on the image's device with one host sync at most.

    The same checks and values as the OpenCV path: integer images bit for bit (OpenCV's Q15
    weights), float images to float32 rounding (OpenCV's float weights, another summation order).
    """
    t = image.detach()
    if t.dim() == 4:
        if t.shape[0] != 1:
            raise ValueError(f"one image at a time: got a batch of shape {tuple(t.shape)}")
        t = t[0]
    if t.dim() == 3 and t.shape[0] not in (1, 3):
        raise ValueError(f"torch image must have 1 or 3 channels first, got shape {tuple(image.shape)}")
    if t.dim() not in (2, 3):
        raise ValueError(f"torch image must be (H, W), (C, H, W) or (1, C, H, W), got shape {tuple(image.shape)}")
    if 0 in t.shape[-2:]:
        raise ValueError(f"image is empty ({t.shape[-2]}x{t.shape[-1]})")
    if t.shape[-2] < 2 or t.shape[-1] < 2:
        raise ValueError(f"image is too small: {tuple(t.shape[-2:])}")
    if t.dtype in (torch.uint8, torch.uint16):
        scale = 1 / 255.0 if t.dtype == torch.uint8 else 1 / 65535.0
        t = t.to(torch.int32)  # 65535 * 2^15 + 2^14 still fits
        if t.dim() == 3 and t.shape[0] == 3:
            r, g, b = (t[0] * _GREY_Q15[0], t[1] * _GREY_Q15[1], t[2] * _GREY_Q15[2])
            t = (b + g + r + (1 << 14)) >> 15
        grey = t.reshape(t.shape[-2:]).float() * scale
        return grey[None, None]
    if not t.is_floating_point():
        got = str(t.dtype).removeprefix("torch.")  # as numpy names it, like the numpy path's message
        raise TypeError(f"image dtype must be uint8, uint16 or float, got {got}")
    if t.dtype != torch.float64:
        t = t.float()  # exact for half precision, and its range for the scaling below
    peak = t.abs().amax()
    if not math.isfinite(float(peak)):  # the one sync: NaN/inf check, and whether the scale is off
        raise ValueError("image contains NaN or inf")
    if outside_tame_range(float(peak)):  # as _tame_float
        t = tame_tensor(t, peak)
    t = t.float()
    if t.dim() == 3 and t.shape[0] == 3:
        t = t[2] * _GREY_FLOAT[2] + t[1] * _GREY_FLOAT[1] + t[0] * _GREY_FLOAT[0]
    return t.reshape(t.shape[-2:])[None, None].contiguous()


def to_uint8(image: ImageLike) -> np.ndarray:
    """Grey uint8 view for 8-bit-only OpenCV detectors.

    uint16 is divided by 257. A float image with at most 1 % of its pixels below 0 (what resampling overshoots,
    e.g. ``cv2.resize`` with ``INTER_CUBIC``) is taken as ``0..1`` if its largest value is at most 1.5, else as
    ``0..255`` if at most 382.5, and clipped there. Any other float image (``-1..1``, standardised, ``0..65535``,
    one whose largest magnitude lies outside ``TAME_RANGE``) is stretched from its smallest to its largest value
    onto ``0..255``: clipped, the detector would see it black, white or half of it.
    """
    grey, tamed = _to_grey(image)
    if grey.dtype == np.uint8:
        return grey
    if grey.dtype == np.uint16:
        return (grey / 257.0).round().astype(np.uint8)
    lo, hi = (float(grey.min()), float(grey.max())) if grey.size else (0.0, 0.0)
    low, unit = 0.0, (1.0 if hi <= 1.5 else 255.0)
    if tamed or hi > 382.5 or np.count_nonzero(grey < 0) > 0.01 * grey.size:  # tamed: beyond 2^32 or below 2^-8
        low, unit = lo, (hi - lo) or 1.0  # a constant image: all 0
    return np.clip((grey - low) * (255.0 / unit), 0, 255).round().astype(np.uint8)
