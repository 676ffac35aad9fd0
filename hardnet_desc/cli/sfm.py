"""``hardnet-desc sfm``: reconstruct a photo folder with COLMAP (pycolmap), HardNet or SIFT features."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .options import add_device, add_max_keypoints, add_precision, add_quiet, add_weights


def add_parser(sub) -> None:
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
    add_max_keypoints(p, 8192, zero_keeps_all=False)
    p.add_argument("--camera-model", default="SIMPLE_RADIAL", help="COLMAP camera model (default: %(default)s)")
    p.add_argument("--camera-params", default=None, metavar="P1,P2,...",
                   help="known intrinsics of every image at full resolution, in the model's order "
                   "(e.g. PINHOLE: fx,fy,cx,cy); kept fixed (default: one camera per image size, estimated)")
    p.add_argument("--json", type=Path, default=None, metavar="SUMMARY.json", help="also write the summary here")
    p.add_argument("--overwrite", action="store_true", help="replace a reconstruction already in OUT, and a --json "
                   "file another program wrote")
    add_weights(p)
    add_device(p)
    add_precision(p, "fp32")
    add_quiet(p)
    p.add_argument("--colmap-log", action="store_true", help="show COLMAP's own log (default: its warnings only)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..integrations.colmap import OVERWRITE, colmap_like_sift, format_summary, import_pycolmap, reconstruct

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
    from ..data.images import list_images
    from ..outputs import check_output, json_is_ours, write_json

    list_images(args.images)  # a missing folder fails before the weights load
    if args.json:
        check_output(args.json, json_is_ours, force=args.overwrite, option=OVERWRITE)
    descriptor = None
    if args.features == "hardnet":
        from ..descriptor import HardNetDescriptor

        descriptor = HardNetDescriptor(args.weights, device=args.device, precision=args.precision,
                                       detector=colmap_like_sift())
    summary = reconstruct(args.images, args.out, features=args.features, matcher=args.matcher,
                          max_image_size=args.max_image_size, max_keypoints=args.max_keypoints,
                          descriptor=descriptor, camera_model=args.camera_model, camera_params=params,
                          overwrite=args.overwrite, progress=not args.quiet, colmap_log=args.colmap_log)
    print(format_summary(summary), end="")
    if args.json:
        print(f"json: {write_json(args.json, summary.to_dict(), force=args.overwrite, option=OVERWRITE)}")
    return 0 if summary.registered_images else 1
