"""The GPU check: everything issue "GPU end to end" asks to measure, in one call.

    PYTHONPATH=. python benchmarks/gpu_check.py --device cuda --json gpu_check.json   # a CUDA machine, < 8 min
    python benchmarks/gpu_check.py --device cpu --quick                              # here: small sizes, < 2 min

Sections (each timed; one that fails is reported and the others still run; the JSON is rewritten
after every section, so a run cut short keeps what it measured):

- ``tests``: the CUDA-marked tests (``pytest -m cuda``).
- ``accuracy``: fp32, fp16 and bf16 descriptors on the device against CPU fp32 on the bundled photo
  pair (max abs difference, mean cosine, how often the nearest neighbour in the other photo is the
  same), and the mutual-NN + ratio 0.8 matches and fundamental-matrix inliers of each.
- ``scan``: the network alone per precision and batch size (``bench_descriptor.scan_batch``).
- ``compute``: ``compute`` patches/s for 2,000 and 8,000 keypoints per image
  (``bench_descriptor.run``: every precision, the net alone, startup).
- ``multi``: ``compute`` of a list of images (OpenCV's batch form) against one image at a time.
- ``matching``: 10k x 10k against OpenCV (``bench_matching.run``), 100k x 100k on the device against the
  CPU matcher (identical pairs?).
- ``wide``: ``match_wide`` on the device against the CPU: the bundled photo seen at 80 degrees (every step's views)
  and the bundled pair (step 0): wall time, step, inliers, the homography's corner error.
- ``extract``: ``extract`` images/s over 240 generated images (the bundled photos flipped and rescaled to a long
  side of 800 and of 1,600 px, 4,096 keypoints at most), one process and with CPU workers feeding the device.
- ``million``: 1,000,000 keypoints of a 4096-px photo: time and peak device memory.
- ``train``: training steps per second at batch 1,024 pairs, fp32 and bf16 (``train_rate.time_steps``).

Speeds in patches/s, times in seconds; the device's name and the CPU's are recorded with them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]  # run from a checkout: the package and the other benchmarks
import bench_descriptor  # noqa: E402
import bench_matching  # noqa: E402
from hardnet_desc.descriptor import HardNetDescriptor  # noqa: E402
from hardnet_desc.core.device import resolve_device, usable_cpus  # noqa: E402
from hardnet_desc.core.image import read_image  # noqa: E402
from hardnet_desc.matching import match_descriptors  # noqa: E402
from hardnet_desc.geometry import fit_geometry  # noqa: E402

PAIR = (ROOT / "examples" / "data" / "sacre_coeur_1.jpg", ROOT / "examples" / "data" / "sacre_coeur_2.jpg")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def device_name(device: torch.device) -> str:
    """The card's name and memory, or the CPU's model and flags."""
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return f"{p.name} ({p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs), CUDA {torch.version.cuda}"
    return bench_descriptor.cpu_name()


def section_tests(device: torch.device, quick: bool) -> dict:
    """The CUDA-marked tests, in a fresh interpreter from the repository root."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "--tb=short", "-rfE",
           "--continue-on-collection-errors", "tests"]  # a module whose test-only imports are missing is skipped
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    log = (done.stdout + done.stderr).strip().splitlines()
    failures = [line for line in log if line.startswith(("E ", "FAILED", "ERROR"))]
    tail = log[-5:]
    print("\n".join(f"    {line}" for line in failures[:40] + tail))
    # A module that cannot be collected for want of a test-only package (nbformat, kornia) is reported,
    # not failed: this check is about the CUDA tests.
    if any(line.startswith("FAILED") for line in log) or done.returncode not in (0, 1, 5):
        raise RuntimeError(f"CUDA-marked tests failed: {tail[-1] if tail else done.returncode}\n" + "\n".join(log))
    return {"returncode": done.returncode, "summary": tail[-1] if tail else "", "log": log,
            "seconds": time.perf_counter() - t0}


def _describe(photo: np.ndarray, kps, device, precision: str) -> tuple[list, np.ndarray]:
    return HardNetDescriptor(device=device, precision=precision).compute(photo, kps)


