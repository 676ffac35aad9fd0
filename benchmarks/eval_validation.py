"""Matching benchmark of trained weights on sequences made from the *validation* photos.

The photos come from the ``val`` list of a dataset's ``split.json`` (written by
``hardnet-desc make-dataset``), so the weights never saw them. Prints the table and the
HardNet / RootSIFT ratios, and writes JSON + an MMA plot.

    python benchmarks/eval_validation.py DATASET_DIR PHOTOS_DIR --weights W [--n-images 24]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from hardnet_desc.evaluation import evaluate_sequences, format_table, make_sequences, plot_mma, save_json


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", type=Path, help="make-dataset output folder (holds split.json)")
    p.add_argument("photos", type=Path, help="the photo folder the dataset was made from")
    p.add_argument("--weights", default="default")
    p.add_argument("--n-images", type=int, default=24, help="validation photos used (seeded choice)")
    p.add_argument("--max-keypoints", type=int, default=2000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("eval_validation"), help="folder for JSON, plot, sequences")
    args = p.parse_args()

    val = json.loads((args.dataset / "split.json").read_text())["val"]
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in val:  # a folder holding only the validation photos
            link = Path(tmp) / name.replace("/", "__")
            os.symlink((args.photos / name).resolve(), link)
        make_sequences(tmp, args.out / "sequences", n_images=args.n_images, seed=args.seed)
    results = evaluate_sequences(args.out / "sequences", ["sift", "rootsift", "hardnet"], weights=args.weights,
                                 max_keypoints=args.max_keypoints, progress=True)
    print(format_table(results))
    summary = results.summary
    for group in ("overall", "v", "i"):
        ours, base = summary["hardnet"].get(group), summary["rootsift"].get(group)
        if ours and base:
            print(f"{group:8s} HardNet/RootSIFT: MMA@3 x{ours['mma@3'] / base['mma@3']:.3f}, "
                  f"correct matches x{ours['correct'] / base['correct']:.3f}, "
                  f"H-acc@3 {ours['h_acc@3']:.3f} vs {base['h_acc@3']:.3f}")
    save_json(results, args.out / "results.json")
    plot_mma(results, args.out / "mma.png")


if __name__ == "__main__":
    main()
