"""Speed of the exported ONNX model (ONNX Runtime, OpenCV DNN) against torch, on the same patches.

    python benchmarks/bench_onnx.py                 # 2,000 SIFT patches of the first bundled photo
    python benchmarks/bench_onnx.py --n 8000 --threads 1

Network only: the patches are cut once (``extract_patches``) and every runtime describes the
same ``(N, 1, 32, 32)`` array in batches of ``--batch``. Patches/s are medians of ``--repeats``
runs after one warm-up, all in one process, so the ratios compare like with like. The last
column is the largest difference from torch fp32.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_descriptor import ROOT, _median_time, load_photo, sift_keypoints  # noqa: E402

sys.path.insert(0, str(ROOT))
from hardnet_desc.descriptor import HardNetDescriptor  # noqa: E402
from hardnet_desc.integrations.onnx import export_onnx  # noqa: E402
from hardnet_desc.core.image import to_grey_tensor  # noqa: E402
from hardnet_desc.core.patches import extract_patches  # noqa: E402


def _batched(fn, patches: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([fn(patches[s : s + batch]) for s in range(0, len(patches), batch)])


def run(n: int = 2000, batch: int = 256, repeats: int = 5, threads: int | None = None) -> dict[str, tuple]:
    """``{runtime: (patches per second, max abs difference from torch fp32)}``."""
    import onnxruntime as ort

    if threads:
        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
    photo = load_photo()
    patches = extract_patches(to_grey_tensor(photo), sift_keypoints(photo, n)).numpy()
    cpu = torch.device("cpu")
    fp32 = HardNetDescriptor(device="cpu", batch_size=batch)
    bf16 = HardNetDescriptor(device="cpu", batch_size=batch, precision="bf16")
    with tempfile.TemporaryDirectory() as tmp:
        path = str(export_onnx(Path(tmp) / "hardnet.onnx"))
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        net = cv2.dnn.readNetFromONNX(path)

    def dnn(x: np.ndarray) -> np.ndarray:
        net.setInput(x)
        return net.forward()

    runtimes = {
        "torch fp32": lambda: fp32.describe_patches(patches),
        "torch bf16": lambda: bf16.describe_patches(patches),
        "onnxruntime fp32": lambda: _batched(lambda x: session.run(None, {"patches": x})[0], patches, batch),
        "cv2.dnn fp32": lambda: _batched(dnn, patches, batch),
    }
    stats, reference = {}, None
    for name, fn in runtimes.items():
        seconds, out = _median_time(fn, repeats, cpu)
        reference = out if reference is None else reference
        stats[name] = (len(patches) / seconds, float(np.abs(out - reference).max()))
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="patches (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=256, help="patches per call (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="threads for every runtime (default: theirs)")
    args = parser.parse_args()
    stats = run(args.n, args.batch, args.repeats, args.threads)
    base = stats["torch fp32"][0]
    print(f"{'runtime':<18} {'patches/s':>10} {'vs torch fp32':>14} {'max |diff|':>11}")
    for name, (speed, diff) in stats.items():
        print(f"{name:<18} {speed:>10.0f} {speed / base:>13.2f}x {diff:>11.1e}")


if __name__ == "__main__":
    main()
