"""The thread budget: one thread while other processes keep the cores busy, from current
readings (fake ``/proc`` texts and clocks here)."""

from __future__ import annotations

import pytest
import torch

from pyinstance.engine import cpu_load, onnxruntime_engine, openvino_engine
from pyinstance.engine.cpu_load import (
    CpuMeter,
    CpuSample,
    busy_between,
    busy_stat_seconds,
    runnable_elsewhere,
    thread_budget,
)

from .conftest import requires_onnxruntime, requires_openvino


@pytest.mark.parametrize(
    ("threads", "cpus", "busy", "budget"),
    [
        (2, 2, 0.0, 2),  # idle machine
        (2, 2, 0.4, 2),  # a little background
        (2, 2, 0.5, 2),  # exactly the tolerance
        (2, 2, 0.9, 1),  # one busy process: its core is missing
        (2, 2, 6.0, 1),
        (1, 2, 6.0, 1),
        (4, 16, 11.0, 4),  # plenty of idle cores left
        (4, 16, 12.6, 1),
        (2, 2, None, 2),  # no reading (not Linux): as asked
    ],
)
def test_budget_follows_the_cpus_busy_elsewhere(threads, cpus, busy, budget) -> None:  # noqa: ANN001
    assert thread_budget(threads, cpus, busy) == budget


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"threads": 0}, "threads: expected a positive int"),
        ({"threads": True}, "threads: expected a positive int"),
        ({"cpus": 0}, "cpus: expected a positive int"),
        ({"busy_elsewhere": -0.1}, "busy_elsewhere: expected a number >= 0"),
        ({"busy_elsewhere": float("nan")}, "busy_elsewhere: expected a number >= 0"),
    ],
)
def test_budget_rejects_bad_readings(kwargs, match) -> None:  # noqa: ANN001
    arguments = {"threads": 2, "cpus": 2, "busy_elsewhere": 0.0} | kwargs
    with pytest.raises(ValueError, match=match):
        thread_budget(**arguments)


STAT = "cpu  100 20 30 400 50 6 4 0 7 0\ncpu0 50 10 15 200 25 3 2 0 0 0\nintr 1 2\n"


def test_proc_stat_busy_seconds_leave_out_idle_iowait_and_guest() -> None:
    assert busy_stat_seconds(STAT, 100.0) == pytest.approx((100 + 20 + 30 + 6 + 4) / 100)
    with pytest.raises(ValueError, match="stat: expected /proc/stat text"):
        busy_stat_seconds("intr 1 2\n", 100.0)


def test_proc_loadavg_runnable_besides_ours() -> None:
    assert runnable_elsewhere("0.52 0.58 0.59 3/467 12345\n") == 2.0
    assert runnable_elsewhere("9.00 9.00 9.00 1/467 12345\n") == 0.0
    assert runnable_elsewhere("0.1 0.1 0.1 4/467 1", own_running=2) == 2.0
    with pytest.raises(ValueError, match="loadavg: expected /proc/loadavg text"):
        runnable_elsewhere("0.52 0.58")


def test_busy_between_subtracts_our_own_cpu_time() -> None:
    # 0.2 s of wall time; the machine was busy 0.35 CPU-s, 0.15 of them ours: 1 CPU elsewhere.
    assert busy_between(CpuSample(1.0, 10.0, 2.0), CpuSample(1.2, 10.35, 2.15)) == pytest.approx(
        1.0
    )
    assert busy_between(CpuSample(1.0, 10.0, 2.0), CpuSample(1.1, 10.0, 2.05)) == 0.0
    with pytest.raises(ValueError, match="later sample"):
        busy_between(CpuSample(1.0, 0.0, 0.0), CpuSample(1.0, 0.0, 0.0))


