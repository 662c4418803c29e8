"""How many CPUs other processes keep busy now, and the intra-op threads that leaves.

A request that runs on several intra-op threads waits at every operator for the slowest of
them; when another process holds one of the cores and the runtime's idle workers spin
(OpenVINO's, ONNX Runtime's with spinning on), the worker sharing that core falls behind
and the request gains nothing over one thread. (Workers that sleep when idle get their
share of the shared core whenever they wake there: engines with those keep their threads,
see :data:`pyinstance.engine.exported.ExportedEngine.budgets_threads` and
:mod:`pyinstance.engine.placement`.) The budget is decided per request from current
readings, not from the 1-minute load average (which lags a just-started process by tens of
seconds):

- **since the previous request** (when it was recent): the machine's busy CPU time
  (``/proc/stat``) minus this process's own, over the wall time in between;
- **otherwise** (the first request, or after an idle spell): the threads runnable right now
  (``/proc/loadavg``'s running field) besides the one asking.

Without ``/proc`` (not Linux) there is no reading and the asked-for threads run.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

#: Idle CPUs the budget may be short of before a request falls back to one thread.
TOLERANCE = 0.5
#: A reading older than this (seconds) is not "since the previous request".
MAX_AGE = 1.0
#: Windows shorter than this (seconds) keep the previous estimate (the kernel counts CPU
#: time in ticks of 10 ms: a shorter window is mostly rounding).
MIN_WINDOW = 0.05
#: Fields of ``/proc/stat``'s ``cpu`` line that are not busy time: idle and iowait.
_IDLE_FIELDS = (3, 4)
#: guest and guest_nice are already counted in user and nice.
_COUNTED_FIELDS = 8


@dataclass(frozen=True)
class CpuSample:
    """One reading: wall clock, the machine's busy CPU seconds, this process's CPU seconds."""

    wall: float
    busy: float
    own: float


def thread_budget(threads: int, cpus: int, busy_elsewhere: float | None) -> int:
    """``threads`` when the CPUs other processes leave idle fit them (:data:`TOLERANCE`
    short at most), else 1; ``threads`` without a reading (``busy_elsewhere`` None)."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads: expected a positive int, got {threads!r}")
    if isinstance(cpus, bool) or not isinstance(cpus, int) or cpus < 1:
        raise ValueError(f"cpus: expected a positive int, got {cpus!r}")
    if busy_elsewhere is not None and not busy_elsewhere >= 0.0:
        raise ValueError(f"busy_elsewhere: expected a number >= 0, got {busy_elsewhere!r}")
    if threads == 1 or busy_elsewhere is None:
        return threads
    return threads if cpus - busy_elsewhere >= threads - TOLERANCE else 1


def busy_stat_seconds(stat: str, ticks_per_second: float) -> float:
    """Busy CPU seconds of all CPUs from the text of ``/proc/stat`` (its first ``cpu`` line)."""
    first = stat.split("\n", 1)[0].split()
    if not first or first[0] != "cpu" or len(first) < 5:
        raise ValueError(f"stat: expected /proc/stat text starting with 'cpu', got {first[:1]}")
    values = [int(value) for value in first[1 : 1 + _COUNTED_FIELDS]]
    busy = sum(v for index, v in enumerate(values) if index not in _IDLE_FIELDS)
    return busy / ticks_per_second


def runnable_elsewhere(loadavg: str, own_running: int = 1) -> float:
    """Threads runnable now besides ``own_running`` of ours, from ``/proc/loadavg``'s text
    (``"0.52 0.58 0.59 3/467 12345"``: 3 runnable)."""
    fields = loadavg.split()
    if len(fields) < 4 or "/" not in fields[3]:
        raise ValueError(f"loadavg: expected /proc/loadavg text, got {loadavg!r}")
    return float(max(0, int(fields[3].split("/")[0]) - own_running))


def busy_between(previous: CpuSample, current: CpuSample) -> float:
    """CPUs other processes kept busy on average from ``previous`` to ``current``."""
    wall = current.wall - previous.wall
    if not wall > 0.0:
        raise ValueError(f"current: expected a later sample than previous, got {wall:g} s apart")
    others = (current.busy - previous.busy) - (current.own - previous.own)
    return max(0.0, others) / wall


def _read(path: str) -> str:
    with open(path, encoding="ascii") as file:
        return file.read()


class CpuMeter:
    """Per-request estimate of the CPUs other processes keep busy (see the module's notes).

    The readers are injectable for tests; by default they read ``/proc``. Safe to call
    from several threads.
    """

    def __init__(
        self,
        *,
        read_stat: Callable[[], str] = lambda: _read("/proc/stat"),
        read_loadavg: Callable[[], str] = lambda: _read("/proc/loadavg"),
        clock: Callable[[], float] = time.monotonic,
        own_cpu: Callable[[], float] = time.process_time,
        ticks_per_second: float | None = None,
    ):
        self._read_stat = read_stat
        self._read_loadavg = read_loadavg
        self._clock = clock
        self._own_cpu = own_cpu
        if ticks_per_second is None:
            ticks_per_second = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
        self._ticks = ticks_per_second
        self._lock = threading.Lock()
        self._last: CpuSample | None = None
        self._estimate: float | None = None

    def busy_elsewhere(self) -> float | None:
        """CPUs busy in other processes now (None where ``/proc`` cannot be read)."""
        try:
            sample = CpuSample(
                self._clock(), busy_stat_seconds(self._read_stat(), self._ticks), self._own_cpu()
            )
        except (OSError, ValueError):
            return None
        with self._lock:
            last = self._last
            if last is not None and self._estimate is not None:
                window = sample.wall - last.wall
                if window < MIN_WINDOW:
                    return self._estimate
                if window <= MAX_AGE:
                    self._last, self._estimate = sample, busy_between(last, sample)
                    return self._estimate
            try:
                estimate = runnable_elsewhere(self._read_loadavg())
            except (OSError, ValueError):
                return None
            self._last, self._estimate = sample, estimate
            return estimate
