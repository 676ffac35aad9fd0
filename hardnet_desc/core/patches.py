"""Keypoints -> oriented, scale-normalised patches.

Conventions (the same as OpenCV's, stated once here and used everywhere):

* Image coordinates are pixels with the centre of the top-left pixel at
  ``(0, 0)``, x to the right, y **down**.
* ``kp.size`` is the keypoint diameter (for SIFT ``2 * sigma``, times the
  detector's own factor). The patch is a square of side
  ``patch_scale * max(kp.size, min_kp_size)`` pixels centred on ``kp.pt``.
  ``min_kp_size`` (pixels, default 0: no minimum) gives the smallest keypoints
  (for SIFT, mostly noise blobs at its finest scale) a fixed least support;
  like ``patch_scale`` it belongs to the weights, which record both.
* ``kp.angle`` is in **degrees**, measured from the x axis towards the y axis,
  so with y down a positive angle turns **clockwise on screen**. The patch's
  x axis points along ``(cos(angle), sin(angle))``. Rotating an image
  counter-clockwise on screen by ``t`` (``cv2.getRotationMatrix2D(c, t, 1)``)
  therefore lowers SIFT's angles by ``t``. ``angle == -1`` (OpenCV's "not
  applicable") means upright.
* An affine frame (kornia's LAF) is ``[A | c]`` of shape ``(N, 2, 3)`` in
  pixels; the patch covers ``c + A @ [-1, 1]^2``, patch column ``j`` running
  along ``A[:, 0]``. Frames are used as given: ``patch_scale`` and
  ``min_kp_size`` do not apply. A keypoint becomes
  ``A = (patch_scale * max(size, min_kp_size) / 2) * R(angle)``.
* Cells outside the image repeat the nearest border pixel. A keypoint whose patch is far
  larger than the image (up to ``kp.size = 1e38``) is still described, as OpenCV's SIFT does
  (it clamps its window to the image diagonal): its patch is read from the coarsest pyramid
  level, the same as for any other patch many times the image's size. Only a patch whose
  half side overflows float32 (``patch_scale * size / 2 > 3.4e38``) is refused (``ValueError``).

The patch geometry (``patch_scale``, ``min_kp_size``, the output side and the supersampling)
travels as one ``PatchSpec``; the weights record its first two (``PatchSpec.to_metadata``).

Anti-aliasing: each patch is sampled on a ``2 * patch_size`` grid from the
level of a Gaussian pyramid whose pixel is no larger than a grid step, then
2x2-averaged. A large keypoint is thus read from a blurred, downsampled level
rather than by point-sampling a wide area.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Union

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .image import native_order
from .model import PATCH_SIZE

KeypointsLike = Union[Sequence[cv2.KeyPoint], np.ndarray, torch.Tensor]

#: Default patch side in units of ``kp.size``; chosen by validation (see docs/conventions.md).
DEFAULT_PATCH_SCALE = 6.0
#: Sampling grid / output side. Training patches are stored at this grid size.
SUPERSAMPLE = 2
#: The most sampling cells per patch side (``PatchSpec.grid_size``): 1024 x 1024 cells already take 4 MiB a patch.
MAX_GRID = 1024

# 5-tap binomial kernel: the classic pyrDown low-pass filter.
_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
# Grid points (block * G * G) per grid_sample call in sample_frames.
_GRID_BLOCK = 1 << 19


def check_number(value: float, name: str, low: float = 0.0, strict: bool = True) -> None:
    """Raise unless ``value`` (the argument ``name``) is a finite real number above ``low`` (at least ``low`` where
    ``strict`` is false): ``TypeError`` for another type, ``ValueError`` for a value out of range, NaN or inf."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not (math.isfinite(value) and (value > low if strict else value >= low)):
        raise ValueError(f"{name} must be a finite number {'>' if strict else '>='} {low:g}, got {value}")


