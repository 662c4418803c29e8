"""Creating and opening an index directory, checked on the store itself: what `create`
refuses, how it publishes the folder (staged beside it, one rename), what a new index holds,
and what opening refuses with which message."""

from __future__ import annotations

import errno
import os
import re
import sqlite3
import stat
import time
from pathlib import Path

import numpy as np
import pytest

import pyinstance.index.store as store_module
from pyinstance.index.store import (
    FORMAT_VERSION,
    ImageRecord,
    IndexFormatError,
    Store,
)

from .conftest import DIM, tiny_recipe, unit_rows


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_create_refuses_a_file_or_a_folder_with_anything_in_it(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("mine")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / ".keep").write_text("mine too")
    for taken in ("file", "full"):
        with pytest.raises(FileExistsError, match="already exists and is not an empty folder"):
            Store.create(tmp_path / taken, tiny_recipe())
    assert (tmp_path / "file").read_text() == "mine"
    assert [p.name for p in (tmp_path / "full").iterdir()] == [".keep"]
    (tmp_path / "empty").mkdir()
    Store.create(tmp_path / "empty", tiny_recipe()).close()
    assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == [
        "descriptors-0.bin",
        "index.sqlite",
    ]
    assert hidden(tmp_path) == []


def test_create_stages_beside_the_index_and_publishes_it_with_one_rename(
    tmp_path: Path, monkeypatch
) -> None:
    real_rename = os.rename
    renames: list[tuple[Path, Path, list[str], int]] = []

    def spy(source, target) -> None:
        source = Path(source)
        contents = sorted(p.name for p in source.iterdir())
        renames.append((source, Path(target), contents, stat.S_IMODE(source.stat().st_mode)))
        real_rename(source, target)

    monkeypatch.setattr(store_module.os, "rename", spy)
    for target in (tmp_path / "ix", tmp_path / "made-empty"):
        if target.name == "made-empty":
            target.mkdir()
        Store.create(target, tiny_recipe()).close()
    monkeypatch.undo()
    assert len(renames) == 2
    for (source, target, contents, mode), name in zip(renames, ("ix", "made-empty"), strict=True):
        # the same folder (one file system: the rename is atomic), hidden, named after it
        assert source.parent == tmp_path and target == tmp_path / name
        assert re.fullmatch(rf"\.{re.escape(name)}\..+", source.name)
        # complete when published: the database checkpointed, no journal beside it
        assert contents == ["descriptors-0.bin", "index.sqlite"]
        assert mode == 0o755
        assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert hidden(tmp_path) == []


def test_a_new_index_is_empty_in_wal_mode_and_stamped(tmp_path: Path) -> None:
    before = time.time()
    plain = Store.create(tmp_path / "plain", tiny_recipe())
    after = time.time()
    meta = plain.meta()
    assert sorted(meta) == [
        "created",
        "format",
        "format_version",
        "generation",
        "next_row",
        "recipe",
        "slots",
    ]
    assert meta["format"] == "pyinstance-index" and meta["format_version"] == "1"
    assert (meta["generation"], meta["slots"], meta["next_row"]) == ("0", "0", "0")
    assert before <= float(meta["created"]) <= after
    assert store_module.Recipe.from_json(meta["recipe"]) == tiny_recipe()
    assert plain.format_version == 1 and plain.settings() == {} and plain.images() == []
    assert (plain.path / "descriptors-0.bin").stat().st_size == 0
    plain.close()
    with sqlite3.connect(tmp_path / "plain" / "index.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    assert {"meta", "settings", "instances", "images", "fitted"} <= tables
    processed = Store.create(tmp_path / "processed", tiny_recipe().with_(postprocess={"dba": {}}))
    assert processed.meta()["format_version"] == "2" and processed.format_version == 2
    processed.close()


def test_a_failure_after_the_rename_is_raised_and_leaves_no_staging(
    tmp_path: Path, monkeypatch
) -> None:
    real = store_module._fsync_dir
    synced: list[Path] = []

    def failing_on_the_parent(path: Path) -> None:
        synced.append(Path(path))
        if Path(path) == tmp_path:
            raise OSError(errno.EIO, "parent fsync failed")
        real(path)

    monkeypatch.setattr(store_module, "_fsync_dir", failing_on_the_parent)
    with pytest.raises(OSError, match="^\\[Errno 5\\] parent fsync failed$"):
        Store.create(tmp_path / "ix", tiny_recipe())
    assert synced[0].parent == tmp_path and synced[0].name.startswith(".ix.")
    assert synced[1:] == [tmp_path]
    assert hidden(tmp_path) == []
    monkeypatch.undo()
    Store(tmp_path / "ix").close()  # published by the rename: complete


def test_opening_a_folder_without_its_database_names_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "index.sqlite").mkdir()
    for name in ("empty", "odd"):
        with pytest.raises(
            IndexFormatError, match=r"is not a pyinstance index \(no index\.sqlite inside\)$"
        ):
            Store(tmp_path / name)


