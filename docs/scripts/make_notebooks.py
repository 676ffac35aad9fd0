"""Write the example notebooks from the cell sources below.

    python docs/scripts/make_notebooks.py              # write examples/*.ipynb, without outputs
    python docs/scripts/make_notebooks.py --execute    # ... and run them (needs the weights)

Edit the cells here, not in the .ipynb files: ``tests/test_examples.py`` checks that the
notebooks match this script. Each notebook's first code cell holds the parameters, which
environment variables override (CI runs them with random weights and tiny settings).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _cells(spec: list[tuple[str, str]]) -> list:
    cells = []
    for kind, source in spec:
        source = source.strip("\n")
        if kind == "md":
            cells.append(new_markdown_cell(source))
        else:
            cell = new_code_cell(source)
            if kind == "params":
                cell.metadata["tags"] = ["parameters"]  # papermill's convention
            cells.append(cell)
    return cells


QUICKSTART = [
    ("md", """
# HardNet quickstart: match two photos

SIFT finds the keypoints, HardNet describes them, a nearest-neighbour matcher pairs them up and
RANSAC keeps the pairs that agree with one camera geometry. Every step is the OpenCV one, except
that `HardNetDescriptor.compute` stands where `cv2.SIFT_create().compute` would.
"""),
    ("params", """
import os

# The bundled weights by default; set HARDNET_WEIGHTS (or edit this line) to use a file of your own.
WEIGHTS = os.environ.get("HARDNET_WEIGHTS", "default")
MAX_KEYPOINTS = int(os.environ.get("HARDNET_MAX_KEYPOINTS", "2048"))
"""),
    ("code", """
from pathlib import Path

import cv2
import matplotlib.pyplot as plt
import numpy as np

from hardnet_desc import HardNetDescriptor
from hardnet_desc.matching import match_descriptors
from hardnet_desc.viz import draw_matches

DATA = Path("data") if Path("data").is_dir() else Path("examples/data")  # run from examples/ or the repo root
image1 = cv2.imread(str(DATA / "sacre_coeur_1.jpg"))  # BGR uint8, as OpenCV reads it
image2 = cv2.imread(str(DATA / "sacre_coeur_2.jpg"))
print(image1.shape, image2.shape)
"""),
    ("md", """
## 1. Keypoints from OpenCV's SIFT

Position, size and angle of each keypoint fix the square patch HardNet looks at: its side is
`patch_scale * max(kp.size, min_kp_size)` pixels (both values come with the weights) and it turns
with `kp.angle` (see the conventions page of the docs).
"""),
    ("code", """
sift = cv2.SIFT_create(nfeatures=MAX_KEYPOINTS)
kp1, kp2 = sift.detect(image1, None), sift.detect(image2, None)
print(len(kp1), "and", len(kp2), "keypoints")
"""),
    ("md", """
## 2. HardNet descriptors, where SIFT's would be computed

`compute` returns the keypoints unchanged and a float32 `(N, 128)` array of unit vectors.
"""),
    ("code", """
hardnet = HardNetDescriptor(WEIGHTS)  # CUDA if available, else CPU
print(hardnet)
kp1, desc1 = hardnet.compute(image1, kp1)
kp2, desc2 = hardnet.compute(image2, kp2)
print(desc1.shape, desc1.dtype, "norms:", np.linalg.norm(desc1, axis=1)[:3].round(4))
"""),
    ("md", """
## 3. Matching and geometric verification

Mutual nearest neighbours that also pass Lowe's ratio test, then a fundamental matrix fitted with
RANSAC: the inliers are the matches consistent with one pair of cameras.
"""),
    ("code", """
matches = match_descriptors(desc1, desc2, ratio=0.8, mutual=True)
pts1 = np.float32([kp1[i].pt for i in matches.query_idx]).reshape(-1, 2)
pts2 = np.float32([kp2[i].pt for i in matches.train_idx]).reshape(-1, 2)
_, mask = cv2.findFundamentalMat(pts1, pts2, cv2.USAC_MAGSAC, 1.0, 0.999, 10_000)
inliers = mask.ravel().astype(bool) if mask is not None else np.zeros(len(matches), bool)
print(f"{len(matches)} matches, {inliers.sum()} inliers")
"""),
    ("code", """
