"""All speed benchmarks side by side: descriptor (bench_descriptor) and matching (bench_matching).

    python benchmarks/bench_all.py                    # CPU, plus CUDA when present
    python benchmarks/bench_all.py --devices cpu --json bench.json

This script times nothing itself: it calls ``run(...) -> dict`` of each benchmark module in this
folder, once per device, and prints their numbers in one table (one column per device) followed by
speed ratios against the baselines, above 1 = faster (OpenCV SIFT for describing, ``cv2.BFMatcher`` knnMatch + ratio test
for matching). A module that is missing is reported and skipped. Keyword arguments are passed only
to a ``run`` that accepts them, so each module keeps its own defaults.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import platform
import resource
import sys
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # the sibling modules and a source checkout

#: section -> (module, baseline key fragment); a timing key ``*_s`` is divided into the baseline's.
SECTIONS = {
    "descriptor": ("bench_descriptor", "sift"),
    "matching": ("bench_matching", "opencv"),
}


def call_run(module_name: str, **kwargs: Any) -> dict | str:
    """``module.run(**accepted kwargs)``, or a one-line reason why it could not run."""
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        return f"{module_name} not available ({err})"
    run = getattr(module, "run", None)
    if run is None:
        return f"{module_name} has no run() yet"
    params = inspect.signature(run).parameters
    takes_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
    return run(**{k: v for k, v in kwargs.items() if v is not None and (takes_all or k in params)})


def baseline_ratios(stats: dict, fragment: str) -> dict[str, float]:
    """``baseline_s / key_s`` for every timing key (seconds, ``*_s``): above 1 is faster than the baseline.

    The baseline is the timing key containing ``fragment`` that shares the most ``_``-separated
    words with the key (so ``ours_8k_s`` is compared with ``sift_8k_s`` when both exist).
    """
    timings = {k: v for k, v in stats.items()
               if k.endswith("_s") and not k.endswith("per_s") and isinstance(v, (int, float)) and v > 0}
    bases = [k for k in timings if fragment in k]
    ratios = {}
    for key, value in timings.items():
        if key in bases or not bases:
            continue
        words = set(key.split("_"))
        base = max(bases, key=lambda b: len(words & set(b.split("_"))))
        ratios[f"{base} / {key}"] = timings[base] / value
    return ratios


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def report(results: dict[str, dict[str, dict | str]], devices: list[str]) -> str:
    """One table per section: rows are the keys of the run() dicts, columns the devices."""
    lines = []
    for section, (_, fragment) in SECTIONS.items():
        per_device = results[section]
        lines.append(f"== {section} ==")
        notes = {d: r for d, r in per_device.items() if isinstance(r, str)}
        for device, note in notes.items():
            lines.append(f"  [{device}] skipped: {note}")
        stats = {d: r for d, r in per_device.items() if isinstance(r, dict)}
        if not stats:
            lines.append("")
            continue
        rows: dict[str, dict[str, str]] = {}
        for device, s in stats.items():
            for key, value in s.items():
                rows.setdefault(key, {})[device] = _fmt(value)
        for device, s in stats.items():
            for key, value in baseline_ratios(s, fragment).items():
                rows.setdefault(f"speed ratio {key}", {})[device] = f"{value:.2f}"
        width = max(len(k) for k in rows)
        cols = [d for d in devices if d in stats]
        lines.append(f"  {'':<{width}}" + "".join(f"{d:>14}" for d in cols))
        for key, cells in rows.items():
            lines.append(f"  {key:<{width}}" + "".join(f"{cells.get(d, '-'):>14}" for d in cols))
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", default=None, help="comma-separated (default: cpu, plus cuda when available)")
    p.add_argument("--image", default=None, help="photo for the descriptor benchmark (default: its own)")
    p.add_argument("--n", type=int, default=10000, help="descriptors per side for matching (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=None, help="repeats per timing (default: each module's)")
    p.add_argument("--json", type=Path, default=None, help="also write all numbers here")
    args = p.parse_args()

    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    results: dict[str, dict[str, dict | str]] = {}
    for section, (module, _) in SECTIONS.items():
        results[section] = {}
        for device in devices:
            kwargs = {"device": device, "repeats": args.repeats}
            kwargs.update({"image": args.image} if section == "descriptor" else {"n": args.n})
            results[section][device] = call_run(module, **kwargs)

    env = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "cpu": platform.processor() or platform.machine(),
           "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
           "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None}
    print(", ".join(f"{k}={_fmt(v)}" for k, v in env.items() if v is not None))
    print(report(results, devices))
    if args.json:
        args.json.write_text(json.dumps({"env": env, **results}, indent=1, default=str))
        print(f"json: {args.json}")


if __name__ == "__main__":
    main()
