"""Launching small torchrun jobs (local CPU ranks, gloo) from the tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

#: A job that hangs (a rank waiting for a collective that never comes) fails after this.
TORCHRUN_TIMEOUT_S = 240


def _run_torchrun(nproc: int, target: Sequence[str], *, cwd: Path) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=nproc TARGET...`` (a free port, a time limit).

    The ranks import the installed build (``-P`` and PYTHONSAFEPATH), one thread each.
    """
    command = [
        sys.executable, "-P", "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={nproc}", "--max_restarts=0", *target,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONSAFEPATH": "1", "OMP_NUM_THREADS": "1"}
    # A session of its own: on a time-out the launcher and every rank are killed together.
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=TORCHRUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"torchrun job hung for {TORCHRUN_TIMEOUT_S} s: {command}\n{stdout}\n{stderr}")
    if process.returncode != 0:
        pytest.fail(f"torchrun job failed ({process.returncode}): {command}\n{stdout}\n{stderr}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.fixture(scope="session")
def torchrun() -> Callable[..., subprocess.CompletedProcess]:
    """``torchrun(nproc, target, cwd=...)``: run a torchrun job, fail the test if it fails or hangs."""
    return _run_torchrun
