"""Shared fixtures: the real image data beside the repo (and indexes of its opencv-pairs
set) and the devices to test on."""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import pyinstance
from pyinstance.index import InstanceIndex, Recipe

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


@pytest.fixture(scope="session")
def pairs(shared_data: Path) -> Path:
    """The opencv-pairs set (manifest.csv, reference/, query/)."""
    return shared_data / "opencv-pairs"


@pytest.fixture(scope="session")
def query_photos(pairs: Path) -> dict[Path, str]:
    """Each opencv-pairs query photo and its instance."""
    with open(pairs / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {pairs / r["path"]: r["instance_id"] for r in rows if r["split"] == "query"}


@pytest.fixture(scope="session")
def build_pairs_index(
    pairs: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[Recipe, str], Path]:
    """``build(recipe, name)``: the opencv-pairs references indexed with ``recipe`` in a
    new session folder ``name`` (the index closed; its path returned).

    A test folder's session fixture ``built_index`` calls it with the folder's recipe;
    :func:`index_copy` copies that index.
    """

    def build(recipe: Recipe, name: str) -> Path:
        path = tmp_path_factory.mktemp(name) / "index"
        index, _ = InstanceIndex.build(path, pairs / "manifest.csv", recipe, progress=False)
        index.close()
        return path

    return build


@pytest.fixture
def index_copy(built_index: Path, tmp_path: Path) -> Path:
    """A private copy of the test folder's ``built_index``, for tests that change it."""
    return Path(shutil.copytree(built_index, tmp_path / "index"))


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
