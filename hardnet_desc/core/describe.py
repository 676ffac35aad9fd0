"""The torch core of describing: grey images and affine frames on a device -> descriptors on that device.

``describe(net, greys, frames, settings)`` cuts the patches (``hardnet_desc.core.patches``: one level
grouping per image, its pyramid, the batches) and runs the network. It trusts its inputs: the
facade (``HardNetDescriptor``) has converted and checked them once, so nothing is checked again
here and nothing but the level counts is read back from the device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from .device import autocast, usable_cpus
from .model import DESCRIPTOR_DIM
from .patches import PatchSpec, build_pyramid, cut_frame_batch, frame_batches


@dataclass(frozen=True)
class DescribeSettings:
    """How ``describe`` runs; none of them changes results but ``spec`` and ``precision``.

    Attributes:
        device: where the network, the pyramids and the patches live.
        precision: a resolved name of ``hardnet_desc.core.device.PRECISIONS`` (not ``"auto"``).
        batch_size: patches per network call.
        spec: the patch geometry (``spec.size`` must be the network's input side, 32).
        pack: whether a network call may hold the patches of several images (``None``: off the
            CPU only; CPU batches are small, and its bf16 kernels are not batch-invariant).
        overlap: whether the next call's patches are cut in a worker thread while the network runs
            (``None``: where torch's threads leave a CPU free, ``spare_core``).
    """

    device: torch.device
    precision: str
    batch_size: int
    spec: PatchSpec = PatchSpec()
    pack: bool | None = None
    overlap: bool | None = None


@torch.inference_mode()
def describe(
    net: torch.nn.Module, greys: Sequence[torch.Tensor], frames: Sequence[torch.Tensor], settings: DescribeSettings
) -> list[torch.Tensor]:
    """Descriptors of the frames of several images, on ``settings.device``.

    Args:
        net: the network (``HardNet``, fused or int8) on ``settings.device``, in eval mode.
        greys: ``K`` grey float32 images ``(1, 1, H_k, W_k)`` on ``settings.device``.
        frames: ``K`` float32 affine frames ``(N_k, 2, 3)`` on ``settings.device``, finite, centres in
            their image's area (``patches.describable_frames`` or ``patches.check_frames``).
        settings: device, precision, batch size, patch geometry, packing and overlap.

    Returns:
        ``K`` float32 tensors ``(N_k, 128)`` on ``settings.device``, unit L2 rows in frame order.
    """
    device, size, spec = settings.device, settings.batch_size, settings.spec
    pack = device.type != "cpu" if settings.pack is None else settings.pack
    outs, plans, fill = [], [], 0  # fill: patches in the last network call so far
    for grey, f in zip(greys, frames, strict=True):
        joins = pack and 0 < fill < size  # this image's first patches fill up the last call
        max_level, batches = frame_batches(f, grey.shape[-2], grey.shape[-1], size, size - fill if joins else size, spec)
        if batches:
            last = batches[-1][1] - batches[-1][0]
            fill = fill + last if joins and len(batches) == 1 else last
        outs.append(torch.empty((len(f), DESCRIPTOR_DIM), device=device))
        plans.append((grey, max_level, f, batches, joins))
    # Network calls: lists of (image, start, stop, groups), filled in order; the last call of each image.
    calls: list[list[tuple[int, int, int, list]]] = []
    for k, (*_, batches, joins) in enumerate(plans):
        for b, (start, stop, groups) in enumerate(batches):
            if b == 0 and joins:
                calls[-1].append((k, start, stop, groups))
            else:
                calls.append([(k, start, stop, groups)])
    last_call = {k: call for call, pieces in enumerate(calls) for k, *_ in pieces}
    pyramids: dict[int, list[torch.Tensor]] = {}  # built when first cut, dropped after the image's last call

    def cut(call: int) -> torch.Tensor:
        parts = []
        for k, start, stop, groups in calls[call]:
            grey, max_level, f, *_ = plans[k]
            if k not in pyramids:
                pyramids[k] = build_pyramid(grey, max_level)
            parts.append(cut_frame_batch(pyramids[k], f[start:stop], groups, spec))
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    items = range(len(calls))
    overlap = spare_core() if settings.overlap is None else settings.overlap
    for call, patches in _prefetched(cut, items, enabled=overlap and len(items) > 1):
        desc, at = forward(net, patches, device, settings.precision), 0
        for k, start, stop, _ in calls[call]:
            outs[k][start:stop] = desc[at : at + stop - start]
            at += stop - start
            if last_call[k] == call:
                pyramids.pop(k, None)  # the worker may be cutting the next call: of other images only
    return outs


def forward(net: torch.nn.Module, patches: torch.Tensor, device: torch.device, precision: str) -> torch.Tensor:
    """One network call: ``(B, 1, 32, 32)`` patches on ``device`` -> ``(B, 128)`` float32, in ``precision``."""
    with autocast(device, precision):
        return net(patches.contiguous(memory_format=torch.channels_last)).float()


def spare_core() -> bool:
    """Whether torch's intra-op threads leave at least one of this process's CPUs free."""
    return torch.get_num_threads() < usable_cpus()


def _prefetched(
    fn: Callable[[int], torch.Tensor], items: Sequence[int], enabled: bool = True
) -> Iterator[tuple[int, torch.Tensor]]:
    """``(item, fn(item))`` in order, with ``fn`` of the next item running in a worker thread meanwhile."""
    if not enabled:
        yield from ((item, fn(item)) for item in items)
        return

    def run(item: int) -> torch.Tensor:
        with torch.inference_mode():  # inference mode is per thread
            return fn(item)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="hardnet-patches") as pool:
        pending = pool.submit(run, items[0])
        for k, item in enumerate(items):
            result = pending.result()
            if k + 1 < len(items):
                pending = pool.submit(run, items[k + 1])
            yield item, result
