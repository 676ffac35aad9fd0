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

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from itertools import islice
from multiprocessing import get_all_start_methods, get_context
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import cv2
import numpy as np
import torch

from ..data.images import list_images
from ..detection import DEFAULT_MAX_KEYPOINTS, check_max_keypoints, detect_sift
from ..core.device import usable_cpus
from ..core.image import read_image, to_grey_numpy, to_grey_tensor
from ..core.model import DESCRIPTOR_DIM
from ..core.describe import describe
from ..core.patches import PatchSpec, check_inside, check_integer, keypoints_to_frames
from ..outputs import check_output
from ..workers import WorkerPool

if TYPE_CHECKING:
    import h5py

    from ..descriptor import HardNetDescriptor

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


def write_features(h5: h5py.File, name: str, keypoints: Sequence[cv2.KeyPoint] | np.ndarray,
                   descriptors: np.ndarray, image_size: tuple[int, int]) -> None:
    """Write one image's group (replacing a partial one) in the layout of the module docstring.

    Args:
        h5: an ``h5py.File`` open for writing.
        name: group name, the image path relative to the folder.
        keypoints: N OpenCV keypoints, or their ``(N, >= 5)`` rows ``(x, y, size, angle, response, ...)``
            (``keypoint_rows``).
        descriptors: (N, 128) float32, one row per keypoint, stored transposed.
        image_size: ``(width, height)``.

    Raises:
        ValueError: ``descriptors`` is not ``(N, 128)`` with N the number of keypoints, keypoint rows of another
            shape, NaN or inf in either, an ``image_size`` that is not two positive integers, or a ``name`` that
            is no group path (checked before anything is written).
    """
    if isinstance(keypoints, torch.Tensor) or (isinstance(keypoints, (list, tuple)) and keypoints
                                               and not isinstance(keypoints[0], cv2.KeyPoint)):
        keypoints = np.asarray(keypoints.cpu() if isinstance(keypoints, torch.Tensor) else keypoints, np.float64)
    rows = keypoints if isinstance(keypoints, np.ndarray) else keypoint_rows(keypoints)
    if rows.ndim != 2 or rows.shape[1] < 5:
        raise ValueError(f"{name}: keypoint rows have shape {rows.shape}, expected (N, >= 5) = "
                         "(x, y, size, angle, response, ...)")
    shape = np.shape(descriptors)
    if shape != (len(rows), DESCRIPTOR_DIM):
        raise ValueError(f"{name}: descriptors have shape {shape}, expected (N, {DESCRIPTOR_DIM}) with N = "
                         f"{len(rows)} keypoints, one row each (not transposed: the file stores them transposed)")
    if not (np.isfinite(rows[:, :5]).all() and np.isfinite(descriptors).all()):
        raise ValueError(f"{name}: keypoints or descriptors contain NaN or inf")
    size = np.asarray(image_size)
    if size.shape != (2,) or size.dtype.kind not in "iu" or (size < 1).any():
        raise ValueError(f"{name}: image_size must be (width, height), two integers >= 1, got {image_size!r}")
    if not name.strip("/") or "//" in name or name.startswith("/"):
        raise ValueError(f"image name {name!r} is no group path (a relative path such as 'a/b.jpg')")
    if name in h5:
        del h5[name]  # a group left half-written by an interrupted run
    kp = rows[:, :5].astype(np.float32)  # x, y, size, angle, response: float32 as cv2.KeyPoint holds them
    group = h5.create_group(name)
    group["keypoints"] = kp[:, :2]
    group["descriptors"] = np.ascontiguousarray(np.asarray(descriptors, np.float32).T)
    group["scores"] = kp[:, 4]
    group["scales"] = kp[:, 2]
    group["oris"] = np.deg2rad(kp[:, 3])
    group["image_size"] = np.asarray(image_size, np.int64)  # written last: marks the group complete


def keypoint_rows(keypoints: Sequence[cv2.KeyPoint]) -> np.ndarray:
    """OpenCV keypoints as float64 rows ``(N, 7)`` of ``(x, y, size, angle, response, octave, class_id)``:
    exact (float64 holds every float32 and int32 field), picklable, and the first four columns are
    the ``(N, 4)`` keypoint array of ``hardnet_desc.core.patches``."""
    rows = [(*k.pt, k.size, k.angle, k.response, k.octave, k.class_id) for k in keypoints]
    return np.array(rows, np.float64).reshape(-1, 7)


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
    """The attributes a feature file records about how its features were made (``max_keypoints``: 0 for all).

    The patch geometry as ``PatchSpec.to_metadata`` names it, stored as numbers (HDF5 float attributes).
    """
    spec = {key: float(value) for key, value in descriptor.patch_spec.to_metadata().items()}
    return {"descriptor": "HardNet", "detector": "OpenCV SIFT", "weights": str(descriptor.weights.source),
            "weights_sha256": descriptor.weights.fingerprint, **spec, "max_keypoints": int(max_keypoints or 0)}


