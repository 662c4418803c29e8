"""Worker threads kept off the caller's core (pyinstance.engine.placement), on real threads."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from pyinstance.engine import placement
from pyinstance.engine.placement import (
    PlacedSession,
    current_cpu,
    placed,
    thread_ids,
    with_workers,
)

pytestmark = pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or not os.path.isdir("/proc/self/task"),
    reason="thread affinity and /proc are Linux's",
)
ALLOWED = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
several_cpus = pytest.mark.skipif(len(ALLOWED) < 2, reason="needs two CPUs to place threads on")


@pytest.fixture
def idle_threads() -> Iterator[list[threading.Thread]]:
    """Start threads that wait until the test ends (stand-ins for a runtime's workers)."""
    stop = threading.Event()
    started: list[threading.Thread] = []

    def start(count: int) -> list[threading.Thread]:
        ready = threading.Barrier(count + 1)

        def wait() -> None:
            ready.wait()
            stop.wait()

        new = [threading.Thread(target=wait) for _ in range(count)]
        for thread in new:
            thread.start()
        ready.wait()
        started.extend(new)
        return new

    yield start  # type: ignore[misc]
    stop.set()
    for thread in started:
        thread.join()


def test_the_current_cpu_is_one_this_process_may_use() -> None:
    assert current_cpu() in ALLOWED


def test_without_sched_getcpu_there_is_no_cpu_and_nothing_is_placed(
    monkeypatch, idle_threads
) -> None:  # noqa: ANN001
    monkeypatch.setattr(placement, "_sched_getcpu", lambda: None)
    assert current_cpu() is None
    (worker,) = idle_threads(1)
    with placed(frozenset({worker.native_id})) as done:
        assert done is False and os.sched_getaffinity(0) == ALLOWED


def test_a_build_names_the_threads_it_started(idle_threads) -> None:  # noqa: ANN001
    built, workers = with_workers(lambda: idle_threads(2), 2)
    assert workers == {thread.native_id for thread in built}
    assert workers <= thread_ids() and threading.get_native_id() not in workers


def test_a_build_that_started_another_number_of_threads_names_none(idle_threads) -> None:  # noqa: ANN001
    assert with_workers(lambda: idle_threads(2), 1)[1] == frozenset()
    assert with_workers(lambda: None, 1)[1] == frozenset()


@several_cpus
def test_in_the_block_the_caller_keeps_its_cpu_and_workers_take_the_others(idle_threads) -> None:  # noqa: ANN001
    workers = [thread.native_id for thread in idle_threads(2)]
    with placed(frozenset(workers)) as done:
        assert done is True
        (cpu,) = os.sched_getaffinity(0)
        assert cpu in ALLOWED
        for worker in workers:
            assert os.sched_getaffinity(worker) == ALLOWED - {cpu}
    assert os.sched_getaffinity(0) == ALLOWED
    assert all(os.sched_getaffinity(worker) == ALLOWED for worker in workers)


@several_cpus
def test_an_error_in_the_block_restores_every_thread(idle_threads) -> None:  # noqa: ANN001
    (worker,) = [thread.native_id for thread in idle_threads(1)]
    with pytest.raises(RuntimeError, match="boom"), placed(frozenset({worker})) as done:
        assert done is True
        raise RuntimeError("boom")
    assert os.sched_getaffinity(0) == ALLOWED and os.sched_getaffinity(worker) == ALLOWED


@several_cpus
def test_a_worker_that_is_gone_leaves_the_run_unplaced_and_the_caller_restored(
    idle_threads,
) -> None:  # noqa: ANN001
    gone = threading.Thread(target=lambda: None)
    gone.start()
    gone.join()
    (alive,) = [thread.native_id for thread in idle_threads(1)]
    with placed(frozenset({alive, gone.native_id})) as done:
        assert done is False
        assert os.sched_getaffinity(0) == ALLOWED and os.sched_getaffinity(alive) == ALLOWED


def test_no_workers_or_no_other_cpu_runs_unplaced(idle_threads) -> None:  # noqa: ANN001
    with placed(frozenset()) as done:
        assert done is False and os.sched_getaffinity(0) == ALLOWED
    (worker,) = [thread.native_id for thread in idle_threads(1)]
    cpu = current_cpu()
    os.sched_setaffinity(0, {cpu})  # a caller confined to one CPU: nowhere else to go
    try:
        with placed(frozenset({worker})) as done:
            assert done is False and os.sched_getaffinity(worker) == ALLOWED
    finally:
        os.sched_setaffinity(0, ALLOWED)


class RecordingSession:
    """Records the caller's and the worker's CPUs during each run; ``hold`` blocks a run."""

    def __init__(self, worker: int) -> None:
        self.worker = worker
        self.seen: list[tuple[set[int], set[int]]] = []
        self.hold: threading.Event | None = None
        self.entered = threading.Event()

    def run(self, outputs: Any, feeds: dict[str, Any]) -> list[str]:
        self.seen.append((os.sched_getaffinity(0), os.sched_getaffinity(self.worker)))
        self.entered.set()
        if self.hold is not None:
            self.hold.wait()
        return [feeds["x"]]

    def get_inputs(self) -> list[str]:
        return ["x"]


@several_cpus
def test_a_session_places_a_run_alone_and_not_one_beside_another(idle_threads) -> None:  # noqa: ANN001
    (worker,) = [thread.native_id for thread in idle_threads(1)]
    inner = RecordingSession(worker)
    session = PlacedSession(inner, frozenset({worker}))
    assert session.run(None, {"x": "a"}) == ["a"] and session.get_inputs() == ["x"]
    ((caller, workers),) = inner.seen
    assert len(caller) == 1 and workers == ALLOWED - caller and session.placed_runs == 1
    inner.entered.clear()
    # two at once: the run that finds the other in flight leaves every CPU to its caller
    inner.seen.clear()
    gate = threading.Event()
    inner.hold = gate
    holder = threading.Thread(target=session.run, args=(None, {"x": "c"}))
    holder.start()
    inner.entered.wait()
    inner.hold = None
    assert session.run(None, {"x": "d"}) == ["d"]
    gate.set()
    holder.join()
    assert inner.seen[1][0] == ALLOWED and session.placed_runs == 2
    assert os.sched_getaffinity(0) == ALLOWED and os.sched_getaffinity(worker) == ALLOWED


@several_cpus
def test_a_run_beside_another_placed_sessions_run_is_not_placed(idle_threads) -> None:  # noqa: ANN001
    first, second = [thread.native_id for thread in idle_threads(2)]
    busy, other = RecordingSession(first), RecordingSession(second)
    holding, session = (
        PlacedSession(busy, frozenset({first})),
        PlacedSession(other, frozenset({second})),
    )
    gate = threading.Event()
    busy.hold = gate
    holder = threading.Thread(target=holding.run, args=(None, {"x": 1}))
    holder.start()
    busy.entered.wait()
    session.run(None, {"x": 2})
    gate.set()
    holder.join()
    assert other.seen == [(ALLOWED, ALLOWED)] and session.placed_runs == 0
    assert holding.placed_runs == 1


@several_cpus
def test_a_session_asks_whether_to_place_at_every_run(idle_threads) -> None:  # noqa: ANN001
    (worker,) = [thread.native_id for thread in idle_threads(1)]
    inner = RecordingSession(worker)
    wanted = [False]
    session = PlacedSession(inner, frozenset({worker}), lambda: wanted[0])
    session.run(None, {"x": 1})
    wanted[0] = True
    session.run(None, {"x": 2})
    assert inner.seen[0] == (ALLOWED, ALLOWED) and len(inner.seen[1][0]) == 1
    assert session.placed_runs == 1


def test_a_session_without_workers_runs_as_it_is() -> None:
    inner = RecordingSession(threading.get_native_id())
    session = PlacedSession(inner, frozenset())
    assert session.run(None, {"x": 1}) == [1] and session.placed_runs == 0
    assert inner.seen == [(ALLOWED, ALLOWED)]


@several_cpus
def test_each_worker_gets_its_own_cpus_back(idle_threads) -> None:  # noqa: ANN001
    (worker,) = [thread.native_id for thread in idle_threads(1)]
    own = {max(ALLOWED)}  # a worker confined by someone else before the run
    os.sched_setaffinity(worker, own)
    with placed(frozenset({worker})) as done:
        assert done is True and os.sched_getaffinity(worker) == ALLOWED - os.sched_getaffinity(0)
    assert os.sched_getaffinity(worker) == own and os.sched_getaffinity(0) == ALLOWED