def test_a_database_that_is_not_an_index_database_is_a_format_error(tmp_path: Path) -> None:
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "index.sqlite").write_bytes(b"not a database at all " * 200)
    with pytest.raises(IndexFormatError, match=r"is not a pyinstance index database \(file is"):
        Store(tmp_path / "garbage")
    (tmp_path / "other").mkdir()
    sqlite3.connect(tmp_path / "other" / "index.sqlite").close()
    with pytest.raises(
        IndexFormatError, match=r"is not a pyinstance index database \(no such table: meta\)$"
    ):
        Store(tmp_path / "other")


def rewrite_meta(path: Path, key: str, value: str | None) -> None:
    with sqlite3.connect(path / "index.sqlite") as db:
        if value is None:
            db.execute("DELETE FROM meta WHERE key = ?", (key,))
        else:
            db.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))
    db.close()


def test_format_versions_up_to_this_one_open_and_newer_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "ix"
    Store.create(path, tiny_recipe()).close()
    rewrite_meta(path, "format_version", str(FORMAT_VERSION))
    store = Store(path)
    assert store.format_version == FORMAT_VERSION
    store.close()
    rewrite_meta(path, "format_version", None)  # an index from before versions: 0
    store = Store(path)
    assert store.format_version == 0
    store.close()
    rewrite_meta(path, "format", None)
    with pytest.raises(IndexFormatError, match=r"^index: '.*' is not a pyinstance index$"):
        Store(path)
    with sqlite3.connect(path / "index.sqlite") as db:
        db.execute("INSERT INTO meta VALUES ('format', 'pyinstance-index')")
        db.execute("INSERT INTO meta VALUES ('format_version', ?)", (str(FORMAT_VERSION + 1),))
    db.close()
    # refused as it is, not re-wrapped as a damaged recipe
    with pytest.raises(
        IndexFormatError,
        match=rf"^index: '.*' has format version {FORMAT_VERSION + 1}, newer than the "
        rf"{FORMAT_VERSION} this pyinstance reads; upgrade pyinstance$",
    ):
        Store(path)


def test_a_missing_or_broken_recipe_is_a_damaged_recipe(tmp_path: Path) -> None:
    path = tmp_path / "ix"
    Store.create(path, tiny_recipe()).close()
    rewrite_meta(path, "recipe", None)
    with pytest.raises(
        IndexFormatError,
        match=r"^index: '.*' has a damaged recipe: recipe: expected a dict, got NoneType$",
    ):
        Store(path)
    with sqlite3.connect(path / "index.sqlite") as db:
        db.execute("INSERT INTO meta VALUES ('recipe', '{broken')")
    db.close()
    with pytest.raises(IndexFormatError, match=r"has a damaged recipe: recipe: not valid JSON"):
        Store(path)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_rows_of_several_descriptors_per_image_are_stored_whole(tmp_path: Path, dtype: str) -> None:
    recipe = tiny_recipe(dtype).with_(scales=(1.0, 0.5), postprocess={"scale_weights": [0.6, 0.4]})
    store = Store.create(tmp_path / "ix", recipe)
    assert store.row_width == 2 * DIM
    x = unit_rows(3, 2 * DIM)
    store.add(x, [ImageRecord(f"im{i}", "a", None, None) for i in range(3)])
    itemsize = 4 if dtype == "float32" else 2
    assert (store.path / "descriptors-0.bin").stat().st_size == 3 * 2 * DIM * itemsize
    store.close()
    reopened = Store(tmp_path / "ix")
    snapshot = reopened.snapshot()
    assert snapshot.descriptors.shape == (3, 2 * DIM)
    expected = store_module.from_storage(store_module.to_storage(x, dtype), dtype)
    np.testing.assert_array_equal(store_module.from_storage(snapshot.descriptors, dtype), expected)
    reopened.close()


def test_a_writer_waits_30_seconds_for_another_unless_told(tmp_path: Path) -> None:
    created = Store.create(tmp_path / "ix", tiny_recipe())
    opened = Store(tmp_path / "ix")
    assert created.timeout == opened.timeout == 30.0
    assert created.pinned().timeout == 30.0
    created.close()
    opened.close()
    told = Store(tmp_path / "ix", timeout=0.5)
    assert told.timeout == 0.5 and isinstance(told.timeout, float)
    told.close()


def test_create_makes_every_missing_parent_folder(tmp_path: Path) -> None:
    Store.create(tmp_path / "a" / "b" / "c" / "ix", tiny_recipe()).close()
    Store.create(tmp_path / "a" / "b" / "c" / "iy", tiny_recipe()).close()  # parents there
    assert sorted(p.name for p in (tmp_path / "a" / "b" / "c").iterdir()) == ["ix", "iy"]
    Store(tmp_path / "a" / "b" / "c" / "ix").close()