def check_flag(value: bool, name: str, hint: str = "") -> None:
    """Raise ``TypeError`` unless ``value`` (the argument ``name``) is True or False (numpy's bool too); ``hint``
    follows the name in the message (e.g. the command-line option)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False{hint}, got {type(value).__name__} {value!r}")


def check_integer(value: int | None, name: str, low: int = 0, none: str | None = None) -> None:
    """Raise unless ``value`` (the argument ``name``) is an integer >= ``low``, or ``None`` where ``none`` says
    what ``None`` means (it is named in the message): ``TypeError`` for another type, ``ValueError`` below ``low``."""
    if value is None and none is not None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer{' or None' if none else ''}, got {type(value).__name__} {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}{f' ({none})' if none else ''}, got {value}")


def check_patch_scale(patch_scale: float) -> float:
    """``patch_scale`` as a float, or ``TypeError``/``ValueError`` unless it is a positive finite number."""
    if isinstance(patch_scale, bool) or not isinstance(patch_scale, numbers.Real):
        raise TypeError(f"patch_scale must be a number, got {type(patch_scale).__name__}")
    if not 0 < patch_scale < math.inf:
        raise ValueError(f"patch_scale must be a positive finite number, got {patch_scale}")
    return float(patch_scale)



def check_min_kp_size(min_kp_size: float) -> float:
    """``min_kp_size`` as a float, or ``ValueError``/``TypeError`` unless it is a finite number >= 0."""
    if isinstance(min_kp_size, bool) or not isinstance(min_kp_size, (int, float, np.integer, np.floating)):
        raise TypeError(f"min_kp_size must be a number (pixels), got {type(min_kp_size).__name__}")
    if not 0 <= min_kp_size < math.inf:
        raise ValueError(f"min_kp_size must be a finite number >= 0 (pixels), got {min_kp_size}")
    return float(min_kp_size)


@dataclasses.dataclass(frozen=True)
class PatchSpec:
    """How a patch is cut around a keypoint: the patch geometry, one object wherever a patch is cut.

    The geometry belongs to the weights (they were trained on patches cut so): ``Weights.patch_spec``
    reads it from their file, ``to_metadata``/``from_metadata`` are the one place its metadata keys
    are spelled.

    Attributes:
        scale: patch side in units of ``kp.size`` (the ``patch_scale`` of the weights and of
            ``HardNetDescriptor``); a positive finite number.
        min_kp_size: least ``kp.size`` in pixels a patch is cut for (0: no minimum); a finite number >= 0.
        size: side of the output patch in pixels (the network's input, 32).
        supersample: the sampling grid is ``size * supersample`` cells, then averaged down (anti-aliasing).

    Raises:
        TypeError, ValueError: a field that is not a number of the kind above (one-line messages
            naming it by its public name, e.g. ``patch_scale``).
    """

    scale: float = DEFAULT_PATCH_SCALE
    min_kp_size: float = 0.0
    size: int = PATCH_SIZE
    supersample: int = SUPERSAMPLE

    #: Field -> its key in weight, ONNX and feature-file metadata (the only place the keys are spelled).
    METADATA_KEYS: ClassVar[dict[str, str]] = {"scale": "patch_scale", "min_kp_size": "min_kp_size"}

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", check_patch_scale(self.scale))
        object.__setattr__(self, "min_kp_size", check_min_kp_size(self.min_kp_size))
        for name, public in (("size", "patch_size"), ("supersample", "supersample")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{public} must be an integer >= 1, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.grid_size > MAX_GRID:  # supersample 10**4 asked for 409 GB at the first patch
            raise ValueError(f"patch_size x supersample must be at most {MAX_GRID} sampling cells per side, got "
                             f"{self.size} x {self.supersample}")

    @property
    def grid_size(self) -> int:
        """Cells per side of the sampling grid: ``size * supersample``."""
        return self.size * self.supersample

    def replace(self, **changes: Any) -> PatchSpec:
        """A copy with the given fields changed (and checked); ``None`` values are ignored."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_metadata(self) -> dict[str, str]:
        """The weights' part of the spec (``scale``, ``min_kp_size``) as metadata strings, e.g.
        ``{"patch_scale": "6.0", "min_kp_size": "3.5"}``."""
        return {key: repr(float(getattr(self, name))) for name, key in self.METADATA_KEYS.items()}

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any], source: str = "metadata") -> PatchSpec:
        """The spec recorded in ``meta`` (weight, ONNX or feature-file metadata; strings or numbers);
        a key it lacks takes the default.

        Raises:
            ValueError: a recorded value that is not a valid number for its field; the message names
                ``source`` (e.g. the file) and the key.
        """
        fields = {}
        for name, key in cls.METADATA_KEYS.items():
            if key not in meta:
                continue
            value = meta[key]
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = math.nan
            valid = 0 < number < math.inf if name == "scale" else 0 <= number < math.inf
            if not valid:
                rule = "a positive number" if name == "scale" else "a number >= 0 of pixels"
                raise ValueError(f"{source}: metadata {key} {value!r} is not {rule}")
            fields[name] = number
        return cls(**fields)

    @classmethod
    def records(cls, meta: Mapping[str, Any], name: str) -> bool:
        """Whether ``meta`` records the field ``name`` (``"scale"`` or ``"min_kp_size"``)."""
        return cls.METADATA_KEYS[name] in meta


