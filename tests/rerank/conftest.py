"""Fixtures of the re-ranker tests: a real index of the opencv-pairs references (query
windows kept, small images) and an untrained verifier file for its recipe."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch

from pyinstance.index import DEFAULT_RECIPE, InstanceIndex
from pyinstance.rerank import VerificationNet, VerifierFile

#: Small images keep the tests quick; the query windows keep R > 1 descriptors per query.
RECIPE = DEFAULT_RECIPE.with_(max_side=160, query_max_side=192)


@pytest.fixture(scope="session")
def pairs(shared_data: Path) -> Path:
    return shared_data / "opencv-pairs"


@pytest.fixture(scope="session")
def query_photos(pairs: Path) -> dict[Path, str]:
    """Each query photo and its instance."""
    with open(pairs / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {pairs / r["path"]: r["instance_id"] for r in rows if r["split"] == "query"}


@pytest.fixture(scope="session")
def built_index(pairs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rerank") / "index"
    index, _ = InstanceIndex.build(path, pairs / "manifest.csv", RECIPE, progress=False)
    index.close()
    return path


@pytest.fixture
def index_copy(built_index: Path, tmp_path: Path) -> Path:
    """A private copy of the session's index, for tests that change it."""
    return Path(shutil.copytree(built_index, tmp_path / "index"))


def write_verifier(path: Path, recipe=RECIPE, k: int = 5, seed: int = 0) -> Path:
    """An untrained (seeded) verifier for ``recipe``."""
    torch.manual_seed(seed)
    net = VerificationNet(recipe.dim, projection=8, hidden=8)
    return VerifierFile(net.options(), net.state_dict(), k, recipe.to_dict()).save(path)


@pytest.fixture(scope="session")
def verifier(built_index: Path) -> Path:
    with InstanceIndex.open(built_index) as index:
        recipe = index.recipe
    return write_verifier(built_index.parent / "verifier.pt", recipe)
