"""HardNetDescriptor: a drop-in for OpenCV's SIFT descriptor.

``HardNetDescriptor().compute(img, kps)`` returns what ``cv2.SIFT_create().compute(img, kps)``
returns: the keypoints and a float32 ``(N, 128)`` array with unit L2 norm rows, in keypoint order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .core.device import choose_precision, default_batch_size, resolve_device
from .core.image import ImageLike, native_order, outside_tame_range, split_batch, tame_tensor, to_grey_tensor
from .core.model import DESCRIPTOR_DIM, PATCH_SIZE, fuse_hardnet
from .core.patches import (
    KeypointsLike,
    PatchSpec,
    as_frames,
    check_frames,
    check_integer,
    describable_frames,
    extract_patches,
    is_frames,
    keypoints_to_frames,
)
from .core.quantize import inference_net
from .core.weights import DEFAULT_WEIGHTS, Weights, load_hardnet
from .core.describe import DescribeSettings, describe, forward
from .detection import detect_sift


@torch.inference_mode()
def describe_patches(
    net: torch.nn.Module,
    patches: np.ndarray | torch.Tensor,
    *,
    device: torch.device,
    batch_size: int = 256,
    precision: str = "fp32",
) -> np.ndarray | torch.Tensor:
    """Descriptors of ready-made patches with ``net`` (in eval mode): the one network pass.

    Used by ``HardNetDescriptor.describe_patches`` and by the trainer's validation.

    Args:
        net: a ``HardNet`` (or its fused form) on ``device``, in eval mode.
        patches: ``(N, H, W)`` or ``(N, 1, H, W)``, any numeric dtype and range (float patches far
            from a normal range, e.g. 1e-30, are first scaled by a power of two); other sizes
            than 32x32 (e.g. HPatches' 65x65) are resized with area averaging.
        device: where ``net`` runs.
        batch_size: patches per forward pass.
        precision: a name of ``PRECISIONS``.

    Returns:
        ``(N, 128)`` float32, numpy for numpy input and a tensor (on ``device``) for a tensor.
    """
    as_numpy = not isinstance(patches, torch.Tensor)
    if as_numpy:
        patches = np.asarray(patches)
        if patches.dtype.kind not in "fiu":
            raise TypeError(f"patches must hold real numbers, got dtype {patches.dtype}")
        patches = native_order(patches)
    elif patches.is_complex() or patches.dtype == torch.bool:
        raise TypeError(f"patches must hold real numbers, got dtype {patches.dtype}")
    x = torch.as_tensor(patches)
    if x.dim() == 3:
        x = x[:, None]
    if x.dim() != 4 or x.shape[1] != 1 or min(x.shape[-2:]) < 1:
        raise ValueError(f"patches must be (N, H, W) or (N, 1, H, W) with H, W >= 1, got {tuple(patches.shape)}")
    if x.is_floating_point():
        if not torch.isfinite(x).all():
            raise ValueError("patches contain NaN or inf")
        x = _tame_patches(x)  # in the input's precision: float64 1e300 stays finite
    x = x.to(device, torch.float32)
    out = torch.empty((len(x), DESCRIPTOR_DIM), device=device)
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        if batch.shape[-2:] != (PATCH_SIZE, PATCH_SIZE):
            mode = "area" if min(batch.shape[-2:]) >= PATCH_SIZE else "bilinear"
            batch = F.interpolate(batch, size=(PATCH_SIZE, PATCH_SIZE), mode=mode)
        out[start : start + len(batch)] = forward(net, batch, device, precision)
    return out.cpu().numpy() if as_numpy else out


def _tame_patches(x: torch.Tensor) -> torch.Tensor:
    """Float patches ``(N, 1, H, W)`` scaled each on its own by ``image.tame_tensor``, as ``to_grey_tensor``
    does for images: the descriptors of ``1e-30 * p`` are those of ``p``."""
    x = x.double() if x.dtype == torch.float64 else x.float()
    return tame_tensor(x, x.abs().amax(dim=(1, 2, 3), keepdim=True))


class HardNetDescriptor:
    """HardNet descriptors for OpenCV keypoints, with OpenCV's Feature2D methods.

    Args:
        weights: a bundled name (``"default"``), a ``.safetensors``/``.pth`` path,
            ``"hf://owner/repo/file"``, or any ``torch.nn.Module`` with HardNet's layout
            (``HardNet``, ``kornia.feature.HardNet``); its weights are copied.
        device: ``"auto"`` (CUDA if present), ``"cpu"``, ``"cuda"`` or a ``torch.device``.
        batch_size: patches per forward pass (``None`` or an integer >= 1); bounds memory, never
            changes results. ``None`` takes the fastest measured for the device and precision
            (``hardnet_desc.core.device.BATCH_SIZES``: small on CPU, where activations that stay in cache win).
        precision: ``"auto"`` (fp16 on CUDA; on a CPU the fastest precision measured for its
            kind that is as accurate as fp32: int8 for weights that ship int8 calibration, such as
            the bundled ones, on x86 CPUs with AVX2 or more, else bf16 where the CPU has native
            bfloat16, else fp32), ``"fp32"``, ``"bf16"``, ``"fp16"`` (CUDA) or ``"int8"`` (CPU, bundled weights; see
            ``hardnet_desc.core.quantize``). The table is in ``hardnet_desc.core.device``; the
            ``precision`` property tells what ``"auto"`` chose.
        patch_scale: patch side in units of ``kp.size``. ``None`` takes the value recorded in the
            weight file, else ``DEFAULT_PATCH_SCALE``.
        min_kp_size: least ``kp.size`` in pixels a patch is cut for (smaller keypoints get the patch
            of this size; ``hardnet_desc.core.patches``). ``None`` takes the value recorded in the weight
            file, else 0 (no minimum).
        patch_spec: the whole patch geometry at once (``PatchSpec``; ``None``: the weights'
            ``Weights.patch_spec``); ``patch_scale`` and ``min_kp_size`` replace its fields. Its
            ``size`` must be the network's input side, 32.
        detector: any ``cv2.Feature2D`` used by ``detect``; default ``cv2.SIFT_create()``.
        overlap: cut the next batch's patches in a worker thread while the network describes this
            one: ``None`` where torch's threads leave a CPU free for it, ``True``/``False`` always/never.
            Never changes results.
        pack: let a network call hold the patches of several images (``compute`` of a list,
            ``describe_many``): ``None`` off the CPU only (CPU batches are small, and its bf16 kernels
            are not batch-invariant), ``True``/``False`` always/never.
    """

    def __init__(
        self,
        weights: str | Path | torch.nn.Module = DEFAULT_WEIGHTS,
        *,
        device: str | torch.device = "auto",
        batch_size: int | None = None,
        precision: str = "auto",
        patch_scale: float | None = None,
        min_kp_size: float | None = None,
        patch_spec: PatchSpec | None = None,
        detector: Any = None,
        overlap: bool | None = None,
        pack: bool | None = None,
    ) -> None:
        check_integer(batch_size, "batch_size", 1, "None: the device's default")
        if patch_spec is not None and not isinstance(patch_spec, PatchSpec):
            raise TypeError(f"patch_spec must be a PatchSpec or None, got {type(patch_spec).__name__}")
        if patch_spec is not None and patch_spec.size != PATCH_SIZE:
            raise ValueError(f"patch_spec.size must be {PATCH_SIZE}, the network's input side, got {patch_spec.size}")
        PatchSpec().replace(scale=patch_scale, min_kp_size=min_kp_size)  # bad values fail before any loading
        for name, value in (("overlap", overlap), ("pack", pack)):
            if value is not None and not isinstance(value, bool):
                raise TypeError(f"{name} must be True, False or None, got {type(value).__name__}")
        if detector is not None and not callable(getattr(detector, "detect", None)):
            raise TypeError(f"detector must have a detect(image, mask) method, got {type(detector).__name__}")
        device = resolve_device(device)
        choose_precision(precision, device, inference=True)  # unknown names, fp16 off CUDA, int8 off CPU
        net, self._weights = load_hardnet(weights)  # also any nn.Module with HardNet's layout (copied)
        fused = fuse_hardnet(net.eval()).to(device).to(memory_format=torch.channels_last)
        self.net, precision = inference_net(fused, self._weights, precision, device)
        spec = (patch_spec or self._weights.patch_spec).replace(scale=patch_scale, min_kp_size=min_kp_size)
        batch_size = min(int(batch_size or default_batch_size(device, precision)), 2**30)  # any larger: one batch
        self._settings = DescribeSettings(device, precision, batch_size, spec, pack=pack, overlap=overlap)
        self._own_detector = detector is None
        self._detector = cv2.SIFT_create() if detector is None else detector

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the settings and weights (cv2's default SIFT detector is rebuilt, not pickled).

        The resolved precision and batch size are stored, so the copy describes exactly as this one.
        """
        settings = self._settings
        return {
            "weights": self._weights, "device": str(settings.device), "batch_size": settings.batch_size,
            "precision": settings.precision, "patch_spec": settings.spec, "overlap": settings.overlap,
            "pack": settings.pack, "detector": None if self._own_detector else self._detector,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        weights = state.pop("weights")
        self.__init__(weights, **state)

    @property
    def weights(self) -> Weights:
        """The loaded weights (state dict, source, metadata); read-only."""
        return self._weights

    @property
    def patch_spec(self) -> PatchSpec:
        """The patch geometry: how the patch of a keypoint is cut."""
        return self._settings.spec

    @property
    def patch_scale(self) -> float:
        """Patch side in units of ``kp.size`` (``patch_spec.scale``)."""
        return self._settings.spec.scale

    @property
    def min_kp_size(self) -> float:
        """Least ``kp.size`` in pixels a patch is cut for (0: none; ``patch_spec.min_kp_size``)."""
        return self._settings.spec.min_kp_size

    @property
    def device(self) -> torch.device:
        """Where the network runs."""
        return self._settings.device

    @property
    def precision(self) -> str:
        """The precision that runs (``"auto"`` already resolved): ``"fp32"``, ``"bf16"``, ``"fp16"`` or ``"int8"``."""
        return self._settings.precision

    @property
    def batch_size(self) -> int:
        """Patches per forward pass."""
        return self._settings.batch_size

    @property
    def settings(self) -> DescribeSettings:
        """How ``hardnet_desc.core.describe.describe`` runs for this descriptor (device, precision, batch size,
        ``patch_spec``, ``pack``, ``overlap``); frozen."""
        return self._settings

    @property
    def overlap(self) -> bool | None:
        """Whether patches are cut in a worker thread while the network runs (``None``: where a CPU is spare)."""
        return self._settings.overlap

    @property
    def pack(self) -> bool | None:
        """Whether a network call may hold the patches of several images (``None``: off the CPU only)."""
        return self._settings.pack

    def __repr__(self) -> str:
        return (
            f"HardNetDescriptor(weights={self.weights.source!r}, device='{self.device}', "
            f"precision='{self.precision}', patch_scale={self.patch_scale}, min_kp_size={self.min_kp_size}, "
            f"batch_size={self.batch_size})"
        )

    # --- OpenCV Feature2D interface -------------------------------------------------------
    def descriptorSize(self) -> int:  # noqa: N802 (OpenCV's name)
        """Descriptor length: 128."""
        return DESCRIPTOR_DIM

    def descriptorType(self) -> int:  # noqa: N802
        """``cv2.CV_32F``: descriptors are float32."""
        return cv2.CV_32F

    def defaultNorm(self) -> int:  # noqa: N802
        """``cv2.NORM_L2``, the norm to match with (``cv2.BFMatcher(hardnet.defaultNorm())``)."""
        return cv2.NORM_L2

    def getDefaultName(self) -> str:  # noqa: N802
        """``"HardNetDescriptor"``, as OpenCV's algorithms name themselves."""
        return "HardNetDescriptor"

    def detect(
        self, image: ImageLike, mask: np.ndarray | None = None, max_keypoints: int | None = None
    ) -> list[cv2.KeyPoint]:
        """Keypoints from the detector (SIFT by default) on the grey 8-bit image, strongest first.

        Args:
            image: as for ``compute``.
            mask: ``None`` or a uint8/bool ``(H, W)`` array of the image's size, non-zero where
                keypoints may lie; another shape or dtype is refused (``ValueError``/``TypeError``).
            max_keypoints: keep the strongest this many, an integer >= 0; ``None`` (or 0) keeps all
                (``TypeError`` for another type, ``ValueError`` if negative).
        """
        return detect_sift(image, max_keypoints, self._detector, mask)

    def compute(
        self, image: ImageLike | Sequence[ImageLike], keypoints: Any, descriptors: np.ndarray | None = None
    ) -> tuple[Any, Any]:
        """Describe ``keypoints`` of ``image``, with OpenCV's ``Feature2D.compute`` signature.

        Keypoints that cannot be described (size <= 0, or centre outside the image area
        ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``) are removed from the returned keypoints, as OpenCV's
        Feature2D contract says; the descriptors match the returned keypoints row for row. No other
        keypoint is dropped, reordered or added; NaN or inf coordinates raise ``ValueError``.

        Args:
            image: ``(H, W)`` grey or ``(H, W, 3)`` BGR numpy (uint8, uint16 or float), or a torch
                image ``(H, W)``, ``(C, H, W)``, ``(B, C, H, W)`` (RGB or grey, as in kornia), described
                on its device if that is this one (a GPU image never goes to the host). A list of
                images gives OpenCV's batch form: ``keypoints`` is then a list of keypoint lists, and
                the images' patches share network calls (``describe_many``).
            keypoints: ``cv2.KeyPoint`` sequence (``None``: none), ``(N, 4)`` ``(x, y, size, angle_deg)``
                array, ``(N, 2, 3)`` affine frames, or kornia's batched LAFs ``(B, N, 2, 3)`` (LAF ``b``
                of image ``b``; these are described as given). Conventions: ``hardnet_desc.core.patches``.
            descriptors: OpenCV's output argument; accepted for compatibility and not used.

        Returns:
            ``(keypoints, descriptors)``: the describable keypoints (the input itself when all are,
            else the same container type holding the kept ones) and float32 descriptors,
            ``(B, N, 128)`` for batched LAFs, else ``(N, 128)``; a tensor on the image's device for a
            torch image (as kornia's ``LAFDescriptor``), else numpy (copied from this device once, at
            the end). The batch form returns lists.
        """
        if descriptors is not None and not isinstance(descriptors, np.ndarray):
            raise TypeError(
                f"descriptors (OpenCV's output argument) must be None or an array, got {type(descriptors).__name__}"
            )
        if isinstance(image, (list, tuple)) and all(isinstance(i, (np.ndarray, torch.Tensor)) for i in image):
            return self._compute_batch(image, keypoints)
        (keypoints,), (desc,) = self._describe_images([image], [keypoints])
        return keypoints, _output(desc, image)

    def _compute_batch(self, images: Sequence[ImageLike], keypoints: Any) -> tuple[list[Any], list[Any]]:
        if not isinstance(keypoints, (list, tuple)) or len(keypoints) != len(images):
            length = f" of length {len(keypoints)}" if hasattr(keypoints, "__len__") else ""
            raise TypeError(
                f"compute with a list of {len(images)} images needs a list of as many keypoint lists, "
                f"got {type(keypoints).__name__}{length}"
            )
        kept, descs = self._describe_images(images, keypoints)
        return kept, [_output(desc, image) for desc, image in zip(descs, images, strict=True)]

    def _describe_images(
        self, images: Sequence[ImageLike], keypoints: Sequence[Any]
    ) -> tuple[list[Any], list[torch.Tensor]]:
        """``compute`` of several images, their patches sharing network calls (``describe_many``).

        Returns the kept keypoints of each image and its descriptors as a float32 tensor on this
        device: ``(N, 128)``, or ``(B, N, 128)`` for kornia's batched LAFs.
        """
        kept, greys, frames, counts, batched = [], [], [], [], []
        for image, kps in zip(images, keypoints, strict=True):
            if kps is None:  # what cv2 accepts for "no keypoints"
                kps = ()
            elif isinstance(kps, Iterator):
                kps = list(kps)  # a generator can be read once: keep what it gave
            batched.append(getattr(kps, "ndim", 0) == 4 and is_frames(kps))
            if batched[-1]:  # kornia's (B, N, 2, 3): frames[b] belong to image b
                batch = as_frames(kps).to(self.device)
                for b, im in enumerate(split_batch(image, len(batch))):
                    greys.append(to_grey_tensor(im, self.device))
                    check_frames(batch[b], *greys[-1].shape[-2:])  # described as given: all or none
                    frames.append(batch[b])
            else:
                grey = to_grey_tensor(image, self.device)
                f, keep = describable_frames(kps, self.patch_spec, grey.shape[-2], grey.shape[-1])
                if not keep.all():
                    kps = _select(kps, keep)
                greys.append(grey)
                frames.append(f.to(self.device))
            kept.append(kps)
            counts.append(len(greys) - sum(counts))
        descs = describe(self.net, greys, frames, self._settings)  # checked above: the core trusts them
        out, start = [], 0
        for count, lafs in zip(counts, batched, strict=True):
            out.append(torch.stack(descs[start : start + count]) if lafs else descs[start])
            start += count
        return kept, out

    def detectAndCompute(  # noqa: N802
        self,
        image: ImageLike,
        mask: np.ndarray | None = None,
        descriptors: np.ndarray | None = None,
        useProvidedKeypoints: bool = False,  # noqa: N803
    ) -> tuple[list[cv2.KeyPoint], np.ndarray]:
        """``detect`` then ``compute``, with OpenCV's signature.

        ``useProvidedKeypoints=True`` has no keypoints to use in Python (OpenCV's Python binding
        passes none either) and raises ``ValueError``: call ``compute`` with your keypoints.
        """
        if useProvidedKeypoints:
            raise ValueError(
                "useProvidedKeypoints=True: there are no provided keypoints here; call compute(image, keypoints)"
            )
        keypoints = self.detect(image, mask)
        return self.compute(image, keypoints, descriptors)

    # --- the patch regions --------------------------------------------------------------
    def frames(self, keypoints: KeypointsLike) -> torch.Tensor:
        """The affine frames ``(N, 2, 3)`` (on this device) of the patches this descriptor describes.

        kornia's batched LAFs ``(B, N, 2, 3)`` are returned as they are.

        Conventions (and kornia's LAF, which is the same): ``hardnet_desc.core.patches``.
        """
        return keypoints_to_frames(keypoints, self.patch_spec).to(self.device)

    @torch.inference_mode()
    def cut_patches(self, image: ImageLike, keypoints: KeypointsLike) -> torch.Tensor:
        """The ``(N, 1, 32, 32)`` float patches of ``keypoints`` that ``compute`` describes.

        With ``describe_patches`` this splits ``compute`` in two, so the patches of
        several images can share network calls.
        """
        return extract_patches(to_grey_tensor(image, self.device), keypoints, self.patch_spec)

    # --- tensors in, descriptors out --------------------------------------------------------
    @torch.inference_mode()
    def describe_frames(self, grey: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """Descriptors ``(N, 128)`` for affine frames ``(N, 2, 3)`` of a ``(1, 1, H, W)`` grey image.

        ``describe_many`` of one image; the result follows the input as ``compute``'s does for a
        torch image: a float32 tensor on the device of ``grey``.
        """
        return self.describe_many([grey], [frames])[0].to(grey.device)

    @torch.inference_mode()
    def describe_many(self, greys: Sequence[torch.Tensor], frames: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Descriptors of the frames of several images, on this device.

        The frames are checked here, once per image (one read-back from the device each); then
        ``hardnet_desc.core.describe.describe`` runs everything on this device: the pyramids, the
        patches, the network; the host waits for the device once more per image (the level counts
        of ``patches.frame_batches``), never per batch. Off the CPU (``pack``) the patches of
        consecutive images share network calls, so every call but the last is a full
        ``batch_size``; on the CPU each image's batches are its own (results are then the same as
        describing the images one by one; elsewhere they agree to float rounding). An image's
        pyramid is built when its first batch is cut and dropped after its last one.

        Where torch's threads leave a core free (``overlap``), batch ``i + 1``'s patches are cut in
        a worker thread while the network describes batch ``i`` (sampling and convolutions release
        the GIL), so the network does not wait for them. Where the net's threads take every core the
        worker would only compete with them, and the patches are cut before each batch.

        Args:
            greys: ``K`` grey float32 images ``(1, 1, H_k, W_k)`` (``hardnet_desc.core.image.to_grey_tensor``),
                moved to this device if elsewhere.
            frames: ``K`` float affine frames ``(N_k, 2, 3)`` in pixels of image ``k``
                (``frames(keypoints)``; conventions in ``hardnet_desc.core.patches``).

        Returns:
            ``K`` float32 tensors ``(N_k, 128)`` on this device, unit L2 rows in frame order.

        Raises:
            ValueError: a frame centre outside its image, NaN or inf in the frames or the images, frames
                not ``(N, 2, 3)``, or lists of different lengths.
            TypeError: an image that is not a float tensor ``(1, 1, H, W)``, or keypoints for frames.
        """
        if len(greys) != len(frames):
            raise ValueError(f"{len(greys)} images and {len(frames)} frame sets: give one frame set per image")
        moved = []
        for grey, f in zip(greys, frames, strict=True):
            if not isinstance(grey, torch.Tensor) or not grey.is_floating_point() or grey.dim() != 4 \
                    or grey.shape[:2] != (1, 1):
                got = f"{grey.dtype} {tuple(grey.shape)}" if isinstance(grey, torch.Tensor) else type(grey).__name__
                raise TypeError(f"grey images must be float tensors (1, 1, H, W) (to_grey_tensor(image)), got {got}")
            if isinstance(f, (list, tuple)) and f and isinstance(f[0], cv2.KeyPoint):
                raise TypeError("frames must be affine frames (N, 2, 3), got cv2.KeyPoint objects: use "
                                "frames(keypoints)")
            grey, f = grey.to(self.device, torch.float32), as_frames(f).to(self.device)
            peak = check_frames(f, grey.shape[-2], grey.shape[-1], grey)
            if outside_tame_range(peak):  # as compute's images: see to_grey_tensor
                grey = tame_tensor(grey, torch.tensor(peak, device=grey.device))
            moved.append((grey, f))
        return describe(self.net, [g for g, _ in moved], [f for _, f in moved], self._settings)

    def describe_patches(self, patches: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Describe ready-made patches.

        Args:
            patches: ``(N, H, W)`` or ``(N, 1, H, W)``, any numeric dtype and range; other sizes
                than 32x32 (e.g. HPatches' 65x65) are resized with area averaging.

        Returns:
            ``(N, 128)`` float32, numpy for numpy input and a tensor (on this device) for a tensor.
        """
        return describe_patches(self.net, patches, device=self.device, batch_size=self.batch_size,
                                precision=self.precision)


def _output(desc: torch.Tensor, image: ImageLike) -> np.ndarray | torch.Tensor:
    """Descriptors as ``compute`` returns them: on the image's device for a torch image (kornia's
    convention), else numpy (the one copy to the host)."""
    if isinstance(image, torch.Tensor):
        return desc.to(image.device)
    return desc.cpu().numpy()


def _select(keypoints: Any, keep: np.ndarray) -> Any:
    """The kept entries of ``keypoints``, in the same container type (array, tensor, tuple or list)."""
    if isinstance(keypoints, torch.Tensor):
        return keypoints[torch.from_numpy(keep).to(keypoints.device)]
    if isinstance(keypoints, np.ndarray):
        return keypoints[keep]
    kept = [k for k, ok in zip(keypoints, keep.tolist(), strict=True) if ok]
    return tuple(kept) if isinstance(keypoints, tuple) else kept
