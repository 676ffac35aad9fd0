"""Real wide-baseline pairs with known cameras: match_pair's fundamental matrix, wide_baseline=True and ASIFT.

The collections of ../shared/data/multiview-train that ship cameras (the photos stay outside the repository):

* ``buddha``: 13 views round a stone sculpture, 3 x 4 projection matrices (``_meta/*_P.txt``);
* ``ngp-fox``: 50 phone-video frames round a fox figurine, instant-ngp's ``transforms.json`` (camera to world,
  OpenGL axes, radial and tangential distortion);
* ``bundler-kermit``: 9 calibrated views of a toy (Bundler's ``bundle.out``, with its 3D points, from which
  the co-visible points of a pair are counted);
* ``robovision-mvs-*`` (four sets, not in the default ``--sets``): a ring of 12 calibrated cameras round an
  object (a walnut, two granular objects), dark grayscale images, HALCON's camera files (the relative rotations
  are 29-31, 59-60, 88-90 degrees, so use e.g. ``--bins 25,45,75,95``);
* any set reconstructed into ``--sfm DIR/<set>/`` (a scene folder of ``hardnet-desc sfm``; run it with
  ``--features sift`` so that the ground truth owes nothing to HardNet): every model's pairs with at least
  ``--min-covisible`` common 3D points, through ``eval-pairs``' own reader (``load_scene``).

Pairs are binned by the angle of the relative rotation (default 30-45, 45-60, 60-90 degrees) and drawn at
random (fixed seed) within each bin (``-v`` also prints the angle between the two optical axes, which leaves out
a turn of the camera about its own axis: a pair 176 degrees apart may be a camera held upside down); kermit's
pairs and those of ``--sfm`` scenes need ``--min-covisible`` common 3D points of the model (the other sets are
object-centred captures in which every view sees the object). Every method fits a
fundamental matrix (1 px); the relative pose is then estimated from its inliers with the known intrinsics
(``hardnet_desc.geometry.estimate_relative_pose``) and compared with the true one. The **pose error** is the
larger of the rotation and translation-direction errors; a pair is **solved** below 10 degrees, a model stated
with a larger error is **wrong**. AUC@5/10/20 as in ``eval-pairs`` (no model: an infinite error).
``--undistort`` removes each camera's lens distortion from its image first (every method then sees the
undistorted images; docs/wide-baseline-log.md, round 5, for what it changed).

    python benchmarks/wide_baseline_pairs.py -v                                 # plain, wide, asift
    python benchmarks/wide_baseline_pairs.py --methods wide --verifiers magsac,magsac-raw,poselib,degensac
    hardnet-desc sfm ../shared/data/multiview-train/vggsfm-kitchen SFM/vggsfm-kitchen --features sift
    python benchmarks/wide_baseline_pairs.py -v --sfm SFM --sets vggsfm-kitchen --bins 30,45,60,90,180

Methods: ``plain`` = ``match_pair(geometry="fundamental")``; ``wide`` = the same with ``wide_baseline=True``;
``wide-rX``, ``wide-kA/B`` = ``match_wide`` with other settings, as in benchmarks/wide_baseline.py;
``asift`` = ``cv2.AffineFeature(cv2.SIFT_create())`` + RootSIFT, mutual nearest neighbours with ratio 0.9,
MAGSAC (1 px), a model with at least 25 inliers (``MIN_INLIERS``). ``--verifiers`` fits ``wide``'s correspondences
again with each verifier (``fit_with`` in benchmarks/wide_baseline.py; PoseLib and pydegensac must be installed
for theirs).
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))
from wide_baseline import correspondences, fit_with, root_sift, wide_options  # noqa: E402
from wide_baseline_rig import cameras as rig_cameras  # noqa: E402

from hardnet_desc import HardNetDescriptor  # noqa: E402
from hardnet_desc.core.image import to_uint8  # noqa: E402
from hardnet_desc.evaluation.pair_sources import load_scene  # noqa: E402
from hardnet_desc.geometry import (  # noqa: E402
    DEFAULT_THRESHOLD,
    estimate_relative_pose,
    pose_auc,
    pose_error_deg,
    rotation_angle_deg,
)
from hardnet_desc.matching import match_descriptors  # noqa: E402
from hardnet_desc.pipeline import match_pair  # noqa: E402
from hardnet_desc.wide_baseline import match_wide  # noqa: E402

ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "multiview-train"
SETS = ("buddha", "ngp-fox", "bundler-kermit")
OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0])  # x right, y up, z back -> x right, y down, z forward


@dataclass
class Camera:
    """A calibrated view: ``x ~ K (R X + t)`` (world -> camera, OpenCV axes), ``dist`` OpenCV's coefficients."""

    path: Path
    K: np.ndarray
    dist: np.ndarray
    R: np.ndarray
    t: np.ndarray
    index: int = -1  # the camera's index in its model (Bundler: for co-visible points)