def section_accuracy(device: torch.device, quick: bool) -> dict:
    """Device descriptors of each precision against CPU fp32, on the bundled pair."""
    n = 1000 if quick else 2000
    photos = [read_image(p) for p in PAIR]
    kps = [bench_descriptor.sift_keypoints(p, n) for p in photos]
    ref = [_describe(p, k, torch.device("cpu"), "fp32")[1] for p, k in zip(photos, kps)]
    points = [np.array([k.pt for k in ks], np.float64) for ks in kps]

    def pair_stats(d1: np.ndarray, d2: np.ndarray) -> dict:
        m = match_descriptors(d1, d2, ratio=0.8, mutual=True)
        _, inliers = fit_geometry(points[0][m.query_idx], points[1][m.train_idx], "fundamental")
        return {"matches": len(m), "inliers": int(inliers.sum())}

    out = {"keypoints": [len(k) for k in kps], "cpu_fp32": pair_stats(*ref)}
    nn_ref = (torch.from_numpy(ref[0]) @ torch.from_numpy(ref[1]).T).argmax(1)
    precisions = ["fp32", "bf16"] + (["fp16"] if device.type == "cuda" else [])
    for p in precisions:
        got = [_describe(photo, k, device, p)[1] for photo, k in zip(photos, kps)]
        diff = max(float(np.abs(g - r).max()) for g, r in zip(got, ref))
        cosine = float(np.mean(np.concatenate([(g * r).sum(1) for g, r in zip(got, ref)])))
        nn = (torch.from_numpy(got[0]) @ torch.from_numpy(got[1]).T).argmax(1)
        out[p] = {"max_abs_diff": diff, "mean_cosine": cosine,
                  "nn_agreement": float((nn == nn_ref).float().mean()), **pair_stats(*got)}
        print(f"    {p}: max |d - d_cpu| {diff:.2e}, cosine {cosine:.6f}, NN agreement "
              f"{100 * out[p]['nn_agreement']:.2f} %, matches {out[p]['matches']} "
              f"(CPU fp32 {out['cpu_fp32']['matches']}), inliers {out[p]['inliers']} "
              f"(CPU fp32 {out['cpu_fp32']['inliers']})")
    return out


def section_scan(device: torch.device, quick: bool) -> dict:
    if device.type == "cuda":
        sizes, total = (256, 512, 1024, 2048, 4096, 8192, 16384), 65536
    else:
        sizes, total = ((64, 256) if quick else (32, 64, 128, 256, 512)), None
    table = bench_descriptor.scan_batch(str(device), sizes=sizes, n=1024 if quick else 2048,
                                        repeats=2 if quick else 5, total=total)
    for p, row in table.items():
        best = max(row, key=row.get)
        print(f"    {p:5s} " + "  ".join(f"{s}: {v:,.0f}" for s, v in row.items()) + f"   best {best}")
    return {p: {str(s): v for s, v in row.items()} | {"best": max(row, key=row.get)} for p, row in table.items()}


def section_compute(device: torch.device, quick: bool) -> dict:
    out = {}
    for n in (500,) if quick else (2000, 8000):
        stats = bench_descriptor.run(n=n, device=str(device), repeats=2 if quick else 5, kornia=device.type == "cpu",
                                     with_startup=n == (500 if quick else 2000))
        keys = [k for k in stats if k.startswith(("ours_", "net_")) or k in ("patches_only", "default_precision")]
        print(f"    n={n}: " + ", ".join(f"{k} {stats[k]:,.0f}" if isinstance(stats[k], float) else f"{k} {stats[k]}"
                                         for k in keys))
        out[str(n)] = stats
    return out


