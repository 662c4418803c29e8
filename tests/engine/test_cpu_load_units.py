"""The CPU-load readings at their edges: /proc texts of other shapes, window boundaries,
the clock-tick rate, and the real /proc of this machine."""

from __future__ import annotations

import os
import sys

import pytest

from pyinstance.engine import cpu_load
from pyinstance.engine.cpu_load import (
    CpuMeter,
    busy_stat_seconds,
    runnable_elsewhere,
    thread_budget,
)


@pytest.mark.parametrize("cpus", [True, 2.0, "2", -1])
def test_budget_refuses_a_cpu_count_that_is_not_a_positive_int(cpus) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match="cpus: expected a positive int"):
        thread_budget(2, cpus, 0.0)


def test_budget_of_one_cpu_and_one_thread() -> None:
    assert thread_budget(2, 1, 0.0) == 1  # two threads never fit one CPU
    assert thread_budget(1, 1, 0.0) == 1
    assert thread_budget(1, 1, None) == 1


def test_a_short_cpu_line_of_an_old_kernel_counts_its_four_fields() -> None:
    # user nice system idle: busy = user + nice + system; the next line is another CPU's.
    stat = "cpu  100 20 30 400\ncpu0 50 10 15 200\n"
    assert busy_stat_seconds(stat, 100.0) == pytest.approx(1.5)
    assert busy_stat_seconds("cpu 1 2 3 4", 10.0) == pytest.approx(0.6)  # no newline at all


@pytest.mark.parametrize("stat", ["", "\ncpu 1 2 3 4\n", "cpu 1 2 3\n", "intr 1 2 3 4 5 6\n"])
def test_text_that_is_not_proc_stat_is_refused(stat) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match="stat: expected /proc/stat text"):
        busy_stat_seconds(stat, 100.0)


def test_every_counted_field_but_idle_and_iowait_is_busy() -> None:
    # fields 1..8 counted (user nice system idle iowait irq softirq steal), guest not.
    stat = "cpu  1 2 4 1000 2000 8 16 32 64 128\n"
    assert busy_stat_seconds(stat, 1.0) == pytest.approx(1 + 2 + 4 + 8 + 16 + 32)


def test_loadavg_with_exactly_four_fields() -> None:
    assert runnable_elsewhere("0.52 0.58 0.59 3/467") == 2.0
    with pytest.raises(ValueError, match="loadavg: expected /proc/loadavg text"):
        runnable_elsewhere("0.52 0.58 0.59 467 3/467")


class Machine:
    """Readings set by the test: exact clock, busy ticks, our CPU seconds, runnable count."""

    def __init__(self) -> None:
        self.wall, self.ticks, self.own, self.runnable = 0.0, 0, 0.0, 1

    def meter(self, ticks_per_second: float | None = 100.0) -> CpuMeter:
        return CpuMeter(
            read_stat=lambda: f"cpu  {self.ticks} 0 0 0 0 0 0 0 0 0\n",
            read_loadavg=lambda: f"0.00 0.00 0.00 {self.runnable}/100 7\n",
            clock=lambda: self.wall,
            own_cpu=lambda: self.own,
            ticks_per_second=ticks_per_second,
        )


def test_a_window_of_exactly_min_window_gives_a_new_estimate() -> None:
    machine = Machine()
    meter = machine.meter()
    assert meter.busy_elsewhere() == 0.0  # loadavg: ours alone
    machine.wall, machine.ticks = cpu_load.MIN_WINDOW, 5  # 0.05 CPU-s elsewhere in 0.05 s
    assert meter.busy_elsewhere() == pytest.approx(1.0)


def test_a_window_of_exactly_max_age_still_counts_as_since_the_previous_request() -> None:
    machine = Machine()
    meter = machine.meter()
    machine.runnable = 3
    assert meter.busy_elsewhere() == 2.0
    machine.wall, machine.ticks = cpu_load.MAX_AGE, 50  # half a CPU elsewhere over 1 s
    assert meter.busy_elsewhere() == pytest.approx(0.5)  # not the runnable count (2)
    machine.wall += cpu_load.MAX_AGE * 1.5
    assert meter.busy_elsewhere() == 2.0  # too old: the runnable count again


def test_the_clock_tick_rate_defaults_to_the_systems(monkeypatch) -> None:  # noqa: ANN001
    real = os.sysconf
    monkeypatch.setattr(os, "sysconf", lambda name: 250 if name == "SC_CLK_TCK" else real(name))
    machine = Machine()
    meter = machine.meter(ticks_per_second=None)
    meter.busy_elsewhere()
    machine.wall, machine.ticks = 0.5, 250  # 250 ticks at 250 a second: 1 CPU-s in 0.5 s
    assert meter.busy_elsewhere() == pytest.approx(2.0)


def test_without_sysconf_a_tick_is_a_hundredth_of_a_second(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.delattr(os, "sysconf")
    machine = Machine()
    meter = machine.meter(ticks_per_second=None)
    meter.busy_elsewhere()
    machine.wall, machine.ticks = 0.5, 100
    assert meter.busy_elsewhere() == pytest.approx(2.0)


def test_an_unreadable_loadavg_gives_no_reading_then_the_next_request_starts_afresh() -> None:
    machine = Machine()
    broken = [True]

    def loadavg() -> str:
        if broken[0]:
            raise PermissionError("/proc/loadavg")
        return "0 0 0 2/10 1\n"

    meter = CpuMeter(
        read_stat=lambda: f"cpu {machine.ticks} 0 0 0\n",
        read_loadavg=loadavg,
        clock=lambda: machine.wall,
        own_cpu=lambda: machine.own,
        ticks_per_second=100.0,
    )
    assert meter.busy_elsewhere() is None
    broken[0] = False
    machine.wall = 0.2  # recent, but there is no earlier estimate to go on from
    assert meter.busy_elsewhere() == 1.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_default_meter_reads_this_machines_proc() -> None:
    reading = CpuMeter().busy_elsewhere()
    assert isinstance(reading, float) and reading >= 0.0
    assert cpu_load._read("/proc/loadavg").count("/") == 1


def test_read_gives_an_ascii_file_whole_and_refuses_other_text(tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "stat"
    path.write_bytes(b"cpu  1 2 3 4\nsecond line\n")
    assert cpu_load._read(str(path)) == "cpu  1 2 3 4\nsecond line\n"
    path.write_bytes("cpu  1 2 3 4 é\n".encode())
    with pytest.raises(UnicodeDecodeError):  # a ValueError: the meter gives no reading
        cpu_load._read(str(path))
