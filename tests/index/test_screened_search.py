"""Large snapshots are searched through a cached int8 screen: the same results as without."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import pyinstance.index.search as search_module
from pyinstance.index import InstanceIndex

from .conftest import tiny_recipe, unit_rows


@pytest.fixture
def screened(monkeypatch: pytest.MonkeyPatch) -> search_module._ScreenCache:
    """Every snapshot counts as large; a fresh cache."""
    monkeypatch.setattr(search_module, "SCREEN_MIN_BYTES", 0)
    cache = search_module._ScreenCache(2)
    monkeypatch.setattr(search_module, "_screens", cache)
    return cache


def plain(index: InstanceIndex, queries: np.ndarray, k: int, monkeypatch) -> tuple:
    with monkeypatch.context() as patch:
        patch.setattr(search_module, "SCREEN_MIN_BYTES", 1 << 62)
        found = index.search(queries, k)
    return found.scores, found.rows


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_screened_search_equals_plain_through_adds_removals_and_compaction(
    tmp_path: Path, dtype: str, screened, monkeypatch
) -> None:
    import pyinstance.index.instance_index as module

    monkeypatch.setattr(module, "AUTO_COMPACT_FRACTION", 0.9)
    recipe = tiny_recipe(dtype)
    x = unit_rows(400)
    queries = np.concatenate([x[:3] + 0.05, unit_rows(2, seed=5)]).astype(np.float32)
    windows = np.stack([x[[0, 9, 17]], x[[30, 31, 32]]])
    with InstanceIndex.create(tmp_path / "ix", recipe) as index:
        for start in (0, 250):
            ids = range(start, start + (250 if start == 0 else 150))
            index.add_descriptors(
                x[list(ids)], [f"i{i % 13}" for i in ids], [f"m{i}" for i in ids], recipe
            )
            for _ in range(2):  # the second search builds (or extends) the screen
                found = index.search(queries, 9)
            assert next(iter(screened._screens.values())).rows == len(ids) + start
            want = plain(index, queries, 9, monkeypatch)
            np.testing.assert_array_equal(found.rows, want[1])
            np.testing.assert_array_equal(found.scores, want[0])
        index.remove(instance=["i0", "i5"])
        for q, k in ((queries, 9), (windows, 6)):
            found = index.search(q, k)
            want = plain(index, q, k, monkeypatch)
            np.testing.assert_array_equal(found.rows, want[1])
            np.testing.assert_array_equal(found.scores, want[0])
        index.compact()
        for _ in range(2):
            found = index.search(queries, 9)
        assert len(screened._screens) == 2  # the compacted generation has its own screen
        want = plain(index, queries, 9, monkeypatch)
        np.testing.assert_array_equal(found.rows, want[1])
        np.testing.assert_array_equal(found.scores, want[0])


def test_first_search_of_a_generation_builds_nothing(tmp_path: Path, screened) -> None:
    recipe = tiny_recipe()
    with InstanceIndex.create(tmp_path / "ix", recipe) as index:
        index.add_descriptors(unit_rows(50), ["a"] * 50, [f"m{i}" for i in range(50)], recipe)
        index.search(unit_rows(1), 3)
        assert not screened._screens
        index.search(unit_rows(1), 3)
        assert len(screened._screens) == 1
