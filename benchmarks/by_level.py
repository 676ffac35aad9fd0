"""Per-level table of an eval-sequences run: MMA@3, correct and wrong matches per pair by warp level.

Level k is the pair (1, k + 1) of each sequence (level 5 = the strongest warp or light change of
``make-sequences``). Reads the ``results.json`` that ``hardnet-desc eval-sequences --json`` or
``benchmarks/eval_validation.py`` writes and prints the markdown table of docs/benchmarks.md:

    python benchmarks/by_level.py eval_v/results.json [--methods rootsift,hardnet]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hardnet_desc.evaluation.metrics import summarize


def by_level(results: dict, methods: list[str], threshold: float = 3.0) -> list[list]:
    """Rows ``[group, level, MMA@t per method..., correct per method..., wrong per method...]``."""
    thresholds = results["thresholds"]
    rows = []
    for group in ("v", "i", "other"):
        seqs = [s for s in results["sequences"] if s["group"] == group]
        for target in sorted({p["target"] for s in seqs for p in s["pairs"]}):
            pairs = [p["methods"] for s in seqs for p in s["pairs"] if p["target"] == target]
            stats = [summarize([p[m] for p in pairs], thresholds) for m in methods]
            rows.append([group, target - 1, *(f"{s[f'mma@{threshold:g}']:.3f}" for s in stats),
                         *(f"{s['correct']:.0f}" for s in stats),
                         *(f"{s['matches'] - s['correct']:.0f}" for s in stats)])
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", type=Path, help="results.json of an eval-sequences run")
    p.add_argument("--methods", default="rootsift,hardnet", help="comma-separated (default: %(default)s)")
    args = p.parse_args()
    results = json.loads(args.results.read_text())
    methods = [m for m in args.methods.split(",") if m]
    missing = [m for m in methods if m not in results["config"]["methods"]]
    if missing:
        raise SystemExit(f"{args.results} has no results for {missing}; it has {results['config']['methods']}")
    header = ["group", "level", *(f"{k} {m}" for k in ("MMA@3", "correct", "wrong") for m in methods)]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in by_level(results, methods):
        print("| " + " | ".join(str(x) for x in row) + " |")


if __name__ == "__main__":
    main()