def buddha_cameras(folder: Path) -> dict[str, Camera]:
    return {n: Camera(p, K, np.zeros(4), R, t) for n, (p, K, R, t) in rig_cameras(folder).items()}


def nerf_cameras(folder: Path) -> dict[str, Camera]:
    """instant-ngp's ``transforms.json``: one K and distortion for all frames, K scaled to the stored size."""
    meta = json.loads((folder / "_meta" / "transforms.json").read_text())
    out = {}
    for frame in meta["frames"]:
        path = folder / Path(frame["file_path"]).name
        if not path.exists():
            continue
        s = max(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).shape) / max(meta["w"], meta["h"])
        K = np.array([[meta["fl_x"] * s, 0, meta["cx"] * s], [0, meta["fl_y"] * s, meta["cy"] * s], [0, 0, 1]])
        c2w = np.array(frame["transform_matrix"], np.float64)
        R = (c2w[:3, :3] @ OPENGL_TO_OPENCV).T
        out[path.name] = Camera(path, K, np.array([meta[k] for k in ("k1", "k2", "p1", "p2")]), R, -R @ c2w[:3, 3])
    return out


def bundler_cameras(folder: Path) -> tuple[dict[str, Camera], list[set[int]]]:
    """Bundler's ``bundle.out`` (images in name order; cameras with f = 0 are unregistered) and, per camera, the
    indices of the 3D points it sees. Bundler's pixels have their origin at the image centre, y up."""
    lines = [line for line in (folder / "_meta" / "bundle.out").read_text().splitlines() if not line.startswith("#")]
    n_cams, n_points = map(int, lines[0].split())
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".jpg")
    out = {}
    for i, path in enumerate(images[:n_cams]):
        v = np.array(" ".join(lines[1 + 5 * i : 6 + 5 * i]).split(), float)
        if v[0] == 0:
            continue
        h, w = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).shape
        K = np.array([[v[0], 0, (w - 1) / 2], [0, v[0], (h - 1) / 2], [0, 0, 1]])
        out[path.name] = Camera(path, K, np.array([v[1], v[2], 0, 0]), OPENGL_TO_OPENCV @ v[3:12].reshape(3, 3),
                                OPENGL_TO_OPENCV @ v[12:15], i)
    seen: list[set[int]] = [set() for _ in range(n_cams)]
    row = 1 + 5 * n_cams
    for p in range(n_points):
        views = lines[row + 3 * p + 2].split()
        for c in views[1::4]:
            seen[int(c)].add(p)
    return out, seen


def halcon_cameras(folder: Path) -> dict[str, Camera]:
    """HALCON's ``intrinsics_cameraNN.txt`` (focal length and cell size in metres, centre in pixels, no distortion
    left: the images are undistorted) and ``extrinsics_cameraNN.txt`` (a 3 x 4 camera-to-world pose, row by row),
    K scaled from HALCON's image size to the stored one. The convention was checked on matches: the inliers of
    30-degree pairs lie within a pixel of the epipolar lines (hundreds of pixels off read as world-to-camera)."""
    out = {}
    for path in sorted(folder.glob("image_camera*.jpg")):
        n = path.stem[len("image_camera"):]
        text = (folder / "_meta" / f"intrinsics_camera{n}.txt").read_text()
        p = {k: float(v) for k, v in re.findall(r"^(\w+):\w+:\s*([-+\d.eE]+);", text, re.M)}
        h, w = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).shape
        sx, sy = w / p["ImageWidth"], h / p["ImageHeight"]
        K = np.array([[p["Focus"] / p["Sx"] * sx, 0, p["Cx"] * sx], [0, p["Focus"] / p["Sy"] * sy, p["Cy"] * sy],
                      [0, 0, 1]])
        c2w = np.loadtxt(folder / "_meta" / f"extrinsics_camera{n}.txt").reshape(3, 4)
        R = c2w[:, :3].T
        out[path.name] = Camera(path, K, np.zeros(4), R, -R @ c2w[:, 3])
    return out


