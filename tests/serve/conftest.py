"""Fixtures of the service tests: a real index of the opencv-pairs references."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pyinstance.index import DEFAULT_RECIPE, InstanceIndex
from pyinstance.serve import create_app

#: Small images keep the tests quick; the service does not depend on the size.
RECIPE = DEFAULT_RECIPE.with_(max_side=224)
TOKEN = "test-token-0123456789"


@pytest.fixture(scope="session")
def pairs(shared_data: Path) -> Path:
    return shared_data / "opencv-pairs"


@pytest.fixture(scope="session")
def queries(pairs: Path) -> dict[Path, str]:
    """Each query photo and its instance."""
    with open(pairs / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {pairs / r["path"]: r["instance_id"] for r in rows if r["split"] == "query"}


@pytest.fixture(scope="session")
def built_index(pairs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The references of opencv-pairs, indexed once per session."""
    path = tmp_path_factory.mktemp("serve") / "index"
    index, _ = InstanceIndex.build(path, pairs / "manifest.csv", RECIPE, progress=False)
    index.close()
    return path


@pytest.fixture
def index_copy(built_index: Path, tmp_path: Path) -> Path:
    """A private copy of the session's index, for tests that change it."""
    target = tmp_path / "index"
    shutil.copytree(built_index, target)
    return target


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
