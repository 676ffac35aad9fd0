"""SIFT keypoints + HardNet descriptors for folders of images, stored as hloc feature files.

Layout of the HDF5 file (the one ``hloc.extract_features`` writes, so hloc's matchers,
``pairs_from_*`` and reconstruction read it as is): one group per image, named by the image
path relative to the folder (``"sub/img.jpg"``; ``/`` makes nested groups), holding

| dataset       | shape, dtype     | content                                                       |
|---------------|------------------|---------------------------------------------------------------|
| `keypoints`   | (N, 2) float32   | `(x, y)` pixels, OpenCV convention (see below)                |
| `descriptors` | (128, N) float32 | unit-norm HardNet descriptors, **transposed** as in hloc      |
| `scores`      | (N,) float32     | SIFT response (`kp.response`)                                 |
| `scales`      | (N,) float32     | `kp.size`, the keypoint diameter in pixels                    |
| `oris`        | (N,) float32     | `kp.angle` in **radians** (LightGlue's SIFT convention)       |
| `image_size`  | (2,) int64       | `(width, height)`                                             |

Keypoints are sorted strongest first, with the centre of the top-left pixel at `(0, 0)`, as in
hloc's files (hloc adds 0.5 when it hands them to COLMAP). The file's attributes record the
descriptor, the weights (and their sha256) and the patch scale.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch

from .image import read_image, to_grey_tensor, to_uint8
from .patches import extract_patches, keypoints_to_frames

if TYPE_CHECKING:
    import h5py

    from .descriptor import HardNetDescriptor

#: Datasets of one image's group, in the order they are written.
FEATURE_KEYS = ("keypoints", "descriptors", "scores", "scales", "oris", "image_size")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp"}


def detect_sift(
    image: np.ndarray, max_keypoints: int | None = None, detector: cv2.Feature2D | None = None
) -> list[cv2.KeyPoint]:
    """SIFT keypoints sorted by response, strongest first, at most ``max_keypoints``.

    Args:
        image: any image :func:`hardnet_desc.image.to_uint8` accepts (BGR or grey).
        max_keypoints: keep the strongest this many; ``None`` keeps all.
        detector: a ``cv2.Feature2D``; default ``cv2.SIFT_create()``.
    """
    detector = detector if detector is not None else cv2.SIFT_create()
    kps = sorted(detector.detect(to_uint8(image), None), key=lambda k: -k.response)
    return kps[:max_keypoints] if max_keypoints else kps


def list_images(folder: str | Path) -> list[Path]:
    """Image files below ``folder`` (recursive), sorted. Raises ``FileNotFoundError``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such image folder: {folder}")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def feature_names(h5: h5py.File) -> set[str]:
    """Names of the complete image groups in an open ``h5py.File``."""
    import h5py

    names: set[str] = set()

    def visit(name: str, obj) -> None:
        if isinstance(obj, h5py.Group) and all(k in obj for k in FEATURE_KEYS):
            names.add(name)

    h5.visititems(visit)
    return names


def write_features(h5: h5py.File, name: str, keypoints: Sequence[cv2.KeyPoint], descriptors: np.ndarray,
                   image_size: tuple[int, int]) -> None:
    """Write one image's group (replacing a partial one) in the layout of the module docstring.

    Args:
        h5: an ``h5py.File`` open for writing.
        name: group name, the image path relative to the folder.
        keypoints: N OpenCV keypoints.
        descriptors: (N, 128) float32, stored transposed.
        image_size: ``(width, height)``.
    """
    if name in h5:
        del h5[name]  # a group left half-written by an interrupted run
    kp = np.array([(k.pt[0], k.pt[1], k.response, k.size, k.angle) for k in keypoints], np.float32).reshape(-1, 5)
    group = h5.create_group(name)
    group["keypoints"] = kp[:, :2]
    group["descriptors"] = np.ascontiguousarray(np.asarray(descriptors, np.float32).T)
    group["scores"] = kp[:, 2]
    group["scales"] = kp[:, 3]
    group["oris"] = np.deg2rad(kp[:, 4])
    group["image_size"] = np.asarray(image_size, np.int64)  # written last: marks the group complete


