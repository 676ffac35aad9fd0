"""Benchmark `HardNetDescriptor.compute` against kornia's LAFDescriptor and OpenCV SIFT.

    python benchmarks/bench_descriptor.py                  # 2,000 SIFT keypoints, CPU
    python benchmarks/bench_descriptor.py --n 8000
    python benchmarks/bench_descriptor.py --image photo.jpg --device cuda
    python benchmarks/bench_descriptor.py --million        # also 1,000,000 keypoints: time and peak memory

All methods describe the SAME keypoints of the same ~1024x666 photo (the first bundled example,
resized, unless ``--image``). Speeds are patches/s, medians of ``--repeats`` timed runs after one
warm-up. Untrained weights unless ``--weights``: speed does not depend on them.

From another script: ``from bench_descriptor import run; stats = run(n=2000)``.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout
from hardnet_desc.descriptor import HardNetDescriptor  # noqa: E402
from hardnet_desc.device import resolve_device  # noqa: E402
from hardnet_desc.model import HardNet  # noqa: E402
from hardnet_desc.patches import extract_patches, keypoints_to_frames  # noqa: E402
from hardnet_desc.image import read_image, to_grey_tensor  # noqa: E402
from hardnet_desc.weights import load_hardnet  # noqa: E402

DEFAULT_IMAGE = ROOT / "examples" / "data" / "sacre_coeur_1.jpg"


def load_photo(path: str | Path | None = None, long_side: int = 1024) -> np.ndarray:
    """BGR uint8 photo, resized so its long side is ``long_side`` (unless a path is given)."""
    if path is not None:
        return read_image(path)
    image = read_image(DEFAULT_IMAGE)
    s = long_side / max(image.shape[:2])
    return cv2.resize(image, (round(image.shape[1] * s), round(image.shape[0] * s)), interpolation=cv2.INTER_LINEAR)


def sift_keypoints(image: np.ndarray, n: int) -> list[cv2.KeyPoint]:
    """The ``n`` strongest SIFT keypoints; a lower contrast threshold when the photo has fewer."""
    for threshold in (0.04, 0.01, 0.002):
        kps = cv2.SIFT_create(nfeatures=n, contrastThreshold=threshold).detect(image, None)
        if len(kps) >= n:
            break
    return list(kps)[:n]


def _median_time(fn, repeats: int, device: torch.device) -> tuple[float, object]:
    out = fn()  # warm-up: oneDNN/cuDNN primitive selection, allocator
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean cosine of matching rows, and how often ``b``'s nearest neighbour in ``a`` is its own row."""
    cosine = float((a * b).sum(1).mean())
    nearest = (torch.from_numpy(b) @ torch.from_numpy(a).T).argmax(1).numpy()
    return cosine, float((nearest == np.arange(len(a))).mean())


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def million(
    net: HardNet, device: torch.device, precision: str, n: int = 1_000_000, batch_size: int | None = None
) -> dict[str, float]:
    """Describe ``n`` random keypoints of a 4096x2664 photo once; time and peak memory.

    The keypoints are an ``(n, 4)`` array (a list of ``cv2.KeyPoint`` works too, plus ~56 bytes a
    keypoint of Python objects); the output alone is ``n * 512`` bytes.
    """
    image = load_photo(long_side=4096)
    h, w = image.shape[:2]
    rng = np.random.default_rng(0)
    sizes = np.exp(rng.uniform(np.log(2.0), np.log(60.0), n))  # SIFT-like spread of scales
    kps = np.stack([rng.uniform(0, w - 1, n), rng.uniform(0, h - 1, n), sizes, rng.uniform(0, 360, n)], 1)
    kwargs = {} if batch_size is None else {"batch_size": batch_size}
    desc = HardNetDescriptor(net, device=device, precision=precision, **kwargs)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss_before = _peak_rss_mb()
    t0 = time.perf_counter()
    _, d = desc.compute(image, kps)
    seconds = time.perf_counter() - t0
    stats = {
        "million_n": float(n),
        "million_s": seconds,
        "million_patches_per_s": n / seconds,
        "million_output_mb": d.nbytes / 2**20,
        "million_peak_rss_before_mb": rss_before,
        "million_peak_rss_mb": _peak_rss_mb(),
    }
    if device.type == "cuda":
        stats["million_cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return stats


def run(
    n: int = 2000,
    image: str | Path | None = None,
    device: str = "cpu",
    repeats: int = 5,
    batch_size: int | None = None,
    weights: str | None = None,
    kornia: bool = True,
    with_million: bool = False,
    million_precision: str = "bf16",
) -> dict[str, float]:
    """Time every method on the same keypoints; return the numbers.

    Keys (speeds in patches/s): ``n``, ``height``, ``width``, ``threads``, ``ours_fp32``,
    ``ours_bf16``, ``patches_only`` (patch extraction alone), ``net_fp32``/``net_bf16``
    (``describe_patches`` on ready patches), ``kornia_fp32`` (if importable), ``sift``,
    ``bf16_vs_kornia``, ``bf16_vs_sift``, ``bf16_cosine`` and ``bf16_nn_agreement`` (bf16 vs
    fp32 descriptors), and with ``with_million`` the ``million_*`` keys of :func:`million`.
    """
    dev = resolve_device(device)
    photo = load_photo(image)
    kps = sift_keypoints(photo, n)
    net = HardNet().eval() if weights is None else load_hardnet(weights)[0]
    kwargs = {} if batch_size is None else {"batch_size": batch_size}
    stats: dict[str, float] = {
        "n": float(len(kps)),
        "height": float(photo.shape[0]),
        "width": float(photo.shape[1]),
        "threads": float(torch.get_num_threads()),
    }
    if with_million:  # first, so that the peak RSS is not an earlier benchmark's
        stats |= million(net, dev, million_precision, batch_size=batch_size)

    def speed(seconds: float) -> float:
        return len(kps) / seconds

    descs = {}
    for precision in ("fp32", "bf16") if dev.type == "cpu" else ("fp32", "bf16", "fp16"):
        desc = HardNetDescriptor(net, device=dev, precision=precision, **kwargs)
        seconds, (_, descs[precision]) = _median_time(lambda: desc.compute(photo, kps), repeats, dev)
        stats[f"ours_{precision}"] = speed(seconds)
        grey = to_grey_tensor(photo, dev)
        patches = extract_patches(grey, kps)
        stats[f"net_{precision}"] = speed(_median_time(lambda: desc.describe_patches(patches), repeats, dev)[0])
    patches_only = _median_time(lambda: extract_patches(to_grey_tensor(photo, dev), kps), repeats, dev)[0]
    stats["patches_only"] = speed(patches_only)
    stats["bf16_cosine"], stats["bf16_nn_agreement"] = _agreement(descs["fp32"], descs["bf16"])

    if kornia:
        try:
            import kornia.feature as KF
        except ImportError:
            KF = None
        if KF is not None:
            # kornia's LAFs are our frames: [A | c] in pixels, the patch covering c + A [-1, 1]^2
            lafs = keypoints_to_frames(kps, HardNetDescriptor(net, device="cpu").patch_scale)[None].to(dev)
            kdesc = KF.LAFDescriptor(KF.HardNet(pretrained=False), patch_size=32).to(dev).eval()
            grey = to_grey_tensor(photo, dev)
            with torch.inference_mode():
                stats["kornia_fp32"] = speed(_median_time(lambda: kdesc(grey, lafs), max(1, repeats // 2), dev)[0])
            stats["bf16_vs_kornia"] = stats["ours_bf16"] / stats["kornia_fp32"]

    grey8 = cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY)
    sift = cv2.SIFT_create()
    stats["sift"] = speed(_median_time(lambda: sift.compute(grey8, kps), repeats, torch.device("cpu"))[0])
    stats["bf16_vs_sift"] = stats["ours_bf16"] / stats["sift"]
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="SIFT keypoints to describe")
    parser.add_argument("--image", help="photo to use instead of the bundled one (used at its own size)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, help="HardNetDescriptor batch_size (default: its own)")
    parser.add_argument("--weights", help="weights for HardNetDescriptor (default: untrained)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads")
    parser.add_argument("--no-kornia", action="store_true")
    parser.add_argument("--million", action="store_true", help="also describe 1,000,000 keypoints once")
    parser.add_argument("--million-precision", default="bf16", choices=["fp32", "bf16", "fp16"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    s = run(
        n=args.n,
        image=args.image,
        device=args.device,
        repeats=args.repeats,
        batch_size=args.batch_size,
        weights=args.weights,
        kornia=not args.no_kornia,
        with_million=args.million,
        million_precision=args.million_precision,
    )
    print(f"{int(s['n'])} SIFT keypoints on a {int(s['width'])}x{int(s['height'])} photo, device={args.device}, "
          f"torch {torch.__version__}, {int(s['threads'])} threads, median of {args.repeats} (patches/s)")
    rows = [
        ("ours compute() fp32", "ours_fp32"),
        ("ours compute() bf16", "ours_bf16"),
        ("ours compute() fp16", "ours_fp16"),
        ("  patch extraction only", "patches_only"),
        ("  describe_patches fp32", "net_fp32"),
        ("  describe_patches bf16", "net_bf16"),
        ("  describe_patches fp16", "net_fp16"),
        ("kornia LAFDescriptor(HardNet) fp32", "kornia_fp32"),
        ("cv2 SIFT compute", "sift"),
    ]
    for label, key in rows:
        if key in s:
            print(f"  {label:36s} {s[key]:10,.0f}")
    if "bf16_vs_kornia" in s:
        print(f"  bf16 vs kornia: {s['bf16_vs_kornia']:.2f}x")
    print(f"  bf16 vs SIFT:   {s['bf16_vs_sift']:.2f}x")
    print(f"  bf16 vs fp32 descriptors: mean cosine {s['bf16_cosine']:.5f}, "
          f"nearest-neighbour agreement {100 * s['bf16_nn_agreement']:.1f} %")
    if "million_n" in s:
        print(f"1,000,000 keypoints ({args.million_precision}): {s['million_s']:.1f} s, "
              f"{s['million_patches_per_s']:,.0f} patches/s, output {s['million_output_mb']:.0f} MB, "
              f"peak RSS {s['million_peak_rss_mb']:,.0f} MB (before: {s['million_peak_rss_before_mb']:,.0f} MB)")
        if "million_cuda_peak_mb" in s:
            print(f"  CUDA peak allocated {s['million_cuda_peak_mb']:,.0f} MB")


if __name__ == "__main__":
    main()
