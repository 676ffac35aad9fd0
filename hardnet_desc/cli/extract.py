"""``hardnet-desc extract``: features of a folder of images into an hloc-compatible HDF5 file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .options import (add_device, add_force, add_max_keypoints, add_precision, add_quiet, add_verbose,
                      add_weights, descriptor, keep_freed_memory)


def add_parser(sub) -> None:
    p = sub.add_parser("extract", help="features of a folder of images into an hloc-compatible HDF5 file",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Detect SIFT keypoints and describe them with HardNet for every image below "
                       "IMAGES_DIR.\nOne HDF5 group per image, named by its path relative to IMAGES_DIR, with the "
                       "datasets\n  keypoints (N, 2), descriptors (128, N), scores (N,), scales (N,), oris (N,), "
                       "image_size (2,)\nas hloc's extract_features writes them. Images already in the file are "
                       "skipped, so an interrupted\nrun resumes; a file extract did not write is refused (--force: "
                       "replaced). Images that cannot\nbe read are reported and the exit code is then 1.",
                       epilog="example:\n  hardnet-desc extract images/ --out outputs/feats-hardnet.h5")
    p.add_argument("images", type=Path, metavar="IMAGES_DIR", help="folder of images (searched recursively)")
    p.add_argument("--out", type=Path, default=Path("features.h5"), metavar="H5",
                   help="HDF5 file to create or extend (default: %(default)s)")
    add_max_keypoints(p)
    p.add_argument("--batch-images", type=int, default=8, metavar="B",
                   help="images whose patches share network calls (default: %(default)s)")
    add_weights(p)
    add_device(p)
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes or Ray actors, see --backend (default: feed: one per CPU core but one "
                   "with a GPU, none on the CPU; processes: 2; ray: one per GPU, else per CPU)")
    p.add_argument("--backend", choices=["feed", "processes", "ray"], default="feed",
                   help="what the workers are: feed: local processes that read images and detect keypoints for "
                   "this process, which describes them on --device (0 workers: all in this process); processes: "
                   "local processes that each also describe, with their own copy of the network, into shards "
                   "merged into --out; ray: the same as Ray actors on a cluster (pip install 'hardnet-desc[ray]'; "
                   "IMAGES_DIR and --out on a file system every node sees) (default: %(default)s)")
    p.add_argument("--address", default=None, help="Ray cluster address, e.g. auto or ray://head:10001, for "
                   "--backend ray only (default: a running local Ray instance, else a new one)")
    add_precision(p, default="auto", int8=True)
    add_force(p, "--out", own="extended")
    add_verbose(p)
    add_quiet(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..core.patches import check_integer
    from ..data.images import list_images
    from ..detection import check_max_keypoints
    from ..integrations.hloc import check_features_out, extract_folder

    if args.address is not None and args.backend != "ray":
        raise ValueError(f"--address is for --backend ray only; --backend {args.backend} runs on this machine")
    check_max_keypoints(args.max_keypoints, "--max-keypoints")
    check_integer(args.batch_images, "--batch-images", 1)
    check_integer(args.workers, "--workers", 0, "none given: as --backend says")
    if not list_images(args.images):  # a bad folder fails before the weights load
        raise FileNotFoundError(f"no image files in {args.images}")
    check_features_out(args.out, args.force)  # a file extract did not write: refused before the weights load

    keep_freed_memory()

    def on_error(name: str, reason: str) -> None:
        tqdm.write(f"hardnet-desc extract: error: {name}: {reason}", file=sys.stderr)

    options = {"max_keypoints": args.max_keypoints or None, "batch_images": args.batch_images,
               "progress": not args.quiet, "on_error": on_error, "force": args.force}
    if args.backend == "feed":
        report = extract_folder(args.images, args.out, descriptor(args), workers=args.workers, **options)
    else:
        from ..integrations.parallel import extract_parallel

        report = extract_parallel(args.images, args.out, args.weights, workers=args.workers, backend=args.backend,
                                  address=args.address, device=args.device, precision=args.precision, **options)
    print(f"{len(report.done)} images extracted, {len(report.skipped)} already in {args.out}, "
          f"{len(report.failed)} failed")
    return 1 if report.failed else 0
