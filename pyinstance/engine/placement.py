"""Keeping a request's intra-op worker threads off the core of the thread that runs it.

A worker that sleeps when idle is woken at every operator. When no core is idle (another
process keeps one busy), the kernel wakes it on the waking thread's own core, so the two
threads of a two-thread request end up taking turns on one core and the request runs at
one-thread speed; when the worker is woken on the busy process's core instead, it gets its
share there and the request is faster than on one thread. Measured on 2 CPUs beside a busy
loop, EfficientNet-Lite0 + GeM at 448×336 with ONNX Runtime (per-thread ``schedstat``):
every slow run (about 27 ms, as one thread) had the worker last on the caller's core,
every fast one (about 20 ms) on the busy loop's. End to end (``benchmarks/latency.py --busy
--placement-twins``, 12-megapixel JPEG to the answer, 2 CPUs), two threads beside a busy
loop took per query 0.84–0.89× the one-thread quiet time with the workers placed against
0.93–1.01× without, and 0.75–0.84× against 0.78–0.91× on the quiet machine
(``benchmarks/results/latency.md``, 2026-12-01 08:00).

:class:`PlacedSession` therefore pins, for the length of a run, the calling thread to the
CPU it is on and the session's workers to the other CPUs this process may use, and
restores both after. Linux only (thread ids from ``/proc/self/task``, ``sched_getcpu``);
elsewhere, or when the workers cannot be told apart, sessions run as they are.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

#: Serialises the session builds that look for their workers among the process's threads.
_BUILD_LOCK = threading.Lock()
#: Runs of placed sessions in flight in this process, under :data:`_RUNS_LOCK`.
_runs_in_flight = 0
_RUNS_LOCK = threading.Lock()


@functools.cache
def _sched_getcpu() -> Callable[[], int] | None:
    try:
        function = ctypes.CDLL(None).sched_getcpu
    except (OSError, AttributeError):  # not a C library that has it
        return None
    function.restype = ctypes.c_int
    function.argtypes = []
    return function


def current_cpu() -> int | None:
    """The CPU the calling thread runs on now, or None where that cannot be asked."""
    getcpu = _sched_getcpu()
    cpu = getcpu() if getcpu is not None else -1
    return cpu if cpu >= 0 else None


def thread_ids() -> set[int]:
    """The ids of this process's threads now (empty where ``/proc`` cannot be read)."""
    try:
        return {int(name) for name in os.listdir("/proc/self/task")}
    except OSError:
        return set()


def with_workers(build: Callable[[], Any], workers: int) -> tuple[Any, frozenset[int]]:
    """``build()`` and the ids of the ``workers`` threads it started; no ids when it
    started another number of threads (another part of the program started threads
    meanwhile, or the runtime starts them later), so that no foreign thread is ever pinned."""
    with _BUILD_LOCK:
        before = thread_ids()
        built = build()
        started = thread_ids() - before if before else set()
    return built, frozenset(started) if len(started) == workers else frozenset()


@contextmanager
def placed(workers: frozenset[int]) -> Iterator[bool]:
    """Within the block: the calling thread pinned to its CPU and ``workers`` to the other
    CPUs this process may use; each thread's own CPUs restored after. Yields whether that
    was done (not without ``workers``, a CPU to name, another CPU, or when the kernel
    refuses)."""
    cpu = current_cpu()
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        allowed = set()
    others = allowed - {cpu}
    if not workers or cpu is None or cpu not in allowed or not others:
        yield False
        return
    pinned: list[tuple[int, set[int]]] = []  # thread, its CPUs before
    try:
        for thread, cpus in ((0, {cpu}), *((worker, others) for worker in workers)):
            before = allowed if thread == 0 else os.sched_getaffinity(thread)
            os.sched_setaffinity(thread, cpus)
            pinned.append((thread, before))
    except OSError:  # a worker gone, or a sandbox that forbids it: run unplaced
        _restore(pinned)
        yield False
        return
    try:
        yield True
    finally:
        _restore(pinned)


def _restore(pinned: list[tuple[int, set[int]]]) -> None:
    for thread, cpus in pinned:
        with suppress(OSError):  # a worker that is gone needs nothing restored
            os.sched_setaffinity(thread, cpus)


class PlacedSession:
    """An inference session (any of its methods) whose runs keep its ``workers`` off
    the caller's core (:func:`placed`) while no other run of a placed session is in flight
    in this process (concurrent runs fill the cores themselves, share workers, and their
    callers must stay free to move) and ``enabled()`` says so, asked at every run.

    Attributes:
        session: the session wrapped.
        workers: the session's worker thread ids (empty: runs are never placed).
        placed_runs: runs made with the threads placed.
    """

    def __init__(
        self,
        session: Any,
        workers: frozenset[int],
        enabled: Callable[[], bool] = lambda: True,
    ):
        self.session = session
        self.workers = workers
        self._enabled = enabled
        self.placed_runs = 0

    def __getattr__(self, name: str) -> Any:  # the wrapped session's other methods
        if name == "session":  # not set yet (a copy being made)
            raise AttributeError(name)
        return getattr(self.session, name)

    def run(self, outputs: Any, feeds: dict[str, Any]) -> Any:
        global _runs_in_flight
        with _RUNS_LOCK:
            _runs_in_flight += 1
            alone = _runs_in_flight == 1
        try:
            if not alone or not self.workers or not self._enabled():
                return self.session.run(outputs, feeds)
            with placed(self.workers) as done:
                result = self.session.run(outputs, feeds)
            if done:
                with _RUNS_LOCK:
                    self.placed_runs += 1
            return result
        finally:
            with _RUNS_LOCK:
                _runs_in_flight -= 1