def sfm_cameras(scene: Path, min_covisible: int) -> list[tuple[Camera, Camera]]:
    """The pairs of a reconstructed scene folder with ``>= min_covisible`` common points, as camera 1 at the
    origin and camera 2 at the relative pose."""
    found = load_scene(scene, min_covisible=min_covisible, max_pairs=None)
    return [(Camera(found.image_dir / p.image1, p.K1, np.array([*p.radial1, 0, 0]), np.eye(3), np.zeros(3)),
             Camera(found.image_dir / p.image2, p.K2, np.array([*p.radial2, 0, 0]), p.R, p.t)) for p in found.pairs]


def wide_pairs(name: str, edges: list[float], per_bin: int, min_covisible: int, seed: int, sfm: Path | None = None
               ) -> list[tuple[Camera, Camera, float]]:
    """``per_bin`` pairs of set ``name`` per bin of the relative rotation angle, drawn at random (``seed``)."""
    folder = ROOT / name
    seen = None
    if sfm is not None and (sfm / name).is_dir():
        candidates = sfm_cameras(sfm / name, min_covisible)
    elif not (folder / "_meta").is_dir():
        raise SystemExit(f"{name}: no cameras (no {folder / '_meta'}; reconstruct it into --sfm DIR/{name})")
    else:
        if name == "bundler-kermit":
            cams, seen = bundler_cameras(folder)
        elif name.startswith("robovision-mvs"):
            cams = halcon_cameras(folder)
        elif (folder / "_meta" / "transforms.json").exists():
            cams = nerf_cameras(folder)
        else:
            cams = buddha_cameras(folder)
        candidates = [(cams[a], cams[b]) for a, b in itertools.combinations(sorted(cams), 2)]
    bins: list[list[tuple[Camera, Camera, float]]] = [[] for _ in edges[1:]]
    for c1, c2 in candidates:
        angle = rotation_angle_deg(c2.R @ c1.R.T)
        k = int(np.searchsorted(edges, angle)) - 1
        if not 0 <= k < len(bins) or (seen is not None and len(seen[c1.index] & seen[c2.index]) < min_covisible):
            continue
        bins[k].append((c1, c2, angle))
    rng = np.random.default_rng(seed)
    chosen = []
    for pairs in bins:
        chosen += [pairs[i] for i in sorted(rng.permutation(len(pairs))[:per_bin])]
    return chosen


def asift_pair(image1: np.ndarray, image2: np.ndarray, asift) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """ASIFT + RootSIFT, mutual NN with ratio 0.9, MAGSAC F (1 px): ``(points1, points2, inliers or None)``."""
    (k1, d1), (k2, d2) = [asift.detectAndCompute(to_uint8(im), None) for im in (image1, image2)]
    if d1 is None or d2 is None:
        return np.zeros((0, 2)), np.zeros((0, 2)), None
    m = match_descriptors(root_sift(d1), root_sift(d2), ratio=0.9, mutual=True)
    p1 = np.float64([k1[i].pt for i in m.query_idx]).reshape(-1, 2)
    p2 = np.float64([k2[i].pt for i in m.train_idx]).reshape(-1, 2)
    model, inliers = fit_with("magsac-raw", p1, p2, "fundamental", 1.0, image1.shape[:2])
    return p1, p2, None if model is None else inliers


