"""The ONNX Runtime engine's thread budget: one thread while other processes keep the cores busy."""

from __future__ import annotations

import os

import pytest
import torch

from pyinstance.engine import onnxruntime_engine
from pyinstance.engine.onnxruntime_engine import thread_budget

from .conftest import requires_onnxruntime


@pytest.fixture
def two_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})


@pytest.mark.parametrize(
    ("load", "threads", "budget"),
    [
        (0.0, 2, 2),  # idle machine
        (2.0, 2, 2),  # our own two threads
        (2.4, 2, 2),  # a little background
        (2.9, 2, 1),  # one more busy process: its core is missing
        (12.0, 2, 1),
        (12.0, 1, 1),
    ],
)
def test_budget_follows_the_load(two_cpus, monkeypatch, load, threads, budget) -> None:
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    assert thread_budget(threads) == budget


@requires_onnxruntime
def test_a_busy_machine_runs_the_one_thread_session(two_cpus, monkeypatch, tmp_path, tiny) -> None:
    backbone, head = tiny
    engine = onnxruntime_engine.OnnxRuntimeEngine(backbone, head, threads=2, cache_dir=tmp_path)
    batch = torch.rand(1, 3, 32, 32)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    wide = engine.run(batch)
    assert engine._single is None
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    narrow = engine.run(batch)
    assert engine._single is not None
    torch.testing.assert_close(narrow, wide, rtol=1e-5, atol=1e-6)
