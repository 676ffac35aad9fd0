"""Benchmark `match_descriptors` against cv2.BFMatcher knnMatch + ratio test.

    python benchmarks/bench_matching.py                # 10k x 10k, CPU
    python benchmarks/bench_matching.py --device cuda
    python benchmarks/bench_matching.py --big          # also 100k x 100k, chunked

From another script: ``from bench_matching import run; stats = run(n=10000)``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from hardnet_desc.matching import match_descriptors


def make_descriptors(n: int, dim: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two (n, dim) float32 sets of L2-normalised descriptors, like real ones.

    Half of ``desc2`` are noisy copies of rows of ``desc1`` (a spread of noise
    levels, so some pass the ratio test and some don't), the rest distractors.
    """
    rng = np.random.default_rng(seed)

    def unit(x: np.ndarray) -> np.ndarray:
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    desc1 = unit(rng.standard_normal((n, dim), dtype=np.float32))
    n_true = n // 2
    src = rng.permutation(n)[:n_true]
    noise = rng.uniform(0.02, 0.12, (n_true, 1)).astype(np.float32)
    copies = desc1[src] + noise * rng.standard_normal((n_true, dim), dtype=np.float32)
    desc2 = np.concatenate([unit(copies), unit(rng.standard_normal((n - n_true, dim), dtype=np.float32))])
    return desc1, desc2[rng.permutation(n)]


def opencv_ratio_match(desc1: np.ndarray, desc2: np.ndarray, ratio: float) -> np.ndarray:
    """The usual OpenCV recipe; returns (M, 3) rows [query, train, distance]."""
    knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(desc1, desc2, k=2)
    good = [m for m, n in (p for p in knn if len(p) == 2) if m.distance < ratio * n.distance]
    return np.array([(m.queryIdx, m.trainIdx, m.distance) for m in good], dtype=np.float64).reshape(-1, 3)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _one_thread(fn):
    """Run fn with one torch thread (restored afterwards)."""

    def wrapped():
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn()
        finally:
            torch.set_num_threads(n)

    return wrapped


def run(
    n: int = 10000,
    dim: int = 128,
    ratio: float = 0.8,
    device: str = "cpu",
    repeats: int = 5,
    big: bool = False,
    big_n: int = 100_000,
) -> dict[str, float]:
    """Time both matchers on the same n x n descriptors; return the numbers.

    The candidates run in turn within each repeat, so a change in machine load
    affects them alike. Keys: ``n``, ``threads``, ``opencv_s``, ``ours_s``
    (ratio test only, as OpenCV), ``ours_mutual_s``, ``ours_1thread_s`` (CPU
    only, NaN otherwise; medians in seconds), ``speedup``, ``speedup_1thread``,
    ``matches``, ``identical`` (1.0 if same pairs and distances within 1e-4),
    ``max_dist_diff``; with ``big`` also ``big_n``, ``big_s``, ``big_matches``
    and ``peak_rss_mb`` (ru_maxrss of this process).
    """
    desc1, desc2 = make_descriptors(n, dim)
    d1, d2 = torch.from_numpy(desc1).to(device), torch.from_numpy(desc2).to(device)
    candidates = {
        "opencv": lambda: opencv_ratio_match(desc1, desc2, ratio),
        "ours": lambda: match_descriptors(d1, d2, ratio=ratio, mutual=False),
        "ours_mutual": lambda: match_descriptors(d1, d2, ratio=ratio, mutual=True),
    }
    if device == "cpu":
        candidates["ours_1thread"] = _one_thread(candidates["ours"])

    match_descriptors(d1[:256], d2, ratio=ratio)  # warm-up
    times: dict[str, list[float]] = {k: [] for k in candidates}
    results = {}
    for _ in range(repeats):
        for name, fn in candidates.items():
            _sync(device)
            t0 = time.perf_counter()
            results[name] = fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}

    ours, ref = results["ours"], results["opencv"]
    same_pairs = len(ours) == len(ref) and np.array_equal(ours.pairs, ref[:, :2].astype(np.int64))
    max_diff = float(np.abs(ours.distances - ref[:, 2]).max()) if same_pairs and len(ref) else float("nan")
    nan = float("nan")
    stats = {
        "n": n,
        "threads": torch.get_num_threads(),
        "opencv_s": med["opencv"],
        "ours_s": med["ours"],
        "ours_mutual_s": med["ours_mutual"],
        "ours_1thread_s": med.get("ours_1thread", nan),
        "speedup": med["opencv"] / med["ours"],
        "speedup_1thread": med["opencv"] / med.get("ours_1thread", nan),
        "matches": len(ours),
        "identical": float(same_pairs and not max_diff > 1e-4),
        "max_dist_diff": max_diff,
    }
    if big:
        del d1, d2
        b1, b2 = make_descriptors(big_n, dim, seed=1)
        t0 = time.perf_counter()
        m = match_descriptors(torch.from_numpy(b1).to(device), torch.from_numpy(b2).to(device), ratio=ratio)
        _sync(device)
        stats.update(
            big_n=big_n,
            big_s=time.perf_counter() - t0,
            big_matches=len(m),
            peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
        )
    return stats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10000, help="descriptors per image")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--ratio", type=float, default=0.8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--big", action="store_true", help="also match 100k x 100k (CPU: ~1 min)")
    p.add_argument("--big-n", type=int, default=100_000)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    s = run(args.n, args.dim, args.ratio, args.device, args.repeats, args.big, args.big_n)
    print(
        f"{s['n']} x {s['n']} descriptors, D={args.dim}, ratio={args.ratio}, device={args.device}, "
        f"median of {args.repeats}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"  cv2.BFMatcher knnMatch + ratio      : {s['opencv_s']:.3f} s")
    print(f"  match_descriptors, {s['threads']} torch thread(s): {s['ours_s']:.3f} s  ({s['speedup']:.1f}x faster)")
    if args.device == "cpu":
        print(
            f"  match_descriptors, 1 torch thread   : {s['ours_1thread_s']:.3f} s  ({s['speedup_1thread']:.1f}x faster)"
        )
    print(f"  match_descriptors + mutual check    : {s['ours_mutual_s']:.3f} s")
    print(
        f"  matches: {s['matches']}, identical to OpenCV: {bool(s['identical'])}, "
        f"max |distance diff|: {s['max_dist_diff']:.2e}"
    )
    if args.big:
        print(
            f"  {s['big_n']} x {s['big_n']} (ratio + mutual, chunked): {s['big_s']:.1f} s, "
            f"{s['big_matches']} matches, peak RSS {s['peak_rss_mb']:.0f} MiB"
        )


if __name__ == "__main__":
    main()