def read_features(path: str | Path, name: str) -> dict[str, np.ndarray]:
    """One image's datasets as numpy arrays (``descriptors`` as stored, (128, N))."""
    import h5py

    with h5py.File(path, "r") as h5:
        return {k: h5[name][k][()] for k in FEATURE_KEYS}


def weights_fingerprint(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 of a state dict's tensors (names and values), to tell weight sets apart."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        digest.update(key.encode())
        digest.update(state_dict[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass
class ExtractReport:
    """What :func:`extract_folder` did. ``failed`` holds ``(image name, one-line reason)``."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def extract_folder(
    images: str | Path,
    out: str | Path,
    descriptor: HardNetDescriptor,
    *,
    max_keypoints: int | None = 4096,
    batch_images: int = 8,
    progress: bool = True,
    on_error: Callable[[str, str], None] | None = None,
) -> ExtractReport:
    """Detect, describe and store every image below ``images`` into the HDF5 file ``out``.

    Resumable: images already complete in ``out`` are skipped. The patches of
    ``batch_images`` images go through the network together. An image that cannot be read or
    described is reported (``on_error(name, reason)``) and the others are still done.

    Args:
        images: folder searched recursively.
        out: HDF5 file, created or appended to.
        descriptor: a :class:`~hardnet_desc.HardNetDescriptor`.
        max_keypoints: strongest SIFT keypoints kept per image (``None``: all).
        batch_images: images per network call.
    """
    import h5py
    from tqdm import tqdm

    root = Path(images)
    names = [p.relative_to(root).as_posix() for p in list_images(root)]
    report = ExtractReport()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        h5file = h5py.File(out, "a")
    except OSError as err:
        raise OSError(f"cannot open {out} as an HDF5 file ({err})") from None
    with h5file as h5:
        have = feature_names(h5)
        todo = [n for n in names if n not in have]
        report.skipped = [n for n in names if n in have]
        attrs = {"descriptor": "HardNet", "detector": "OpenCV SIFT", "weights": str(descriptor.weights.source),
                 "weights_sha256": weights_fingerprint(descriptor.weights.state_dict),
                 "patch_scale": descriptor.patch_scale}
        if "weights_sha256" in h5.attrs and (h5.attrs["weights_sha256"], h5.attrs["patch_scale"]) != (
            attrs["weights_sha256"], attrs["patch_scale"]
        ):  # resuming with other weights would mix two descriptor spaces in one file
            raise ValueError(f"{out} holds features from other weights ({h5.attrs['weights']}); "
                             "use the same --weights or another --out")
        h5.attrs.update(attrs)
        bar = tqdm(total=len(todo), desc="extract", unit="img", disable=not progress)
        for start in range(0, len(todo), max(1, batch_images)):
            batch = todo[start : start + max(1, batch_images)]
            ready = []  # (name, keypoints, patches, (w, h))
            for name in batch:
                try:
                    image = read_image(root / name)
                    kps = detect_sift(image, max_keypoints, descriptor.detector)
                    grey = to_grey_tensor(image, descriptor.device)
                    patches = extract_patches(grey, keypoints_to_frames(kps, descriptor.patch_scale))
                    ready.append((name, kps, patches, (image.shape[1], image.shape[0])))
                except (OSError, ValueError, cv2.error) as err:
                    reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
                    report.failed.append((name, reason))
                    if on_error is not None:
                        on_error(name, reason)
            if ready:
                # One pass of the network over the patches of the whole batch.
                desc = descriptor.describe_patches(torch.cat([r[2] for r in ready]))
                split = np.cumsum([len(r[1]) for r in ready])[:-1]
                for (name, kps, _, size), d in zip(ready, np.split(desc.cpu().numpy(), split)):
                    write_features(h5, name, kps, d, size)
                    report.done.append(name)
                h5.flush()  # an interrupted run keeps every finished batch
            bar.update(len(batch))
        bar.close()
    return report

