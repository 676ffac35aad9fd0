"""Draw docs/img/sfm_tracks.png: sample tracks of a dataset built by ``make-dataset --from-sfm``.

    python docs/scripts/make_sfm_figure.py DATA/val [--rows 8] [--cols 8] [--seed 0]

Each row is one 3D point, its columns the patches of its observations in different photos, as
the trainer reads them (64x64 stored patches). Rows are drawn at random among the points with at
least ``cols`` patches (or the longest tracks when too few have that many).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from hardnet_desc.data.phototour import read_phototour

OUT = Path(__file__).resolve().parents[2] / "docs" / "img" / "sfm_tracks.png"


def track_grid(root: Path, rows: int, cols: int, seed: int, gap: int = 4) -> np.ndarray:
    """A (rows * (64 + gap), cols * (64 + gap)) uint8 picture: one track per row, white gaps."""
    data = read_phototour(root, patch_size=64)
    ids, counts = np.unique(data.point_ids, return_counts=True)
    rng = np.random.default_rng(seed)
    long = ids[counts >= cols]
    chosen = rng.choice(long, rows, replace=False) if len(long) >= rows else ids[np.argsort(-counts)[:rows]]
    cell = 64 + gap
    picture = np.full((rows * cell - gap, cols * cell - gap), 255, np.uint8)
    for r, point in enumerate(chosen):
        for c, i in enumerate(np.flatnonzero(data.point_ids == point)[:cols]):
            picture[r * cell : r * cell + 64, c * cell : c * cell + 64] = data.patches[i]
    return picture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="a PhotoTour folder written by make-dataset --from-sfm")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--cols", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    cv2.imwrite(str(args.out), track_grid(args.root, args.rows, args.cols, args.seed), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(args.out)


if __name__ == "__main__":
    main()
