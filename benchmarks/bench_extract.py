"""Throughput of `hardnet-desc extract`: one process, detecting workers feeding one describer, describing
processes, Ray actors.

    python benchmarks/bench_extract.py                          # 12 photo-size images, 1 and 2 workers
    python benchmarks/bench_extract.py --images my_photos/ --workers 1 2 4 --backends processes ray
    python benchmarks/bench_extract.py --device cuda --n 300 --workers 4 8 15 --backends single feed

Each run writes a fresh HDF5 file from the same images (SIFT detection, patches, HardNet, writing:
the whole command). Images/s and patches/s are over the run's wall time, worker start-up included
(spawned processes import torch; Ray starts once, before its first run, and its start is printed apart).
Without ``--images`` the two bundled photos are repeated as flipped and resized variants.

Backends: ``single`` (``extract_folder(workers=0)``: read, detect and describe in one process),
``feed`` (``--backend feed``: N processes read and detect, this one describes on ``--device``),
``processes`` and ``ray`` (N describers, each with its network). First, reading and detecting alone
in this process on one OpenCV thread gives the images/s one worker can feed: ``feed`` at N workers is
limited by detection when it reaches about N times that, else by the describing process.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

import cv2
import h5py

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from hardnet_desc.descriptor import HardNetDescriptor  # noqa: E402
from hardnet_desc.detection import detect_sift  # noqa: E402
from hardnet_desc.integrations.hloc import extract_folder, image_names  # noqa: E402
from hardnet_desc.core.image import read_image, to_grey_numpy  # noqa: E402
from hardnet_desc.integrations.parallel import extract_parallel  # noqa: E402


def make_images(folder: Path, n: int) -> Path:
    """``n`` photo-size variants (flips, 0.8-1.2x scale) of the bundled pair."""
    photos = [cv2.imread(str(ROOT / "examples" / "data" / f"sacre_coeur_{i}.jpg")) for i in (1, 2)]
    for i in range(n):
        image = photos[i % 2]
        image = cv2.flip(image, 1) if (i // 2) % 2 else image
        scale = 0.8 + 0.4 * ((i // 4) % 5) / 4
        cv2.imwrite(str(folder / f"{i:03d}.jpg"), cv2.resize(image, None, fx=scale, fy=scale))
    return folder


def keypoints_in(path: Path) -> int:
    with h5py.File(path, "r") as h5:
        return sum(h5[name]["keypoints"].shape[0] for name in h5)


def detection_rate(images: Path, max_keypoints: int) -> float:
    """Images/s of reading and detecting alone, in this process on one OpenCV thread (one worker's work)."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        start = time.perf_counter()
        names = image_names(images)
        for name in names:
            detect_sift(to_grey_numpy(read_image(images / name)), max_keypoints)
        return len(names) / (time.perf_counter() - start)
    finally:
        cv2.setNumThreads(threads)


def _start_ray(cpus: int) -> None:
    """Start a local Ray instance once (its daemons would slow the runs before it otherwise)."""
    import ray

    if not ray.is_initialized():
        start = time.perf_counter()
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        print(f"(ray.init: {time.perf_counter() - start:.1f} s, not counted below)", flush=True)


def profile_rows(profile: cProfile.Profile, top: int = 15) -> list[dict]:
    """The ``top`` functions of this process by own time (``tottime``), with their calls and cumulative time."""
    stats = pstats.Stats(profile)
    rows = [{"function": f"{Path(file).name}:{line} {name}", "calls": calls, "own_s": round(own, 4),
             "cumulative_s": round(cum, 4)}
            for (file, line, name), (_, calls, own, cum, _) in stats.stats.items()]  # type: ignore[attr-defined]
    return sorted(rows, key=lambda r: -r["own_s"])[:top]


def run(images: Path, runs: list[tuple[str, int]], device: str = "cpu", precision: str = "auto",
        batch_images: int = 8, max_keypoints: int = 4096, scratch: Path | None = None,
        profile: bool = False) -> dict:
    """Time each ``(backend, workers)`` of ``runs`` writing a fresh HDF5 file of ``images``; return the numbers.

    Keys: ``images``, ``descriptor`` (its repr), ``detect_images_per_s`` (one worker's rate) and
    ``runs``: ``{"<backend> x<workers>": {"seconds", "images_per_s", "patches_per_s"}}``. Rows are printed as they come.
    With ``profile``, each run of ``single`` or ``feed`` also gets ``profile``: the describing process's
    busiest functions (``profile_rows``; cProfile slows it, so its seconds are not comparable with the others).
    """
    n_images = len(image_names(images))
    options = {"max_keypoints": max_keypoints, "batch_images": batch_images, "progress": False}
    descriptor = HardNetDescriptor(device=device, precision=precision)
    rate = detection_rate(images, max_keypoints)
    print(f"{n_images} images; {descriptor!r}")
    print(f"reading + SIFT alone, 1 OpenCV thread: {rate:.2f} images/s", flush=True)
    print(f"{'backend':<10} {'workers':>7} {'seconds':>8} {'images/s':>9} {'patches/s':>10}")
    out_stats: dict = {"images": n_images, "descriptor": repr(descriptor), "detect_images_per_s": rate, "runs": {}}
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        for i, (backend, workers) in enumerate(runs):
            out = Path(tmp) / f"run{i}.h5"
            if backend == "ray":
                _start_ray(max(w for _, w in runs))
            profiler = cProfile.Profile() if profile and backend in ("single", "feed") else None
            start = time.perf_counter()
            if profiler is not None:
                profiler.runcall(extract_folder, images, out, descriptor, workers=workers, **options)
            elif backend in ("single", "feed"):
                extract_folder(images, out, descriptor, workers=workers, **options)
            else:
                extract_parallel(images, out, workers=workers, backend=backend, device=device,
                                 precision=precision, **options)
            seconds = time.perf_counter() - start
            patches = keypoints_in(out)
            out_stats["runs"][f"{backend} x{workers}"] = {
                "seconds": seconds, "images_per_s": n_images / seconds, "patches_per_s": patches / seconds}
            print(f"{backend:<10} {workers:>7} {seconds:>8.1f} {n_images / seconds:>9.2f} "
                  f"{patches / seconds:>10.0f}", flush=True)
            if profiler is not None:
                rows = out_stats["runs"][f"{backend} x{workers}"]["profile"] = profile_rows(profiler)
                for r in rows[:8]:
                    print(f"    {r['own_s']:8.3f} s own {r['cumulative_s']:8.3f} s cum {r['calls']:>8} "
                          f"{r['function']}")
    return out_stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=None, help="folder of images (default: generated)")
    parser.add_argument("--n", type=int, default=12, help="generated images (default: %(default)s)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--backends", nargs="+", default=["single", "feed", "processes", "ray"],
                        choices=["single", "feed", "processes", "ray"])
    parser.add_argument("--device", default="cpu", help="where the network runs (default: %(default)s)")
    parser.add_argument("--precision", default="auto", help="(default: %(default)s)")
    parser.add_argument("--batch-images", type=int, default=8, help="images per network call (default: %(default)s)")
    parser.add_argument("--max-keypoints", type=int, default=4096)
    parser.add_argument("--profile", action="store_true",
                        help="profile the describing process of the single and feed runs (cProfile; slower)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        images = args.images or make_images(Path(tmp), args.n)
        runs = [("single", 0)] if "single" in args.backends else []
        runs += [(b, w) for b in ("feed", "processes", "ray") if b in args.backends for w in args.workers]
        run(images, runs, args.device, args.precision, args.batch_images, args.max_keypoints, profile=args.profile)


if __name__ == "__main__":
    main()
