"""Instance metadata written by the store itself: every known instance of an update is
written whatever comes before it, merged fields are checked under the instance's name, and
every metadata commit is counted once."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from pyinstance.index.store import ImageRecord, Store

from .conftest import tiny_recipe, unit_rows


@pytest.fixture
def store(tmp_path: Path) -> Store:
    opened = Store.create(tmp_path / "ix", tiny_recipe())
    opened.add(unit_rows(3), [ImageRecord(f"im{i}", "abc"[i], None, None) for i in range(3)])
    yield opened
    opened.close()


def stored(store: Store) -> dict[str, str]:
    with sqlite3.connect(store.path / "index.sqlite") as db:
        rows = db.execute("SELECT instance, fields FROM instance_metadata").fetchall()
    db.close()
    return dict(rows)


def test_unknown_instances_anywhere_in_an_update_are_skipped_and_returned(store: Store) -> None:
    missing = store.set_instance_metadata(
        {"zz": {"t": 1}, "a": {"t": 2}, "yy": {"t": 3}, "c": {"t": 4}}
    )
    assert missing == ["zz", "yy"]
    assert store.instance_metadata() == {"a": {"t": 2}, "c": {"t": 4}}


def test_merging_keeps_other_fields_and_replacing_drops_them(store: Store) -> None:
    store.set_instance_metadata({"a": {"x": 1, "y": "two"}, "b": {"x": 3}})
    store.set_instance_metadata({"a": {"y": None, "z": 2.5}, "b": {"w": False}})
    assert store.instance_metadata() == {"a": {"x": 1, "z": 2.5}, "b": {"x": 3, "w": False}}
    store.set_instance_metadata({"a": {"q": "only"}}, replace=True)
    assert store.instance_metadata() == {"a": {"q": "only"}, "b": {"x": 3, "w": False}}
    # replacing with deletions only leaves nothing, not an empty entry
    store.set_instance_metadata({"b": {"x": None}}, replace=True)
    assert store.instance_metadata() == {"a": {"q": "only"}}
    assert set(stored(store)) == {"a"}
    # the stored text is the JSON object of the fields
    assert json.loads(stored(store)["a"]) == {"q": "only"}


def test_merged_fields_beyond_the_limit_are_refused_naming_the_instance(store: Store) -> None:
    store.set_instance_metadata({"b": {f"a{i}": i for i in range(20)}})
    with pytest.raises(ValueError, match=r"^metadata of 'b': 40 fields, at most 32 allowed$"):
        store.set_instance_metadata({"b": {f"c{i}": i for i in range(20)}})
    assert len(store.instance_metadata()["b"]) == 20
    assert store.metadata_changes() == 1


def test_each_metadata_commit_counts_once(store: Store) -> None:
    assert store.metadata_changes() == 0
    for expected in (1, 2, 3):
        store.set_instance_metadata({"a": {"n": expected}})
        assert store.metadata_changes() == expected
        assert store.meta()["metadata_changes"] == str(expected)
    assert store.set_instance_metadata({"nope": {"n": 0}}) == ["nope"]  # still a commit
    assert store.metadata_changes() == 4
    assert store.meta()["metadata_schema"] == "1"


def test_text_the_database_cannot_store_is_refused_before_anything_is_written(
    store: Store,
) -> None:
    store.set_instance_metadata({"a": {"t": "kept"}})
    with pytest.raises(ValueError, match=r"^metadata of 'b': 't' is not valid Unicode text"):
        store.set_instance_metadata({"a": {"t": "new"}, "b": {"t": "x\ud800"}})
    assert store.instance_metadata() == {"a": {"t": "kept"}} and store.metadata_changes() == 1
    # any other text is stored as it is, not escaped, and read back equal
    store.set_instance_metadata({"c": {"t": "\u00e9t\u00e9 \U0001f600"}})
    assert stored(store)["c"] == '{"t": "\u00e9t\u00e9 \U0001f600"}'
    assert store.instance_metadata()["c"] == {"t": "\u00e9t\u00e9 \U0001f600"}