def keypoints_to_array(keypoints: KeypointsLike) -> np.ndarray:
    """Keypoints as a float64 ``(N, 4)`` array of ``(x, y, size, angle_deg)``.

    Accepts a sequence (or any iterable) of ``cv2.KeyPoint`` or an ``(N, 4)`` real array/tensor.

    Raises:
        TypeError: anything else (``None``, mixed sequences, complex or non-numeric arrays).
        ValueError: an array of another shape.
    """
    if isinstance(keypoints, torch.Tensor):
        keypoints = keypoints.detach().cpu().numpy()
    if isinstance(keypoints, np.ndarray):
        arr = keypoints
        if arr.dtype.kind not in "fiu":
            raise TypeError(f"keypoint array must be numeric (real numbers), got dtype {arr.dtype}")
    else:
        if isinstance(keypoints, (str, bytes, cv2.KeyPoint)) or not hasattr(keypoints, "__iter__"):
            raise TypeError(
                "keypoints must be a sequence of cv2.KeyPoint or an (N, 4) array of (x, y, size, angle), "
                f"got {type(keypoints).__name__}"
            )
        keypoints = list(keypoints)
        wrong = [k for k in keypoints if not isinstance(k, cv2.KeyPoint)]
        if wrong:
            raise TypeError(
                f"keypoints must be cv2.KeyPoint objects or an (N, 4) array of (x, y, size, angle), "
                f"got a sequence holding {type(wrong[0]).__name__}"
            )
        arr = np.array([(k.pt[0], k.pt[1], k.size, k.angle) for k in keypoints], dtype=np.float64)
        arr = arr.reshape(-1, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"keypoint array must have shape (N, 4) = (x, y, size, angle), got {arr.shape}")
    return arr.astype(np.float64, copy=False)


def is_frames(keypoints: KeypointsLike) -> bool:
    """Whether ``keypoints`` is an array or tensor of affine frames, ``(N, 2, 3)`` or kornia's ``(B, N, 2, 3)``."""
    is_array = isinstance(keypoints, (np.ndarray, torch.Tensor))
    return is_array and keypoints.ndim in (3, 4) and tuple(keypoints.shape[-2:]) == (2, 3)