counts = f"{len(kp1)} + {len(kp2)} keypoints, {len(matches)} matches, {inliers.sum()} inliers"
picture = draw_matches(image1, image2, pts1[inliers], pts2[inliers], ["HardNet + SIFT keypoints", counts])
plt.figure(figsize=(14, 7))
plt.imshow(picture[:, :, ::-1])  # BGR -> RGB
plt.axis("off");
"""),
    ("md", """
## 4. The same pipeline with SIFT descriptors

Only the descriptor changes, so the inlier counts compare the descriptors alone.
"""),
    ("code", """
def count_inliers(descriptor) -> int:
    _, d1 = descriptor.compute(image1, kp1)
    _, d2 = descriptor.compute(image2, kp2)
    m = match_descriptors(d1, d2, ratio=0.8, mutual=True)
    if len(m) < 8:
        return 0
    p1 = np.float32([kp1[i].pt for i in m.query_idx])
    p2 = np.float32([kp2[i].pt for i in m.train_idx])
    _, mask = cv2.findFundamentalMat(p1, p2, cv2.USAC_MAGSAC, 1.0, 0.999, 10_000)
    return 0 if mask is None else int(mask.sum())


for name, descriptor in {"SIFT": cv2.SIFT_create(), "HardNet": hardnet}.items():
    print(f"{name:8s} {count_inliers(descriptor):5d} inliers")
"""),
    ("md", """
Next: `hardnet-desc extract images/ --out feats.h5` writes features for a whole folder in hloc's
format, and `02_train_your_own.ipynb` trains HardNet on your own photos.
"""),
]


TRAIN = [
    ("md", """
# Train HardNet on your own photos

A miniature of the full recipe, small enough for a laptop CPU:

1. **make-dataset**: warp each photo with random homographies and lighting changes, re-detect
   SIFT keypoints, and keep the patches of keypoints that the known warp confirms;
2. **train**: hardest-in-batch triplet loss (the HardNet recipe);
3. **use**: the exported `.safetensors` file goes straight into `HardNetDescriptor`.

A few dozen steps on four images only show the mechanics; real weights need hundreds of photos
and about ten million pairs (see the training guide in the docs).
"""),
    ("params", """
import os
from pathlib import Path

STEPS = int(os.environ.get("HARDNET_TRAIN_STEPS", "40"))  # optimiser steps in all
BATCH_SIZE = int(os.environ.get("HARDNET_TRAIN_BATCH", "64"))  # pairs per step (paper: 1024)
POINTS = int(os.environ.get("HARDNET_TRAIN_POINTS", "200"))  # 3D points per photo
WORK = Path(os.environ.get("HARDNET_WORKDIR", "runs/02_train_your_own"))  # scratch folder
"""),
    ("code", """
import shutil

import cv2
import matplotlib.pyplot as plt
import numpy as np

from hardnet_desc import HardNetDescriptor
from hardnet_desc.data import read_phototour
from hardnet_desc.train import TrainConfig, make_dataset, train

DATA = Path("data") if Path("data").is_dir() else Path("examples/data")
shutil.rmtree(WORK, ignore_errors=True)  # start afresh on every run of the notebook
photos = WORK / "photos"
photos.mkdir(parents=True)
for name in ("sacre_coeur_1", "sacre_coeur_2"):
    image = cv2.imread(str(DATA / f"{name}.jpg"))
    half = image.shape[1] // 2
    # Two halves per photo make four photos: three to train on, one to validate with.
    cv2.imwrite(str(photos / f"{name}_left.png"), image[:, :half])
    cv2.imwrite(str(photos / f"{name}_right.png"), image[:, half:])
sorted(p.name for p in photos.iterdir())
"""),
    ("md", """
## 1. Synthetic correspondences

