"""Worker processes that Ctrl-C stops cleanly: the one process pool of the package.

``ProcessPoolExecutor`` alone handles Ctrl-C badly. The terminal sends SIGINT to every process of the
command; a worker interrupted while it waits for work dies holding the pool's queue lock, and the
other workers and the parent then wait for it forever. A worker still starting (importing torch)
prints a traceback. And the parent, leaving a ``with`` block on KeyboardInterrupt, first runs every
job it had submitted.

``WorkerPool`` does instead (on POSIX systems; Windows starts processes without inheriting an ignored SIGINT):

* its processes start with SIGINT ignored (the parent ignores it for the moment it starts them,
  and a started process inherits that), so nothing is printed while they import;
* a worker takes SIGINT as KeyboardInterrupt only while it runs a job, which the job's own cleanup
  handles (an open HDF5 file is closed) and the pool hands to the parent;
* when the ``with`` block ends in an exception (KeyboardInterrupt or any other), no further job
  starts (the jobs already handed to the workers included), the running ones are interrupted and
  the workers awaited, so the block ends within about one image's time instead of after every
  submitted job.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from functools import partial
from multiprocessing import get_context
from multiprocessing.context import BaseContext
from typing import Any, TypeVar

T = TypeVar("T")


class WorkerPool:
    """``workers`` processes started by ``context`` (default: spawned, so no torch or CUDA state is
    inherited), each running ``initializer(*initargs)`` once; use it as a context manager.

    ``submit`` and ``map`` behave as ``ProcessPoolExecutor``'s; ``fn`` must be picklable (a function
    of a module).
    """

    def __init__(self, workers: int, initializer: Callable[..., None] | None = None, initargs: tuple = (),
                 context: BaseContext | None = None) -> None:
        context = context or get_context("spawn")
        self._stop = context.Event()  # set: the workers start no further job
        self._pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                                         initargs=(self._stop, initializer, *initargs))

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        with sigint_ignored():  # a worker process started now inherits it
            return self._pool.submit(_run_job, fn, *args)

    def map(self, fn: Callable[..., T], *iterables: Iterable[Any]) -> Iterator[T]:
        with sigint_ignored():  # every job is submitted here
            return self._pool.map(partial(_run_job, fn), *iterables)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self._pool.shutdown(wait=True)
            return
        self._stop.set()
        processes = list((getattr(self._pool, "_processes", None) or {}).values())  # CPython's, 3.8 and later
        # Interrupt the running jobs where the terminal's SIGINT did not reach them (not on Windows: os.kill ends them)
        for process in processes if os.name == "posix" else ():
            try:
                os.kill(process.pid, signal.SIGINT)
            except (OSError, TypeError):  # ended already, or not started (pid None)
                pass
        self._pool.shutdown(wait=True, cancel_futures=True)


@contextmanager
def sigint_ignored() -> Iterator[None]:
    """SIGINT ignored in this process for the block (only the main thread may change it; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


# In each worker process.
_STOP: Any = None  # the pool's stop event
_IN_JOB = False


def _on_sigint(signum: int, frame: object) -> None:
    global _IN_JOB
    if _IN_JOB:  # once per job; while the worker waits for work (in the pool's queue) it is ignored
        _IN_JOB = False
        raise KeyboardInterrupt


def _start_worker(stop: Any, initializer: Callable[..., None] | None, *initargs: Any) -> None:
    global _STOP
    _STOP = stop
    if initializer is not None:
        initializer(*initargs)
    signal.signal(signal.SIGINT, _on_sigint)


def _run_job(fn: Callable[..., T], *args: Any) -> T:
    global _IN_JOB
    if _STOP.is_set():
        raise KeyboardInterrupt  # the parent stopped the pool: the job is not started
    _IN_JOB = True
    try:
        return fn(*args)
    finally:
        _IN_JOB = False
