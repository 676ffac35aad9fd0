"""benchmarks/gpu_check.py, the one-call GPU check, runs on the CPU (``--device cpu --quick``) and its numbers hold."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_quick_on_the_cpu(tmp_path):
    out = tmp_path / "check.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--quick",
         "--only", "accuracy", "multi", "matching", "--json", str(out)],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["errors"] == {} and set(report["sections"]) == {"accuracy", "multi", "matching"}
    accuracy = report["sections"]["accuracy"]
    assert accuracy["fp32"]["max_abs_diff"] == 0.0  # the CPU against itself: the same descriptors
    assert accuracy["fp32"]["matches"] == accuracy["cpu_fp32"]["matches"] > 50
    assert accuracy["bf16"]["nn_agreement"] > 0.98
    multi = report["sections"]["multi"]
    assert multi["batched_equals_looped"] and multi["patches"] > 1000
    matching = report["sections"]["matching"]
    assert matching["small"]["identical"] == 1.0 and matching["big_identical"]
    assert "[accuracy]" in done.stdout and "identical pairs: True" in done.stdout
