"""Fixtures of the index tests: a tiny recipe and random unit descriptors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pyinstance.index import InstanceIndex, Recipe

DIM = 16


def tiny_recipe(dtype: str = "float32", dim: int = DIM) -> Recipe:
    """A recipe for indexes filled by ``add_descriptors`` (no network is ever built)."""
    return Recipe(backbone="efficientnet_lite0", head="gem", dim=dim, dtype=dtype)


def unit_rows(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def filled(tmp_path: Path) -> tuple[InstanceIndex, np.ndarray]:
    """An index of 60 random descriptors, 6 instances (``i<row % 6>``), ids ``im<row>``."""
    recipe = tiny_recipe()
    index = InstanceIndex.create(tmp_path / "index", recipe)
    x = unit_rows(60)
    index.add_descriptors(
        x, [f"i{i % 6}" for i in range(60)], [f"im{i}" for i in range(60)], recipe
    )
    yield index, x
    index.close()
