"""Digests of what the public paths compute, to show a refactoring changed nothing.

    python benchmarks/behaviour_digest.py > before.txt   # on the old commit
    python benchmarks/behaviour_digest.py > after.txt    # on the new one
    diff before.txt after.txt                             # no output: same bits

Each line names a path (compute of numpy and torch images, of keypoints, arrays and affine frames,
``describe_patches``, the matcher, ``match_pair`` with and without ``wide_baseline``, ``extract``'s
HDF5 file) and the sha256 (first 16 hex digits) of its outputs' bytes. Bits depend on the CPU and
torch build: compare two runs on the same machine only.
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
from pathlib import Path

import cv2
import h5py
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout
from hardnet_desc import HardNetDescriptor, match_descriptors  # noqa: E402
from hardnet_desc.pipeline import match_pair  # noqa: E402

try:  # the module's name before and after the layout of issue #22
    from hardnet_desc.integrations.hloc import extract_folder
except ImportError:
    from hardnet_desc.features_io import extract_folder

DATA = ROOT / "examples" / "data"


def digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
        h.update(str(a.dtype).encode() + str(a.shape).encode() + np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def main() -> None:
    torch.manual_seed(0)
    img1 = cv2.imread(str(DATA / "sacre_coeur_1.jpg"))
    img2 = cv2.imread(str(DATA / "sacre_coeur_2.jpg"))
    kps = cv2.SIFT_create(nfeatures=1500).detect(img1, None)
    arr = np.array([(k.pt[0], k.pt[1], k.size, k.angle) for k in kps])
    arr_out = np.concatenate([arr, [[-5.0, 3.0, 4.0, 10.0], [10.0, 10.0, 0.0, 0.0]]])  # two not describable
    for precision in ("fp32", "auto"):
        hd = HardNetDescriptor(device="cpu", precision=precision)
        print(f"precision {precision} -> {hd.precision}")
        _, d = hd.compute(img1, kps)
        print("compute numpy keypoints", digest(d))
        kept, d = hd.compute(img1, arr_out)
        print("compute (N,4) with 2 not describable", len(kept), digest(d))
        print("compute frames", digest(hd.compute(img1, hd.frames(kps))[1]))
        rgb = torch.from_numpy(img1[..., ::-1].copy()).permute(2, 0, 1).float() / 255
        print("compute torch (3,H,W)", digest(hd.compute(rgb, kps)[1]))
        _, ds = hd.compute([img1, img2], [kps, kps[:700]])
        print("compute batch of 2", digest(*ds))
        print("describe_patches", digest(hd.describe_patches(hd.cut_patches(img1, kps))))
    hd = HardNetDescriptor(device="cpu", precision="fp32")
    k1, d1 = hd.detectAndCompute(img1)
    k2, d2 = hd.detectAndCompute(img2)
    print("detectAndCompute", len(k1), len(k2), digest(d1, d2))
    m = match_descriptors(d1, d2, ratio=0.8, mutual=True)
    print("match ratio+mutual", len(m), digest(m.query_idx, m.train_idx, m.distances, m.ratios))
    r = match_pair(img1, img2, hd)
    print("match_pair fundamental", len(r.matches), int(r.inliers.sum()), digest(r.matches.pairs, r.inliers, r.model))
    r = match_pair(img1, img2, hd, geometry="homography")
    print("match_pair homography", len(r.matches), int(r.inliers.sum()), digest(r.matches.pairs, r.inliers, r.model))
    h, w = img2.shape[:2]
    tilt = cv2.warpPerspective(img2, np.array([[0.22, -0.1, 0.35 * w], [0.12, 0.9, 0.0], [0.0002, 0.0, 1.0]]), (w, h))
    r = match_pair(img2, tilt, hd, geometry="homography", wide_baseline=True)
    print("match_pair wide_baseline", r.step, len(r.matches), int(r.inliers.sum()), digest(r.matches.pairs, r.inliers))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "features.h5"
        extract_folder(DATA, out, hd, max_keypoints=1000, progress=False)
        with h5py.File(out, "r") as f:
            for name in sorted(f):
                g = f[name]
                print("extract", name, digest(*(g[k][()] for k in sorted(g))))


if __name__ == "__main__":
    main()
