"""Benchmark `HardNetDescriptor.compute` against kornia's LAFDescriptor and OpenCV SIFT.

    python benchmarks/bench_descriptor.py                  # 2,000 SIFT keypoints, CPU
    python benchmarks/bench_descriptor.py --threads 1      # one torch thread (a busy machine)
    python benchmarks/bench_descriptor.py --n 8000 --device cuda
    python benchmarks/bench_descriptor.py --scan-batch     # net alone per precision and batch size
    python benchmarks/bench_descriptor.py --million        # also 1,000,000 keypoints: time and peak memory

All methods describe the SAME keypoints of the same ~1024x666 photo (the first bundled example,
resized, unless ``--image``) with the bundled weights. Speeds are patches/s, medians of
``--repeats`` rounds after one warm-up; each round times every method once, in turn, so a change
of machine load hits all methods alike (compare the ratios, which is what carries over between
machines). Startup is timed in a fresh interpreter: ``import hardnet_desc``, then
``HardNetDescriptor()``, then the first ``compute()`` of one keypoint.

From another script: ``from bench_descriptor import run; stats = run(n=2000)``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout
from hardnet_desc.descriptor import HardNetDescriptor  # noqa: E402
from hardnet_desc.core.device import cpu_kind, resolve_device  # noqa: E402
from hardnet_desc.core.image import read_image  # noqa: E402
from hardnet_desc.core.quantize import int8_available  # noqa: E402

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


def _agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean cosine of matching rows, and how often ``b``'s nearest neighbour in ``a`` is its own row.

    (How often a precision changes which keypoint of *another* image is nearest, the agreement
    that matters for matching, is measured on sequences: see docs/benchmarks.md.)"""
    cosine = float((a * b).sum(1).mean())
    nearest = (torch.from_numpy(b) @ torch.from_numpy(a).T).argmax(1).numpy()
    return cosine, float((nearest == np.arange(len(a))).mean())


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def million(
    weights: str, device: torch.device, precision: str, n: int = 1_000_000, batch_size: int | None = None
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
    desc = HardNetDescriptor(weights, device=device, precision=precision, **kwargs)
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def interleaved(methods: dict[str, Callable[[], object]], repeats: int, device: torch.device) -> dict[str, float]:
    """Median seconds of each method over ``repeats`` rounds (every method once per round, in turn)."""
    for fn in methods.values():  # warm-up: oneDNN/cuDNN primitive selection, allocator
        fn()
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


_STARTUP = """
import time; t0 = time.perf_counter()
import hardnet_desc; t1 = time.perf_counter()
d = hardnet_desc.HardNetDescriptor(device={device!r}); t2 = time.perf_counter()
import cv2
kps = [cv2.KeyPoint(100.0, 100.0, 8.0, 30.0)]
d.compute(cv2.imread({image!r}), kps); t3 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2)
"""


def startup(device: str = "cpu", threads: int | None = None) -> dict[str, float]:
    """Seconds for ``import hardnet_desc``, ``HardNetDescriptor()`` and the first ``compute()``, in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)} | ({"OMP_NUM_THREADS": str(threads)} if threads else {})
    code = _STARTUP.format(device=device, image=str(DEFAULT_IMAGE))
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    total = time.perf_counter() - t0
    import_s, construct_s, first_s = (float(v) for v in out.split())
    return {"startup_import_s": import_s, "startup_construct_s": construct_s, "startup_first_compute_s": first_s,
            "startup_total_s": total}


def run(
    n: int = 2000,
    image: str | Path | None = None,
    device: str = "cpu",
    repeats: int = 5,
    weights: str = "default",
    kornia: bool = True,
    with_startup: bool = True,
    with_million: bool = False,
    million_precision: str = "auto",
) -> dict[str, float | str]:
    """Time every method on the same keypoints; return the numbers.

    Keys (speeds in patches/s): ``ours_default`` (``HardNetDescriptor()``, precision
    ``default_precision``; patches cut in a worker thread where torch's threads leave a core
    free), ``ours_default_serial`` / ``ours_default_threaded`` (the same, never / always cutting
    patches in a worker thread), ``ours_<precision>`` and ``net_<precision>`` (``describe_patches`` on ready patches,
    the net alone) for each precision, ``patches_only`` (patch extraction alone), ``kornia_fp32``,
    ``sift``; ratios ``default_vs_kornia``, ``default_vs_sift``, ``compute_vs_net`` (default
    compute / its net alone), ``int8_vs_bf16``; agreement with fp32 (``<p>_cosine``,
    ``<p>_nn_agreement``); ``startup_*`` seconds; with ``with_million`` the ``million_*`` keys.
    """
    dev = resolve_device(device)
    photo = load_photo(image)
    kps = sift_keypoints(photo, n)
    stats: dict[str, float | str] = {"n": float(len(kps)), "height": float(photo.shape[0]),
                                     "width": float(photo.shape[1]), "threads": float(torch.get_num_threads())}
    if with_million:  # first, so that the peak RSS is not an earlier benchmark's
        stats |= million(weights, dev, million_precision)
    precisions = ["fp32", "bf16"] + (["int8"] if dev.type == "cpu" and int8_available() else ["fp16"])
    descs = {p: HardNetDescriptor(weights, device=dev, precision=p) for p in precisions}
    descs["default"] = HardNetDescriptor(weights, device=dev)
    # the default (overlap=None) decides by spare cores
    serial, threaded = (HardNetDescriptor(weights, device=dev, overlap=overlap) for overlap in (False, True))
    stats["default_precision"] = descs["default"].precision
    stats["default_batch_size"] = float(descs["default"].batch_size)
    patches = descs["default"].cut_patches(photo, kps)
    methods: dict[str, Callable[[], object]] = {}
    for name, desc in descs.items():
        methods[f"ours_{name}"] = lambda desc=desc: desc.compute(photo, kps)
        methods[f"net_{name}"] = lambda desc=desc: desc.describe_patches(patches)
    methods["ours_default_serial"] = lambda: serial.compute(photo, kps)
    methods["ours_default_threaded"] = lambda: threaded.compute(photo, kps)
    methods["patches_only"] = lambda: descs["default"].cut_patches(photo, kps)
    if kornia:
        methods |= _kornia_method(photo, kps, descs["default"], dev)
    grey8 = cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY)
    sift = cv2.SIFT_create()
    methods["sift"] = lambda: sift.compute(grey8, kps)
    seconds = interleaved(methods, repeats, dev)
    stats |= {name: len(kps) / s for name, s in seconds.items()}

    reference = descs["fp32"].compute(photo, kps)[1]
    for name in precisions[1:]:
        stats[f"{name}_cosine"], stats[f"{name}_nn_agreement"] = _agreement(reference, descs[name].compute(photo, kps)[1])
    for base in ("kornia_fp32", "sift"):
        if base in stats:
            stats[f"default_vs_{base.split('_')[0]}"] = stats["ours_default"] / stats[base]
    stats["compute_vs_net"] = stats["ours_default"] / stats["net_default"]
    if "ours_int8" in stats:
        stats["int8_vs_bf16"] = stats["ours_int8"] / stats["ours_bf16"]
        stats["net_int8_vs_bf16"] = stats["net_int8"] / stats["net_bf16"]
    if with_startup:
        stats |= startup(device, threads=torch.get_num_threads())
    return stats


def _kornia_method(photo: np.ndarray, kps, desc: HardNetDescriptor, dev: torch.device) -> dict[str, Callable]:
    try:
        import kornia.feature as KF
    except ImportError:
        return {}
    from hardnet_desc.core.image import to_grey_tensor

    # kornia's LAFs are our frames: [A | c] in pixels, the patch covering c + A [-1, 1]^2
    lafs = desc.frames(kps)[None].to(dev)
    kdesc = KF.LAFDescriptor(KF.HardNet(pretrained=False), patch_size=32).to(dev).eval()

    def describe() -> torch.Tensor:
        with torch.inference_mode():
            return kdesc(to_grey_tensor(photo, dev), lafs)

    return {"kornia_fp32": describe}


def scan_batch(device: str = "cpu", sizes: tuple[int, ...] = (32, 64, 128, 256, 512, 1024), n: int = 2048,
               repeats: int = 5, weights: str = "default", total: int | None = None) -> dict[str, dict[int, float]]:
    """Net alone (``describe_patches``), patches/s per precision and batch size, interleaved.

    ``total``: describe this many patches per call (the ``n`` SIFT patches repeated), so that large
    batch sizes are timed over several batches (a GPU's)."""
    dev = resolve_device(device)
    precisions = ["fp32", "bf16"] + (["int8"] if dev.type == "cpu" and int8_available() else ["fp16"])
    patches = HardNetDescriptor(weights, device=dev).cut_patches(load_photo(), sift_keypoints(load_photo(), n))
    if total is not None:
        patches = patches.repeat(-(-total // len(patches)), 1, 1, 1)[:total]
    methods = {}
    for p in precisions:
        for size in sizes:
            desc = HardNetDescriptor(weights, device=dev, precision=p, batch_size=size)
            methods[f"{p} {size}"] = lambda desc=desc: desc.describe_patches(patches)
    seconds = interleaved(methods, repeats, dev)
    return {p: {size: len(patches) / seconds[f"{p} {size}"] for size in sizes} for p in precisions}


def cpu_name() -> str:
    """The CPU's model name and the flags that matter here (Linux), else the platform's processor string."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    wanted = ("avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8")
    kind = f"device.cpu_kind() {cpu_kind()!r}"  # the CPU_AUTO and BATCH_SIZES rows ("cpu:KIND") it measures
    return f"{model} ({', '.join(f for f in wanted if f in flags) or 'no AVX-512 BF16/VNNI/AMX'}; {kind})"


ROWS = [
    ("HardNetDescriptor() default compute()", "ours_default"),
    ("  same, patches cut serially", "ours_default_serial"),
    ("  same, patches cut in a worker thread", "ours_default_threaded"),
    ("  net alone (describe_patches)", "net_default"),
    ("compute() fp32", "ours_fp32"),
    ("compute() bf16", "ours_bf16"),
    ("compute() fp16", "ours_fp16"),
    ("compute() int8", "ours_int8"),
    ("net alone fp32", "net_fp32"),
    ("net alone bf16", "net_bf16"),
    ("net alone fp16", "net_fp16"),
    ("net alone int8", "net_int8"),
    ("patch extraction alone", "patches_only"),
    ("kornia LAFDescriptor(HardNet) fp32", "kornia_fp32"),
    ("cv2 SIFT compute", "sift"),
]


def print_report(s: dict, args: argparse.Namespace) -> None:
    print(f"{cpu_name()}; {int(s['n'])} SIFT keypoints on a {int(s['width'])}x{int(s['height'])} photo, "
          f"device={args.device}, torch {torch.__version__}, {int(s['threads'])} threads, median of {args.repeats}")
    print(f"default: precision={s['default_precision']}, batch_size={int(s['default_batch_size'])}")
    print(f"  {'method':40s} {'patches/s':>10s}")
    for label, key in ROWS:
        if key in s:
            print(f"  {label:40s} {s[key]:10,.0f}")
    for key, label in (("default_vs_kornia", "default vs kornia fp32"), ("default_vs_sift", "default vs SIFT"),
                       ("compute_vs_net", "default compute() / net alone"), ("int8_vs_bf16", "int8 / bf16 compute()"),
                       ("net_int8_vs_bf16", "int8 / bf16 net alone")):
        if key in s:
            print(f"  {label:40s} {s[key]:10.2f}x")
    for p in ("bf16", "fp16", "int8"):
        if f"{p}_cosine" in s:
            print(f"  {p} vs fp32 descriptors: mean cosine {s[f'{p}_cosine']:.5f}, "
                  f"own-row nearest neighbour {100 * s[f'{p}_nn_agreement']:.1f} %")
    if "startup_total_s" in s:
        print(f"startup: import {s['startup_import_s']:.2f} s, HardNetDescriptor() {s['startup_construct_s']:.2f} s, "
              f"first compute() {s['startup_first_compute_s']:.2f} s; fresh process in all {s['startup_total_s']:.2f} s")
    if "million_n" in s:
        print(f"1,000,000 keypoints ({args.million_precision}): {s['million_s']:.1f} s, "
              f"{s['million_patches_per_s']:,.0f} patches/s, output {s['million_output_mb']:.0f} MB, "
              f"peak RSS {s['million_peak_rss_mb']:,.0f} MB (before: {s['million_peak_rss_before_mb']:,.0f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="SIFT keypoints to describe")
    parser.add_argument("--image", help="photo to use instead of the bundled one (used at its own size)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--weights", default="default", help="HardNet weights (int8 needs calibrated ones)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads")
    parser.add_argument("--no-kornia", action="store_true")
    parser.add_argument("--no-startup", action="store_true")
    parser.add_argument("--scan-batch", action="store_true", help="only the net, per precision and batch size")
    parser.add_argument("--million", action="store_true", help="also describe 1,000,000 keypoints once")
    parser.add_argument("--million-precision", default="auto", choices=["auto", "fp32", "bf16", "fp16", "int8"])
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.scan_batch:
        table = scan_batch(args.device, repeats=args.repeats, weights=args.weights)
        print(f"{cpu_name()}; net alone, patches/s, {torch.get_num_threads()} threads, median of {args.repeats}")
        for p, row in table.items():
            best = max(row, key=row.get)
            print(f"  {p:5s} " + "  ".join(f"{size:5d}: {v:8,.0f}" for size, v in row.items()) + f"   best {best}")
        stats = {p: {str(k): v for k, v in row.items()} for p, row in table.items()}
    else:
        stats = run(n=args.n, image=args.image, device=args.device, repeats=args.repeats, weights=args.weights,
                    kornia=not args.no_kornia, with_startup=not args.no_startup, with_million=args.million,
                    million_precision=args.million_precision)
        print_report(stats, args)
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_name(), "threads": torch.get_num_threads(), **stats}, indent=1))


if __name__ == "__main__":
    main()
