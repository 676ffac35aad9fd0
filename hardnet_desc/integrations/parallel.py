"""Extraction spread over local processes or a Ray cluster, into one hloc-layout HDF5 file.

Every worker holds one ``HardNetDescriptor`` and runs
``extract_folder`` on its share of the images, writing its own
shard ``OUT.parts/part-<pid>-<8 hex>.h5`` in the layout of ``hardnet_desc.integrations.hloc``, marked as
a shard of ``OUT`` by its ``SHARD_MARK`` attribute. When all are done the shards are merged into
``OUT`` and removed. Resumable: shards left by an interrupted run are merged first, and images
already in ``OUT`` are skipped. Only files named and marked as our shards are ever merged or
deleted; anything else in ``OUT.parts/`` is left as it is, with a warning. The descriptors are those of the
single-process path (the same code describes every image).

Backends:

* ``"processes"``: ``workers`` local processes (spawned), each with ``cpus // workers`` torch threads.
* ``"ray"``: Ray Data ``map_batches`` over the image names with an actor pool of ``workers`` actors
  (default: one per GPU of the cluster, else one per CPU); each actor loads the weights once. The
  image folder and ``OUT``'s folder must be reachable under the same paths from every node (a shared
  file system), and ``weights`` a bundled name, ``hf://`` address or a path on that file system.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import uuid
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import as_completed
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..detection import DEFAULT_MAX_KEYPOINTS, check_max_keypoints
from .hloc import (ExtractReport, check_features_out, claim_file, extract_folder, feature_names, file_attrs,
                   image_names, plan_extraction)
from ..core.device import choose_precision, resolve_device
from ..core.weights import DEFAULT_WEIGHTS
from ..workers import WorkerPool

BACKENDS = ("processes", "ray")
#: The attribute that marks a shard as one a worker wrote for the output file it names (``OUT``'s name).
SHARD_MARK = "hardnet_desc_shard_of"
_SHARD_NAME = re.compile(r"part-\d+-[0-9a-f]{8}\.h5")


def parts_folder(out: str | Path) -> Path:
    """Where the shards of ``out`` are written: ``OUT.parts/`` next to it."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


def start_shard(out: str | Path, attrs: dict[str, Any]) -> Path:
    """Create a new, empty shard of ``out`` in ``OUT.parts/`` (made if needed), named
    ``part-<pid>-<8 hex>.h5`` and marked with ``SHARD_MARK``, holding the feature file ``attrs``
    (``file_attrs``) so that ``extract_folder`` may fill it."""
    import h5py

    parts = parts_folder(out)
    parts.mkdir(parents=True, exist_ok=True)
    shard = parts / f"part-{os.getpid()}-{uuid.uuid4().hex[:8]}.h5"
    with h5py.File(shard, "w-") as h5:
        h5.attrs.update({**attrs, SHARD_MARK: Path(out).name})
    return shard


def _is_shard_of(path: Path, out: Path) -> bool:
    """True if ``path`` is named and marked as a shard of ``out`` (``start_shard``)."""
    import h5py

    if not _SHARD_NAME.fullmatch(path.name):
        return False
    try:
        with h5py.File(path, "r") as h5:
            return h5.attrs.get(SHARD_MARK) == out.name
    except OSError:
        return False


def merge_parts(out: str | Path, attrs: dict[str, Any] | None = None) -> list[str]:
    """Move the complete image groups of the shards of ``out`` (``start_shard``) into ``out``; delete
    those shards. Other files in ``OUT.parts/`` are neither read nor deleted (a warning names them).

    Raises:
        ValueError: a shard (or ``attrs``) from other weights than ``out``'s features. Given ``attrs`` (the
            settings of the run to come), every shard holding features is checked against them first.

    Returns:
        The names of the merged images.
    """
    import h5py

    out, parts = Path(out), parts_folder(out)
    files = sorted(parts.iterdir()) if parts.is_dir() else []
    shards = [f for f in files if _is_shard_of(f, out)]
    foreign = [f.name for f in files if f not in shards]
    if foreign:
        warnings.warn(f"{parts} holds {len(foreign)} file(s) that are not shards hardnet-desc wrote for {out.name}, "
                      f"left as they are: {', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}", stacklevel=2)
    if attrs is not None:  # before anything is merged: no run goes on from shards of other settings
        for shard in shards:
            with h5py.File(shard, "a") as h5:
                claim_file(h5, attrs, shard)
    merged: list[str] = []
    try:
        h5file = h5py.File(out, "a")
    except OSError as err:
        raise OSError(f"cannot open {out} as an HDF5 file ({err})") from None
    with h5file as dst:
        if attrs is not None:
            claim_file(dst, attrs, out)
        have = feature_names(dst)
        for shard in shards:
            with h5py.File(shard, "r") as src:
                claim_file(dst, {k: v for k, v in src.attrs.items() if k != SHARD_MARK}, out)
                for name in sorted(feature_names(src) - have):
                    if name in dst:
                        del dst[name]  # half-written by an interrupted run
                    dst.copy(src[name], name)
                    merged.append(name)
                    have.add(name)
            dst.flush()
    for shard in shards:
        shard.unlink()
    if parts.is_dir() and not any(parts.iterdir()):
        parts.rmdir()
    return merged