def keypoints_to_frames(keypoints: KeypointsLike, spec: PatchSpec = PatchSpec()) -> torch.Tensor:
    """Convert keypoints to float32 affine frames ``(N, 2, 3)`` (see module conventions), checked.

    An ``(N, 2, 3)`` array or tensor is taken as frames already and returned as is (as float32, on
    its device), and so are kornia's batched LAFs ``(B, N, 2, 3)`` (frames ``[b]`` belong to image ``b``).
    Sizes below ``spec.min_kp_size`` (pixels) are raised to it for the patch; the keypoints are not changed.

    Args:
        keypoints: ``cv2.KeyPoint`` sequence, ``(N, 4)`` ``(x, y, size, angle_deg)``, or frames.
        spec: the patch geometry (``scale`` and ``min_kp_size`` apply to keypoints, not to frames).

    Raises:
        ValueError: non-finite values, sizes <= 0, or sizes whose patch side (``spec.scale * size``,
            about 6.8e38 / ``spec.scale``) would overflow float32.
        TypeError: keypoints of another type, or ``spec`` that is not a ``PatchSpec``.
    """
    _check_spec(spec)
    if is_frames(keypoints):
        frames = as_frames(keypoints)
        if not torch.isfinite(frames).all():
            raise ValueError("affine frames contain NaN or inf")
        return frames
    kps = keypoints_to_array(keypoints)
    _check_finite(kps, "keypoints")
    bad = np.flatnonzero(kps[:, 2] <= 0)
    if bad.size:
        raise ValueError(f"{bad.size} keypoint(s) have size <= 0 (first: index {bad[0]}, size {kps[bad[0], 2]})")
    return _frames_of(kps, spec)


def _check_spec(spec: PatchSpec) -> None:
    if not isinstance(spec, PatchSpec):
        raise TypeError(f"spec must be a PatchSpec (e.g. PatchSpec(scale=6.0)), got {type(spec).__name__}")