def claim_file(h5: h5py.File, attrs: dict[str, Any], path: str | Path) -> None:
    """Record ``attrs`` in an open feature file.

    Raises ``ValueError`` if the file holds data written by another tool (no hardnet-desc
    attributes), or features of other weights, patch scale, minimum keypoint size or keypoint budget: resuming or
    merging would mix features of two kinds in one file.
    """
    if (len(h5) or len(h5.attrs)) and h5.attrs.get("descriptor") != "HardNet":
        raise ValueError(f"{path} holds data written by another tool (no hardnet-desc attributes); "
                         "extract only adds to its own files: choose another --out")
    if "weights_sha256" in h5.attrs:
        theirs = PatchSpec.from_metadata(h5.attrs, source=str(path))  # files from before min_kp_size: 0
        if (h5.attrs["weights_sha256"], theirs) != (attrs["weights_sha256"], PatchSpec.from_metadata(attrs)):
            raise ValueError(f"{path} holds features from other weights or patch geometry ({h5.attrs['weights']}, "
                             f"patch_scale {theirs.scale}, min_kp_size {theirs.min_kp_size}); "
                             "use the same --weights or another --out")
    budget = attrs.get("max_keypoints")
    if len(h5) and budget is not None and int(h5.attrs.get("max_keypoints", budget)) != int(budget):
        raise ValueError(f"{path} was extracted with --max-keypoints {int(h5.attrs['max_keypoints'])} (0: all); "
                         f"use the same budget or another --out, not {int(budget)}")
    h5.attrs.update(attrs)


def is_features_file_ours(path: str | Path) -> bool:
    """Whether an extraction may add to ``path``: an HDF5 file holding hardnet-desc's attributes (``file_attrs``;
    ``claim_file`` then checks its settings), or one that holds nothing to lose (0 bytes, or an HDF5 file with
    no data and no attributes). Another tool's HDF5 file, or any other file, is not."""
    import h5py

    if Path(path).stat().st_size == 0:
        return True
    try:
        with h5py.File(path, "r") as h5:
            return h5.attrs.get("descriptor") == "HardNet" or not (len(h5) or len(h5.attrs))
    except OSError:  # not an HDF5 file
        return False


def check_features_out(out: str | Path, force: bool = False) -> bool:
    """Before any work: raise unless features may go into ``out`` (``check_output``): it is missing, ours
    (``is_features_file_ours``) or ``force`` is given. Returns whether ``out`` is to be replaced: a file we did not
    write, with ``force``."""
    out = check_output(out, is_features_file_ours, force=force)
    return force and out.exists() and not is_features_file_ours(out)


@dataclass
class ExtractReport:
    """What ``extract_folder`` did. ``failed`` holds ``(image name, one-line reason)``."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def default_workers(device: torch.device) -> int:
    """How many processes ``extract_folder`` reads and detects in by default: on a GPU every CPU
    core but the describing process's one (the network waits for SIFT otherwise); on the CPU none,
    since the network's threads already use the cores."""
    return 0 if device.type == "cpu" else max(1, usable_cpus() - 1)