class FakeMachine:
    """Readings a test sets: wall clock, busy ticks of the machine, our CPU, runnable count."""

    def __init__(self) -> None:
        self.wall, self.busy_ticks, self.own, self.runnable = 100.0, 0, 0.0, 1

    def meter(self) -> CpuMeter:
        return CpuMeter(
            read_stat=lambda: f"cpu  {self.busy_ticks} 0 0 0 0 0 0 0 0 0\n",
            read_loadavg=lambda: f"1.00 1.00 1.00 {self.runnable}/300 42\n",
            clock=lambda: self.wall,
            own_cpu=lambda: self.own,
            ticks_per_second=100.0,
        )

    def advance(self, seconds: float, others: float, ours: float) -> None:
        """``seconds`` pass with ``others`` CPUs busy elsewhere and ``ours`` busy here."""
        self.wall += seconds
        self.own += ours * seconds
        self.busy_ticks += round((others + ours) * seconds * 100)


def test_meter_sees_a_just_started_busy_process() -> None:
    machine = FakeMachine()
    meter = machine.meter()
    machine.runnable = 2  # the first request: only the runnable count is current
    assert meter.busy_elsewhere() == 1.0
    machine.advance(0.2, others=0.0, ours=1.0)  # quiet, our one thread working
    assert meter.busy_elsewhere() == pytest.approx(0.0)
    machine.advance(0.2, others=1.0, ours=1.0)  # a busy process started
    assert meter.busy_elsewhere() == pytest.approx(1.0)
    assert thread_budget(2, 2, meter.busy_elsewhere()) == 1


def test_meter_keeps_its_estimate_over_short_windows_and_rereads_after_idle() -> None:
    machine = FakeMachine()
    meter = machine.meter()
    machine.runnable = 1
    assert meter.busy_elsewhere() == 0.0
    machine.advance(0.2, others=1.0, ours=0.0)
    assert meter.busy_elsewhere() == pytest.approx(1.0)
    machine.advance(cpu_load.MIN_WINDOW / 2, others=0.0, ours=1.0)
    assert meter.busy_elsewhere() == pytest.approx(1.0)  # too short to say: kept
    machine.advance(cpu_load.MAX_AGE * 5, others=1.0, ours=0.0)
    machine.runnable = 1  # after an idle spell the runnable count decides, not the average
    assert meter.busy_elsewhere() == 0.0


def test_meter_without_proc_gives_no_reading() -> None:
    def missing() -> str:
        raise FileNotFoundError("/proc/stat")

    meter = CpuMeter(read_stat=missing, read_loadavg=missing)
    assert meter.busy_elsewhere() is None


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(
            lambda *tiny, **options: onnxruntime_engine.OnnxRuntimeEngine(
                *tiny, spinning=True, **options
            ),
            marks=requires_onnxruntime,
            id="OnnxRuntimeEngine-spinning",
        ),
        pytest.param(
            lambda *tiny, **options: openvino_engine.OpenVinoEngine(
                *tiny, precision="fp32", **options
            ),
            marks=requires_openvino,
            id="OpenVinoEngine",
        ),
    ],
)
def test_a_busy_machine_runs_the_one_thread_session(monkeypatch, tmp_path, tiny, make) -> None:  # noqa: ANN001
    engine = make(*tiny, threads=2, cache_dir=tmp_path)
    assert engine.budgets_threads
    engine._cpus = 2
    batch = torch.rand(1, 3, 32, 32)
    monkeypatch.setattr(engine._meter, "busy_elsewhere", lambda: 0.0)
    wide = engine(batch)
    monkeypatch.setattr(engine._meter, "busy_elsewhere", lambda: 1.0)
    narrow = engine(batch)
    assert engine.sessions.runs == {1: 1, 2: 1}
    torch.testing.assert_close(narrow, wide, rtol=1e-5, atol=1e-6)


@requires_onnxruntime
def test_sleeping_onnxruntime_workers_keep_their_threads_on_a_busy_machine(tmp_path, tiny) -> None:  # noqa: ANN001
    engine = onnxruntime_engine.OnnxRuntimeEngine(*tiny, threads=2, cache_dir=tmp_path)
    assert not engine.spinning and not engine.budgets_threads
    engine._cpus = 2
    engine._meter = CpuMeter(read_stat=lambda: pytest.fail("no reading needed"))
    batch = torch.rand(1, 3, 32, 32)
    engine(batch)
    engine(batch)
    assert engine.sessions.runs == {2: 2}
