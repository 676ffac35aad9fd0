"""Training rate on this machine: seconds per training step and per batch build, with and without augmentations.

Prints, for one batch size (default the paper's 1024 pairs): the time of a training step (forward and backward
of 2B patches, hardest-in-batch loss, SGD step) in the chosen precision and thread count, pairs/s, the time to
build a batch with each augmentation alone and with all of them (what the trainer does before each step), their
cost relative to a step (in wall time, and in CPU time, which a busy machine distorts less), the peak memory of the process and the load average (the machine may be shared).

    OMP_NUM_THREADS=2 python benchmarks/train_rate.py [--data PHOTOTOUR_FOLDER] [--batch-size 1024] [--steps 5]

Without ``--data`` the patches are 32x32 tiles of the bundled photos (two shifted tiles per point); the cost of
a step does not depend on the content.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from hardnet_desc.data.phototour import PhotoTourData, read_phototour
from hardnet_desc.core.device import autocast
from hardnet_desc.core.model import HardNet
from hardnet_desc.train.augment import AugmentConfig
from hardnet_desc.train.loss import hardest_in_batch_loss
from hardnet_desc.train.sampler import PairDataset

PHOTOS = Path(__file__).resolve().parents[1] / "examples" / "data"
AUGS = ("noise", "blur", "jpeg", "photometric", "kpjitter")


def bundled_tiles() -> PhotoTourData:
    """Two 32x32 tiles per point, 2 px apart, on an 8-px grid of the bundled photos."""
    patches = []
    for path in sorted(PHOTOS.glob("*.jpg")):
        img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        for y in range(0, img.shape[0] - 34, 8):
            for x in range(0, img.shape[1] - 34, 8):
                patches += [img[y : y + 32, x : x + 32], img[y + 2 : y + 34, x + 2 : x + 34]]
    return PhotoTourData(np.stack(patches), np.arange(len(patches)) // 2)


def time_batches(data: PhotoTourData, batch: int, aug: AugmentConfig, n: int) -> tuple[float, float]:
    """Wall and CPU seconds to build one batch."""
    ds = PairDataset(data, batch * (n + 1), batch_size=batch, seed=0, augment=aug)
    ds.get_batch(0, 0)
    t, c = time.perf_counter(), time.process_time()
    for i in range(1, n + 1):
        ds.get_batch(0, i)
    return (time.perf_counter() - t) / n, (time.process_time() - c) / n


def time_steps(batch: int, steps: int, precision: str, device: str = "cpu") -> tuple[float, float]:
    """Median wall seconds of a training step, and mean CPU seconds (all threads) of the host process."""
    dev = torch.device(device)
    torch.manual_seed(0)
    net = HardNet().to(dev, memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(net.parameters(), lr=1.0, momentum=0.9, dampening=0.9, weight_decay=1e-4)
    x = torch.rand(2 * batch, 1, 32, 32, device=dev).contiguous(memory_format=torch.channels_last)
    times, cpu = [], 0.0
    for k in range(steps + 1):  # the first step warms up
        t, c = time.perf_counter(), time.process_time()
        with autocast(dev, precision):
            desc = net(x)
        loss = hardest_in_batch_loss(desc[:batch], desc[batch:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
        cpu += (time.process_time() - c) if k else 0.0
    return float(np.median(times[1:])), cpu / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="a PhotoTour-layout folder (default: tiles of the bundled photos)")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--steps", type=int, default=5, help="timed training steps (median reported)")
    p.add_argument("--batches", type=int, default=5, help="timed batch builds per augmentation setting")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    args = p.parse_args()
    print(f"threads {torch.get_num_threads()}, batch {args.batch_size} pairs, {args.precision}, "
          f"load average before {os.getloadavg()[0]:.1f}")
    data = read_phototour(args.data) if args.data else bundled_tiles()
    builds = {"none": time_batches(data, args.batch_size, AugmentConfig(), args.batches)}
    for name in AUGS:
        builds[name] = time_batches(data, args.batch_size, AugmentConfig.parse(name), args.batches)
    builds["all"] = time_batches(data, args.batch_size, AugmentConfig.parse(",".join(AUGS)), args.batches)
    step, step_cpu = time_steps(args.batch_size, args.steps, args.precision)
    print(f"training step: {step:.2f} s = {args.batch_size / step:.0f} pairs/s ({step_cpu:.2f} CPU s)")
    base, base_cpu = builds["none"]
    for name, (t, c) in builds.items():
        extra, extra_cpu = t - base, c - base_cpu
        print(f"batch build, augment {name:12s}: {1000 * t:7.1f} ms  (augmentation {1000 * extra:6.1f} ms = "
              f"{100 * extra / step:4.1f} % of a step; CPU time {1000 * extra_cpu:6.1f} ms = "
              f"{100 * extra_cpu / step_cpu:4.1f} % of a step's)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory (max RSS) {peak:.0f} MiB; load average after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