def _photo_variants(count: int, long_side: int) -> list[np.ndarray]:
    """``count`` photo-size images: the bundled pair, flipped and rescaled."""
    import cv2

    base = [bench_descriptor.load_photo(p, long_side) if p is None else read_image(p) for p in (None, PAIR[1])]
    images = []
    for i in range(count):
        image = base[i % 2]
        image = cv2.flip(image, 1) if (i // 2) % 2 else image
        s = long_side / max(image.shape[:2]) * (0.9 + 0.2 * ((i // 4) % 3) / 2)
        images.append(cv2.resize(image, None, fx=s, fy=s, interpolation=cv2.INTER_LINEAR))
    return images


def _best_time(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def section_multi(device: torch.device, quick: bool) -> dict:
    """``compute(images, keypoint_lists)`` against a loop of single-image calls, same keypoints."""
    n, count = (500, 4) if quick else (8000, 16)
    images = _photo_variants(count, 1024)
    kps = [bench_descriptor.sift_keypoints(im, n) for im in images]
    total = sum(len(k) for k in kps)
    desc = HardNetDescriptor(device=device)
    batched = _best_time(lambda: desc.compute(images, kps), device, 2 if quick else 5)
    looped = _best_time(lambda: [desc.compute(im, k) for im, k in zip(images, kps)], device, 2 if quick else 5)
    _, listed = desc.compute(images, kps)
    single = [desc.compute(im, k)[1] for im, k in zip(images, kps)]
    same = all(np.array_equal(a, b) for a, b in zip(listed, single))
    out = {"images": count, "patches": total, "precision": desc.precision, "batch_size": desc.batch_size,
           "batched_patches_per_s": total / batched, "looped_patches_per_s": total / looped,
           "batched_equals_looped": same}
    print(f"    {count} images x ~{n} keypoints ({total} patches, {desc.precision}, batch {desc.batch_size}): "
          f"list {total / batched:,.0f} patches/s, one at a time {total / looped:,.0f}; identical: {same}")
    return out


def section_matching(device: torch.device, quick: bool) -> dict:
    n, big_n = (2000, 8000) if quick else (10_000, 100_000)
    small = bench_matching.run(n=n, device=str(device), repeats=2 if quick else 5)
    print(f"    {n} x {n}: ours {small['ours_s']:.4f} s, OpenCV {small['opencv_s']:.3f} s, "
          f"identical to OpenCV: {bool(small['identical'])}")
    b1, b2 = bench_matching.make_descriptors(big_n, seed=1)
    d1, d2 = torch.from_numpy(b1).to(device), torch.from_numpy(b2).to(device)
    run = lambda: match_descriptors(d1, d2, ratio=0.8, mutual=True)  # noqa: E731
    seconds = _best_time(run, device, 1 if quick else 3)
    got = run()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        run()
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = float("nan")
    t0 = time.perf_counter()
    ref = match_descriptors(b1, b2, ratio=0.8, mutual=True, device="cpu")
    cpu_s = time.perf_counter() - t0
    identical = bool(np.array_equal(got.pairs, ref.pairs))
    max_diff = float(np.abs(got.distances - ref.distances).max()) if identical and len(ref) else float("nan")
    print(f"    {big_n} x {big_n} (ratio 0.8 + mutual): {seconds:.3f} s on {device.type} ({len(got)} matches, "
          f"peak {peak:,.0f} MiB), CPU matcher {cpu_s:.1f} s ({len(ref)} matches); identical pairs: {identical}, "
          f"max |distance diff| {max_diff:.1e}")
    return {"small": small, "big_n": big_n, "big_s": seconds, "big_matches": len(got), "big_peak_mib": peak,
            "big_cpu_s": cpu_s, "big_cpu_matches": len(ref), "big_identical": identical, "big_max_dist_diff": max_diff}


def section_wide(device: torch.device, quick: bool) -> dict:
    """``match_wide`` on the device and on the CPU: the bundled photo against itself seen at 80 degrees (tilt 6, every
    step's views needed), and the bundled pair with a fundamental matrix (settled at step 0)."""
    import cv2
    from wide_baseline import corner_error

    from hardnet_desc.data.warps import viewpoint_homography
    from hardnet_desc.wide_baseline import match_wide

    photo, second = (read_image(p) for p in PAIR)
    if quick:  # a smaller photo: the CPU runs every step
        photo, second = (cv2.resize(im, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA) for im in (photo, second))
    h, w = photo.shape[:2]
    truth = viewpoint_homography((h, w), tilt=6, axis_deg=30, rotation_deg=60)
    tilted = cv2.warpPerspective(photo, truth, (w, h))
    out: dict = {}
    for name, dev in (("device", device), ("cpu", torch.device("cpu"))):
        if name == "cpu" and device.type == "cpu":
            break
        descriptor = HardNetDescriptor(device=dev)
        match_wide(photo, second, descriptor, geometry="fundamental", threshold=1.0)  # warm-up
        for case, args, kw in (("tilt6", (photo, tilted), {}),
                               ("pair", (photo, second), {"geometry": "fundamental", "threshold": 1.0})):
            t0 = time.perf_counter()
            r = match_wide(*args, descriptor, **kw)
            _sync(dev)
            seconds = time.perf_counter() - t0
            row = {"seconds": seconds, "step": r.step, "inliers": int(r.inliers.sum()), "geometry": r.geometry,
                   "features": [len(r.features1.frames), len(r.features2.frames)],
                   "timings": {k: round(v, 3) for k, v in r.timings.items()}}
            if case == "tilt6":
                row["corner_error"] = corner_error(r.model, truth, h, w) if r.geometry == "homography" else None
            out.setdefault(case, {})[name] = row
            print(f"    {case} on {dev.type}: {seconds:.2f} s, step {r.step}, {row['inliers']} inliers, "
                  f"{row['features'][0]} + {row['features'][1]} features"
                  + (f", corner error {row['corner_error']:.4f}" if row.get("corner_error") is not None else ""))
    return out


def section_extract(device: torch.device, quick: bool, n_images: int, sizes: list[int], profile: bool = False) -> dict:
    """``extract`` over generated images of each long side: one process, and CPU workers feeding the device;
    with ``profile``, the describing process's busiest functions too (``bench_extract.profile_rows``)."""
    import cv2
    import bench_extract

    n_images = 6 if quick else n_images
    cpus = usable_cpus()
    runs = [("single", 0)] + [("feed", w) for w in ((2,) if quick else sorted({4, 8, cpus - 1}))]
    out: dict = {"cpus": cpus}
    for long_side in sizes[:1] if quick else sizes:
        with tempfile.TemporaryDirectory() as tmp:
            for i, image in enumerate(_photo_variants(n_images, long_side)):
                cv2.imwrite(str(Path(tmp) / f"{i:04d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
            print(f"    images of long side {long_side} px:")
            out[str(long_side)] = bench_extract.run(Path(tmp), runs, device=str(device), max_keypoints=4096,
                                                      profile=profile)
    return out


def section_million(device: torch.device, quick: bool) -> dict:
    n = 20_000 if quick else 1_000_000
    stats = bench_descriptor.million("default", device, "auto", n=n)
    peak = stats.get("million_cuda_peak_mb", float("nan"))
    print(f"    {n:,} keypoints: {stats['million_s']:.2f} s, {stats['million_patches_per_s']:,.0f} patches/s, "
          f"peak device memory {peak:,.0f} MiB, peak RSS {stats['million_peak_rss_mb']:,.0f} MiB")
    return stats


def section_train(device: torch.device, quick: bool) -> dict:
    import train_rate

    batch, steps = (128, 2) if quick else (1024, 10)
    out = {"batch_pairs": batch}
    for p in ("fp32", "bf16"):
        step, _ = train_rate.time_steps(batch, steps, p, device=str(device))
        out[p] = {"step_s": step, "pairs_per_s": batch / step}
        print(f"    {p}: {1000 * step:.1f} ms a step of {batch} pairs = {batch / step:,.0f} pairs/s")
    return out


SECTIONS = ("tests", "accuracy", "scan", "compute", "multi", "matching", "wide", "extract", "million", "train")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (the check) or cpu (with --quick: a test of the script)")
    parser.add_argument("--quick", action="store_true", help="small sizes everywhere")
    parser.add_argument("--json", type=Path, default=None, help="write the numbers here (rewritten after each section)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run these sections only")
    parser.add_argument("--skip", nargs="+", choices=SECTIONS, default=[], help="skip these sections")
    parser.add_argument("--extract-images", type=int, default=240, help="images for the extract section")
    parser.add_argument("--extract-sizes", type=int, nargs="+", default=[800, 1600],
                        help="long sides in pixels of the extract section's images (the bundled photos, rescaled)")
    parser.add_argument("--profile-extract", action="store_true",
                        help="profile the describing process of the extract runs (where its time goes; slower)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    report: dict = {"device": device_name(device), "cpu": bench_descriptor.cpu_name(),
                    "cpus": usable_cpus(), "torch": torch.__version__, "quick": args.quick,
                    "command": " ".join(sys.argv), "sections": {}, "errors": {}}
    print(f"GPU check on {report['device']}; host {report['cpu']}, {report['cpus']} CPUs, torch {torch.__version__}")
    start = time.perf_counter()
    for name in args.only or SECTIONS:
        if name in args.skip:
            continue
        print(f"[{name}] ({time.perf_counter() - start:.0f} s)", flush=True)
        t0 = time.perf_counter()
        try:
            if name == "extract":
                result = section_extract(device, args.quick, args.extract_images, args.extract_sizes,
                                         args.profile_extract)
            else:
                result = globals()[f"section_{name}"](device, args.quick)
            report["sections"][name] = result
        except Exception as e:  # noqa: BLE001 - one failing section must not cost the others' numbers
            report["errors"][name] = traceback.format_exc()
            print(f"    FAILED: {type(e).__name__}: {e}")
            traceback.print_exc(limit=4)
        report.setdefault("seconds", {})[name] = time.perf_counter() - t0
        if args.json:
            tmp = args.json.with_name(args.json.name + ".part")
            tmp.write_text(json.dumps(report, indent=1, default=str))
            os.replace(tmp, args.json)
    total = time.perf_counter() - start
    print(f"done in {total:.0f} s; sections failed: {sorted(report['errors']) or 'none'}")
    sys.exit(1 if report["errors"] else 0)


if __name__ == "__main__":
    main()
