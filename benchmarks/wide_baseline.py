"""Extreme-viewpoint pairs with known homographies: today's match_pair, wide_baseline=True and OpenCV's ASIFT.

Pairs are made from near-planar photos (default: urban100's facades in ../shared/data/train-images, the
photos stay outside the repository): each photo, scaled to ``--max-side`` pixels, against itself seen by a
camera turned 70-83 degrees away (tilt 3-8, ``hardnet_desc.data.warps.viewpoint_homography``) about a random
in-plane axis, rotated in the picture by a random angle and zoomed by 2^U(-1, 1) (``--zoom``) around the fit of
the whole plane. A pair is **solved** when the estimated homography puts image 1's four corners within 1 % of
the image diagonal of where the true one puts them. **Wrong** counts models stated as found that are not
solved; ``--negatives`` adds pairs of two different photos, where every model is wrong.

    python benchmarks/wide_baseline.py                               # 20 pairs, 2 threads, all methods
    python benchmarks/wide_baseline.py --pairs 5 --methods wide      # quick look
    python benchmarks/wide_baseline.py --images DIR --max-side 1000 --negatives 5
    python benchmarks/wide_baseline.py --tilts 1,1.5 --methods plain,wide    # easy pairs: the cost of step 0

``--photometric`` also changes image 2's light, blur, noise and JPEG quality, as real pairs differ.
``--tilts1 LO,HI`` makes image 1 oblique too (the photo seen by a camera with that tilt about another random
axis, no zoom): both views are then far off the plane's normal, as in real wide-baseline pairs, and the tilt
between them (ASIFT's "transition tilt") reaches up to the product of the two. The corners checked are then
those of the photo as image 1 shows it.

Methods: ``plain`` = ``match_pair(geometry="homography")``; ``wide`` = the same with ``wide_baseline=True``;
``wide-rX`` = ``match_wide`` with ``view_ratio=X``; ``wide-kA/B`` = ``match_wide`` with ``view_keypoints=(A, B)``
(keypoints per view at each step with views, e.g. ``wide-k800/400``; ``wide-k800`` for every step); ``wide-sX`` =
``match_wide`` with ``rotation_step=X`` (views of tilt t X / t degrees apart);
``asift`` = ``cv2.AffineFeature(cv2.SIFT_create())`` + RootSIFT, mutual nearest neighbours with ratio 0.9,
MAGSAC (3 px, OpenCV's USAC), a model with at least 15 inliers.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from hardnet_desc import HardNetDescriptor
from hardnet_desc.data.images import list_images
from hardnet_desc.data.warps import WarpConfig, photometric, viewpoint_homography
from hardnet_desc.core.image import to_uint8
from hardnet_desc.geometry import fit_homography
from hardnet_desc.matching import match_descriptors
from hardnet_desc.geometry import fit_geometry
from hardnet_desc.pipeline import match_pair
from hardnet_desc.verification import MIN_INLIERS, verify
from hardnet_desc.views import ROTATION_STEP
from hardnet_desc.wide_baseline import match_wide

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "train-images" / "urban100"


def load(path: Path, max_side: int) -> np.ndarray:
    image = cv2.imread(str(path))
    s = max_side / max(image.shape[:2])
    return cv2.resize(image, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else image


def pick_photos(folder: Path, n: int, max_side: int, min_keypoints: int = 2000) -> list[Path]:
    """The first ``n`` photos of ``folder``, in a fixed random order, with at least ``min_keypoints`` SIFT keypoints."""
    files = list_images(folder)
    files = [files[i] for i in np.random.default_rng(0).permutation(len(files))]
    chosen = []
    sift = cv2.SIFT_create()
    for f in files:
        if len(sift.detect(cv2.cvtColor(load(f, max_side), cv2.COLOR_BGR2GRAY))) >= min_keypoints:
            chosen.append(f)
        if len(chosen) == n:
            break
    return chosen


def make_pair(image: np.ndarray, rng: np.random.Generator, tilts: tuple[float, float] = (3.0, 8.0),
              zoom_octaves: tuple[float, float] = (-1.0, 1.0)) -> tuple[np.ndarray, np.ndarray, dict]:
    h, w = image.shape[:2]
    setting = {"tilt": rng.uniform(*tilts), "axis_deg": rng.uniform(0, 180), "rotation_deg": rng.uniform(0, 360),
               "zoom": 2 ** rng.uniform(*zoom_octaves)}
    truth = viewpoint_homography((h, w), **setting)
    return cv2.warpPerspective(image, truth, (w, h), flags=cv2.INTER_AREA), truth, setting


def corner_error(model: np.ndarray | None, truth: np.ndarray, h: int, w: int,
                 corners: np.ndarray | None = None) -> float:
    """Largest displacement of image 1's corners (or ``corners`` (4, 2)) between ``model`` and ``truth``, over the
    image diagonal (inf: no model)."""
    if model is None:
        return math.inf
    if corners is None:
        corners = np.float32([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]])
    corners = np.float32(corners)[None]
    d = cv2.perspectiveTransform(corners, model) - cv2.perspectiveTransform(corners, truth)
    return float(np.linalg.norm(d[0], axis=1).max() / math.hypot(w, h))


def root_sift(desc: np.ndarray) -> np.ndarray:
    desc = desc / np.maximum(desc.sum(axis=1, keepdims=True), 1e-12)
    return np.sqrt(desc).astype(np.float32)


def asift_pair(image1: np.ndarray, image2: np.ndarray, asift) -> np.ndarray | None:
    feats = [asift.detectAndCompute(to_uint8(im), None) for im in (image1, image2)]
    (k1, d1), (k2, d2) = feats
    if d1 is None or d2 is None:
        return None
    m = match_descriptors(root_sift(d1), root_sift(d2), ratio=0.9, mutual=True)
    if len(m) < 15:
        return None
    p1 = np.float64([k1[i].pt for i in m.query_idx])
    p2 = np.float64([k2[i].pt for i in m.train_idx])
    model, inliers = fit_homography(p1, p2, 3.0)  # MAGSAC++, as the pipeline's
    if model is None or inliers.sum() < 15:
        return None
    return model


def correspondences(result) -> tuple[np.ndarray, np.ndarray]:
    """``(points1, points2)`` (M, 2) of the matches of a ``PairMatch`` or a ``WideMatch``."""
    if hasattr(result, "points1"):
        return result.points1, result.points2
    m = result.matches
    return result.features1.centres[m.query_idx], result.features2.centres[m.train_idx]


def fit_with(verifier: str, points1: np.ndarray, points2: np.ndarray, geometry: str, threshold: float,
             size1: tuple[int, int]) -> tuple[np.ndarray | None, np.ndarray]:
    """``(model or None, inliers (M,) bool)`` of one verifier on the same correspondences (pixels).

    ``magsac``: ``hardnet_desc.verification.verify`` as shipped (OpenCV's MAGSAC++ and its checks);
    ``magsac-raw``: OpenCV's MAGSAC++ alone (``fit_geometry``); ``poselib``: PoseLib's LO-RANSAC with its
    non-linear refinement; ``degensac``: pydegensac (for F with its degeneracy check). Every one states a
    model only with ``MIN_INLIERS[geometry]`` inliers. PoseLib and pydegensac are imported only here.
    """
    p1, p2 = np.ascontiguousarray(points1, np.float64), np.ascontiguousarray(points2, np.float64)
    none = np.zeros(len(p1), bool)
    need = max(MIN_INLIERS[geometry], 8 if geometry == "fundamental" else 4)
    if len(p1) < need:
        return None, none
    if verifier == "magsac":
        model, inliers, _ = verify(p1, p2, geometry, threshold, None, size1)
        return model, inliers
    if verifier == "magsac-raw":
        model, inliers = fit_geometry(p1, p2, geometry, threshold)
    elif verifier == "poselib":
        import poselib

        if geometry == "homography":
            model, info = poselib.estimate_homography(p1, p2, {"max_reproj_error": threshold})
        else:
            model, info = poselib.estimate_fundamental(p1, p2, {"max_epipolar_error": threshold})
        inliers = np.asarray(info["inliers"], bool)
    elif verifier == "degensac":
        import pydegensac

        if geometry == "homography":
            model, inliers = pydegensac.findHomography(p1, p2, threshold, 0.999, 10_000)
        else:
            model, inliers = pydegensac.findFundamentalMatrix(p1, p2, threshold, 0.999, 10_000)
        inliers = np.asarray(inliers, bool)
    else:
        raise ValueError(f"unknown verifier {verifier!r}")
    if model is None or inliers.sum() < need or not np.isfinite(model).all():
        return None, none
    return model, inliers


def wide_options(method: str) -> dict:
    """``match_wide``'s options that a method name sets: ``wide-rX`` (``view_ratio=X``; the setting before
    ``VIEW_RATIO`` is ``wide-r0.8``), ``wide-kA/B`` (``view_keypoints=(A, B)``), ``wide-sX`` (``rotation_step=X``);
    ``{}`` for other names."""
    if method.startswith("wide-r"):
        return {"view_ratio": float(method[6:])}
    if method.startswith("wide-k"):
        return {"view_keypoints": tuple(int(n) for n in method[6:].split("/"))}
    if method.startswith("wide-s"):
        return {"rotation_step": float(method[6:])}
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of near-planar photos")
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--negatives", type=int, default=0, help="pairs of two different photos (no true model)")
    parser.add_argument("--max-side", type=int, default=1000)
    parser.add_argument("--tilts", default="3,8", metavar="LO,HI",
                        help="range of the tilt (3: 70.5 degrees, 8: 82.8; 1,1.5 gives easy pairs)")
    parser.add_argument("--tilts1", default="", metavar="LO,HI",
                        help="make image 1 oblique too, with a tilt in this range (default: image 1 is the photo)")
    parser.add_argument("--zoom", default="-1,1", metavar="LO,HI",
                        help="the zoom is 2^U(LO, HI) (octaves; --zoom=-2,2 gives the 0.25-4x of issue #24)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default="plain,wide,asift")
    parser.add_argument("--photometric", action="store_true", help="also change image 2's light, blur, noise and "
                        "JPEG quality (hardnet_desc.data.warps.photometric with WarpConfig's defaults)")
    parser.add_argument("--rotation-step", type=float, default=ROTATION_STEP, help="wide: views of tilt t are this / t "
                        "degrees apart")
    parser.add_argument("--verifiers", default="", help="also verify wide's correspondences with these "
                        "(comma-separated: magsac, magsac-raw, poselib, degensac; see fit_with)")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per pair and method")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    methods = args.methods.split(",")
    verifiers = [v for v in args.verifiers.split(",") if v]
    if verifiers and "wide" not in methods:
        parser.error("--verifiers needs the wide method")
    tilts = tuple(float(t) for t in args.tilts.split(","))
    zoom = tuple(float(z) for z in args.zoom.split(","))
    tilts1 = tuple(float(t) for t in args.tilts1.split(",")) if args.tilts1 else None
    rng = np.random.default_rng(args.seed)
    rng1 = np.random.default_rng(args.seed + 2)  # image 1's view: its own stream, image 2's as without it
    light_rng = np.random.default_rng(args.seed + 1)  # its own stream: the same geometry with or without light
    photos = pick_photos(args.images, args.pairs + args.negatives, args.max_side)
    hardnet = HardNetDescriptor(device="cpu")
    asift = cv2.AffineFeature_create(cv2.SIFT_create())
    run = {
        "plain": lambda a, b: match_pair(a, b, hardnet, geometry="homography"),
        "wide": lambda a, b: match_pair(a, b, hardnet, geometry="homography", wide_baseline=True),
        "asift": lambda a, b: asift_pair(a, b, asift),
    }
    for m in methods:  # wide-rX, wide-kA/B: wide with other settings (see wide_options)
        if wide_options(m):
            run[m] = lambda a, b, o=wide_options(m): match_wide(a, b, hardnet, **o)
    if args.rotation_step != ROTATION_STEP:  # another setting
        run["wide"] = lambda a, b: match_wide(a, b, hardnet, rotation_step=args.rotation_step)
    match_pair(*[load(photos[0], 400)] * 2, hardnet)  # warm-up (weights, int8 kernels)
    rows = methods + [f"wide/{v}" for v in verifiers]
    stats = {m: {"solved": 0, "wrong": 0, "seconds": [], "neg_wrong": 0, "neg_seconds": []} for m in rows}
    scales = []
    cpu_seconds: dict[str, list[float]] = {m: [] for m in rows}  # all threads; steadier than wall time when busy
    for k, path in enumerate(photos):
        image = load(path, args.max_side)
        h, w = image.shape[:2]
        negative = k >= args.pairs
        if negative:  # an unrelated photo, warped like the others
            other = load(photos[k - args.pairs], args.max_side)
            other = cv2.resize(other, (w, h), interpolation=cv2.INTER_AREA)
            warped, truth, setting = make_pair(other, rng, tilts, zoom)
        else:
            warped, truth, setting = make_pair(image, rng, tilts, zoom)
        if args.photometric:
            warped = photometric(to_uint8(warped), WarpConfig(), light_rng)
        corners = None
        if tilts1 is not None:  # image 1 oblique too: image 2 is then seen from image 1's view
            image, first, setting1 = make_pair(image, rng1, tilts1, (0.0, 0.0))
            truth = truth @ np.linalg.inv(first)
            truth /= truth[2, 2]
            photo = np.float64([[0, 0, 1], [w - 1, 0, 1], [w - 1, h - 1, 1], [0, h - 1, 1]]) @ first.T
            corners = photo[:, :2] / photo[:, 2:]
            setting["tilt1"] = setting1["tilt"]
        if not negative:
            jac = truth[:2, :2] - np.outer(truth[:2] @ [w / 2, h / 2, 1], truth[2, :2]) / (truth[2] @ [w / 2, h / 2, 1])
            scales.append(math.sqrt(abs(np.linalg.det(jac))) / abs(truth[2] @ [w / 2, h / 2, 1]))
        found = None  # wide's result, whose correspondences the other verifiers get
        for m in rows:
            t0, c0 = time.perf_counter(), time.process_time()
            if m.startswith("wide/"):
                model = fit_with(m[5:], *correspondences(found), "homography", 3.0, (h, w))[0]
            else:
                model = run[m](image, warped)
            found = model if m == "wide" else found
            step = getattr(model, "step", "")
            model = getattr(model, "model", model)
            seconds = time.perf_counter() - t0
            cpu_seconds[m].append(time.process_time() - c0)
            err = corner_error(model, truth, h, w, corners)
            s = stats[m]
            if negative:
                s["neg_seconds"].append(seconds)
                s["neg_wrong"] += model is not None
            else:
                s["seconds"].append(seconds)
                s["solved"] += err <= 0.01
                s["wrong"] += model is not None and err > 0.01
            if args.verbose:
                first = f"tilt1 {setting['tilt1']:.1f} " if "tilt1" in setting else ""
                print(f"{path.name:14s} {'neg ' if negative else ''}{first}tilt {setting['tilt']:.1f} rot "
                      f"{setting['rotation_deg']:5.1f} zoom {setting['zoom']:.2f}  {m:6s} err "
                      f"{err:8.4f}  {seconds:6.1f} s  {'' if step == '' else f'step {step}'}", flush=True)
    from bench_descriptor import cpu_name  # the same CPU line as the other benchmarks

    cpu = cpu_name()
    print(f"\n{args.pairs} pairs from {args.images.name}, tilts {args.tilts}, "
          + (f"image 1 tilts {args.tilts1}, " if tilts1 else "")
          + f"zoom 2^U({args.zoom}), max side {args.max_side} px, "
          + ("photometric changes, " if args.photometric else "") + f"{args.threads} threads, {cpu}")
    if scales:
        print(f"linear scale at the centre (sqrt |det J|): {min(scales):.2f} - {max(scales):.2f}")
    loadavg = open("/proc/loadavg").read().split()[:3]
    print(f"load average at the end (1, 5, 15 min): {' '.join(loadavg)}")
    print("| method | solved | wrong models | seconds per pair (mean / max) | CPU seconds per pair |"
          + (" negatives: wrong models | negatives: s per pair |" if args.negatives else ""))
    print("|---|---|---|---|---|" + ("---|---|" if args.negatives else ""))
    for m in rows:
        s = stats[m]
        row = (f"| {m} | {s['solved']}/{args.pairs} | {s['wrong']} | {np.mean(s['seconds']):.1f} / "
               f"{max(s['seconds']):.1f} | {np.mean(cpu_seconds[m]):.1f} |")
        if args.negatives:
            row += f" {s['neg_wrong']}/{args.negatives} | {np.mean(s['neg_seconds']):.1f} |"
        print(row)


if __name__ == "__main__":
    main()