def as_frames(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Frames ``(..., 2, 3)`` as a float32 tensor on their device (values not checked).

    Raises:
        TypeError: complex or boolean values.
    """
    if isinstance(frames, np.ndarray) or not isinstance(frames, torch.Tensor):
        frames = np.asarray(frames)
        if frames.dtype.kind not in "fiu":
            raise TypeError(f"affine frames must hold real numbers, got dtype {frames.dtype}")
        frames = native_order(frames)
    frames = torch.as_tensor(frames)
    if frames.is_complex() or frames.dtype == torch.bool:
        raise TypeError(f"affine frames must hold real numbers, got dtype {frames.dtype}")
    if frames.dtype == torch.float64 and frames.numel():
        peak = float(frames.abs().nan_to_num(0.0, 0.0, 0.0).max())
        if peak > torch.finfo(torch.float32).max:
            raise ValueError(f"affine frames hold values up to {peak:.3g}, beyond float32's range")
    return frames.float()


def _frames_of(kps: np.ndarray, spec: PatchSpec) -> torch.Tensor:
    """Frames of finite ``(N, 4)`` keypoints with sizes > 0; ``ValueError`` for a patch side beyond float32."""
    angle = np.where(kps[:, 3] == -1, 0.0, np.deg2rad(kps[:, 3]))
    half = 0.5 * spec.scale * np.maximum(kps[:, 2], spec.min_kp_size)
    huge = np.flatnonzero(half > np.finfo(np.float32).max)
    if huge.size:
        raise ValueError(f"{huge.size} keypoint(s) are too large to describe (first: index {huge[0]}, size "
                         f"{kps[huge[0], 2]:g}): the patch side, patch_scale x size, exceeds float32's range")
    cos, sin = np.cos(angle) * half, np.sin(angle) * half
    frames = np.stack([np.stack([cos, -sin, kps[:, 0]], 1), np.stack([sin, cos, kps[:, 1]], 1)], 1)
    return torch.from_numpy(frames).float()


def describable_frames(
    keypoints: KeypointsLike, spec: PatchSpec, height: int, width: int
) -> tuple[torch.Tensor, np.ndarray]:
    """Frames of the keypoints that can be described, and which those are (OpenCV's Feature2D rule).

    The one conversion and check of one image's keypoints on the way to descriptors: a keypoint
    cannot be described if its size is <= 0 or its centre lies outside the image area
    ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``; NaN or inf still raise ``ValueError``. The frames returned
    need no further check (``frame_batches`` trusts them).

    Returns:
        ``(frames, keep)``: float32 frames ``(M, 2, 3)`` (on the device of frames given as a tensor,
        else the CPU) and the ``(N,)`` bool mask of the kept keypoints.
    """
    _check_spec(spec)
    if is_frames(keypoints):
        frames = keypoints_to_frames(keypoints, spec)
        keep = np.ones(len(frames), dtype=bool)
    else:
        kps = keypoints_to_array(keypoints)
        _check_finite(kps, "keypoints")
        keep = kps[:, 2] > 0
        frames = _frames_of(kps[keep], spec)
    inside = inside_image(frames, height, width)  # on the frames' device (kornia's LAFs may be on a GPU)
    keep[np.flatnonzero(keep)[~inside.cpu().numpy()]] = False
    return frames[inside], keep


def _check_finite(values: np.ndarray, what: str) -> None:
    bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
    if bad.size:
        raise ValueError(f"{bad.size} of the {what} contain NaN or inf (first: index {bad[0]})")


def inside_image(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(N,)`` bool: whether each frame's centre lies in the image area ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``."""
    c = frames[:, :, 2]
    return (c[:, 0] >= -0.5) & (c[:, 0] <= width - 0.5) & (c[:, 1] >= -0.5) & (c[:, 1] <= height - 0.5)


def check_inside(frames: torch.Tensor, height: int, width: int) -> None:
    """Raise ``ValueError`` if a frame centre lies outside the image area."""
    outside = ~inside_image(frames, height, width)
    if bool(outside.any()):
        c = frames[:, :, 2]
        idx = torch.nonzero(outside)[:, 0]
        i = int(idx[0])
        raise ValueError(
            f"{len(idx)} keypoint(s) lie outside the {width}x{height} image "
            f"(first: index {i} at x={float(c[i, 0]):.1f}, y={float(c[i, 1]):.1f})"
        )


def check_frames(frames: torch.Tensor, height: int, width: int, image: torch.Tensor | None = None) -> float:
    """Raise ``ValueError`` for NaN or inf in ``frames`` ``(N, 2, 3)`` or a centre outside the image area, and
    with ``image`` (on the frames' device) for NaN or inf in it; one read-back from the frames' device.

    Returns:
        The largest magnitude in ``image`` (0 without one).
    """
    if frames.ndim != 3 or frames.shape[1:] != (2, 3):
        raise ValueError(f"affine frames must be (N, 2, 3), got shape {tuple(frames.shape)}")
    stats = [(~torch.isfinite(frames)).sum(), (~inside_image(frames, height, width)).sum()]
    if image is not None:
        stats += [(~torch.isfinite(image)).sum(), image.detach().abs().amax() if image.numel() else image.new_zeros(())]
    bad, outside, *pixels = torch.stack([x.double() for x in stats]).tolist()
    if bad:
        raise ValueError("affine frames contain NaN or inf")
    if pixels and pixels[0]:
        raise ValueError(f"the image contains NaN or inf ({int(pixels[0])} pixels)")
    if outside:
        check_inside(frames, height, width)
    return pixels[1] if pixels else 0.0


def build_pyramid(image: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Gaussian pyramid of a ``(1, 1, H, W)`` image, like repeated ``cv2.pyrDown``.

    Level ``l`` pixel ``(i, j)`` is centred on full-resolution pixel ``(2^l i, 2^l j)``.
    """
    pyramid = [image]
    for _ in range(levels):
        x = pyramid[-1]
        if min(x.shape[-2:]) < 8:
            break
        pyramid.append(_pyr_down(x))
    return pyramid


def _pyr_down(x: torch.Tensor) -> torch.Tensor:
    """5x5 binomial blur (reflect-101 border) and drop odd rows and columns: ``(1, 1, H, W)``."""
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
        # The same filter as the conv below (to ~1e-7), and 20x+ faster than a 1-channel conv2d on CPU.
        return torch.from_numpy(cv2.pyrDown(x[0, 0].detach().contiguous().numpy()))[None, None]
    k = _BINOMIAL.to(x.device, x.dtype)
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="reflect"), k.view(1, 1, 1, 5), stride=(1, 2))
    return F.conv2d(F.pad(x, (0, 0, 2, 2), mode="reflect"), k.view(1, 1, 5, 1), stride=(2, 1))


def pyramid_levels(frames: torch.Tensor, grid_size: int) -> torch.Tensor:
    """Pyramid level for each frame: the coarsest whose pixel is <= one grid step."""
    a = frames[:, :, :2].double()
    det = a[:, 0, 0] * a[:, 1, 1] - a[:, 0, 1] * a[:, 1, 0]  # 2x2: direct, 20x cheaper than linalg.det
    scale = torch.sqrt(torch.abs(det)).float()
    step = 2.0 * scale / grid_size
    return torch.floor(torch.log2(step.clamp(min=1.0, max=2.0**62))).long()  # a 1e38 size: inf, capped


def sample_frames(
    pyramid: list[torch.Tensor], frames: torch.Tensor, grid_size: int, levels: torch.Tensor | None = None
) -> torch.Tensor:
    """Bilinearly sample ``(N, 1, G, G)`` grids from the right pyramid levels.

    Loops over pyramid levels (a handful) and blocks of keypoints, never over single keypoints.
    ``levels``: ``pyramid_levels(frames, grid_size)`` where the caller has them already.
    """
    frames = frames.to(pyramid[0])
    levels = (pyramid_levels(frames, grid_size) if levels is None else levels).clamp(max=len(pyramid) - 1)
    groups = [(level, torch.nonzero(levels == level)[:, 0]) for level in torch.unique(levels).tolist()]
    return sample_level_groups(pyramid, frames, grid_size, groups)


def sample_level_groups(
    pyramid: list[torch.Tensor], frames: torch.Tensor, grid_size: int, groups: Sequence[tuple[int, torch.Tensor]]
) -> torch.Tensor:
    """``sample_frames`` with the frames already grouped by level, so no value is read back from the device.

    Args:
        pyramid: from ``build_pyramid``.
        frames: ``(N, 2, 3)``.
        grid_size: ``G``.
        groups: ``(level, idx)`` pairs, ``idx`` the ``(n,)`` rows of ``frames`` read from that
            level (ascending, as ``frame_batches`` gives them); together they cover all rows once.

    Returns:
        ``(N, 1, G, G)`` on the pyramid's device and dtype.
    """
    n, g = frames.shape[0], grid_size
    out = pyramid[0].new_empty((n, 1, g, g))
    frames = frames.to(out)
    base = _base_grid(g, out.device, out.dtype)
    # On the CPU, blocks small enough for the (block, 2, G*G) grid to stay in cache while it is built and
    # read; elsewhere (no such cache to fit) a level at once, in the fewest kernel launches.
    block = max(1, _GRID_BLOCK // (g * g)) if out.device.type == "cpu" else max(1, n)
    for level, idx in groups:
        img = pyramid[level]
        h, w = img.shape[-2:]
        size = out.new_empty((1, 2, 1))  # [w, h], filled on the device: a tensor from a list would sync
        size[:, 0], size[:, 1] = w, h
        f = frames[idx] / (2.0**level)
        # pixel = A @ cell + c, then to grid_sample's [-1, 1] (align_corners=False): (2 x + 1) / size - 1,
        # folded into the frame: grid = (2 A / size) @ cell + ((2 c + 1) / size - 1), one batched product.
        scale = f[:, :, :2] * (2.0 / size)
        shift = (f[:, :, 2:] * 2.0 + 1.0) / size - 1.0
        for start in range(0, len(idx), block):
            stop = min(start + block, len(idx))
            grid = torch.baddbmm(shift[start:stop], scale[start:stop], base.expand(stop - start, -1, -1))
            grid = grid.view(-1, 2, g, g).permute(0, 2, 3, 1)  # (B, G, G, 2) view, x/y planes kept apart
            out[idx[start:stop]] = F.grid_sample(
                img.expand(stop - start, -1, -1, -1), grid, mode="bilinear", padding_mode="border", align_corners=False
            )
    return out


def pyramid_depth(height: int, width: int) -> int:
    """The most levels ``build_pyramid`` adds to an ``H x W`` image (it stops below 8 pixels)."""
    depth = 0
    while min(height, width) >= 8:
        height, width, depth = (height + 1) // 2, (width + 1) // 2, depth + 1
    return depth


def frame_batches(
    frames: torch.Tensor,
    height: int,
    width: int,
    batch_size: int,
    first: int | None = None,
    spec: PatchSpec = PatchSpec(),
) -> tuple[int, list[tuple[int, int, list[tuple[int, torch.Tensor]]]]]:
    """Group the frames of one image by pyramid level per batch, with one host sync.

    What ``sample_frames`` groups per call, done once for all the batches of an image, so that
    cutting the batches (``cut_frame_batch``) reads nothing back from the device. The frames are
    trusted: finite, centres inside the image (``describable_frames`` or ``check_frames`` made sure).

    Args:
        frames: ``(N, 2, 3)`` float32 affine frames, on the image's device.
        height, width: the image size.
        batch_size: frames per batch.
        first: frames in the first batch (``batch_size`` when ``None``); the others hold
            ``batch_size``, the last the rest.
        spec: the patch geometry (its ``grid_size`` picks the levels).

    Returns:
        ``(max_level, batches)``: the deepest pyramid level needed (for ``build_pyramid``) and, per
        batch, ``(start, stop, groups)``: its rows of ``frames`` and the ``(level, idx)`` groups for
        ``sample_level_groups`` (``idx`` counted from ``start``).

    Raises:
        ValueError: ``batch_size`` or ``first`` below 1.
    """
    if batch_size < 1 or (first is not None and first < 1):
        raise ValueError(f"batch_size and first must be >= 1, got {batch_size} and {first}")
    n = len(frames)
    first = min(n, batch_size if first is None else first)
    if n == 0:
        return 0, []
    depth = pyramid_depth(height, width)
    levels = pyramid_levels(frames, spec.grid_size).clamp(0, depth)
    batch = (torch.arange(n, device=frames.device) + (batch_size - first)) // batch_size  # 0 for the first
    key = batch * (depth + 1) + levels
    n_batches = 1 + -(-(n - first) // batch_size)
    counts = torch.zeros(n_batches * (depth + 1), dtype=torch.long, device=frames.device)
    counts.scatter_add_(0, key, torch.ones_like(key))  # bincount would read its max back first
    *counts, max_level = torch.cat([counts, levels.max()[None]]).tolist()
    order = torch.argsort(key, stable=True)  # by batch, then level, then row
    batches, offset = [], 0
    for b in range(n_batches):
        start = 0 if b == 0 else first + (b - 1) * batch_size
        groups = []
        for level, count in enumerate(counts[b * (depth + 1) : (b + 1) * (depth + 1)]):
            if count:
                groups.append((level, order[offset : offset + count] - start))
                offset += count
        batches.append((start, min(n, start + (first if b == 0 else batch_size)), groups))
    return max_level, batches


def cut_frame_batch(
    pyramid: list[torch.Tensor],
    frames: torch.Tensor,
    groups: Sequence[tuple[int, torch.Tensor]],
    spec: PatchSpec = PatchSpec(),
) -> torch.Tensor:
    """The ``(N, 1, S, S)`` patches (``S = spec.size``) of a batch of ``frame_batches``: ``extract_patches``'.

    ``frames`` are the batch's rows, ``groups`` its level groups; no value is read back from the device.
    """
    return _downsample(sample_level_groups(pyramid, frames, spec.grid_size, groups), spec.supersample)


@functools.lru_cache(maxsize=8)
def _base_grid(grid_size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(2, G*G)``: x then y of the cell centres in ``[-1, 1]``, row-major over the cells (cached, read-only)."""
    with torch.inference_mode(False):  # a normal tensor, usable in and out of inference mode
        eye = torch.eye(2, 3, device=device, dtype=dtype)
        base = F.affine_grid(eye[None], [1, 1, grid_size, grid_size], align_corners=False)
        return base[0].reshape(-1, 2).t().contiguous()


def _mean_2x2(x: torch.Tensor) -> torch.Tensor:
    """``F.avg_pool2d(x, 2)`` bit for bit (the same sum order), about twice as fast on CPU."""
    return (x[..., ::2, ::2] + x[..., ::2, 1::2] + x[..., 1::2, ::2] + x[..., 1::2, 1::2]) * 0.25


#: "Not given: as in ``spec``" for ``extract_patches``' short-form arguments.
_AS_SPEC: Any = object()


def _downsample(grids: torch.Tensor, supersample: int) -> torch.Tensor:
    """Sampled grids ``(N, 1, G, G)`` averaged down to patches ``(N, 1, G / supersample, ...)``."""
    if supersample == 2:
        return _mean_2x2(grids)
    if supersample > 1:
        return F.avg_pool2d(grids, supersample)
    return grids


def extract_patches(
    image: torch.Tensor,
    keypoints: KeypointsLike,
    spec: PatchSpec | None = None,
    *,
    patch_size: int = _AS_SPEC,
    patch_scale: float = _AS_SPEC,
    min_kp_size: float = _AS_SPEC,
    supersample: int = _AS_SPEC,
    pyramid: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Cut oriented, scale-normalised patches around keypoints.

    Args:
        image: grey float image ``(H, W)`` or ``(1, 1, H, W)`` (see ``hardnet_desc.core.image.to_grey_tensor``).
        keypoints: ``cv2.KeyPoint`` list, ``(N, 4)`` array of ``(x, y, size, angle_deg)``,
            or ``(N, 2, 3)`` affine frames. See the module docstring for conventions.
        spec: the patch geometry (default ``PatchSpec()``: 32x32 patches of side ``6 * kp.size``).
            Training data is stored with ``size=64, supersample=1``, whose 2x2 mean equals the
            default 32x32 output exactly.
        patch_size, patch_scale, min_kp_size, supersample: the short form: these fields of
            ``spec`` (``size``, ``scale``, ``min_kp_size``, ``supersample``) replaced, when given.
        pyramid: a pyramid from ``build_pyramid`` to reuse across calls.

    Returns:
        ``(N, 1, S, S)`` patches (``S = spec.size``) on the image's device and dtype.
    """
    if spec is not None:
        _check_spec(spec)
    fields = {"size": patch_size, "scale": patch_scale, "min_kp_size": min_kp_size, "supersample": supersample}
    spec = dataclasses.replace(spec or PatchSpec(), **{k: v for k, v in fields.items() if v is not _AS_SPEC})
    if not isinstance(image, torch.Tensor) or not image.is_floating_point():
        got = f"a {image.dtype} tensor" if isinstance(image, torch.Tensor) else type(image).__name__
        raise TypeError(f"image must be a float torch tensor (hardnet_desc.core.image.to_grey_tensor makes one), got {got}")
    if image.dim() == 2:
        image = image[None, None]
    if image.dim() != 4 or image.shape[:2] != (1, 1):
        raise ValueError(f"image must be (H, W) or (1, 1, H, W), got {tuple(image.shape)}")
    frames = keypoints_to_frames(keypoints, spec).to(image.device)
    if frames.shape[0] == 0:
        return image.new_zeros((0, 1, spec.size, spec.size))
    check_inside(frames, image.shape[-2], image.shape[-1])
    levels = pyramid_levels(frames, spec.grid_size)
    if pyramid is None:
        pyramid = build_pyramid(image, int(levels.max()))
    return _downsample(sample_frames(pyramid, frames, spec.grid_size, levels), spec.supersample)
