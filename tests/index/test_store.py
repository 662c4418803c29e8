"""Creating, opening, refusing, persisting; bad input that must leave the index intact."""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

import pyinstance.index.store as store_module
from pyinstance.index import (
    FORMAT_VERSION,
    IndexFormatError,
    IndexNotFoundError,
    IndexWriteError,
    InstanceIndex,
)

from .conftest import DIM, tiny_recipe, unit_rows


def content(index: InstanceIndex) -> dict[str, tuple[str, bytes]]:
    labels = index.labels()
    return {
        image: (index.instances[label], row.tobytes())
        for image, label, row in zip(index.image_ids(), labels, index.descriptors(), strict=True)
    }


def test_reopening_needs_nothing_but_the_path(filled) -> None:
    index, x = filled
    index.set_setting("threshold", 0.61)
    index.set_setting("classifier", "knn_weighted")
    expected = content(index)
    index.close()
    with InstanceIndex.open(index.path) as again:
        assert again.recipe == tiny_recipe()
        assert content(again) == expected
        assert again.get_setting("threshold") == 0.61
        assert again.get_setting("classifier") == "knn_weighted"
        assert again.get_setting("absent", "dflt") == "dflt"
        info = again.info()
        # format version 1: a recipe without post-processing keeps the old format
        assert (info["images"], info["instances"], info["version"]) == (60, 6, 1)
        assert info["recipe"]["dim"] == DIM
        assert info["size_on_disk"] >= 60 * DIM * 4
        again.set_setting("threshold", None)
        assert again.get_setting("threshold") is None


def test_missing_and_foreign_directories_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(IndexNotFoundError, match="no such directory"):
        InstanceIndex.open(tmp_path / "nope")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"x")
    with pytest.raises(IndexFormatError, match="not a pyinstance index"):
        InstanceIndex.open(tmp_path / "photos")
    with pytest.raises(IndexFormatError, match="not a pyinstance index"):
        InstanceIndex.open(tmp_path / "photos" / "a.jpg")
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "index.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(IndexFormatError, match="not a pyinstance index database"):
        InstanceIndex.open(tmp_path / "fake")
    (tmp_path / "other").mkdir()
    sqlite3.connect(tmp_path / "other" / "index.sqlite").execute(
        "CREATE TABLE t (x)"
    ).connection.commit()
    with pytest.raises(IndexFormatError, match="not a pyinstance index"):
        InstanceIndex.open(tmp_path / "other")


def test_a_newer_format_is_refused(filled) -> None:
    index, _ = filled
    index.close()
    with sqlite3.connect(index.path / "index.sqlite") as db:
        db.execute(
            "UPDATE meta SET value = ? WHERE key = 'format_version'", (str(FORMAT_VERSION + 1),)
        )
    with pytest.raises(IndexFormatError, match="newer.*upgrade pyinstance"):
        InstanceIndex.open(index.path)


def test_create_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        InstanceIndex.create(tmp_path / "full", tiny_recipe())
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    (tmp_path / "empty").mkdir()
    InstanceIndex.create(tmp_path / "empty", tiny_recipe()).close()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left


def test_descriptors_of_another_recipe_are_refused_naming_both(filled) -> None:
    index, x = filled
    other = tiny_recipe().with_(max_side=640)
    with pytest.raises(ValueError, match=r"max_side 640.*cannot join.*max_side 448"):
        index.add_descriptors(x[:1], ["a"], ["new"], other)
    assert len(index) == 60


@pytest.mark.parametrize(
    ("descriptors", "instances", "images", "message"),
    [
        (unit_rows(2, DIM + 3), ["a", "b"], ["p", "q"], "size 19 does not match the index's D=16"),
        (unit_rows(2)[0], ["a"], ["p"], "N×D float array"),
        (unit_rows(2), ["a"], ["p", "q"], "instance_ids: expected 2 ids"),
        (unit_rows(2), ["a", "b"], ["p", "p"], "image_ids: contains duplicates"),
        (unit_rows(2), ["a", ""], ["p", "q"], "non-empty str"),
        (np.full((1, DIM), np.inf, np.float32), ["a"], ["p"], "NaN or infinite"),
        (unit_rows(1), ["a"], ["im3"], "already in the index: im3"),
    ],
)
def test_bad_descriptors_are_refused_and_nothing_is_lost(
    filled, descriptors, instances, images, message
) -> None:
    index, _ = filled
    before = content(index)
    with pytest.raises(ValueError, match=message):
        index.add_descriptors(descriptors, instances, images, tiny_recipe())
    assert content(index) == before


