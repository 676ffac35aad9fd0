"""Wide baselines with known cameras: plain match_pair vs wide_baseline=True on calibrated multi-view sets.

Sets of ../shared/data/multiview-train with calibrated cameras (the images stay outside the repository):
``buddha`` (13 views round a stone sculpture, 3 x 4 projection matrices in ``_meta/``) and the
robovision-mvs sets (an object in a ring of 12 calibrated cameras, HALCON camera files; dark
images with few SIFT keypoints). Pairs are binned by the angle between their cameras. Each method fits a fundamental matrix (1 px); the relative pose is then
estimated from its inliers with the known intrinsics (``hardnet_desc.geometry.estimate_relative_pose``)
and compared with the calibrated one. A pair is **solved** when the pose error (the larger of the
rotation and translation-direction errors) is below 10 degrees.

    python benchmarks/wide_baseline_rig.py                      # buddha, every pair 20-100 degrees apart
    python benchmarks/wide_baseline_rig.py --sets robovision-mvs-1024-174302 --bins 20,40,70,100
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from hardnet_desc import HardNetDescriptor
from hardnet_desc.geometry import estimate_relative_pose, pose_error_deg, rotation_angle_deg
from hardnet_desc.pipeline import match_pair

ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "multiview-train"
SETS = ("buddha", "robovision-mvs-1024-174302", "robovision-mvs-1024-182755", "robovision-mvs-1025-121132",
        "robovision-mvs-1025-121250")


def intrinsics(path: Path) -> np.ndarray:
    """``K`` (3, 3) from a HALCON internal-parameter file (focus / cell size, centre); distortion is 0 there."""
    values = dict(re.findall(r"^(\w+):\w+:\s*([-+0-9.e]+);", path.read_text(), re.M))
    f, sx, sy = float(values["Focus"]), float(values["Sx"]), float(values["Sy"])
    return np.array([[f / sx, 0, float(values["Cx"])], [0, f / sy, float(values["Cy"])], [0, 0, 1]])


def extrinsics(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(R, t)`` world -> camera from the 12 numbers (3 x 4, row-major) of the file's last line."""
    rows = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    m = np.array(rows[-1].split(), float).reshape(3, 4)
    return m[:, :3], m[:, 3]


def cameras(folder: Path) -> dict[str, tuple[Path, np.ndarray, np.ndarray, np.ndarray]]:
    """Image path -> ``(path, K, R, t)`` (world -> camera, ``K`` scaled to the stored image's size)."""
    out = {}
    if list((folder / "_meta").glob("*_P.txt")):  # buddha: P = K [R | t]
        for p in sorted((folder / "_meta").glob("*_P.txt")):
            image = folder / f"{p.name[:-6]}._c.jpg"
            if not image.exists():
                continue
            P = np.loadtxt(p)
            K, R, c = cv2.decomposeProjectionMatrix(P)[:3]
            K = K / K[2, 2]
            c = c[:3, 0] / c[3, 0]
            out[image.name] = (image, K, R, -R @ c)
        original_long_side = 2736
    else:  # robovision: HALCON files
        for i in range(1, 13):
            K = intrinsics(folder / "_meta" / f"intrinsics_camera{i:02d}.txt")
            R, t = extrinsics(folder / "_meta" / f"extrinsics_camera{i:02d}.txt")
            image = folder / f"image_camera{i:02d}.jpg"
            out[image.name] = (image, K, R, t)
        original_long_side = 1280
    for name, (image, K, R, t) in out.items():
        s = max(cv2.imread(str(image), cv2.IMREAD_GRAYSCALE).shape) / original_long_side
        out[name] = (image, np.diag([s, s, 1.0]) @ K, R, t)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="buddha", help="comma-separated set names, or 'all'")
    parser.add_argument("--bins", default="20,45,70,100", help="edges of the angle bins between cameras, degrees")
    parser.add_argument("--per-bin", type=int, default=6, help="pairs per bin per set (the first in name order)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    sets = SETS if args.sets == "all" else args.sets.split(",")
    edges = [float(e) for e in args.bins.split(",")]
    hardnet = HardNetDescriptor(device="cpu")
    results: dict[tuple[str, int], list[tuple[bool, float]]] = {}
    for name in sets:
        cams = list(cameras(ROOT / name).values())
        taken = [0] * (len(edges) - 1)
        for a in range(len(cams)):
            for b in range(a + 1, len(cams)):
                (path1, K1, R1, t1), (path2, K2, R2, t2) = cams[a], cams[b]
                R, t = R2 @ R1.T, t2 - R2 @ R1.T @ t1
                angle = rotation_angle_deg(R)
                k = int(np.searchsorted(edges, angle)) - 1
                if not 0 <= k < len(taken) or taken[k] >= args.per_bin:
                    continue
                taken[k] += 1
                images = [cv2.imread(str(p)) for p in (path1, path2)]
                for method, wide in (("plain", False), ("wide", True)):
                    start = time.perf_counter()
                    r = match_pair(*images, hardnet, geometry="fundamental", wide_baseline=wide)
                    seconds = time.perf_counter() - start
                    err = float("inf")
                    if r.model is not None and r.inliers.sum() >= 8:
                        n1 = cv2.undistortPoints(r.points1[r.inliers][None], K1, None).reshape(-1, 2)
                        n2 = cv2.undistortPoints(r.points2[r.inliers][None], K2, None).reshape(-1, 2)
                        pose = estimate_relative_pose(n1, n2, threshold=1.0 / K1[0, 0])
                        if pose is not None:
                            err = pose_error_deg(pose[0], pose[1], R, t)
                    results.setdefault((method, k), []).append((err < 10, seconds))
                    if args.verbose:
                        print(f"{name} {path1.name}-{path2.name} ({angle:5.1f} deg) {method:5s} "
                              f"{int(r.inliers.sum()):4d} inliers ({r.geometry}) step {r.step}  pose error "
                              f"{err:6.2f} deg  {seconds:5.1f} s", flush=True)
    from bench_descriptor import cpu_name  # the same CPU line as the other benchmarks

    cpu = cpu_name()
    print(f"\n{', '.join(sets)}; {args.threads} threads, {cpu}; load average "
          f"{' '.join(open('/proc/loadavg').read().split()[:3])}")
    print("| angle between the cameras | method | solved (pose error < 10 deg) | seconds per pair |")
    print("|---|---|---|---|")
    for (method, k), rows in sorted(results.items(), key=lambda x: (x[0][1], x[0][0])):
        solved = sum(ok for ok, _ in rows)
        print(f"| {edges[k]:g}-{edges[k + 1]:g} deg | {method} | {solved}/{len(rows)} | "
              f"{np.mean([s for _, s in rows]):.1f} |")


if __name__ == "__main__":
    main()