def extract_parallel(
    images: str | Path,
    out: str | Path,
    weights: Any = DEFAULT_WEIGHTS,
    *,
    workers: int | None = 2,
    backend: str = "processes",
    address: str | None = None,
    device: str = "auto",
    precision: str = "fp32",
    max_keypoints: int | None = DEFAULT_MAX_KEYPOINTS,
    batch_images: int = 8,
    progress: bool = True,
    on_error: Callable[[str, str], None] | None = None,
    force: bool = False,
) -> ExtractReport:
    """``extract_folder`` with ``workers`` workers (see module docstring).

    Args:
        images, out, max_keypoints, batch_images, progress, on_error, force: as ``extract_folder``.
        weights: what ``HardNetDescriptor`` takes; each worker loads it.
        workers: processes or Ray actors; ``None`` with Ray: one per GPU, else one per CPU.
        backend: ``"processes"`` or ``"ray"``.
        address: Ray cluster address (``"auto"``, ``"ray://host:10001"``); default: the running
            or a new local instance. Only for Ray.
        device, precision: for each worker's descriptor; checked here first (``_check_device``).
    """
    from ..descriptor import HardNetDescriptor

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if address is not None and backend != "ray":
        raise ValueError(f"address is for backend='ray' only; {backend!r} runs on this machine")
    check_max_keypoints(max_keypoints)
    _check_device(backend, device, precision)
    if backend == "ray":
        _connect_ray(address)
    replace = check_features_out(out, force)
    names = image_names(images)
    settings = {"weights": weights, "device": device, "precision": precision, "max_keypoints": max_keypoints,
                "batch_images": batch_images}
    # The weights load here once: bad weights fail before any worker starts, and the output's
    # attributes are checked against them before any work is done.
    attrs = file_attrs(HardNetDescriptor(weights, device="cpu"), max_keypoints)
    if replace:
        Path(out).unlink()  # a file hardnet-desc did not write, replaced as force asks
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    merge_parts(out, attrs)  # an interrupted run's shards
    import h5py

    with h5py.File(out, "r") as h5:
        have = feature_names(h5)
    report = ExtractReport()
    todo = plan_extraction(names, have, report, on_error)
    if todo:
        run = _run_processes if backend == "processes" else _run_ray
        for name, reason in run(str(images), str(parts_folder(out)), todo, settings, workers, address, progress):
            if reason is None:
                report.done.append(name)
            else:
                report.failed.append((name, reason))
                if on_error is not None:
                    on_error(name, reason)
        merge_parts(out, attrs)
    return report


def _check_device(backend: str, device: str, precision: str) -> None:
    """Raise before any file or worker what each worker would: for local processes a device this machine lacks;
    for both backends a precision the device cannot run. Ray's workers may have GPUs this machine lacks, so
    there a named device is only checked against the precision (and ``"auto"`` not at all)."""
    import torch

    if backend == "processes":
        where = resolve_device(device)
    elif device == "auto":
        return
    else:
        try:
            where = torch.device(device)
        except RuntimeError:
            raise ValueError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    choose_precision(precision, where, inference=True)


def _connect_ray(address: str | None, timeout: float = 5.0) -> None:
    """Before any file: raise if Ray is missing, else connect to the cluster at ``address`` (``None``: later, as a
    new local instance costs its start). A ``host:port`` (or ``ray://host:port``) address is probed first:
    ``ray.init`` tries one where nothing listens for minutes, printing log lines."""
    import ray

    if address is None or ray.is_initialized():
        return
    url = urlsplit(address if "://" in address else f"//{address}")
    try:
        if url.hostname and url.port is not None:
            socket.create_connection((url.hostname, url.port), timeout=timeout).close()
    except (OSError, ValueError) as err:
        raise ConnectionError(f"no Ray cluster answers at {address} ({err})") from None
    ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)