def extract_folder(
    images: str | Path,
    out: str | Path,
    descriptor: HardNetDescriptor,
    *,
    max_keypoints: int | None = DEFAULT_MAX_KEYPOINTS,
    batch_images: int = 8,
    workers: int | None = None,
    progress: bool = True,
    on_error: Callable[[str, str], None] | None = None,
    names: Sequence[str] | None = None,
    force: bool = False,
) -> ExtractReport:
    """Detect, describe and store every image below ``images`` into the HDF5 file ``out``.

    Resumable: images already complete in ``out`` are skipped, and each batch of images is
    flushed to ``out`` once written. ``batch_images`` images are described together
    (``HardNetDescriptor.describe_many``: off the CPU their patches share network calls; on the
    CPU each image's batches are its own, so the file holds ``compute``'s descriptors), and a
    batch is written while the device describes the next. An image that cannot be read or
    described is reported (``on_error(name, reason)``) and the others are still done.

    With ``workers`` > 0, that many processes (started fresh, not forked from this one, and using
    only OpenCV and numpy, so a CUDA descriptor is safe) read the images and detect their SIFT
    keypoints while this process describes and writes them, in order. At most
    ``batch_images + 2 * workers`` images are read ahead (memory stays bounded). The file is the
    same for any ``workers``. A script that calls this with workers must guard its entry point
    with ``if __name__ == "__main__":``, as for any spawned process.

    Args:
        images: folder searched recursively.
        out: HDF5 file, created or appended to.
        descriptor: a ``HardNetDescriptor``; with workers, one with the default SIFT detector.
        max_keypoints: strongest SIFT keypoints kept per image (``None``: all).
        batch_images: images described together.
        workers: reading and detecting processes; 0: all in this process; ``None``:
            ``default_workers(descriptor.device)``.
        names: only these images (paths relative to ``images``, as ``image_names`` gives them);
            default: every image below ``images``.
        force: replace ``out`` if hardnet-desc did not write it (an empty file included); without it such a
            file is refused (``check_features_out``).
    """
    import h5py
    from tqdm import tqdm

    check_max_keypoints(max_keypoints)
    workers = _check_workers(descriptor, workers)
    replace = check_features_out(out, force)
    root = Path(images)
    names = image_names(root) if names is None else list(names)
    report = ExtractReport()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        h5file = h5py.File(out, "w" if replace else "a")
    except OSError as err:
        raise OSError(f"cannot open {out} as an HDF5 file ({err})") from None
    with h5file as h5:
        claim_file(h5, file_attrs(descriptor, max_keypoints), out)
        todo = plan_extraction(names, feature_names(h5), report, on_error)
        step = max(1, batch_images)
        detected = _detected(root, todo, descriptor, max_keypoints, workers, ahead=step + 2 * workers)
        with tqdm(total=len(todo), desc="extract", unit="img", disable=not progress) as bar:

            def write(ready: list[_Ready], descs: Callable[[], list[np.ndarray]]) -> None:
                for (name, rows, _, grey), desc in zip(ready, descs(), strict=True):
                    write_features(h5, name, rows, desc, (grey.shape[-1], grey.shape[-2]))
                    report.done.append(name)
                    bar.update(1)
                h5.flush()  # an interrupted run keeps every written batch

            described: tuple[list[_Ready], Callable[[], list[np.ndarray]]] = ([], lambda: [])
            try:
                for start in range(0, len(todo), step):
                    batch = [next(detected) for _ in todo[start : start + step]]
                    ready = _checked_batch(batch, descriptor, report, on_error, lambda: bar.update(1))
                    # checked per image in _checked_batch: the core describes them as they are
                    descs = describe(descriptor.net, [r[3] for r in ready], [r[2] for r in ready], descriptor.settings)
                    copy = _to_host(descs)
                    write(*described)  # the previous batch, while the device describes this one
                    described = (ready, copy)
                write(*described)
            finally:
                detected.close()  # stops the workers
    return report


def plan_extraction(names: Sequence[str], have: set[str], report: ExtractReport,
                    on_error: Callable[[str, str], None] | None) -> list[str]:
    """The ``names`` still to extract; those already in the file (``have``) go to ``report.skipped``, and
    those no HDF5 key can hold (not valid UTF-8) to ``report.failed`` and ``on_error``."""
    todo = []
    for name in names:
        if name in have:
            report.skipped.append(name)
            continue
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            report.failed.append((name, why := "its file name is not valid UTF-8, which an HDF5 key must be"))
            if on_error is not None:
                on_error(name, why)
            continue
        todo.append(name)
    return todo


#: What makes one image fail (reported, the others go on); anything else stops the extraction.
_IMAGE_ERRORS = (OSError, ValueError, cv2.error)

#: ``(name, (grey image, keypoint rows) or the one-line reason it failed)``, from ``_detected``; rows as
#: ``keypoint_rows`` makes them.
_Detected = tuple[str, Union[tuple[np.ndarray, np.ndarray], str]]

#: An image ready to describe: ``(name, keypoint rows, frames (N, 2, 3) on the host, grey (1, 1, H, W) on the
#: descriptor's device)``.
_Ready = tuple[str, np.ndarray, torch.Tensor, torch.Tensor]


