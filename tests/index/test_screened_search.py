"""Large snapshots are searched through a cached int8 screen: the same results as without."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import pyinstance.index.screen_cache as cache_module
from pyinstance.index import InstanceIndex
from pyinstance.ops import KnnScreen

from .conftest import tiny_recipe, unit_rows


@pytest.fixture
def screened(monkeypatch: pytest.MonkeyPatch) -> cache_module.ScreenCache:
    """Every snapshot counts as large; a fresh cache."""
    monkeypatch.setattr(cache_module, "SCREEN_MIN_BYTES", 0)
    cache = cache_module.ScreenCache(2)
    monkeypatch.setattr(cache_module, "screens", cache)
    return cache


def plain(index: InstanceIndex, queries: np.ndarray, k: int, monkeypatch) -> tuple:
    with monkeypatch.context() as patch:
        patch.setattr(cache_module, "SCREEN_MIN_BYTES", 1 << 62)
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


def _filled(path: Path, rows: int = 300, seed: int = 0) -> InstanceIndex:
    recipe = tiny_recipe()
    index = InstanceIndex.create(path, recipe)
    x = unit_rows(rows, seed=seed)
    index.add_descriptors(
        x, [f"i{i % 7}" for i in range(rows)], [f"m{i}" for i in range(rows)], recipe
    )
    return index


def test_saved_screen_is_loaded_by_the_next_process(tmp_path: Path, screened, monkeypatch) -> None:
    queries = unit_rows(2, seed=3)
    with _filled(tmp_path / "ix") as index:
        index.search(queries, 5)
        index.search(queries, 5)  # builds and saves
        saved = index.path / "screens" / "screen-0.bin"
        assert saved.is_file()
        assert index.info()["size_on_disk"] == sum(
            p.stat().st_size for p in index.path.iterdir() if p.is_file()
        )
        # another process: an empty cache loads the file on its first search
        fresh = cache_module.ScreenCache(2)
        monkeypatch.setattr(cache_module, "screens", fresh)
        found = index.search(queries, 5)
        assert [s.rows for s in fresh._screens.values()] == [300]
        want = plain(index, queries, 5, monkeypatch)
        np.testing.assert_array_equal(found.rows, want[1])
        np.testing.assert_array_equal(found.scores, want[0])


def _damage_codes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10  # one bit of the codes
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-3])


def _other_index(path: Path) -> None:
    with _filled(path.parents[2] / "other", seed=9) as other:
        for _ in range(2):
            other.search(unit_rows(1), 3)
        path.write_bytes((other.path / "screens" / "screen-0.bin").read_bytes())


@pytest.mark.parametrize("damage", [_damage_codes, _truncate, _other_index])
def test_damaged_or_stale_screen_file_is_rebuilt_never_used(
    tmp_path: Path, damage, screened, monkeypatch
) -> None:
    queries = unit_rows(2, seed=3)
    with _filled(tmp_path / "ix") as index:
        for _ in range(2):
            index.search(queries, 5)
        saved = index.path / "screens" / "screen-0.bin"
        damage(saved)
        fresh = cache_module.ScreenCache(2)
        monkeypatch.setattr(cache_module, "screens", fresh)
        found = index.search(queries, 5)
        assert not fresh._screens  # refused: deleted, and this search scanned plainly
        assert not saved.exists()
        want = plain(index, queries, 5, monkeypatch)
        np.testing.assert_array_equal(found.rows, want[1])
        np.testing.assert_array_equal(found.scores, want[0])
        index.search(queries, 5)  # the second search rebuilds and saves a good one
        assert saved.is_file()
        assert KnnScreen.load(saved, index._store.snapshot().refs()).rows == 300


def test_compaction_drops_older_generation_screens(tmp_path: Path, screened, monkeypatch) -> None:
    import pyinstance.index.instance_index as module

    monkeypatch.setattr(module, "AUTO_COMPACT_FRACTION", 0.9)
    with _filled(tmp_path / "ix") as index:
        for _ in range(2):
            index.search(unit_rows(1), 3)
        index.remove(instance=["i1"])
        index.compact()
        for _ in range(2):
            index.search(unit_rows(1), 3)
        folder = index.path / "screens"
        assert [p.name for p in folder.iterdir()] == ["screen-1.bin"]
        # a reader still on generation 0 does not save its screen again
        cache_module._save(KnnScreen.of(unit_rows(10)), folder / "screen-0.bin", 0)
        assert [p.name for p in folder.iterdir()] == ["screen-1.bin"]


def test_unwritable_screen_folder_leaves_search_working(
    tmp_path: Path, screened, monkeypatch
) -> None:
    with _filled(tmp_path / "ix") as index:
        (index.path / "screens").write_text("not a folder")
        queries = unit_rows(2, seed=3)
        for _ in range(2):
            found = index.search(queries, 5)
        assert len(screened._screens) == 1
        want = plain(index, queries, 5, monkeypatch)
        np.testing.assert_array_equal(found.rows, want[1])


def test_many_window_queries_scan_plainly(
    tmp_path: Path, screened, monkeypatch, screened_calls: list[int]
) -> None:
    limit = KnnScreen(1).max_queries
    with _filled(tmp_path / "ix") as index:
        for _ in range(2):
            index.search(unit_rows(1), 3)
        few = unit_rows(limit, seed=4)[None]
        many = unit_rows(limit + 1, seed=5)[None]
        for windows in (few, many):
            found = index.search(windows, 4)
            want = plain(index, windows, 4, monkeypatch)
            np.testing.assert_array_equal(found.rows, want[1])
            np.testing.assert_array_equal(found.scores, want[0])
    assert screened_calls == [1, limit]


def test_save_deletes_temporaries_a_crashed_save_left(tmp_path: Path) -> None:
    import os

    folder = tmp_path / "screens"
    folder.mkdir()
    old, fresh = folder / ".screen-0.bin.1.aa.tmp", folder / ".screen-0.bin.2.bb.tmp"
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")  # another process may be writing it now
    past = old.stat().st_mtime - cache_module.STALE_TEMPORARY_SECONDS - 1
    os.utime(old, (past, past))
    cache_module._save(KnnScreen.of(unit_rows(10)), folder / "screen-0.bin", 0)
    assert sorted(p.name for p in folder.iterdir()) == [fresh.name, "screen-0.bin"]


def test_a_search_with_tombstones_uses_the_screen_too(
    tmp_path: Path, screened, monkeypatch, screened_calls: list[int]
) -> None:
    import pyinstance.index.instance_index as module

    monkeypatch.setattr(module, "AUTO_COMPACT_FRACTION", 0.9)
    with _filled(tmp_path / "ix") as index:
        index.remove(instance="i3")  # tombstones: the search asks for more than k
        for _ in range(2):  # the second search builds the screen, then uses it
            found = index.search(unit_rows(2, seed=8), 5)
        assert screened_calls and set(screened_calls) == {2}
        want = plain(index, unit_rows(2, seed=8), 5, monkeypatch)
        np.testing.assert_array_equal(found.rows, want[1])
        np.testing.assert_array_equal(found.scores, want[0])
