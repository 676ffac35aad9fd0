"""The ``hardnet-desc`` command line. Each subcommand is a thin wrapper over the library."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path


_SFM_OPTIONS = ("min_track", "max_points_per_scene", "max_patches_per_point", "min_point_distance", "val_scenes")


def _make_dataset(args: argparse.Namespace) -> int:
    from .data.warps import WARP_PRESETS
    from .train.datasets.synthetic import MatchConfig, make_dataset

    if args.from_sfm:
        return _make_sfm_dataset(args)
    given = [f"--{k.replace('_', '-')}" for k in _SFM_OPTIONS if getattr(args, k) is not None] + (
        ["--all-models"] if args.all_models else [])
    if given:
        raise ValueError(f"{', '.join(given)} only apply with --from-sfm")
    summary = make_dataset(
        args.images, args.out, points=args.points, views=args.views, patch_scale=args.patch_scale,
        min_kp_size=args.min_kp_size,
        val_fraction=args.val_fraction, val_pairs=args.val_pairs, seed=args.seed, split_seed=args.split_seed,
        workers=args.workers, warp=WARP_PRESETS[args.warp], match=MatchConfig(**{k: v for k, v in (
            ("max_angle_deg", args.match_angle), ("max_scale_ratio", args.match_scale)) if v is not None}),
        force=args.force,
    )
    for split in ("train", "val"):
        s = summary[split]
        print(f"{split}: {s['photos']} photos, {s['points']} points, {s['patches']} patches -> {args.out}/{split}")
    return 0


def _make_sfm_dataset(args: argparse.Namespace) -> int:
    from .train.datasets.sfm import DEFAULT_VAL_SCENES, make_sfm_dataset

    val = DEFAULT_VAL_SCENES if args.val_scenes is None else [s.strip() for s in args.val_scenes.split(",") if s.strip()]
    options = {k: getattr(args, k) for k in _SFM_OPTIONS[:4] if getattr(args, k) is not None}  # else the library's
    for k in ("max_points_per_scene", "max_patches_per_point"):
        if options.get(k) == 0:
            options[k] = None  # 0 = no cap
    record = make_sfm_dataset(args.images, args.out, val_scenes=val, val_pairs=args.val_pairs,
                              patch_scale=args.patch_scale, min_kp_size=args.min_kp_size,
                              all_models=args.all_models, seed=args.seed,
                              reconstruct=True, force=args.force, **options)
    for s in record["scenes"]:
        print(f"{s['split']:5s} {s['name']}: {s['registered']}/{s['images']} photos registered, {s['points']} points, "
              f"{s['patches']} patches")
    for split, t in record["totals"].items():
        print(f"{split}: {t['scenes']} scenes, {t['points']} points, {t['patches']} patches -> {args.out}/{split}")
    if record["scenes_without_model"]:
        print(f"scenes without a model (skipped): {', '.join(record['scenes_without_model'])}")
    if record["val_scenes_missing"]:
        print(f"validation scenes not found: {', '.join(record['val_scenes_missing'])}")
    print(f"record: {args.out}/record.json")
    return 0


def _train(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from .train.augment import AugmentConfig
    from .train.trainer import TrainConfig, train

    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    values["augment"] = AugmentConfig.parse(args.aug, args.aug_strength, flip_rot90=args.augment,
                                            rot_deg=args.rot_deg, scale=args.scale_jitter)
    data = ([args.data] if args.data else []) + args.more_data
    if not data:
        raise ValueError("give a training folder: train DATA OUT, or train OUT --data DATA [--data DATA2 ...]")
    cfg = TrainConfig(**{**values, "data": data[0] if len(data) == 1 else data})
    print(f"weights: {train(cfg, resume=args.resume, progress=not args.quiet, force=args.force)}")
    return 0


def _descriptor(args: argparse.Namespace):
    """The HardNetDescriptor of ``--weights/--device/--precision``; ``--verbose`` prints what it runs."""
    from .descriptor import HardNetDescriptor

    hardnet = HardNetDescriptor(args.weights, device=args.device, precision=args.precision)
    if args.verbose:
        print(f"descriptor: {hardnet!r}", file=sys.stderr)
    return hardnet


def _match(args: argparse.Namespace) -> int:
    from .core.image import read_image
    from .outputs import check_output, json_is_ours
    from .pipeline import match_pair
    from .viz import check_picture_path, draw_matches, save_picture

    if args.max_keypoints < 0:
        raise ValueError(f"--max-keypoints must be >= 0, got {args.max_keypoints}")
    if args.min_inliers is not None and (not args.wide_baseline or args.min_inliers < 1):
        raise ValueError("--min-inliers needs --wide-baseline and a value >= 1")
    check_picture_path(args.out, force=args.force)  # an unwritable or foreign --out fails before any work
    if args.json is not None:
        check_output(args.json, json_is_ours, force=args.force)
    images = [read_image(p) for p in (args.image1, args.image2)]  # bad paths fail before the weights load
    hardnet = _descriptor(args)
    progress = (lambda line: print(f"  {line}", file=sys.stderr, flush=True)) if args.wide_baseline else None
    r = match_pair(*images, hardnet, max_keypoints=args.max_keypoints or None, ratio=args.ratio,
                   geometry=args.geometry, threshold=args.threshold, wide_baseline=args.wide_baseline,
                   min_inliers=args.min_inliers, progress=progress)
    n1, n2, n_inliers = len(r.keypoints1), len(r.keypoints2), int(r.inliers.sum())
    counts = f"{n1} + {n2} keypoints, {len(r.matches)} matches, {n_inliers} inliers ({r.geometry})"
    picture = draw_matches(images[0], images[1], r.points1[r.inliers], r.points2[r.inliers],
                           [f"HardNet: {args.image1.name} - {args.image2.name}", counts])
    save_picture(args.out, picture)
    if args.json is not None:
        _write_match_json(args, r)
    print(f"keypoints: {n1} ({args.image1}), {n2} ({args.image2})")
    ratio = "FGINN ratio" if args.wide_baseline else "ratio"
    print(f"matches:   {len(r.matches)} (mutual nearest neighbours" + (f", {ratio} < {args.ratio})" if args.ratio else ")"))
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
    from .outputs import write_json

    write_json(args.json, {
        "image1": str(args.image1), "image2": str(args.image2),
        "geometry": r.geometry, "model": None if r.model is None else r.model.tolist(),
        "threshold": r.threshold, "keypoints": [len(r.keypoints1), len(r.keypoints2)],
        "inliers": int(r.inliers.sum()), "wide_baseline": bool(args.wide_baseline),
        "step": r.step, "views": list(r.views), "timings": r.timings,
        "matches": {"points1": r.points1.round(3).tolist(), "points2": r.points2.round(3).tolist(),
                    "inlier": r.inliers.tolist()},
    }, force=args.force, indent=None)


def _extract(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .data.images import list_images
    from .integrations.hloc import extract_folder

    if args.max_keypoints < 0 or args.batch_images < 1 or (args.workers is not None and args.workers < 0):
        raise ValueError("need --max-keypoints >= 0, --batch-images >= 1 and --workers >= 0")
    if not list_images(args.images):  # a bad folder fails before the weights load
        raise FileNotFoundError(f"no image files in {args.images}")

    def on_error(name: str, reason: str) -> None:
        tqdm.write(f"hardnet-desc extract: error: {name}: {reason}", file=sys.stderr)

    options = {"max_keypoints": args.max_keypoints or None, "batch_images": args.batch_images,
               "progress": not args.quiet, "on_error": on_error}
    if args.backend == "feed":
        report = extract_folder(args.images, args.out, _descriptor(args), workers=args.workers, **options)
    else:
        from .integrations.parallel import extract_parallel

        report = extract_parallel(args.images, args.out, args.weights, workers=args.workers, backend=args.backend,
                                  address=args.address, device=args.device, precision=args.precision, **options)
    print(f"{len(report.done)} images extracted, {len(report.skipped)} already in {args.out}, "
          f"{len(report.failed)} failed")
    return 1 if report.failed else 0


def _export_onnx(args: argparse.Namespace) -> int:
    from .integrations.onnx import export_onnx, read_onnx_metadata

    path = export_onnx(args.out, args.weights, opset=args.opset, force=args.force)
    meta = read_onnx_metadata(path)
    print(f"wrote {path}: opset {args.opset}, weights {meta['weights']}, patch_scale {meta['patch_scale']}, "
          f"min_kp_size {meta['min_kp_size']}")
    print("input 'patches' (N, 1, 32, 32) float32 -> output 'descriptors' (N, 128) float32, unit rows")
    return 0


def _eval_sequences(args: argparse.Namespace) -> int:
    from .evaluation.sequences import evaluate_sequences, format_table, plot_mma, save_json

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
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
    from .outputs import check_output, json_is_ours
    from .viz import is_picture_ours

    if args.json:
        check_output(args.json, json_is_ours, force=args.force)
    if getattr(args, "plot", None):
        check_output(args.plot, is_picture_ours, force=args.force)


def _eval_fpr95(args: argparse.Namespace) -> int:
    from functools import partial

    from .data.phototour import STORED_SIZE
    from .descriptor import HardNetDescriptor
    from .evaluation.methods import sift_patches
    from .evaluation.phototour import evaluate_fpr95

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - {"hardnet", "sift", "rootsift"})
    if unknown or not methods:
        raise ValueError(f"unknown method(s) {unknown}; choose from hardnet, sift, rootsift")
    if not args.root.is_dir():  # fail before the weights load
        raise FileNotFoundError(f"PhotoTour folder not found: {args.root}")
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


def _eval_pairs(args: argparse.Namespace) -> int:
    from .data.camera_pairs import write_camera_pairs
    from .evaluation.poses import evaluate_pairs, format_pose_table, load_scenes
    from .evaluation.sequences import save_json

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    names = [s.strip() for s in args.scenes.split(",") if s.strip()] if args.scenes else None
    if args.max_pairs < 0:
        raise ValueError(f"--max-pairs must be >= 0 (0: all), got {args.max_pairs}")
    scenes = load_scenes(args.sources, images=args.images, scenes=names, min_covisible=args.min_covisible,
                         max_pairs=args.max_pairs or None, seed=args.seed)
    if args.write_pairs:
        from .data.camera_pairs import is_pairs_file_ours
        from .outputs import check_output

        for scene in scenes:  # every file may be written before the first is
            check_output(args.write_pairs / f"{scene.name}.txt", is_pairs_file_ours, force=args.force)
        for scene in scenes:
            path = write_camera_pairs(args.write_pairs / f"{scene.name}.txt", scene.pairs, scene.image_dir,
                                      comment=f"from {scene.source}: min covisible {args.min_covisible}, "
                                              f"max pairs {args.max_pairs}, seed {args.seed}", force=args.force)
            print(f"{scene.name}: {len(scene.pairs)} pairs -> {path}")
        return 0
    _check_json_plot(args)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    results = evaluate_pairs(scenes, methods, weights=args.weights, max_keypoints=args.max_keypoints, ratio=args.ratio,
                             ransac_px=args.ransac_px, device=args.device, precision=args.precision,
                             progress=not args.quiet)
    print(format_pose_table(results), end="")
    if args.json:
        print(f"json: {save_json(results, args.json, force=args.force)}")
    return 0


def _make_sequences(args: argparse.Namespace) -> int:
    from .evaluation.synthetic_sequences import make_sequences

    folders = make_sequences(args.images, args.out, n_images=args.n_images, seed=args.seed,
                             illumination=not args.no_illumination, noise=args.noise,
                             max_side=args.max_side, suffix=f".{args.format}", force=args.force)
    print(f"{len(folders)} sequences -> {args.out}")
    return 0


def _sfm(args: argparse.Namespace) -> int:
    from .integrations.colmap import colmap_like_sift, format_summary, import_pycolmap, reconstruct

    try:
        params = [float(v) for v in args.camera_params.split(",")] if args.camera_params else None
    except ValueError:
        raise ValueError(f"--camera-params must be comma-separated numbers in the camera model's order "
                         f"(e.g. PINHOLE: fx,fy,cx,cy), got {args.camera_params!r}") from None
    try:
        import_pycolmap()
    except ImportError as err:
        print(f"hardnet-desc sfm: error: {err}", file=sys.stderr)
        return 2
    from .data.images import list_images
    from .outputs import check_output, json_is_ours, write_json

    list_images(args.images)  # a missing folder fails before the weights load
    if args.json:
        check_output(args.json, json_is_ours, force=args.overwrite)
    descriptor = None
    if args.features == "hardnet":
        from .descriptor import HardNetDescriptor

        descriptor = HardNetDescriptor(args.weights, device=args.device, precision=args.precision,
                                       detector=colmap_like_sift())
    summary = reconstruct(args.images, args.out, features=args.features, matcher=args.matcher,
                          max_image_size=args.max_image_size, max_keypoints=args.max_keypoints,
                          descriptor=descriptor, camera_model=args.camera_model, camera_params=params,
                          overwrite=args.overwrite, progress=not args.quiet, colmap_log=args.colmap_log)
    print(format_summary(summary), end="")
    if args.json:
        print(f"json: {write_json(args.json, summary.to_dict(), force=args.overwrite)}")
    return 0 if summary.registered_images else 1


# --- options shared by several commands: declared once ----------------------------------------
def _add_weights(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", default="default", help="HardNet weights: a bundled name, a .safetensors/.pth file "
                   "or hf://owner/repo/file (default: %(default)s)")


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (default: %(default)s)")


def _add_precision(p: argparse.ArgumentParser, default: str, int8: bool = False, training: bool = False) -> None:
    from .core.device import PRECISIONS

    choices = [name for name in PRECISIONS if int8 or name != "int8"]
    int8_first = "" if training else "int8 for the bundled weights on x86 CPUs with AVX2 or more, else "
    p.add_argument("--precision", choices=choices, default=default,
                   help=f"{', '.join(choices[1:])} or auto (fp16 on CUDA; {int8_first}bf16 on CPUs with native "
                   "bf16, else fp32) (default: %(default)s)")


def _add_verbose(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true",
                   help="print the descriptor's settings (device, chosen precision, batch size) to stderr")


def _add_max_keypoints(p: argparse.ArgumentParser, default: int | None = None, zero_keeps_all: bool = True) -> None:
    """``--max-keypoints``; ``default`` None = the shared budget ``DEFAULT_MAX_KEYPOINTS``."""
    from .detection import DEFAULT_MAX_KEYPOINTS

    all_ = ", 0 for all" if zero_keeps_all else ""
    p.add_argument("--max-keypoints", type=int, default=default or DEFAULT_MAX_KEYPOINTS, metavar="N",
                   help=f"strongest SIFT keypoints per image{all_} (default: %(default)s)")


def _add_methods(p: argparse.ArgumentParser, default: str, choices: str = "sift, rootsift, hardnet, kornia") -> None:
    p.add_argument("--methods", default=default, help=f"comma-separated, from {choices} (default: %(default)s)")


def _add_mutual_ratio(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ratio", type=float, default=None, metavar="R",
                   help="add Lowe's ratio test to mutual nearest neighbours (default: off)")


def _add_json(p: argparse.ArgumentParser, per: str) -> None:
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help=f"write all numbers, per {per} too")


def _add_force(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--force", action="store_true", help=f"replace {what} even if another program wrote it (by "
                   "default an existing file is replaced only if hardnet-desc wrote it)")


def _add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bar")


# --- one function per subcommand ---------------------------------------------------------------
def _add_make_dataset(sub) -> None:
    from .core.patches import DEFAULT_PATCH_SCALE

    p = sub.add_parser("make-dataset", help="synthetic correspondences from your photos, in the PhotoTour layout",
                       description="Warp each photo into several views, re-detect SIFT keypoints, keep those that agree "
                       "with the known homography, and write their patches to OUT/train and OUT/val (split by photo). "
                       "With --from-sfm: real correspondences, one patch per observation of every 3D point of the "
                       "COLMAP models in SCENES_DIR, split by scene.")
    p.add_argument("images", metavar="IMAGES_OR_SCENES_DIR",
                   help="folder of photos (searched recursively); with --from-sfm a folder of scene folders, each "
                   "with database.db, sparse/<k>/ and summary.json (image_dir), or of photo folders to reconstruct")
    p.add_argument("out", help="output folder")
    p.add_argument("--points", type=int, default=1000, help="3D points per photo at most (default: %(default)s)")
    p.add_argument("--views", type=int, default=3, help="warped views per photo (default: %(default)s)")
    p.add_argument("--patch-scale", type=float, default=DEFAULT_PATCH_SCALE, help="patch side / kp.size (default: %(default)s)")
    p.add_argument("--min-kp-size", type=float, default=None, metavar="PX",
                   help="cut patches for kp.size of at least PX pixels (default: the bundled weights' value)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="photos held out for validation (default: %(default)s)")
    p.add_argument("--val-pairs", type=int, default=50_000, help="pairs in the validation pair file (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seeds the warps and the validation pairs (default: %(default)s)")
    p.add_argument("--split-seed", type=int, default=None,
                   help="seeds the train/validation split (default: --seed); fix it to draw new views of the same split")
    p.add_argument("--workers", type=int, default=None, help="processes (default: up to 2)")
    p.add_argument("--warp", choices=["default", "hard"], default="default",
                   help="view changes: 'default' (WarpConfig()) or 'hard' (HARD_WARP: the evaluation's hardest "
                        "geometry and light) (default: %(default)s)")
    p.add_argument("--match-angle", type=float, default=None, metavar="DEG",
                   help="a re-detection agrees if its angle is within DEG of the projected one (default: 20)")
    p.add_argument("--match-scale", type=float, default=None, metavar="RATIO",
                   help="... and its size within RATIO either way (default: 1.3)")
    g = p.add_argument_group("real correspondences from structure from motion (--from-sfm)")
    g.add_argument("--from-sfm", action="store_true", help="build from COLMAP reconstructions instead of warps")
    g.add_argument("--min-track", type=int, default=None, metavar="N", help="fewest observations of a 3D point (default: 2)")
    g.add_argument("--max-points-per-scene", type=int, default=None, metavar="N",
                   help="3D points per scene at most, a random choice; 0 for all (default: 20000)")
    g.add_argument("--max-patches-per-point", type=int, default=None, metavar="N",
                   help="patches per 3D point at most, a random choice; 0 for all (default: 10)")
    g.add_argument("--min-point-distance", type=float, default=None, metavar="PX",
                   help="of two 3D points closer than PX in a photo keep the longer track; 0 = off (default: 3)")
    g.add_argument("--val-scenes", default=None, metavar="A,B,C",
                   help="scenes held out in OUT/val (default: hardnet_desc.train.datasets.sfm.DEFAULT_VAL_SCENES)")
    g.add_argument("--all-models", action="store_true", help="use every model of a scene, not only the largest")
    _add_force(p, "OUT's meta.json, split.json/record.json, train/ and val/")
    p.set_defaults(func=_make_dataset)


def _numbers(kind: type, single: bool = False):
    """An argparse type: comma-separated numbers of ``kind`` as a list (one bare number as itself if ``single``)."""

    def parse(text: str):
        try:
            values = [kind(x) for x in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, got {text!r}") from None
        return values[0] if single and len(values) == 1 else values

    return parse


def _add_train(sub) -> None:
    from .train.trainer import TrainConfig

    d = TrainConfig(data="", out="")
    p = sub.add_parser("train", help="train HardNet with the hardest-in-batch loss",
                       description="Train on one or several mixed PhotoTour-layout folders; checkpoints, resumes and "
                       "exports .safetensors.")
    p.add_argument("data", nargs="?", help="training folder in the PhotoTour layout (e.g. OUT/train from "
                   "make-dataset); or give one or more with --data")
    p.add_argument("out", help="output folder for checkpoint.pt, log.csv, hardnet.safetensors, model_card.json")
    p.add_argument("--data", dest="more_data", action="append", default=[], metavar="FOLDER",
                   help="a (further) training folder; repeat to mix several (see --mix)")
    p.add_argument("--mix", type=_numbers(float), metavar="F1,F2,...", help="share of each batch drawn from each "
                   "data folder, in order (normalised; default: equal shares)")
    p.add_argument("--val", action="append", metavar="[NAME=]FOLDER", help="validation folder with an m50_*.txt "
                   "pair file (FPR95 per epoch); repeat for several, each logged as val_fpr95_NAME (NAME: the "
                   "folder's name, or its parent's for .../val); the first is also val_fpr95")
    p.add_argument("--aug", metavar="LIST", help="per-patch augmentations, comma separated, from noise, blur, jpeg, "
                   "photometric, kpjitter; 'name=S' gives one its own strength")
    p.add_argument("--aug-strength", type=float, default=1.0, metavar="S",
                   help="strength of the --aug entries without their own (default: %(default)s)")
    p.add_argument("--init", metavar="WEIGHTS", help="start from these weights (a bundled name or a file) instead of "
                   "a random init")
    for name in ("epochs", "pairs_per_epoch", "batch_size", "seed", "checkpoint_every", "max_steps"):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name))
    p.add_argument("--photos-per-batch", type=_numbers(int, single=True), default=d.photos_per_batch,
                   metavar="K[,K2,...]", help="draw each batch's points from K photos (the photo column of "
                   "info.txt), batch/K from each; one K per data folder when mixing (default: %(default)s = from "
                   "the whole set)")
    for name in ("lr", "momentum", "dampening", "weight_decay", "margin", "dropout"):
        p.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(d, name))
    p.add_argument("--rot-deg", type=float, default=d.augment.rot_deg)
    p.add_argument("--scale-jitter", type=float, default=d.augment.scale)
    p.add_argument("--batch-reduce", choices=["min", "average", "random"], default=d.batch_reduce)
    p.add_argument("--no-anchor-swap", dest="anchor_swap", action="store_false")
    p.add_argument("--augment", action="store_true", help="'+' augmentation: random flip/rot90 of each pair")
    _add_precision(p, default=d.precision, training=True)
    _add_device(p)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    _add_force(p, "OUT's log.csv, hardnet.safetensors and model_card.json")
    _add_quiet(p)
    p.set_defaults(func=_train)


def _add_match(sub) -> None:
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
    _add_force(p, "--out and --json")
    p.add_argument("--ratio", type=float, default=0.8,
                   help="Lowe's ratio test threshold, 1 turns it off (default: %(default)s)")
    _add_max_keypoints(p)
    p.add_argument("--geometry", choices=["fundamental", "homography"], default="fundamental",
                   help="model fitted by RANSAC: fundamental (any static scene) or homography (planar scene or "
                   "camera rotation) (default: %(default)s)")
    p.add_argument("--threshold", type=float, default=None, metavar="PX",
                   help="RANSAC inlier threshold in pixels (default: 1 for fundamental, 3 for homography)")
    p.add_argument("--wide-baseline", action="store_true",
                   help="views far apart (up to ~80 degrees): if the images alone give no verified model, add "
                   "synthesized affine views step by step (MODS); prints each step to stderr")
    p.add_argument("--min-inliers", type=int, default=None, metavar="N",
                   help="with --wide-baseline: inliers that end the search and below which no model is reported "
                   "(default: 15 for homography, 25 for fundamental)")
    p.add_argument("--json", type=Path, default=None, metavar="FILE",
                   help="also write the result as JSON (model, inlier count, matches, views, timings); an existing "
                   "file is replaced only if hardnet-desc wrote it")
    _add_weights(p)
    _add_device(p)
    _add_precision(p, default="auto", int8=True)
    _add_verbose(p)
    p.set_defaults(func=_match)


def _add_extract(sub) -> None:
    p = sub.add_parser("extract", help="features of a folder of images into an hloc-compatible HDF5 file",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Detect SIFT keypoints and describe them with HardNet for every image below "
                       "IMAGES_DIR.\nOne HDF5 group per image, named by its path relative to IMAGES_DIR, with the "
                       "datasets\n  keypoints (N, 2), descriptors (128, N), scores (N,), scales (N,), oris (N,), "
                       "image_size (2,)\nas hloc's extract_features writes them. Images already in the file are "
                       "skipped, so an interrupted\nrun resumes. Images that cannot be read are reported and the exit "
                       "code is then 1.",
                       epilog="example:\n  hardnet-desc extract images/ --out outputs/feats-hardnet.h5")
    p.add_argument("images", type=Path, metavar="IMAGES_DIR", help="folder of images (searched recursively)")
    p.add_argument("--out", type=Path, default=Path("features.h5"), metavar="H5",
                   help="HDF5 file to create or extend (default: %(default)s)")
    _add_max_keypoints(p)
    p.add_argument("--batch-images", type=int, default=8, metavar="B",
                   help="images whose patches share network calls (default: %(default)s)")
    _add_weights(p)
    _add_device(p)
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes or Ray actors, see --backend (default: feed: one per CPU core but one "
                   "with a GPU, none on the CPU; processes: 2; ray: one per GPU, else per CPU)")
    p.add_argument("--backend", choices=["feed", "processes", "ray"], default="feed",
                   help="what the workers are: feed: local processes that read images and detect keypoints for "
                   "this process, which describes them on --device (0 workers: all in this process); processes: "
                   "local processes that each also describe, with their own copy of the network, into shards "
                   "merged into --out; ray: the same as Ray actors on a cluster (pip install 'hardnet-desc[ray]'; "
                   "IMAGES_DIR and --out on a file system every node sees) (default: %(default)s)")
    p.add_argument("--address", default=None, help="Ray cluster address, e.g. auto or ray://head:10001 "
                   "(default: a running local Ray instance, else a new one)")
    _add_precision(p, default="auto", int8=True)
    _add_verbose(p)
    _add_quiet(p)
    p.set_defaults(func=_extract)


def _add_export_onnx(sub) -> None:
    p = sub.add_parser("export-onnx", help="write HardNet as an ONNX model (ONNX Runtime, OpenCV DNN, C++)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Write the network with its per-patch standardisation and L2 normalisation as "
                       "one ONNX graph:\ninput 'patches' float32 (N, 1, 32, 32), output 'descriptors' float32 "
                       "(N, 128), N dynamic.\nThe weights' name, sha256, patch_scale and min_kp_size are stored in the model's "
                       "metadata_props.",
                       epilog="example:\n  hardnet-desc export-onnx hardnet.onnx --opset 17")
    p.add_argument("out", type=Path, metavar="OUT.onnx", help="ONNX file to write")
    _add_weights(p)
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, 13..21 (default: %(default)s)")
    _add_force(p, "OUT.onnx")
    p.set_defaults(func=_export_onnx)


def _add_eval_sequences(sub) -> None:
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
    _add_methods(p, "sift,rootsift,hardnet,kornia")
    _add_weights(p)
    _add_max_keypoints(p, zero_keeps_all=False)
    _add_mutual_ratio(p)
    _add_json(p, "sequence")
    p.add_argument("--plot", type=Path, default=None, metavar="PNG", help="save an MMA-vs-threshold plot")
    _add_force(p, "--json and --plot")
    p.add_argument("--strict", action="store_true", help="abort on an incomplete sequence (a reference image only, "
                   "a missing homography) instead of skipping it with a warning")
    _add_device(p)
    _add_precision(p, default="fp32", int8=True)
    _add_quiet(p)
    p.set_defaults(func=_eval_sequences)


def _add_eval_fpr95(sub) -> None:
    from .core.patches import DEFAULT_PATCH_SCALE

    p = sub.add_parser("eval-fpr95", help="FPR95 on PhotoTour-layout patch pairs",
                       description="False-positive rate at 95% recall of HardNet (or SIFT, RootSIFT) on the m50_*.txt "
                       "pair files of a PhotoTour-layout folder (Brown's liberty/notredame/yosemite, or make-dataset's "
                       "val split).")
    p.add_argument("root", type=Path, help="folder with info.txt, patches*.bmp and m50_*.txt")
    p.add_argument("--pairs", action="append", default=None, metavar="FILE",
                   help="pair file (a bare name is looked up in ROOT); repeatable (default: every m50_*.txt in ROOT)")
    _add_methods(p, "hardnet", "hardnet, sift, rootsift (SIFT of the patch centre)")
    p.add_argument("--patch-scale", type=float, default=DEFAULT_PATCH_SCALE,
                   help="for sift/rootsift: the patch side in units of kp.size the patches were cut at "
                        "(default: %(default)s, as make-dataset)")
    _add_weights(p)
    _add_device(p)
    _add_precision(p, default="fp32", int8=True)
    p.set_defaults(func=_eval_fpr95)


def _add_eval_pairs(sub) -> None:
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
    _add_methods(p, "sift,rootsift,hardnet")
    _add_weights(p)
    _add_max_keypoints(p, zero_keeps_all=False)
    _add_mutual_ratio(p)
    p.add_argument("--max-pairs", type=int, default=100, metavar="N",
                   help="pairs per scene at most, a seeded random choice; 0 for all (default: %(default)s)")
    p.add_argument("--min-covisible", type=int, default=50, metavar="N",
                   help="pairs from a model need N common 3D points (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seeds the choice of pairs (default: %(default)s)")
    p.add_argument("--ransac-px", type=float, default=0.5, metavar="PX",
                   help="essential-matrix threshold in pixels, divided by the mean focal length (default: %(default)s)")
    p.add_argument("--write-pairs", type=Path, default=None, metavar="DIR",
                   help="write the chosen pairs as DIR/<scene>.txt (to freeze them) and stop")
    _add_json(p, "pair")
    _add_force(p, "--json and --write-pairs files")
    _add_device(p)
    _add_precision(p, default="fp32")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch threads; 1 is much faster on a busy shared CPU (default: torch's)")
    _add_quiet(p)
    p.set_defaults(func=_eval_pairs)


def _add_make_sequences(sub) -> None:
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
    _add_force(p, "sequence folders")
    p.set_defaults(func=_make_sequences)


def _add_sfm(sub) -> None:
    p = sub.add_parser("sfm", help="reconstruct a photo folder with COLMAP (pycolmap), HardNet or SIFT features",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Structure from motion: features (SIFT keypoints + HardNet descriptors and our "
                       "matcher,\nor COLMAP's SIFT), COLMAP's geometric verification and incremental mapping. "
                       "Writes\nOUT/database.db, the models OUT/sparse/<k>/ (COLMAP's layout; open both in COLMAP's "
                       "GUI)\nand OUT/summary.json. Needs pycolmap: pip install \"hardnet-desc[sfm]\".",
                       epilog="example:\n  hardnet-desc sfm photos/ out/ --features hardnet --json out/summary.json")
    p.add_argument("images", type=Path, metavar="IMAGES", help="folder of photos (searched recursively)")
    p.add_argument("out", type=Path, metavar="OUT", help="output folder")
    p.add_argument("--features", choices=["hardnet", "sift"], default="hardnet",
                   help="hardnet: SIFT keypoints, HardNet descriptors, mutual NN + ratio; sift: COLMAP's SIFT "
                   "(default: %(default)s)")
    p.add_argument("--matcher", choices=["exhaustive", "sequential"], default="exhaustive",
                   help="image pairs: all, or neighbours in name order for videos (default: %(default)s)")
    p.add_argument("--max-image-size", type=int, default=1600, metavar="N",
                   help="downscale longer sides above N px for extraction, 0 for never (default: %(default)s)")
    _add_max_keypoints(p, 8192, zero_keeps_all=False)
    p.add_argument("--camera-model", default="SIMPLE_RADIAL", help="COLMAP camera model (default: %(default)s)")
    p.add_argument("--camera-params", default=None, metavar="P1,P2,...",
                   help="known intrinsics of every image at full resolution, in the model's order "
                   "(e.g. PINHOLE: fx,fy,cx,cy); kept fixed (default: one camera per image size, estimated)")
    p.add_argument("--json", type=Path, default=None, metavar="SUMMARY.json", help="also write the summary here")
    p.add_argument("--overwrite", action="store_true", help="replace a reconstruction already in OUT, and a --json "
                   "file another program wrote")
    _add_weights(p)
    _add_device(p)
    _add_precision(p, "fp32")
    _add_quiet(p)
    p.add_argument("--colmap-log", action="store_true", help="show COLMAP's own log (default: its warnings only)")
    p.set_defaults(func=_sfm)


SUBCOMMANDS = (_add_make_dataset, _add_train, _add_match, _add_extract, _add_export_onnx, _add_eval_sequences,
               _add_eval_fpr95, _add_eval_pairs, _add_make_sequences, _add_sfm)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hardnet-desc", description="HardNet local descriptors: a drop-in for SIFT descriptors.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def _version() -> str:
    """The installed distribution's version (the package itself sits above the CLI's layer)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hardnet-desc")
    except PackageNotFoundError:
        return "(not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand. Every error ends in one ``hardnet-desc COMMAND: error: ...`` line on stderr
    and exit code 2 (bad input: ValueError, TypeError, OSError and their kin, or a missing optional extra) or 1 (anything else);
    ``HARDNET_DESC_DEBUG=1`` shows the traceback instead."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"hardnet-desc {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 (the command line's last line of defence)
        if os.environ.get("HARDNET_DESC_DEBUG"):
            raise
        print(f"hardnet-desc {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2 if isinstance(err, _INPUT_ERRORS) else 1


#: Errors that mean bad input (exit code 2); ImportError: a missing optional extra such as pycolmap.
_INPUT_ERRORS = (ValueError, TypeError, OSError, ImportError)


def _one_line(err: BaseException) -> str:
    """``err``'s message on one line; other than for the usual input errors, led by its type."""
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__
    return text if isinstance(err, _INPUT_ERRORS) else f"{type(err).__name__}: {text}"


if __name__ == "__main__":
    sys.exit(main())
