"""Shared fixtures: the real image data beside the repo and the devices to test on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import pyinstance

REPO = Path(__file__).resolve().parents[1]

# Subprocesses that tests start (``python -c``, ``python -m pyinstance.cli``) must import the
# installed build, never the uncompiled source tree of the current directory.
os.environ.setdefault("PYTHONSAFEPATH", "1")


def _shared_dir() -> Path:
    configured = os.environ.get("PYINSTANCE_SHARED")
    candidates = (
        [Path(configured)] if configured else [REPO.parent / "shared", Path("/work/shared")]
    )
    for candidate in candidates:
        if (candidate / "data").is_dir():
            return candidate
    return candidates[0]


def _in_ci() -> bool:
    """The ``CI`` variable that CI services set (``true``, ``1``, ...), not empty or false."""
    return os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``shared/data`` beside the repository (set PYINSTANCE_SHARED to move it).

    Missing data skips the test on a developer's machine and fails it in CI (``CI`` set):
    a test that silently vanishes there protects nothing.
    """
    data = _shared_dir() / "data"
    if not data.is_dir():
        message = f"real image data not found at {data} (set PYINSTANCE_SHARED)"
        if _in_ci():
            pytest.fail(f"{message}; CI is set, so this is a failure, not a skip")
        pytest.skip(message)
    return data


def cuda_available() -> bool:
    """CUDA kernels can run: the extension is compiled and torch sees a GPU."""
    return pyinstance.HAS_CUDA and torch.cuda.is_available()


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request: pytest.FixtureRequest) -> torch.device:
    """Every op test runs on the CPU and, when a GPU is present, on CUDA."""
    if request.param == "cuda" and not cuda_available():
        pytest.skip("no CUDA device (or pyinstance built without CUDA)")
    return torch.device(request.param)


@pytest.fixture
def screened_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The query count of every call of the CPU kernel ``knn_dot_screened`` (which still
    runs), in order."""
    from pyinstance import _backend

    calls: list[int] = []
    original = _backend._C.knn_dot_screened

    def spy(*args):
        calls.append(args[3])  # Q
        return original(*args)

    monkeypatch.setattr(_backend._C, "knn_dot_screened", spy)
    return calls