def _check_workers(descriptor: HardNetDescriptor, workers: int | None) -> int:
    """``workers`` checked, ``None`` resolved: workers detect with OpenCV's default SIFT only."""
    own_detector = descriptor._own_detector  # a custom cv2.Feature2D cannot be sent to a process
    if workers is None:
        return default_workers(descriptor.device) if own_detector else 0
    check_integer(workers, "workers", 0)
    if workers and not own_detector:
        raise ValueError("workers detect with OpenCV's default SIFT; this descriptor has its own detector: "
                         "use workers=0")
    return int(workers)


def _detected(
    root: Path, names: Sequence[str], descriptor: HardNetDescriptor, max_keypoints: int | None, workers: int,
    ahead: int,
) -> Iterator[_Detected]:
    """Each of ``names`` read and detected, in order: here (``workers=0``, with the descriptor's
    detector) or in ``workers`` processes, at most ``ahead`` images before the consumer."""
    if not workers:
        for name in names:
            try:
                grey = to_grey_numpy(read_image(root / name))
                found: tuple[np.ndarray, np.ndarray] | str = (
                    grey, keypoint_rows(descriptor.detect(grey, max_keypoints=max_keypoints)))
            except _IMAGE_ERRORS as err:
                found = _reason(err)
            yield name, found
        return
    with WorkerPool(workers, _init_worker, context=_worker_context()) as pool:
        pending: deque[tuple[str, Future]] = deque()
        queue = iter(names)
        for name in islice(queue, ahead):
            pending.append((name, pool.submit(_read_and_detect, str(root / name), max_keypoints)))
        while pending:
            name, job = pending.popleft()
            for later in islice(queue, 1):
                pending.append((later, pool.submit(_read_and_detect, str(root / later), max_keypoints)))
            yield name, job.result()


def _worker_context() -> BaseContext:
    """How worker processes start: forked from a fresh server process that imported this module once
    (``forkserver``: no CUDA state, and torch is imported once, not per worker), else spawned."""
    if "forkserver" in get_all_start_methods():
        context = get_context("forkserver")
        context.set_forkserver_preload([__name__])
        return context
    return get_context("spawn")


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one core per worker: the workers are the parallelism


def _read_and_detect(path: str, max_keypoints: int | None) -> tuple[np.ndarray, np.ndarray] | str:
    """In a worker process (OpenCV and numpy only): the grey image and its SIFT keypoints as
    ``keypoint_rows`` (``cv2.KeyPoint`` does not pickle), or the reason it failed."""
    try:
        grey = to_grey_numpy(read_image(path))
        return grey, keypoint_rows(detect_sift(grey, max_keypoints))
    except _IMAGE_ERRORS as err:
        return _reason(err)


def _reason(err: BaseException) -> str:
    """One line saying why an image failed."""
    return str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__


def _to_host(descs: list[torch.Tensor]) -> Callable[[], list[np.ndarray]]:
    """Start copying descriptors to the host; the function returned waits for them and gives them as numpy.

    On CUDA the copy is queued behind the work launched so far (into pinned memory, one copy for the
    batch), so waiting for it later does not wait for work launched after it.
    """
    if not descs or descs[0].device.type != "cuda":
        return lambda: [d.cpu().numpy() for d in descs]
    host = torch.cat(descs).to("cpu", non_blocking=True)
    copied = torch.cuda.Event()
    copied.record(torch.cuda.current_stream(descs[0].device))  # the stream the copy went to (any cuda:N)
    split = np.cumsum([len(d) for d in descs])[:-1]

    def wait() -> list[np.ndarray]:
        copied.synchronize()
        return np.split(host.numpy(), split)

    return wait


def _checked_batch(
    batch: Sequence[_Detected],
    descriptor: HardNetDescriptor,
    report: ExtractReport,
    on_error: Callable[[str, str], None] | None,
    tick: Callable[[], None] = lambda: None,
) -> list[_Ready]:
    """The images of a batch that ``describe`` can describe: their frames made and checked once
    (``describe_many``'s checks, so one bad image fails alone) and, with their grey images, sent to the device.

    An image that failed (here or before) is added to ``report.failed`` (and passed to
    ``on_error``) and left out; ``tick()`` is called for it (the progress bar).
    """
    ready = []
    for name, found in batch:
        if not isinstance(found, str):
            grey, rows = found
            try:
                frames = keypoints_to_frames(rows[:, :4], descriptor.patch_spec)  # finite, on the host
                check_inside(frames, *grey.shape[:2])
                ready.append((name, rows, frames.to(descriptor.device), to_grey_tensor(grey, descriptor.device)))
                continue
            except _IMAGE_ERRORS as err:
                found = _reason(err)
        report.failed.append((name, found))
        if on_error is not None:
            on_error(name, found)
        tick()
    return ready
