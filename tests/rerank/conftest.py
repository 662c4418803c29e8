"""Fixtures of the re-ranker tests: a real index of the opencv-pairs references (query
windows kept, small images) and an untrained verifier file for its recipe."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from pyinstance.index import InstanceIndex, Recipe
from pyinstance.rerank import VerificationNet, VerifierFile
from tests.recipes import PREVIOUS_DEFAULT

#: Small images keep the tests quick; the query windows keep R > 1 descriptors per query.
RECIPE = PREVIOUS_DEFAULT.with_(max_side=160, query_max_side=192)


@pytest.fixture(scope="session")
def built_index(build_pairs_index: Callable[[Recipe, str], Path]) -> Path:
    """The references of opencv-pairs, indexed with :data:`RECIPE` once per session."""
    return build_pairs_index(RECIPE, "rerank")


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
