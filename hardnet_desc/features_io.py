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
descriptor, the weights (and their sha256), the patch scale and the keypoint budget
(``max_keypoints``, 0 for all); a file without them (made by another tool), or with other
values, is never appended to.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch

from .data.images import list_images
from .detection import DEFAULT_MAX_KEYPOINTS
from .image import read_image
from .model import DESCRIPTOR_DIM

if TYPE_CHECKING:
    import h5py

    from .descriptor import HardNetDescriptor

#: Datasets of one image's group, in the order they are written.
FEATURE_KEYS = ("keypoints", "descriptors", "scores", "scales", "oris", "image_size")


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
        descriptors: (N, 128) float32, one row per keypoint, stored transposed.
        image_size: ``(width, height)``.

    Raises:
        ValueError: ``descriptors`` is not ``(N, 128)`` with N the number of keypoints (checked before
            anything is written).
    """
    keypoints = list(keypoints)
    shape = np.shape(descriptors)
    if shape != (len(keypoints), DESCRIPTOR_DIM):
        raise ValueError(f"{name}: descriptors have shape {shape}, expected (N, {DESCRIPTOR_DIM}) with N = "
                         f"{len(keypoints)} keypoints, one row each (not transposed: the file stores them transposed)")
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


def image_names(folder: str | Path) -> list[str]:
    """The images below ``folder`` as group names: paths relative to it, with ``/``, sorted."""
    root = Path(folder)
    return [p.relative_to(root).as_posix() for p in list_images(root)]


def file_attrs(descriptor: HardNetDescriptor, max_keypoints: int | None = None) -> dict[str, str | float | int]:
    """The attributes a feature file records about how its features were made (``max_keypoints``: 0 for all)."""
    return {"descriptor": "HardNet", "detector": "OpenCV SIFT", "weights": str(descriptor.weights.source),
            "weights_sha256": descriptor.weights.fingerprint, "patch_scale": descriptor.patch_scale,
            "min_kp_size": descriptor.min_kp_size, "max_keypoints": int(max_keypoints or 0)}


def claim_file(h5: h5py.File, attrs: dict[str, Any], path: str | Path) -> None:
    """Record ``attrs`` in an open feature file.

    Raises ``ValueError`` if the file holds data written by another tool (no hardnet-desc
    attributes), or features of other weights, patch scale, minimum keypoint size or keypoint budget: resuming or
    merging would mix features of two kinds in one file.
    """
    if (len(h5) or len(h5.attrs)) and h5.attrs.get("descriptor") != "HardNet":
        raise ValueError(f"{path} holds data written by another tool (no hardnet-desc attributes); "
                         "extract only adds to its own files: choose another --out")
    if "weights_sha256" in h5.attrs and (
        h5.attrs["weights_sha256"], h5.attrs["patch_scale"], float(h5.attrs.get("min_kp_size", 0.0))
    ) != (attrs["weights_sha256"], attrs["patch_scale"], attrs["min_kp_size"]):
        raise ValueError(f"{path} holds features from other weights or patch geometry ({h5.attrs['weights']}, "
                         f"patch_scale {h5.attrs['patch_scale']}, min_kp_size {h5.attrs.get('min_kp_size', 0.0)}); "
                         "use the same --weights or another --out")
    budget = attrs.get("max_keypoints")
    if len(h5) and budget is not None and int(h5.attrs.get("max_keypoints", budget)) != int(budget):
        raise ValueError(f"{path} was extracted with --max-keypoints {int(h5.attrs['max_keypoints'])} (0: all); "
                         f"use the same budget or another --out, not {int(budget)}")
    h5.attrs.update(attrs)


@dataclass
class ExtractReport:
    """What ``extract_folder`` did. ``failed`` holds ``(image name, one-line reason)``."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def extract_folder(
    images: str | Path,
    out: str | Path,
    descriptor: HardNetDescriptor,
    *,
    max_keypoints: int | None = DEFAULT_MAX_KEYPOINTS,
    batch_images: int = 8,
    progress: bool = True,
    on_error: Callable[[str, str], None] | None = None,
    names: Sequence[str] | None = None,
) -> ExtractReport:
    """Detect, describe and store every image below ``images`` into the HDF5 file ``out``.

    Resumable: images already complete in ``out`` are skipped. The patches of
    ``batch_images`` images go through the network together. An image that cannot be read or
    described is reported (``on_error(name, reason)``) and the others are still done.

    Args:
        images: folder searched recursively.
        out: HDF5 file, created or appended to.
        descriptor: a ``HardNetDescriptor``.
        max_keypoints: strongest SIFT keypoints kept per image (``None``: all).
        batch_images: images per network call.
        names: only these images (paths relative to ``images``, as ``image_names`` gives them);
            default: every image below ``images``.
    """
    import h5py
    from tqdm import tqdm

    root = Path(images)
    names = image_names(root) if names is None else list(names)
    report = ExtractReport()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        h5file = h5py.File(out, "a")
    except OSError as err:
        raise OSError(f"cannot open {out} as an HDF5 file ({err})") from None
    with h5file as h5:
        claim_file(h5, file_attrs(descriptor, max_keypoints), out)
        have = feature_names(h5)
        todo = [n for n in names if n not in have]
        report.skipped = [n for n in names if n in have]
        bar = tqdm(total=len(todo), desc="extract", unit="img", disable=not progress)
        step = max(1, batch_images)
        for start in range(0, len(todo), step):
            batch = todo[start : start + step]
            ready = _cut_batch(root, batch, descriptor, max_keypoints, report, on_error, lambda: bar.update(1))
            if ready:
                # One pass of the network over the patches of the whole batch.
                desc = descriptor.describe_patches(torch.cat([r[2] for r in ready]))
                split = np.cumsum([len(r[1]) for r in ready])[:-1]
                for (name, kps, _, size), d in zip(ready, np.split(desc.cpu().numpy(), split)):
                    write_features(h5, name, kps, d, size)
                    report.done.append(name)
                h5.flush()  # an interrupted run keeps every finished batch
        bar.close()
    return report


def _cut_batch(
    root: Path,
    names: Sequence[str],
    descriptor: HardNetDescriptor,
    max_keypoints: int | None,
    report: ExtractReport,
    on_error: Callable[[str, str], None] | None,
    tick: Callable[[], None] = lambda: None,
) -> list[tuple[str, list[cv2.KeyPoint], torch.Tensor, tuple[int, int]]]:
    """Read, detect and cut the patches of each image: ``(name, keypoints, patches, (w, h))``.

    An image that fails is added to ``report.failed`` (and passed to ``on_error``) and left out.
    ``tick()`` is called after each image (the progress bar).
    """
    ready = []
    for name in names:
        try:
            image = read_image(root / name)
            kps = descriptor.detect(image, max_keypoints=max_keypoints)
            ready.append((name, kps, descriptor.cut_patches(image, kps), (image.shape[1], image.shape[0])))
        except (OSError, ValueError, cv2.error) as err:
            reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            report.failed.append((name, reason))
            if on_error is not None:
                on_error(name, reason)
        tick()
    return ready
