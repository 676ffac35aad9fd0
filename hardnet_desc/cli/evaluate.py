"""The benchmarks: ``eval-sequences``, ``eval-fpr95``, ``eval-pairs`` and ``make-sequences`` (their data)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .options import (add_device, add_force, add_json, add_max_keypoints, add_methods, add_mutual_ratio,
                      add_precision, add_quiet, add_weights, split_list)


def add_eval_sequences(sub) -> None:
    p = sub.add_parser("eval-sequences", help="matching benchmark on HPatches/Oxford-layout image sequences",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="For every pair (1, k) of every sequence: detect SIFT keypoints once per image, describe "
                       "them with each\nmethod, match by mutual nearest neighbour (+ ratio test) and score against the "
                       "ground-truth\nhomography: MMA at 1..10 px (mean over pairs), matches and correct (3 px) matches per "
                       "pair,\nand homography accuracy (RANSAC 3 px, mean corner error <= 1/3/5 px). Grouped by v_ / i_ / n_.\n"
                       "ROOT is one sequence or a folder of them: <seq>/1.ppm..6.ppm + H_1_2..H_1_6 (HPatches) or\n"
                       "<seq>/img1.ppm..img6.ppm + H1to2p..H1to6p (Oxford); .png/.jpg/.pgm images are accepted too.",
                       epilog="example:\n  hardnet-desc eval-sequences hpatches-sequences-release --json hp.json --plot mma.png")
    p.add_argument("root", type=Path, help="a sequence folder or a folder of sequences")
    add_methods(p, "sift,rootsift,hardnet,kornia")
    add_weights(p)
    add_max_keypoints(p, zero_keeps_all=False)
    add_mutual_ratio(p)
    add_json(p, "sequence")
    p.add_argument("--plot", type=Path, default=None, metavar="FILE", help="save an MMA-vs-threshold plot "
                   "(.png, .pdf or .svg)")
    add_force(p, "--json and --plot")
    p.add_argument("--strict", action="store_true", help="abort on an incomplete sequence (a reference image only, "
                   "a missing homography or image) instead of skipping it with a warning")
    add_device(p)
    add_precision(p, default="fp32", int8=True)
    add_quiet(p)
    p.set_defaults(func=run_eval_sequences)


def run_eval_sequences(args: argparse.Namespace) -> int:
    from ..evaluation.sequences import evaluate_sequences, format_table, plot_mma, save_json

    methods = split_list(args.methods)
    def on_skip(name: str, reason: str) -> None:
        print(f"hardnet-desc eval-sequences: warning: skipped sequence {name}: {reason}", file=sys.stderr)

    _check_json_plot(args)
    results = evaluate_sequences(
        args.root, methods, weights=args.weights, max_keypoints=args.max_keypoints, ratio=args.ratio,
        device=args.device, precision=args.precision, progress=not args.quiet, strict=args.strict, on_skip=on_skip,
    )
    print(format_table(results), end="")
    if args.json:
        print(f"json: {save_json(results, args.json, force=args.force)}")
    if args.plot:
        print(f"plot: {plot_mma(results, args.plot, force=args.force)}")
    return 0


def _check_json_plot(args: argparse.Namespace) -> None:
    """Before any work: ``--json`` (and ``--plot``) may be written (``outputs.check_output``)."""
    from ..evaluation.sequences import check_plot_path
    from ..outputs import check_distinct, check_output, json_is_ours

    check_distinct(json=args.json, plot=getattr(args, "plot", None))
    if args.json:
        check_output(args.json, json_is_ours, force=args.force)
    if getattr(args, "plot", None):
        check_plot_path(args.plot, force=args.force)


def add_eval_fpr95(sub) -> None:
    from ..core.patches import DEFAULT_PATCH_SCALE

    p = sub.add_parser("eval-fpr95", help="FPR95 on PhotoTour-layout patch pairs",
                       description="False-positive rate at 95% recall of HardNet (or SIFT, RootSIFT) on the m50_*.txt "
                       "pair files of a PhotoTour-layout folder (Brown's liberty/notredame/yosemite, or make-dataset's "
                       "val split).")
    p.add_argument("root", type=Path, help="folder with info.txt, patches*.bmp and m50_*.txt")
    p.add_argument("--pairs", action="append", default=None, metavar="FILE",
                   help="pair file (a bare name is looked up in ROOT); repeatable (default: every m50_*.txt in ROOT)")
    add_methods(p, "hardnet", "hardnet, sift, rootsift (SIFT of the patch centre)")
    p.add_argument("--patch-scale", type=float, default=DEFAULT_PATCH_SCALE,
                   help="for sift/rootsift: the patch side in units of kp.size the patches were cut at "
                        "(default: %(default)s, as make-dataset)")
    add_weights(p)
    add_device(p)
    add_precision(p, default="fp32", int8=True)
    p.set_defaults(func=run_eval_fpr95)


def run_eval_fpr95(args: argparse.Namespace) -> int:
    from functools import partial

    from ..core.patches import check_patch_scale
    from ..data.phototour import STORED_SIZE
    from ..descriptor import HardNetDescriptor
    from ..evaluation.methods import sift_patches
    from ..evaluation.phototour import evaluate_fpr95

    methods = split_list(args.methods)
    unknown = sorted(set(methods) - {"hardnet", "sift", "rootsift"})
    if unknown or not methods:
        raise ValueError(f"unknown method(s) {unknown}; choose from hardnet, sift, rootsift")
    if not args.root.is_dir():  # fail before the weights load
        raise FileNotFoundError(f"PhotoTour folder not found: {args.root}")
    check_patch_scale(args.patch_scale)  # before any work (SIFT's keypoint size)
    for method in methods:
        if method == "hardnet":
            describe, size = HardNetDescriptor(args.weights, device=args.device, precision=args.precision), None
        else:  # SIFT sees the stored 64x64 patches
            describe = partial(sift_patches, patch_scale=args.patch_scale, root=method == "rootsift")
            size = STORED_SIZE
        results = evaluate_fpr95(args.root, describe, args.pairs, **({"patch_size": size} if size else {}))
        for name, value in results.items():
            print(f"{name}: FPR95 = {100 * value:.2f}%" if len(methods) == 1 else
                  f"{method}: {name}: FPR95 = {100 * value:.2f}%")
    return 0


#: The most ``eval-pairs --threads`` accepts (100,000 failed to start: no memory for OpenCV's and tqdm's threads).
MAX_THREADS = 1024


def add_eval_pairs(sub) -> None:
    p = sub.add_parser("eval-pairs", help="relative-pose benchmark on image pairs with known cameras",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="For every image pair with known cameras (from a COLMAP model or a pairs file): detect "
                       "SIFT keypoints once\nper image, describe them with each method, match by mutual nearest "
                       "neighbour (+ ratio test),\nestimate the essential matrix with the known K (USAC_MAGSAC) and "
                       "recoverPose. Reports pose AUC@5/10/20\n(error = max(rotation, translation direction) in degrees), "
                       "RANSAC inliers and correct matches\n(Sampson error under the true geometry < 1 px) per pair, for "
                       "all pairs and by baseline (rotation terciles).\n"
                       "SOURCES: pairs files (.txt), COLMAP models (sparse/0), scene folders (with sparse/<k>/ and "
                       "summary.json)\nor folders of those. Pairs file lines: image1 image2 K1(9) K2(9) R(9) t(3) "
                       "[k1 k2 of cam 1, k1 k2 of cam 2],\nX2 = R X1 + t, OpenCV pixels (see docs/cli.md).",
                       epilog="examples:\n  hardnet-desc eval-pairs /work/data/sfm/sift --scenes bundler-et,opensfm-lund "
                       "--json poses.json\n  hardnet-desc eval-pairs /work/data/sfm/sift --write-pairs heldout-pairs/\n"
                       "  hardnet-desc eval-pairs heldout-pairs/ --methods rootsift,hardnet --weights v4.safetensors")
    p.add_argument("sources", type=Path, nargs="+", metavar="MODEL_OR_PAIRS",
                   help="pairs file, COLMAP model, scene folder or folder of scenes")
    p.add_argument("--images", type=Path, default=None, metavar="DIR",
                   help="image folder of one scene; with several scenes, the folder of <scene>/ image folders "
                        "(default: the pairs file's image_dir header or the scene's summary.json)")
    p.add_argument("--scenes", default=None, metavar="A,B,C", help="only these scenes of a folder of scenes")
    add_methods(p, "sift,rootsift,hardnet")
    add_weights(p)
    add_max_keypoints(p, zero_keeps_all=False)
    add_mutual_ratio(p)
    p.add_argument("--max-pairs", type=int, default=100, metavar="N",
                   help="pairs per scene at most, a seeded random choice; 0 for all (default: %(default)s)")
    p.add_argument("--min-covisible", type=int, default=50, metavar="N",
                   help="pairs from a model need N common 3D points (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seeds the choice of pairs (default: %(default)s)")
    p.add_argument("--ransac-px", type=float, default=0.5, metavar="PX",
                   help="essential-matrix threshold in pixels, divided by the mean focal length (default: %(default)s)")
    p.add_argument("--write-pairs", type=Path, default=None, metavar="DIR",
                   help="write the chosen pairs as DIR/<scene>.txt (to freeze them) and stop")
    add_json(p, "pair")
    add_force(p, "--json and --write-pairs files")
    add_device(p)
    add_precision(p, default="fp32")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help=f"torch threads, 1..{MAX_THREADS}; 1 is much faster on a busy shared CPU (default: torch's)")
    add_quiet(p)
    p.set_defaults(func=run_eval_pairs)


def run_eval_pairs(args: argparse.Namespace) -> int:
    from ..core.patches import check_number
    from ..data.camera_pairs import write_camera_pairs
    from ..evaluation.poses import evaluate_pairs, format_pose_table, load_scenes
    from ..evaluation.sequences import save_json

    if args.threads is not None:
        if not 1 <= args.threads <= MAX_THREADS:
            raise ValueError(f"--threads must be 1..{MAX_THREADS}, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    check_number(args.ransac_px, "--ransac-px")
    names = split_list(args.scenes) if args.scenes else None
    if args.max_pairs < 0:
        raise ValueError(f"--max-pairs must be >= 0 (0: all), got {args.max_pairs}")
    scenes = load_scenes(args.sources, images=args.images, scenes=names, min_covisible=args.min_covisible,
                         max_pairs=args.max_pairs or None, seed=args.seed)
    outputs = [args.write_pairs / f"{s.name}.txt" for s in scenes] if args.write_pairs else [args.json]
    _check_not_inputs(scenes, outputs)
    if args.write_pairs:
        from ..data.camera_pairs import is_pairs_file_ours
        from ..outputs import check_output

        for path in outputs:  # every file may be written before the first is
            check_output(path, is_pairs_file_ours, force=args.force)
        for scene in scenes:
            if not scene.pairs:  # a file of no pairs could not be read back
                print(f"{scene.name}: no pairs (--min-covisible {args.min_covisible}): not written")
                continue
            path = write_camera_pairs(args.write_pairs / f"{scene.name}.txt", scene.pairs, scene.image_dir,
                                      comment=f"from {scene.source}: min covisible {args.min_covisible}, "
                                              f"max pairs {args.max_pairs}, seed {args.seed}", force=args.force)
            print(f"{scene.name}: {len(scene.pairs)} pairs -> {path}")
        return 0
    _check_json_plot(args)
    methods = split_list(args.methods)
    results = evaluate_pairs(scenes, methods, weights=args.weights, max_keypoints=args.max_keypoints, ratio=args.ratio,
                             ransac_px=args.ransac_px, device=args.device, precision=args.precision,
                             progress=not args.quiet)
    print(format_pose_table(results), end="")
    if args.json:
        print(f"json: {save_json(results, args.json, force=args.force)}")
    return 0


def _check_not_inputs(scenes: list, outputs: list[Path | None]) -> None:
    """Before any work: no output file (None: not asked for) is a pairs file being read, even with --force."""
    inputs = {Path(scene.source).resolve(): scene.source for scene in scenes}
    for path in outputs:
        if path is not None and path.resolve() in inputs:
            raise ValueError(f"output {path} is the input {inputs[path.resolve()]}; write it somewhere else")


def add_make_sequences(sub) -> None:
    p = sub.add_parser("make-sequences", help="synthetic HPatches-layout sequences from held-out photos",
                       description="For each photo write v_<photo> (5 homographies of increasing strength plus mild "
                       "photometric changes) and i_<photo> (photometric changes only, identity homographies) in the "
                       "HPatches layout: 1.png..6.png and H_1_2..H_1_6. Use photos not seen in training.")
    p.add_argument("images", help="folder of photos (searched recursively)")
    p.add_argument("out", help="output folder")
    p.add_argument("--n-images", type=int, default=None, metavar="N", help="use N photos, a seeded random choice (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-side", type=int, default=1024, help="downscale photos to this longer side (default: %(default)s)")
    p.add_argument("--format", choices=["png", "ppm"], default="png", help="image format (default: %(default)s)")
    p.add_argument("--no-illumination", action="store_true", help="do not write the i_ sequences")
    p.add_argument("--noise", action="store_true",
                   help="also write n_<photo>: Gaussian sensor noise of growing strength only (sigma 4..24 grey levels)")
    add_force(p, "sequence folders")
    p.set_defaults(func=run_make_sequences)


def run_make_sequences(args: argparse.Namespace) -> int:
    from ..evaluation.synthetic_sequences import make_sequences

    failed = []

    def on_error(photo: str, reason: str) -> None:  # as extract: one line per photo, the others go on
        failed.append(photo)
        print(f"hardnet-desc make-sequences: error: {photo}: {reason}", file=sys.stderr)

    folders = make_sequences(args.images, args.out, n_images=args.n_images, seed=args.seed,
                             illumination=not args.no_illumination, noise=args.noise,
                             max_side=args.max_side, suffix=f".{args.format}", force=args.force, on_error=on_error)
    print(f"{len(folders)} sequences -> {args.out}" + (f", {len(failed)} photos failed" if failed else ""))
    return 1 if failed else 0
