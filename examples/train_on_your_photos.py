"""Train HardNet on your own photos: synthetic correspondences, a training run, exported weights.

The defaults are a smoke test that finishes in a minute on a laptop CPU (two bundled photos,
40 steps of 128 pairs). For real weights, point it at a few hundred photos of the kind of
scenes you match, and train with the paper's recipe, e.g.

    python examples/train_on_your_photos.py ~/photos --out runs/mine \\
        --points 1000 --views 3 --epochs 10 --pairs-per-epoch 1000000 --batch-size 1024

Run it again with the same --out to resume an interrupted run. The weights land in
OUT/run/hardnet.safetensors: ``HardNetDescriptor("OUT/run/hardnet.safetensors")``.
Each step is also a command: ``hardnet-desc make-dataset`` and ``hardnet-desc train``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hardnet_desc import HardNetDescriptor
from hardnet_desc.train import TrainConfig, make_dataset, train
from hardnet_desc.data.images import list_images

DATA = Path(__file__).resolve().parent / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="?", type=Path, default=DATA, help="folder of photos (default: bundled pair)")
    parser.add_argument("--out", type=Path, default=Path("runs/train_on_your_photos"))
    parser.add_argument("--points", type=int, default=300, help="3D points per photo (default: %(default)s)")
    parser.add_argument("--views", type=int, default=2, help="warped views per photo (default: %(default)s)")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="photos held out (at least one)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--pairs-per-epoch", type=int, default=40 * 128)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                        help="auto: fp16 on CUDA, bf16 on CPUs with native bf16, else fp32 (default: %(default)s)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    # 1. Patches of the same 3D point under random homographies and lighting, in the PhotoTour layout.
    dataset = args.out / "dataset"
    if not (dataset / "meta.json").is_file():  # built once; delete the folder to rebuild
        n_photos = len(list_images(args.images))
        val_fraction = max(args.val_fraction, 1.0 / max(n_photos, 1))  # hold out at least one photo
        make_dataset(args.images, dataset, points=args.points, views=args.views,
                     val_fraction=val_fraction, val_pairs=5000, workers=1)
    meta = json.loads((dataset / "meta.json").read_text())
    print(f"dataset: {meta['train']['patches']} training patches, {meta['val']['patches']} validation patches")

    # 2. Hardest-in-batch training; checkpoints in OUT/run, so a second call resumes.
    cfg = TrainConfig(data=str(dataset / "train"), out=str(args.out / "run"), val=str(dataset / "val"),
                      epochs=args.epochs, pairs_per_epoch=args.pairs_per_epoch, batch_size=args.batch_size,
                      precision=args.precision, device=args.device, checkpoint_every=50)
    weights = train(cfg, resume=(args.out / "run" / "checkpoint.pt").is_file())

    # 3. The exported file is ready for HardNetDescriptor (the patch scale travels with it).
    card = json.loads(weights.with_name("model_card.json").read_text())
    print(f"weights: {weights} (validation FPR95 {card['val_fpr95']:.3f})")
    print(HardNetDescriptor(weights, device=args.device))


if __name__ == "__main__":
    main()