def test_remove_unknown_ids_is_a_key_error(filled) -> None:
    index, _ = filled
    with pytest.raises(KeyError, match="not in the index: 'zzz'"):
        index.remove(instance="zzz")
    with pytest.raises(KeyError, match="'im999'"):
        index.remove(image=["im1", "im999"])
    with pytest.raises(ValueError, match="give instance"):
        index.remove()
    assert len(index) == 60


def test_full_disk_while_appending_descriptors(filled, monkeypatch) -> None:
    index, _ = filled
    before = content(index)
    size = (index.path / "descriptors-0.bin").stat().st_size

    def full(fd: int, data) -> int:
        os.ftruncate(fd, os.fstat(fd).st_size + 7)  # a partial write first
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_module.os, "write", full)
    with pytest.raises(IndexWriteError, match="No space left on device.*unchanged") as caught:
        index.add_descriptors(
            unit_rows(5, seed=9), ["n"] * 5, [f"n{i}" for i in range(5)], tiny_recipe()
        )
    assert caught.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert content(index) == before
    assert (index.path / "descriptors-0.bin").stat().st_size == size
    index.close()
    with InstanceIndex.open(index.path) as again:
        assert content(again) == before
        again.add_descriptors(unit_rows(1, seed=5), ["n"], ["n0"], tiny_recipe())
        assert len(again) == 61


def test_full_disk_while_compacting(filled, monkeypatch) -> None:
    import pyinstance.index.instance_index as module

    monkeypatch.setattr(module, "AUTO_COMPACT_FRACTION", 0.9)
    index, _ = filled
    index.remove(instance="i3")
    before = content(index)
    monkeypatch.setattr(
        store_module.os,
        "write",
        lambda fd, data: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")),
    )
    with pytest.raises(IndexWriteError, match="No space left"):
        index.compact()
    monkeypatch.undo()
    assert content(index) == before and index.info()["generation"] == 0
    assert index.compact() == 10  # the half-written generation is cleaned up
    assert content(index) == before
    assert sorted(p.name for p in index.path.glob("descriptors-*")) == ["descriptors-1.bin"]


def test_full_disk_in_sqlite_is_a_clear_error(filled, monkeypatch) -> None:
    index, _ = filled
    before = content(index)
    real = index._store._set_meta

    def full(**values: int) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(index._store, "_set_meta", full)
    with pytest.raises(IndexWriteError, match="disk is full.*unchanged"):
        index.add_descriptors(unit_rows(2, seed=4), ["n", "n"], ["a", "b"], tiny_recipe())
    monkeypatch.setattr(index._store, "_set_meta", real)
    assert content(index) == before


def test_bfloat16_rows_round_trip_through_the_file(tmp_path: Path) -> None:
    recipe = tiny_recipe("bfloat16")
    x = unit_rows(10)
    with InstanceIndex.create(tmp_path / "ix", recipe) as index:
        index.add_descriptors(x, ["a"] * 10, [str(i) for i in range(10)], recipe)
        assert (index.path / "descriptors-0.bin").stat().st_size == 10 * DIM * 2
        np.testing.assert_allclose(index.descriptors(), x, atol=1e-2)


def test_a_damaged_recipe_is_a_clear_error(filled) -> None:
    index, _ = filled
    index.close()
    with sqlite3.connect(index.path / "index.sqlite") as db:
        db.execute("UPDATE meta SET value = '{\"backbone\": 1}' WHERE key = 'recipe'")
    with pytest.raises(IndexFormatError, match="damaged recipe"):
        InstanceIndex.open(index.path)
