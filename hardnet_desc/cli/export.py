"""``hardnet-desc export-onnx``: the network as an ONNX model (ONNX Runtime, OpenCV DNN, C++)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_force, add_weights


def add_parser(sub) -> None:
    p = sub.add_parser("export-onnx", help="write HardNet as an ONNX model (ONNX Runtime, OpenCV DNN, C++)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Write the network with its per-patch standardisation and L2 normalisation as "
                       "one ONNX graph:\ninput 'patches' float32 (N, 1, 32, 32), output 'descriptors' float32 "
                       "(N, 128), N dynamic.\nThe weights' name, sha256, patch_scale and min_kp_size are stored in the model's "
                       "metadata_props.",
                       epilog="example:\n  hardnet-desc export-onnx hardnet.onnx --opset 17")
    p.add_argument("out", type=Path, metavar="OUT.onnx", help="ONNX file to write")
    add_weights(p)
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, 13..21 (default: %(default)s)")
    add_force(p, "OUT.onnx")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..integrations.onnx import export_onnx, read_onnx_metadata

    path = export_onnx(args.out, args.weights, opset=args.opset, force=args.force)
    meta = read_onnx_metadata(path)
    print(f"wrote {path}: opset {args.opset}, weights {meta['weights']}, patch_scale {meta['patch_scale']}, "
          f"min_kp_size {meta['min_kp_size']}")
    print("input 'patches' (N, 1, 32, 32) float32 -> output 'descriptors' (N, 128) float32, unit rows")
    return 0