The dataset comes out in the PhotoTour (Brown) layout: `train/` and `val/` folders of patch
mosaics, `info.txt` with the 3D point of every patch, and a pair file for validation.
"""),
    ("code", """
summary = make_dataset(photos, WORK / "dataset", points=POINTS, views=2, val_fraction=0.25,
                       val_pairs=1000, workers=1, progress=False)
print({split: summary[split] for split in ("train", "val")})
"""),
    ("code", """
# Each row: the patches of one 3D point, seen in different synthetic views.
data = read_phototour(WORK / "dataset" / "train")
ids, counts = np.unique(data.point_ids, return_counts=True)
rows = [np.flatnonzero(data.point_ids == i)[:3] for i in ids[counts >= 3][:6]]
fig, axes = plt.subplots(len(rows), 3, figsize=(3, len(rows)), squeeze=False)
for r, idx in enumerate(rows):
    for c, ax in enumerate(axes[r]):
        ax.imshow(data.patches[idx[c]], cmap="gray", vmin=0, vmax=255)
        ax.axis("off")
"""),
    ("md", """
## 2. Training

The loop checkpoints to `WORK/run/checkpoint.pt`: `train(cfg, resume=True)` continues an
interrupted run exactly. fp32 keeps this tiny run simple; the default `precision="auto"` uses
bf16 on CPU and fp16 on CUDA.
"""),
    ("code", """
epochs = 4
cfg = TrainConfig(data=str(WORK / "dataset" / "train"), out=str(WORK / "run"), val=str(WORK / "dataset" / "val"),
                  epochs=epochs, pairs_per_epoch=max(1, STEPS // epochs) * BATCH_SIZE, batch_size=BATCH_SIZE,
                  precision="fp32", checkpoint_every=STEPS)
weights = train(cfg, progress=False)
weights
"""),
    ("code", """
import csv

log = list(csv.DictReader(open(WORK / "run" / "log.csv")))
epoch = [int(r["epoch"]) for r in log]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3))
ax1.plot(epoch, [float(r["loss"]) for r in log], "o-")
ax1.set(xlabel="epoch", title="training loss")
ax2.plot(epoch, [float(r["val_fpr95"]) for r in log], "o-")
ax2.set(xlabel="epoch", title="validation FPR95 (lower is better)");
"""),
    ("md", """
## 3. Use the weights

The file records the patch scale it was trained with, and `HardNetDescriptor` picks it up.
"""),
    ("code", """
hardnet = HardNetDescriptor(weights)
image1 = cv2.imread(str(DATA / "sacre_coeur_1.jpg"))
sift = cv2.SIFT_create(nfeatures=500)
kps, desc = hardnet.compute(image1, sift.detect(image1, None))
print(hardnet)
print(desc.shape)
"""),
    ("md", """
The same steps on the command line, with the paper's recipe:

```bash
hardnet-desc make-dataset ~/photos data/mine --points 1000 --views 3
hardnet-desc train data/mine/train runs/mine --val data/mine/val --epochs 10
hardnet-desc train data/mine/train runs/mine --val data/mine/val --epochs 10 --resume   # after an interruption
```
"""),
]

NOTEBOOKS = {"01_quickstart.ipynb": QUICKSTART, "02_train_your_own.ipynb": TRAIN}


def build(name: str) -> nbformat.NotebookNode:
    """The notebook ``name`` (a key of :data:`NOTEBOOKS`), without outputs."""
    nb = new_notebook(cells=_cells(NOTEBOOKS[name]))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{Path(name).stem[:2]}-{i:02d}"  # stable ids: regenerating changes nothing
    return nb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--execute", action="store_true", help="run the notebooks and store their outputs")
    parser.add_argument("--out", type=Path, default=EXAMPLES)
    args = parser.parse_args()
    for name in NOTEBOOKS:
        nb = build(name)
        if args.execute:
            from nbclient import NotebookClient

            NotebookClient(nb, timeout=1200, resources={"metadata": {"path": str(EXAMPLES)}}).execute()
        nbformat.validate(nb)
        nbformat.write(nb, args.out / name)
        print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()
