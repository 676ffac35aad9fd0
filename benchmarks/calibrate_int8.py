"""Build step: calibrate the int8 activations of the bundled weights on training photos.

    python benchmarks/calibrate_int8.py PHOTOS_DIR --split DATASET/split.json

Writes ``weights/int8_calibration.json`` (one entry per weights, keyed by
:func:`hardnet_desc.core.weights.fingerprint`), which ``HardNetDescriptor(precision="int8")`` reads.
Deterministic: the photos are every k-th name of the sorted ``train`` list of ``split.json``
(never a validation photo), each gives its ``--per-photo`` strongest SIFT keypoints, and the
histogram observers have no randomness. The training photos are not shipped; the file is.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout
from hardnet_desc.descriptor import HardNetDescriptor  # noqa: E402
from hardnet_desc.core.image import read_image  # noqa: E402
from hardnet_desc.core.quantize import CALIBRATION_FILE, calibrate  # noqa: E402


def calibration_photos(photos: Path, split: Path | None, n_photos: int) -> list[Path]:
    """Every k-th of the sorted training photos (all photos under ``photos`` without a split)."""
    if split is not None:
        names = sorted(json.loads(split.read_text())["train"])
        paths = [photos / name for name in names]
    else:
        paths = sorted(p for p in photos.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    step = max(1, len(paths) // n_photos)
    return paths[::step][:n_photos]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("photos", type=Path, help="folder of training photos")
    p.add_argument("--split", type=Path, help="make-dataset split.json: only its 'train' photos are used")
    p.add_argument("--weights", default="default")
    p.add_argument("--n-photos", type=int, default=32)
    p.add_argument("--per-photo", type=int, default=512, help="strongest SIFT keypoints per photo")
    p.add_argument("--out", type=Path, default=ROOT / "weights" / CALIBRATION_FILE)
    args = p.parse_args()

    desc = HardNetDescriptor(args.weights, device="cpu", precision="fp32")
    paths = calibration_photos(args.photos, args.split, args.n_photos)
    patches = []
    for path in paths:
        image = read_image(path)
        patches.append(desc.cut_patches(image, desc.detect(image, max_keypoints=args.per_photo)))
    patches = torch.cat(patches)
    activations = calibrate(desc.net, patches)
    table = json.loads(args.out.read_text()) if args.out.is_file() else {}
    table[desc.weights.fingerprint] = {
        "weights": desc.weights.source,
        "activations": [[scale, zero_point] for scale, zero_point in activations],
        "calibration": {
            "photos": [str(path.relative_to(args.photos)) for path in paths],
            "patches": len(patches),
            "per_photo": args.per_photo,
            "observer": "HistogramObserver(quint8, reduce_range=False)",
            "torch": torch.__version__.split("+")[0],
        },
    }
    # one line per activation pair keeps the file short and diffs readable
    text = json.dumps(table, indent=1)
    text = re.sub(r"\[\s+([-0-9.e]+),\s+(-?\d+)\s+\]", r"[\1, \2]", text)
    args.out.write_text(text + "\n")
    print(f"{len(patches)} patches from {len(paths)} photos -> {args.out}")
    for name, (scale, zero_point) in zip(["input", *[f"conv{i}" for i in range(7)]], activations):
        print(f"  {name:6s} scale {scale:.6f} zero_point {zero_point}")


if __name__ == "__main__":
    main()