class _Worker:
    """One descriptor and one shard; describes batches of images into the shard."""

    def __init__(self, root: str, parts: str, settings: dict[str, Any], threads: int | None = None) -> None:
        import torch

        from ..descriptor import HardNetDescriptor

        if threads:
            torch.set_num_threads(threads)
        self.root, self.settings = root, settings
        self.descriptor = HardNetDescriptor(settings["weights"], device=settings["device"],
                                            precision=settings["precision"])
        out = Path(parts).with_name(Path(parts).name.removesuffix(".parts"))
        self.shard = start_shard(out, file_attrs(self.descriptor, settings["max_keypoints"]))

    def run(self, names: Sequence[str]) -> list[tuple[str, str | None]]:
        failed: dict[str, str] = {}
        extract_folder(self.root, self.shard, self.descriptor, names=list(names), progress=False, workers=0,
                       max_keypoints=self.settings["max_keypoints"], batch_images=self.settings["batch_images"],
                       on_error=lambda name, reason: failed.__setitem__(name, reason))
        return [(n, failed.get(n)) for n in names]

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:  # Ray Data's map_batches
        results = self.run([str(n) for n in batch["name"]])
        return {"name": [n for n, _ in results], "error": [r or "" for _, r in results]}


_PROCESS_WORKER: _Worker | None = None


def _init_process(root: str, parts: str, settings: dict[str, Any], threads: int) -> None:
    global _PROCESS_WORKER
    _PROCESS_WORKER = _Worker(root, parts, settings, threads)


def _process_batch(names: list[str]) -> list[tuple[str, str | None]]:
    assert _PROCESS_WORKER is not None
    return _PROCESS_WORKER.run(names)


def _run_processes(root, parts, todo, settings, workers, address, progress):
    from tqdm import tqdm

    workers = workers or 2
    threads = max(1, (os.cpu_count() or 1) // workers)
    step = max(1, settings["batch_images"])
    batches = [todo[i : i + step] for i in range(0, len(todo), step)]
    with WorkerPool(workers, _init_process, (root, parts, settings, threads)) as pool, \
            tqdm(total=len(todo), desc="extract", unit="img", disable=not progress) as bar:
        for future in as_completed([pool.submit(_process_batch, b) for b in batches]):
            results = future.result()
            bar.update(len(results))
            yield from results


def _actor_pool(ray: Any, size: int) -> dict[str, Any]:
    """``map_batches``' argument for a pool of ``size`` actors, in the form the installed Ray does not warn about:
    ``concurrency`` from Ray 2.9 (``compute`` warns there), ``compute`` from 2.51 (``concurrency`` warns there)."""
    version = tuple(int(part) for part in re.findall(r"\d+", ray.__version__)[:2])
    return {"compute": ray.data.ActorPoolStrategy(size=size)} if version >= (2, 51) else {"concurrency": size}


def _run_ray(root, parts, todo, settings, workers, address, progress):
    import ray
    import ray.data  # sets up Ray Data's loggers: quieted after it
    from tqdm import tqdm

    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, logging_level=logging.WARNING)
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # our progress bar instead of Ray Data's log lines
    ray.data.DataContext.get_current().enable_progress_bars = False
    gpus = int(ray.cluster_resources().get("GPU", 0)) if settings["device"] in ("auto", "cuda") else 0
    slots = gpus or int(ray.cluster_resources().get("CPU", 1))
    resources = {"num_gpus": 1} if gpus else {"num_cpus": 1}
    dataset = ray.data.from_items([{"name": n} for n in todo]).map_batches(
        _Worker,
        fn_constructor_kwargs={"root": root, "parts": parts, "settings": settings, "threads": None if gpus else 1},
        batch_size=max(1, settings["batch_images"]), **_actor_pool(ray, min(workers or slots, len(todo))), **resources,
    )
    with tqdm(total=len(todo), desc="extract", unit="img", disable=not progress) as bar:
        for row in dataset.iter_rows():
            bar.update(1)
            yield row["name"], row["error"] or None
