"""The store's plumbing seen from outside: one open store shared by threads, a pinned view
that keeps the store's settings and refuses every write before touching anything, and the
descriptor file a writer finds too long (a crash) or of another generation."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest

import pyinstance.index.store as store_module
from pyinstance.index.store import ImageRecord, Store

from .conftest import DIM, tiny_recipe, unit_rows


def records(names: list[str], instance: str = "a") -> list[ImageRecord]:
    return [ImageRecord(name, instance, None, f"sha-{name}") for name in names]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    opened = Store.create(tmp_path / "ix", tiny_recipe(), timeout=7)
    yield opened
    opened.close()


def test_one_store_serves_writers_and_readers_in_other_threads(store: Store) -> None:
    x = unit_rows(6)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            store.add(x[i : i + 1], records([f"t{i}"]))
            assert store.image_sha([f"t{i}"]) == {f"t{i}": f"sha-t{i}"}
        except BaseException as error:  # re-raised below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    snapshot = store.snapshot()
    assert sorted(snapshot.image_ids) == [f"t{i}" for i in range(6)]
    for slot, image in zip(snapshot.slots, snapshot.image_ids, strict=True):
        np.testing.assert_array_equal(snapshot.descriptors[slot], x[int(image[1:])])


def test_a_pinned_view_keeps_the_store_settings_and_refuses_every_write(store: Store) -> None:
    store.add(unit_rows(2), records(["p", "q"]), refit=lambda d, i: {"k": b"v"})
    view = store.pinned()
    assert (view.path, view.timeout, view.recipe) == (store.path, 7.0, store.recipe)
    assert view.format_version == store.format_version == 1  # as opened, before the refit
    assert view.row_width == DIM
    size = (store.path / "descriptors-0.bin").stat().st_size
    writes = {
        "add": lambda: view.add(unit_rows(1, seed=5), records(["r"])),
        "add replacing": lambda: view.add(unit_rows(1, seed=5), records(["p"]), replace=True),
        "remove": lambda: view.remove(images=["p"]),
        "refit": lambda: view.refit(lambda d, i: {}),
        "put_fitted": lambda: view.put_fitted({"k": b"w"}),
        "compact": view.compact,
        "set_settings": lambda: view.set_settings({"a": 1}),
        "set_instance_metadata": lambda: view.set_instance_metadata({"a": {"t": 1}}),
    }
    for name, write in writes.items():
        with pytest.raises(PermissionError, match=r"^index: a pinned view of .* is read-only$"):
            write()
        assert (store.path / "descriptors-0.bin").stat().st_size == size, name
    assert [image["id"] for image in store.images()] == ["p", "q"]
    assert store.snapshot().fitted == {"k": (2, b"v")} and store.settings() == {}


def test_a_writer_truncates_a_long_file_to_the_committed_rows_only(store: Store) -> None:
    x = unit_rows(3)
    store.add(x[:2], records(["p", "q"]))
    path = store.path / "descriptors-0.bin"
    row_bytes = DIM * 4
    with open(path, "ab") as handle:  # exactly one uncommitted row
        handle.write(np.full(DIM, 9.0, np.float32).tobytes())
    (store.path / "descriptors-1.bin").write_bytes(b"a later generation, never committed")
    store.add(x[2:], records(["r"]))
    assert path.stat().st_size == 3 * row_bytes
    np.testing.assert_array_equal(store.snapshot().descriptors, x)
    assert sorted(p.name for p in store.path.glob("descriptors-*")) == ["descriptors-0.bin"]


def test_the_database_is_opened_read_write_in_autocommit_with_the_timeout(
    tmp_path: Path, monkeypatch
) -> None:
    Store.create(tmp_path / "ix", tiny_recipe()).close()
    real = sqlite3.connect
    opened: list[tuple[tuple, dict]] = []

    def spy(*args, **kwargs):
        opened.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(store_module.sqlite3, "connect", spy)
    store = Store(tmp_path / "ix", timeout=7)
    monkeypatch.undo()
    (args, kwargs), *_ = opened
    # a URI with mode=rw: an existing database only, never a new empty one
    assert args == (f"file:{tmp_path / 'ix' / 'index.sqlite'}?mode=rw",)
    assert kwargs["uri"] is True and kwargs["timeout"] == 7.0
    # transactions are the store's own (BEGIN IMMEDIATE ... COMMIT), not the module's
    assert kwargs["isolation_level"] is None and store._db.isolation_level is None
    assert kwargs["check_same_thread"] is False  # see the test with threads above
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    store.close()


def test_a_writer_leaves_a_file_of_the_committed_size_untouched(store: Store) -> None:
    """No truncate to the size it has: that would still stamp the file as modified."""
    store.add(unit_rows(2), records(["p", "q"]))
    path = store.path / "descriptors-0.bin"
    os.utime(path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    store.set_settings({"threshold": 0.5})
    assert path.stat().st_mtime_ns == 1_000_000_000_000_000_000
    assert path.stat().st_size == 2 * DIM * 4
