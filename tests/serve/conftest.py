"""Fixtures of the service tests: a real index of the opencv-pairs references."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pyinstance.index import Recipe
from pyinstance.serve import create_app
from tests.recipes import GEM_ONE_SCALE

#: Small images keep the tests quick; the service does not depend on the size. GeM at one
#: scale: at 224 px the default's MAC answers the cluttered ``box_in_scene`` wrongly.
RECIPE = GEM_ONE_SCALE.with_(max_side=224)
TOKEN = "test-token-0123456789"


@pytest.fixture(scope="session")
def built_index(build_pairs_index: Callable[[Recipe, str], Path]) -> Path:
    """The references of opencv-pairs, indexed with :data:`RECIPE` once per session."""
    return build_pairs_index(RECIPE, "serve")


@pytest.fixture(scope="module")
def client(built_index: Path) -> Iterator[TestClient]:
    """A read-mostly client with a token, on the shared index (tests must not change it)."""
    app = create_app(built_index, token=TOKEN, max_upload_bytes=2_000_000, max_pixels=20_000_000)
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def writer(index_copy: Path) -> Iterator[TestClient]:
    """A client with a token on a private copy of the index."""
    with TestClient(create_app(index_copy, token=TOKEN)) as test_client:
        yield test_client


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_server(index: Path, tmp_path: Path, *extra: str) -> Iterator[tuple[str, Any]]:
    """``pyinstance serve index`` in a subprocess on 127.0.0.1 (token ``TOKEN``); yields its
    base URL and process once ``/healthz`` answers."""
    import httpx

    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    port = free_port()
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "pyinstance.cli", "serve", str(index), "--port", str(port)]
        + ["--token-file", str(token_file), *extra],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited: {(tmp_path / 'server.log').read_text()}")
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not answer /healthz within 120 s")
            time.sleep(0.3)
        yield url, process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()