def pose_error(p1: np.ndarray, p2: np.ndarray, inliers: np.ndarray | None, c1: Camera, c2: Camera) -> float:
    """The pose error (degrees) of the pose from ``inliers``' correspondences; inf without a model."""
    if inliers is None or inliers.sum() < 8:
        return float("inf")
    n1 = cv2.undistortPoints(p1[inliers][None], c1.K, c1.dist).reshape(-1, 2)
    n2 = cv2.undistortPoints(p2[inliers][None], c2.K, c2.dist).reshape(-1, 2)
    pose = estimate_relative_pose(n1, n2, threshold=1.0 / c1.K[0, 0])
    if pose is None:
        return float("inf")
    R, t = c2.R @ c1.R.T, c2.t - c2.R @ c1.R.T @ c1.t
    return float(pose_error_deg(pose[0], pose[1], R, t))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--bins", default="30,45,60,90", help="edges of the rotation-angle bins, degrees")
    parser.add_argument("--per-bin", type=int, default=2, help="pairs per bin per set")
    parser.add_argument("--min-covisible", type=int, default=20,
                        help="bundler-kermit and --sfm scenes: common 3D points of a pair")
    parser.add_argument("--sfm", type=Path, help="folder of scene folders (hardnet-desc sfm --features sift) "
                        "named after the sets, whose models give the cameras")
    parser.add_argument("--methods", default="plain,wide,asift")
    parser.add_argument("--verifiers", default="", help="verify wide's correspondences again with these too "
                        "(magsac, magsac-raw, poselib, degensac)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--undistort", action="store_true", help="remove each camera's lens distortion from its "
                        "image first (cv2.undistort, the same K), as image-matching benchmarks do")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    edges = [float(e) for e in args.bins.split(",")]
    methods = args.methods.split(",")
    verifiers = [v for v in args.verifiers.split(",") if v]
    if verifiers and "wide" not in methods:
        parser.error("--verifiers needs the wide method")
    rows = methods + [f"wide/{v}" for v in verifiers]
    options = {m: wide_options(m) for m in rows}  # match_wide's settings of the wide-rX, wide-kA/B methods
    hardnet = HardNetDescriptor(device="cpu")
    asift = cv2.AffineFeature_create(cv2.SIFT_create())
    errors: dict[str, list[float]] = {m: [] for m in rows}
    cpu: dict[str, list[float]] = {m: [] for m in rows}
    n_pairs = 0
    for name in args.sets.split(","):
        for c1, c2, angle in wide_pairs(name, edges, args.per_bin, args.min_covisible, args.seed, args.sfm):
            images = [cv2.imread(str(c.path)) for c in (c1, c2)]
            if args.undistort:
                images = [cv2.undistort(im, c.K, c.dist) for im, c in zip(images, (c1, c2), strict=True)]
                c1, c2 = (replace(c, dist=np.zeros_like(c.dist)) for c in (c1, c2))
            axes = np.degrees(np.arccos(np.clip((c2.R @ c1.R.T)[2, 2], -1, 1)))  # optical axes, roll left out
            n_pairs += 1
            found = None
            for m in rows:
                c0 = time.process_time()
                extra = ""
                if m == "asift":
                    p1, p2, inliers = asift_pair(*images, asift)
                elif m.startswith("wide/"):
                    p1, p2 = correspondences(found)
                    model, inliers = fit_with(m[5:], p1, p2, "fundamental", 1.0, images[0].shape[:2])
                    inliers = None if model is None else inliers
                else:
                    r = (match_wide(*images, hardnet, geometry="fundamental",
                                    threshold=DEFAULT_THRESHOLD["fundamental"], **options[m]) if options[m] else
                         match_pair(*images, hardnet, geometry="fundamental", wide_baseline=m == "wide"))
                    p1, p2, inliers = r.points1, r.points2, None if r.model is None else r.inliers
                    found = r if m == "wide" else found
                    extra = f" ({r.geometry}, step {r.step})" if m == "wide" or options[m] else ""
                cpu[m].append(time.process_time() - c0)
                err = pose_error(p1, p2, inliers, c1, c2)
                errors[m].append(err)
                if args.verbose:
                    print(f"{name} {c1.path.name}-{c2.path.name} ({angle:4.1f} deg, axes {axes:4.1f}) {m:16s} "
                          f"{0 if inliers is None else int(inliers.sum()):4d} inliers of {len(p1):5d}{extra}  pose "
                          f"error {err:6.2f} deg  {cpu[m][-1]:5.1f} CPU s", flush=True)
    from bench_descriptor import cpu_name  # the same CPU line as the other benchmarks

    print(f"\n{n_pairs} pairs of {args.sets}, rotation bins {args.bins} deg, {args.per_bin} per bin and set; "
          f"{args.threads} threads, {cpu_name()}; load average {' '.join(open('/proc/loadavg').read().split()[:3])}")
    print("| method | solved (< 10 deg) | wrong models (>= 10 deg) | no model | AUC@5 / 10 / 20 | CPU s per pair |")
    print("|---|---|---|---|---|---|")
    for m in rows:
        e = np.array(errors[m])
        auc = " / ".join(f"{a:.3f}" for a in pose_auc(e))
        print(f"| {m} | {(e < 10).sum()}/{len(e)} | {(np.isfinite(e) & (e >= 10)).sum()} | {np.isinf(e).sum()} | "
              f"{auc} | {np.mean(cpu[m]):.1f} |")


if __name__ == "__main__":
    main()
