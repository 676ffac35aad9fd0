"""``hardnet-desc match``: two images, SIFT keypoints, HardNet descriptors, RANSAC, a picture of the inliers."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .options import (
    add_device,
    add_force,
    add_max_keypoints,
    add_precision,
    add_verbose,
    add_weights,
    descriptor,
    keep_freed_memory,
    numbers,
)


def add_parser(sub) -> None:
    p = sub.add_parser("match", help="match two images: SIFT keypoints, HardNet descriptors, RANSAC",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Detect SIFT keypoints in both images, describe them with HardNet, keep mutual "
                       "nearest neighbours\nthat pass the ratio test, fit a homography or fundamental matrix with "
                       "RANSAC, print the counts\nand save a side-by-side picture of the inlier matches.",
                       epilog="examples:\n  hardnet-desc match a.jpg b.jpg --out matches.png --geometry homography\n"
                       "  hardnet-desc match facade.jpg street.jpg --wide-baseline --geometry homography --json m.json")
    p.add_argument("image1", type=Path, help="first image (any format OpenCV reads)")
    p.add_argument("image2", type=Path, help="second image")
    p.add_argument("--out", type=Path, default=Path("matches.png"), metavar="PNG",
                   help="picture of the inlier matches, .png or .jpg; checked before any work, and an existing "
                   "file is replaced only if hardnet-desc wrote it (default: %(default)s)")
    add_force(p, "--out and --json")
    p.add_argument("--ratio", type=float, default=0.8,
                   help="Lowe's ratio test threshold, 1 turns it off (default: %(default)s)")
    add_max_keypoints(p)
    p.add_argument("--geometry", choices=["fundamental", "homography"], default="fundamental",
                   help="model fitted by RANSAC: fundamental (any static scene) or homography (planar scene or "
                   "camera rotation) (default: %(default)s)")
    p.add_argument("--threshold", type=float, default=None, metavar="PX",
                   help="RANSAC inlier threshold in pixels (default: 1 for fundamental, 3 for homography)")
    p.add_argument("--wide-baseline", action="store_true",
                   help="views far apart (up to ~80 degrees): if the images alone give no verified model, add "
                   "synthesized affine views step by step (MODS); prints each step to stderr")
    p.add_argument("--min-inliers", type=int, default=None, metavar="N",
                   help="with --wide-baseline: inliers below which no model is reported (default: 15 for "
                   "homography, 25 for fundamental); the search ends at 15 (homography), 50 (fundamental) or N")
    p.add_argument("--view-keypoints", type=numbers(int, single=True), default=None, metavar="N[,N...]",
                   help="with --wide-baseline: strongest keypoints per synthesized view, one number for every step or "
                   "one per step (default: 800,400); fewer make the hardest pairs faster on a slow CPU and solve "
                   "fewer of them, 0 keeps all")
    p.add_argument("--json", type=Path, default=None, metavar="FILE",
                   help="also write the result as JSON (model, inlier count, matches, views, timings); an existing "
                   "file is replaced only if hardnet-desc wrote it")
    add_weights(p)
    add_device(p)
    add_precision(p, default="auto", int8=True)
    add_verbose(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..core.image import read_image
    from ..detection import check_max_keypoints
    from ..outputs import check_distinct, check_output, json_is_ours
    from ..pipeline import match_pair
    from ..viz import check_picture_path, draw_matches, save_picture
    from ..wide_baseline import DEFAULT_STEPS, DEFAULT_VIEW_KEYPOINTS, check_view_keypoints

    check_max_keypoints(args.max_keypoints, "--max-keypoints")
    if args.min_inliers is not None and (not args.wide_baseline or args.min_inliers < 1):
        raise ValueError("--min-inliers needs --wide-baseline and a value >= 1")
    if args.view_keypoints is not None:
        if not args.wide_baseline:
            raise ValueError("--view-keypoints needs --wide-baseline")
        steps = sum(bool(views) for views in DEFAULT_STEPS)  # an entry no step would use: silently ignored
        given = len(check_view_keypoints(args.view_keypoints, "--view-keypoints"))
        if given > steps:
            raise ValueError(f"--view-keypoints takes at most {steps} numbers (one per step with views), got {given}")
    check_distinct(out=args.out, json=args.json)
    check_picture_path(args.out, force=args.force)  # an unwritable or foreign --out fails before any work
    if args.json is not None:
        check_output(args.json, json_is_ours, force=args.force)
    keep_freed_memory()
    images = [read_image(p) for p in (args.image1, args.image2)]  # bad paths fail before the weights load
    hardnet = descriptor(args)
    progress = (lambda line: print(f"  {line}", file=sys.stderr, flush=True)) if args.wide_baseline else None
    r = match_pair(*images, hardnet, max_keypoints=args.max_keypoints or None, ratio=args.ratio,
                   geometry=args.geometry, threshold=args.threshold, wide_baseline=args.wide_baseline,
                   min_inliers=args.min_inliers, progress=progress,
                   view_keypoints=DEFAULT_VIEW_KEYPOINTS if args.view_keypoints is None else args.view_keypoints)
    n1, n2, n_inliers = len(r.keypoints1), len(r.keypoints2), int(r.inliers.sum())
    counts = f"{n1} + {n2} keypoints, {len(r.matches)} matches, {n_inliers} inliers ({r.geometry})"
    picture = draw_matches(images[0], images[1], r.points1[r.inliers], r.points2[r.inliers],
                           [f"HardNet: {args.image1.name} - {args.image2.name}", counts])
    save_picture(args.out, picture)
    if args.json is not None:
        _write_match_json(args, r)
    print(f"keypoints: {n1} ({args.image1}), {n2} ({args.image2})")
    ratio = "FGINN ratio" if args.wide_baseline else "ratio"
    guided = args.wide_baseline and r.model is not None and r.geometry == "homography"
    ratio_test = f", {ratio} < {r.ratio:g}" if r.ratio else ""
    print(f"matches:   {len(r.matches)} (mutual nearest neighbours{ratio_test}"
          + (", + guided by the homography" if guided else "") + ")")
    print(f"inliers:   {n_inliers} ({r.geometry}, MAGSAC, {r.threshold:g} px)")
    if args.wide_baseline:
        step = "no step verified a model" if r.step is None else f"step {r.step} verified the model"
        print(f"views:     {r.views[0]} + {r.views[1]}; {step}; {r.timings.get('total', 0):.1f} s")
    if r.model is None:
        print("model:     none (no model verified)")
    print(f"picture:   {args.out}")
    if args.json is not None:
        print(f"json:      {args.json}")
    return 0


def _write_match_json(args: argparse.Namespace, r) -> None:
    """``match --json``: the model, the counts, the matches (pixels, inlier flags), the views and timings."""
    from ..outputs import write_json

    write_json(args.json, {
        "image1": str(args.image1), "image2": str(args.image2),
        "geometry": r.geometry, "model": None if r.model is None else r.model.tolist(),
        "threshold": r.threshold, "keypoints": [len(r.keypoints1), len(r.keypoints2)],
        "inliers": int(r.inliers.sum()), "wide_baseline": bool(args.wide_baseline),
        "step": r.step, "ratio": r.ratio, "views": list(r.views), "timings": r.timings,
        "matches": {"points1": r.points1.round(3).tolist(), "points2": r.points2.round(3).tolist(),
                    "inlier": r.inliers.tolist()},
    }, force=args.force, indent=None)
