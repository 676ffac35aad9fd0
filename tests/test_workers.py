"""WorkerPool: Ctrl-C (SIGINT to the whole command, or to its parent process alone) ends the pool within about one
job's time, interrupts the running jobs, starts no further one and prints no traceback; an exception in the
``with`` block does the same without a signal. Each case runs a small script in its own process group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hardnet_desc.workers import WorkerPool

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

#: Each job writes "start I" and then "end I" or "interrupted I"; the parent prints "parent: KeyboardInterrupt".
SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from hardnet_desc.workers import WorkerPool

    LOG = Path(sys.argv[1])

    def slow_start(seconds):
        time.sleep(float(seconds))  # a worker still starting (as one importing torch)

    def job(i):
        with LOG.open("a") as f:
            print("start", i, file=f, flush=True)
            try:
                time.sleep(2.0)
                print("end", i, file=f, flush=True)
            except KeyboardInterrupt:
                print("interrupted", i, file=f, flush=True)
                raise
        return i

    if __name__ == "__main__":
        try:
            with WorkerPool(2, slow_start, (sys.argv[2],)) as pool:
                for future in [pool.submit(job, i) for i in range(20)]:
                    future.result()
        except KeyboardInterrupt:
            print("parent: KeyboardInterrupt", flush=True)
            sys.exit(130)
""")


def _run(tmp_path: Path, start_seconds: float, wait_for: str, to_group: bool) -> tuple[float, int, str, list[str]]:
    """Run SCRIPT; once ``wait_for`` is in the log ('' for: ``start_seconds / 2`` after start), send SIGINT to the
    process group or the parent alone. Returns the seconds it took to end after the signal, its exit code, its
    output and the log lines."""
    script, log = tmp_path / "pool_script.py", tmp_path / "log.txt"
    script.write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(log), str(start_seconds)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        if wait_for:
            while wait_for not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
                time.sleep(0.05)
        else:
            time.sleep(start_seconds / 2)
        sent = time.monotonic()
        if to_group:
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGINT)
        out = proc.communicate(timeout=60)[0]
        return time.monotonic() - sent, proc.returncode, out, (log.read_text() if log.exists() else "").split("\n")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


@pytest.mark.parametrize("to_group", [True, False], ids=["ctrl-c", "kill-parent"])
def test_sigint_interrupts_running_jobs_and_starts_no_more(tmp_path, to_group):
    seconds, code, out, log = _run(tmp_path, 0.0, "start", to_group)
    assert code == 130 and "parent: KeyboardInterrupt" in out, out
    assert "Traceback" not in out, out
    started = [line for line in log if line.startswith("start")]
    assert [line for line in log if line.startswith("interrupted")], log  # the running jobs were interrupted
    assert not [line for line in log if line.startswith("end")], log  # none ran on to its end
    assert len(started) <= 3, log  # of 20 submitted
    assert seconds < 10, seconds  # a job is 2 s; before WorkerPool the pool could wait forever on a lock


def test_sigint_while_the_workers_start(tmp_path):
    """Workers still in their initializer ignore SIGINT, then start none of the jobs handed to them."""
    seconds, code, out, log = _run(tmp_path, 3.0, "", True)
    assert code == 130 and "parent: KeyboardInterrupt" in out, out
    assert "Traceback" not in out, out
    assert not [line for line in log if line.startswith("start")], log
    assert seconds < 15, seconds


def _sleep_job(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_an_error_in_the_block_cancels_the_jobs_not_started():
    started = time.monotonic()
    with pytest.raises(ValueError, match="stop here"):
        with WorkerPool(1) as pool:
            futures = [pool.submit(_sleep_job, 0.5) for _ in range(30)]
            futures[0].result()
            raise ValueError("stop here")
    assert time.monotonic() - started < 10  # not 30 x 0.5 s
    assert sum(f.cancelled() for f in futures) >= 25
    assert futures[0].result() == 0.5


def test_results_as_an_executor_gives_them():
    with WorkerPool(2) as pool:
        assert list(pool.map(_sleep_job, [0.0, 0.01, 0.02])) == [0.0, 0.01, 0.02]
        assert pool.submit(_sleep_job, 0.0).result() == 0.0
