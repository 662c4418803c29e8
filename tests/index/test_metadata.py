"""Instance metadata: stored in its own table, one commit per change, old indexes still open."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from pyinstance.index import IndexFormatError, InstanceIndex
from pyinstance.index.metadata import read_metadata_file

from .conftest import tiny_recipe, unit_rows


def test_museum_instances_csv_reads_author_and_title(shared_data: Path) -> None:
    metadata = read_metadata_file(shared_data / "museum" / "instances.csv")
    assert len(metadata) == 287
    assert metadata["bbdd_00003"] == {"author": "Edvard Munch", "title": "Youth"}
    assert metadata["bbdd_00002"] == {}  # empty cells are left out


def test_json_files_as_object_or_list(tmp_path: Path) -> None:
    as_object = tmp_path / "a.json"
    as_object.write_text(json.dumps({"x": {"title": "T", "year": 1901, "lent": True}}))
    as_list = tmp_path / "b.json"
    as_list.write_text(json.dumps([{"id": "x", "title": "T", "year": 1901, "lent": True}]))
    assert read_metadata_file(as_object) == read_metadata_file(as_list)
    assert read_metadata_file(as_object) == {"x": {"title": "T", "year": 1901, "lent": True}}


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("m.csv", "name,title\nx,T\n", "no instance column"),
        ("m.csv", "instance_id,title\nx,T\nx,U\n", "appears twice"),
        ("m.json", "{not json", "not valid JSON"),
        ("m.json", '{"x": {"title": [1, 2]}}', "'title' must be a str"),
        ("m.json", '{"x": {"title": null}}', "'title' must be a str"),
        ("m.json", '{"x": "T"}', "expected an object of fields"),
        ("m.json", "[1, 2]", "expected an object"),
        ("m.txt", "x", "expected a .csv or .json"),
    ],
)
def test_bad_metadata_files_are_refused(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_metadata_file(path)


def test_missing_metadata_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_metadata_file(tmp_path / "absent.csv")


def test_set_merge_delete_replace_and_reopen(filled: tuple[InstanceIndex, np.ndarray]) -> None:
    index, _ = filled
    assert index.metadata() == {}
    before = index.info()["metadata_changes"]
    index.set_metadata({"i0": {"title": "Youth", "author": "Munch"}, "i1": {"year": 1893}})
    index.set_metadata({"i0": {"author": None, "room": "3"}})
    assert index.metadata() == {"i0": {"title": "Youth", "room": "3"}, "i1": {"year": 1893}}
    assert index.info()["metadata_changes"] == before + 2
    index.set_metadata({"i1": {"title": "Scream"}}, replace=True)
    index.set_metadata({"i0": {"title": None, "room": None}})  # nothing left: no entry
    assert index.metadata() == {"i1": {"title": "Scream"}}
    with InstanceIndex.open(index.path) as again:
        assert again.metadata() == {"i1": {"title": "Scream"}}


def test_unknown_instances_are_refused_or_skipped(
    filled: tuple[InstanceIndex, np.ndarray],
) -> None:
    index, _ = filled
    with pytest.raises(KeyError, match="'nope'"):
        index.set_metadata({"i0": {"title": "A"}, "nope": {"title": "B"}})
    assert index.metadata() == {}  # nothing written
    assert index.set_metadata({"i0": {"title": "A"}, "nope": {"title": "B"}}, unknown="skip") == [
        "nope"
    ]
    assert index.metadata() == {"i0": {"title": "A"}}


@pytest.mark.parametrize(
    ("updates", "error"),
    [
        ({"i0": {"": "x"}}, ValueError),
        ({"i0": {"title": float("nan")}}, ValueError),
        ({"i0": {"title": {"nested": 1}}}, ValueError),
        ({"i0": {f"f{i}": i for i in range(40)}}, ValueError),
        ({"i0": {"title": "x" * 5000}}, ValueError),
        ({"i0": ["title"]}, ValueError),
        (["i0"], TypeError),
    ],
)
def test_bad_fields_are_refused(
    filled: tuple[InstanceIndex, np.ndarray], updates: object, error: type
) -> None:
    index, _ = filled
    with pytest.raises(error, match="metadata"):
        index.set_metadata(updates)  # type: ignore[arg-type]
    assert index.metadata() == {}


def test_too_many_fields_once_merged(filled: tuple[InstanceIndex, np.ndarray]) -> None:
    index, _ = filled
    index.set_metadata({"i0": {f"a{i}": i for i in range(20)}})
    with pytest.raises(ValueError, match="at most 32"):
        index.set_metadata({"i0": {f"b{i}": i for i in range(20)}})
    assert len(index.metadata()["i0"]) == 20  # the failed commit left the old fields


def test_removing_an_instance_drops_its_metadata(
    filled: tuple[InstanceIndex, np.ndarray],
) -> None:
    index, x = filled
    recipe = index.recipe
    index.set_metadata({"i0": {"title": "A"}, "i1": {"title": "B"}})
    index.remove(instance="i0")
    assert index.metadata() == {"i1": {"title": "B"}}
    index.add_descriptors(x[:1], ["i0"], ["again"], recipe)  # back, without the old title
    assert "i0" not in index.metadata()


def test_pinned_view_keeps_the_metadata_of_its_commit(
    filled: tuple[InstanceIndex, np.ndarray],
) -> None:
    index, _ = filled
    index.set_metadata({"i0": {"title": "A"}})
    view = index.pinned()
    index.set_metadata({"i0": {"title": "B"}})
    assert view.metadata() == {"i0": {"title": "A"}}
    assert index.metadata() == {"i0": {"title": "B"}}
    with pytest.raises(PermissionError):
        view.set_metadata({"i0": {"title": "C"}})


def test_an_index_made_before_metadata_opens_and_gains_it(tmp_path: Path) -> None:
    recipe = tiny_recipe()
    with InstanceIndex.create(tmp_path / "old", recipe) as index:
        index.add_descriptors(unit_rows(4), ["a", "a", "b", "b"], ["1", "2", "3", "4"], recipe)
    database = sqlite3.connect(tmp_path / "old" / "index.sqlite")
    tables = {name for (name,) in database.execute("SELECT name FROM sqlite_master")}
    database.close()
    assert "instance_metadata" not in tables  # created at the first metadata write only
    with InstanceIndex.open(tmp_path / "old") as index:
        assert index.metadata() == {}
        assert index.info()["metadata_changes"] == 0
        index.set_metadata({"a": {"title": "A"}})
        index.remove(image="4")
        assert index.metadata() == {"a": {"title": "A"}}


def test_newer_metadata_schema_is_refused(filled: tuple[InstanceIndex, np.ndarray]) -> None:
    index, _ = filled
    index.set_metadata({"i0": {"title": "A"}})
    database = sqlite3.connect(index.path / "index.sqlite")
    database.execute("UPDATE meta SET value = '99' WHERE key = 'metadata_schema'")
    database.commit()
    database.close()
    with InstanceIndex.open(index.path) as again, pytest.raises(IndexFormatError, match="upgrade"):
        again.metadata()


def test_add_with_metadata_is_one_commit(tmp_path: Path, pairs: Path) -> None:
    recipe = tiny_recipe().with_(dim=1280, max_side=224, scales=(1.0,))
    with InstanceIndex.create(tmp_path / "index", recipe) as index:
        report = index.add(
            [pairs / "reference" / "graf1.png"],
            instance="graf",
            metadata={"graf": {"title": "Graffiti"}, "absent": {"title": "x"}},
        )
        assert report.added == 1
        assert index.metadata() == {"graf": {"title": "Graffiti"}}
        assert index.info()["metadata_changes"] == 1
        # nothing new to add: the metadata still lands
        index.add([pairs / "reference" / "graf1.png"], "graf", metadata={"graf": {"year": 2}})
        assert index.metadata() == {"graf": {"title": "Graffiti", "year": 2}}
