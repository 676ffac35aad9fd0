"""Training: ``make-dataset`` (synthetic, or with ``--from-sfm`` from COLMAP models) and ``train``."""

from __future__ import annotations

import argparse

from .options import add_device, add_force, add_precision, add_quiet, numbers, split_list

#: make-dataset --from-sfm options passed on to ``make_sfm_dataset`` when given (else the library's defaults).
SFM_SAMPLING = ("min_track", "max_points_per_scene", "max_patches_per_point", "min_point_distance")
#: Every option that only applies with --from-sfm (besides --all-models).
SFM_ONLY = (*SFM_SAMPLING, "val_scenes")


def add_make_dataset(sub) -> None:
    from ..core.patches import DEFAULT_PATCH_SCALE

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
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="processes cutting patches (0 or 1: all in this one; default: up to 2)")
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
    add_force(p, "OUT's meta.json, split.json/record.json, train/ and val/")
    p.set_defaults(func=run_make_dataset)


def run_make_dataset(args: argparse.Namespace) -> int:
    from ..train.datasets.synthetic import MatchConfig, make_dataset

    if args.from_sfm:
        return _make_sfm_dataset(args)
    given = [f"--{k.replace('_', '-')}" for k in SFM_ONLY if getattr(args, k) is not None] + (
        ["--all-models"] if args.all_models else [])
    if given:
        raise ValueError(f"{', '.join(given)} only apply with --from-sfm")
    summary = make_dataset(
        args.images, args.out, points=args.points, views=args.views, patch_scale=args.patch_scale,
        min_kp_size=args.min_kp_size,
        val_fraction=args.val_fraction, val_pairs=args.val_pairs, seed=args.seed, split_seed=args.split_seed,
        workers=args.workers, warp=args.warp, match=MatchConfig(**{k: v for k, v in (
            ("max_angle_deg", args.match_angle), ("max_scale_ratio", args.match_scale)) if v is not None}),
        force=args.force,
    )
    for split in ("train", "val"):
        s = summary[split]
        print(f"{split}: {s['photos']} photos, {s['points']} points, {s['patches']} patches -> {args.out}/{split}")
    return 0


def _make_sfm_dataset(args: argparse.Namespace) -> int:
    """``make-dataset --from-sfm``."""
    from ..train.datasets.sfm import DEFAULT_VAL_SCENES, make_sfm_dataset

    val = DEFAULT_VAL_SCENES if args.val_scenes is None else split_list(args.val_scenes)
    options = {k: getattr(args, k) for k in SFM_SAMPLING if getattr(args, k) is not None}  # else the library's
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


def add_train(sub) -> None:
    from ..train.trainer import TrainConfig

    d = TrainConfig(data="", out="")
    p = sub.add_parser("train", help="train HardNet with the hardest-in-batch loss",
                       description="Train on one or several mixed PhotoTour-layout folders; checkpoints, resumes and "
                       "exports .safetensors.")
    p.add_argument("data", nargs="?", help="training folder in the PhotoTour layout (e.g. OUT/train from "
                   "make-dataset); or give one or more with --data")
    p.add_argument("out", help="output folder for checkpoint.pt, log.csv, hardnet.safetensors, model_card.json")
    p.add_argument("--data", dest="more_data", action="append", default=[], metavar="FOLDER",
                   help="a (further) training folder; repeat to mix several (see --mix)")
    p.add_argument("--mix", type=numbers(float), metavar="F1,F2,...", help="share of each batch drawn from each "
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
    p.add_argument("--photos-per-batch", type=numbers(int, single=True), default=d.photos_per_batch,
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
    add_precision(p, default=d.precision, training=True)
    add_device(p)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt, with the same data and "
                   "recipe (only --val, --precision, --device, --checkpoint-every and --max-steps may change)")
    add_force(p, "OUT's log.csv, hardnet.safetensors and model_card.json")
    add_quiet(p)
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from ..train.augment import AugmentConfig
    from ..train.trainer import TrainConfig, train

    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    values["augment"] = AugmentConfig.parse(args.aug, args.aug_strength, flip_rot90=args.augment,
                                            rot_deg=args.rot_deg, scale=args.scale_jitter)
    data = ([args.data] if args.data else []) + args.more_data
    if not data:
        raise ValueError("give a training folder: train DATA OUT, or train OUT --data DATA [--data DATA2 ...]")
    cfg = TrainConfig(**{**values, "data": data[0] if len(data) == 1 else data})
    print(f"weights: {train(cfg, resume=args.resume, progress=not args.quiet, force=args.force)}")
    return 0
