"""The store's own bookkeeping, checked directly: what a crashed writer leaves is cleaned up,
slots, rows and collection versions are numbered as documented, storage dtypes round-trip."""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch

import pyinstance.index.store as store_module
from pyinstance.index.store import (
    ImageRecord,
    IndexBusyError,
    IndexFormatError,
    IndexNotFoundError,
    IndexWriteError,
    Store,
    from_storage,
    to_storage,
)

from .conftest import DIM, tiny_recipe, unit_rows

ROW_BYTES = DIM * 4


def records(names: list[str], instance: str = "a") -> list[ImageRecord]:
    return [ImageRecord(name, instance, f"/src/{name}", f"sha-{name}") for name in names]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    opened = Store.create(tmp_path / "ix", tiny_recipe())
    yield opened
    opened.close()


def test_a_writer_drops_uncommitted_rows_and_other_generations(store: Store) -> None:
    x = unit_rows(4)
    store.add(x, records(["p", "q", "r", "s"]))
    path = store.path / "descriptors-0.bin"
    with open(path, "ab") as handle:  # rows a crashed writer appended but never committed
        handle.write(b"\x01" * (3 * ROW_BYTES + 5))
    (store.path / "descriptors-7.bin").write_bytes(b"old generation")
    (store.path / "descriptors-x.bin").write_bytes(b"not a generation")
    store.set_settings({"threshold": 0.5})
    assert path.stat().st_size == 4 * ROW_BYTES
    assert sorted(p.name for p in store.path.glob("descriptors-*")) == [
        "descriptors-0.bin",
        "descriptors-x.bin",
    ]
    np.testing.assert_array_equal(store.snapshot().descriptors, x)


def test_a_failed_write_truncates_what_it_appended(store: Store, monkeypatch) -> None:
    store.add(unit_rows(2), records(["p", "q"]))
    path = store.path / "descriptors-0.bin"

    def failing_refit(descriptors: np.ndarray, instances: list[str]) -> dict[str, bytes]:
        assert path.stat().st_size == 5 * ROW_BYTES  # appended before the commit
        raise RuntimeError("refit failed")

    with pytest.raises(RuntimeError, match="refit failed"):
        store.add(unit_rows(3, seed=1), records(["r", "s", "t"]), refit=failing_refit)
    assert path.stat().st_size == 2 * ROW_BYTES
    assert [image["id"] for image in store.images()] == ["p", "q"]


def test_an_os_error_becomes_an_index_write_error(store: Store, monkeypatch) -> None:
    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(store_module.os, "fsync", failing)
    with pytest.raises(
        IndexWriteError,
        match=r"^\[Errno 5\] index: writing .*\(I/O error\); the index is unchanged",
    ) as caught:
        store.add(unit_rows(1), records(["p"]))
    assert caught.value.errno == errno.EIO
    monkeypatch.undo()
    assert store.images() == []


def test_other_sqlite_errors_pass_through(store: Store, monkeypatch) -> None:
    def broken(**values: int) -> None:
        raise sqlite3.OperationalError("no such column: x")

    monkeypatch.setattr(store, "_set_meta", broken)
    with pytest.raises(sqlite3.OperationalError, match="no such column"):
        store.add(unit_rows(1), records(["p"]))


def test_a_second_writer_gives_up_after_the_timeout(tmp_path: Path) -> None:
    Store.create(tmp_path / "ix", tiny_recipe()).close()
    holder = sqlite3.connect(tmp_path / "ix" / "index.sqlite", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    busy = Store(tmp_path / "ix", timeout=0.05)
    try:
        assert busy.timeout == 0.05
        with pytest.raises(IndexBusyError, match=r"another process; gave up after waiting 0\.05 s"):
            busy.set_settings({"a": 1})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    busy.set_settings({"a": 1})
    assert busy.get_setting("a") == 1
    busy.close()


def test_slots_rows_labels_and_collection_versions(store: Store) -> None:
    x = unit_rows(6)
    assert store.add(x[:3], records(["p", "q", "r"], "b")) == [0, 1, 2]
    assert store.add(x[3:5], records(["s", "t"], "a")) == [3, 4]
    snapshot = store.snapshot()
    assert snapshot is store.snapshot()  # cached until the next commit
    assert (snapshot.generation, snapshot.collection, snapshot.dead) == (0, 5, 0)
    assert snapshot.instances == ("a", "b")
    assert snapshot.image_ids == ("p", "q", "r", "s", "t")
    np.testing.assert_array_equal(snapshot.labels, [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(snapshot.slots, [0, 1, 2, 3, 4])
    assert store.remove(images=["q"], instances=["a"]) == 3
    after = store.snapshot()
    assert after is not snapshot
    assert (after.collection, after.dead, after.instances) == (5 + 3, 3, ("b",))
    np.testing.assert_array_equal(after.slots, [0, 2])
    np.testing.assert_array_equal(after.rows, [0, 2])
    np.testing.assert_array_equal(after.position_of_slot, [0, -1, 1, -1, -1])
    # replacing an id tombstones its old row in the same commit; rows keep counting
    assert store.add(x[5:6], records(["r"], "c"), replace=True) == [5]
    replaced = store.snapshot()
    np.testing.assert_array_equal(replaced.rows, [0, 5])
    np.testing.assert_array_equal(replaced.slots, [0, 5])
    assert replaced.image_ids == ("p", "r") and replaced.instances == ("b", "c")
    assert replaced.collection == 2 * 6 - 2
    np.testing.assert_array_equal(replaced.descriptors[5], x[5])
    assert [r["instance"] for r in store.images()] == ["b", "c"]


def test_images_lists_every_column_by_row(store: Store) -> None:
    store.add(unit_rows(2), [ImageRecord("p", "a", None, None), ImageRecord("o", "b", "s", "h")])
    found = store.images()
    assert [sorted(image) for image in found] == [
        ["added", "id", "instance", "row", "sha256", "source"]
    ] * 2
    assert [(i["id"], i["instance"], i["source"], i["sha256"], i["row"]) for i in found] == [
        ("p", "a", None, None, 0),
        ("o", "b", "s", "h", 1),
    ]
    assert store.image_by_sha(["h", "nope"]) == {"h": "o"}
    assert store.image_sha(["p", "o"]) == {"p": None, "o": "h"}


def test_adding_no_records_and_duplicate_ids(store: Store) -> None:
    assert store.add(np.zeros((0, DIM), np.float32), []) == []
    assert store.meta()["slots"] == "0"
    store.add(unit_rows(12), records([f"im{i:02d}" for i in range(12)]))
    with pytest.raises(ValueError, match=r"^image ids already in the index: im00, im01, im02, "):
        store.add(unit_rows(12, seed=3), records([f"im{i:02d}" for i in range(12)][::-1]))
    try:
        store.add(unit_rows(12, seed=3), records([f"im{i:02d}" for i in range(12)]))
    except ValueError as error:
        assert str(error).endswith("im08, im09")  # the first ten, sorted
    with pytest.raises(ValueError, match=r"^descriptors: expected shape \(1, 16\), got \(1, 15\)"):
        store.add(np.zeros((1, DIM - 1), np.float32), records(["z"]))
    assert len(store.images()) == 12 and store.meta()["next_row"] == "12"


def test_compaction_renumbers_slots_keeps_rows_and_removes_the_old_file(
    store: Store, monkeypatch
) -> None:
    monkeypatch.setattr(store_module, "_COPY_ROWS", 2)  # several chunks
    x = unit_rows(7)
    store.add(x, records([f"im{i}" for i in range(7)]))
    assert store.compact() == 0 and store.snapshot().generation == 0
    store.remove(images=["im0", "im3", "im4"])
    assert store.compact() == 3
    snapshot = store.snapshot()
    assert snapshot.generation == 1 and snapshot.dead == 0
    np.testing.assert_array_equal(snapshot.slots, [0, 1, 2, 3])
    np.testing.assert_array_equal(snapshot.rows, [1, 2, 5, 6])
    np.testing.assert_array_equal(snapshot.descriptors, x[[1, 2, 5, 6]])
    assert sorted(p.name for p in store.path.glob("descriptors-*")) == ["descriptors-1.bin"]
    assert (store.path / "descriptors-1.bin").stat().st_size == 4 * ROW_BYTES
    assert snapshot.collection == 2 * 7 - 4  # compaction is no change of the collection
    store.add(unit_rows(1, seed=2), records(["im7"]))
    assert store.snapshot().rows.tolist() == [1, 2, 5, 6, 7]


def test_fitted_state_is_stamped_with_the_collection_it_was_fitted_on(store: Store) -> None:
    seen: list[tuple[np.ndarray, list[str]]] = []

    def refit(descriptors: np.ndarray, instances: list[str]) -> dict[str, bytes | None]:
        seen.append((descriptors.copy(), list(instances)))
        return {"mean": descriptors.mean(axis=0).tobytes(), "gone": None}

    x = unit_rows(4)
    store.put_fitted({"fixed": b"abc"})
    assert store.snapshot().fitted == {"fixed": (0, b"abc")}
    assert store.meta()["format_version"] == "2"
    store.add(x, records(["p", "q"], "a") + records(["r", "s"], "b"), refit=refit)
    store.remove(images=["q"], refit=refit)
    np.testing.assert_array_equal(seen[1][0], x[[0, 2, 3]])
    assert seen[1][1] == ["a", "b", "b"]
    fitted = store.snapshot().fitted
    assert fitted["fixed"] == (0, b"abc")  # a key the refit does not name is kept
    assert "gone" not in fitted
    assert fitted["mean"] == (2 * 4 - 3, x[[0, 2, 3]].mean(axis=0).tobytes())
    store.remove(images=["p"])  # no refit: the state keeps its old stamp
    assert store.snapshot().fitted["mean"][0] == 5 and store.snapshot().collection == 6
    store.refit(refit)
    assert store.snapshot().fitted["mean"] == (6, x[[2, 3]].mean(axis=0).tobytes())
    store.put_fitted({"fixed": b"xyz"})
    assert store.snapshot().fitted["fixed"] == (6, b"xyz")


def test_a_recipe_without_postprocessing_keeps_format_one(store: Store) -> None:
    assert store.format_version == 1 and store.meta()["format_version"] == "1"
    store.add(unit_rows(1), records(["p"]), refit=lambda d, i: {})
    assert store.meta()["format_version"] == "2"  # state tables written: the newer format


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_storage_dtypes_round_trip(dtype: str) -> None:
    x = np.array([[1.0, -2.5, 0.1, 3.0e-3]], dtype=np.float32)
    stored = to_storage(x, dtype)
    expected = {
        "float32": x,
        "float16": x.astype(np.float16),
        "bfloat16": torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy(),
    }[dtype]
    assert stored.dtype.itemsize == (4 if dtype == "float32" else 2)
    assert stored.tobytes() == expected.tobytes()
    back = from_storage(stored, dtype)
    assert back.dtype == np.float32
    reference = torch.from_numpy(x).to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(
        back,
        {"float32": x, "float16": x.astype(np.float16).astype(np.float32), "bfloat16": reference}[
            dtype
        ],
    )


def test_refs_give_bfloat16_as_a_torch_view(tmp_path: Path) -> None:
    store = Store.create(tmp_path / "ix", tiny_recipe("bfloat16"))
    x = unit_rows(3)
    store.add(x, records(["p", "q", "r"]))
    refs = store.snapshot().refs()
    assert isinstance(refs, torch.Tensor) and refs.dtype == torch.bfloat16
    np.testing.assert_array_equal(
        refs.float().numpy(), from_storage(to_storage(x, "bfloat16"), "bfloat16")
    )
    assert (tmp_path / "ix" / "descriptors-0.bin").stat().st_size == 3 * DIM * 2
    store.close()
    plain = Store.create(tmp_path / "iy", tiny_recipe("float16"))
    plain.add(x, records(["p", "q", "r"]))
    assert isinstance(plain.snapshot().refs(), np.ndarray)
    assert plain.snapshot().refs().dtype == np.float16
    plain.close()


def test_a_short_descriptor_file_is_damage(store: Store) -> None:
    store.add(unit_rows(3), records(["p", "q", "r"]))
    os.truncate(store.path / "descriptors-0.bin", 2 * ROW_BYTES + 1)
    store._snapshot = None
    with pytest.raises(IndexFormatError, match=r"holds 2 rows, but the metadata commits 3"):
        store.snapshot()


def test_a_writer_refuses_a_short_descriptor_file_and_never_pads_it(store: Store) -> None:
    store.add(unit_rows(3), records(["p", "q", "r"]))
    path = store.path / "descriptors-0.bin"
    os.truncate(path, 2 * ROW_BYTES + 1)
    with pytest.raises(IndexFormatError, match=r"holds 2 rows, but the metadata commits 3"):
        store.add(unit_rows(1, seed=1), records(["s"]))
    with pytest.raises(IndexFormatError, match=r"the descriptor file was damaged"):
        store.set_settings({"threshold": 0.5})
    assert path.stat().st_size == 2 * ROW_BYTES + 1  # not padded with zero rows
    assert [image["id"] for image in store.images()] == ["p", "q", "r"]
    assert store.get_setting("threshold") is None


def test_settings_are_json_values_and_none_deletes(store: Store) -> None:
    store.set_settings({"threshold": 0.5, "names": ["a", "b"], "gone": 1})
    store.set_settings({"threshold": 0.25, "gone": None})
    assert store.settings() == {"threshold": 0.25, "names": ["a", "b"]}
    assert store.get_setting("gone", "default") == "default"
    for bad, message in (
        ({"": 1}, r"^setting key: expected a non-empty str, got ''"),
        ({3: 1}, r"^setting key: expected a non-empty str, got 3"),
        ({"x": float("nan")}, r"^setting 'x': not JSON-serialisable"),
        ({"x": object()}, r"^setting 'x': not JSON-serialisable"),
    ):
        with pytest.raises(ValueError, match=message):
            store.set_settings(bad)
    assert store.settings() == {"threshold": 0.25, "names": ["a", "b"]}


def test_opening_refuses_what_is_not_an_index(tmp_path: Path) -> None:
    with pytest.raises(IndexNotFoundError, match=r"^index: no such directory"):
        Store(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(IndexFormatError, match=r"is not a pyinstance index \(no index.sqlite"):
        Store(tmp_path / "file")
    store = Store.create(tmp_path / "ix", tiny_recipe(dim=8), timeout=2)
    assert (store.timeout, store.row_width, store.recipe.dim) == (2.0, 8, 8)
    assert store.pinned().row_width == 8
    store.close()
    with sqlite3.connect(tmp_path / "ix" / "index.sqlite") as db:
        db.execute("UPDATE meta SET value = 'other' WHERE key = 'format'")
    with pytest.raises(IndexFormatError, match=r"is not a pyinstance index$"):
        Store(tmp_path / "ix")


def test_create_writes_the_layout_and_leaves_no_staging(tmp_path: Path, monkeypatch) -> None:
    store = Store.create(tmp_path / "deep" / "ix", tiny_recipe())
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == ["ix"]
    assert {"index.sqlite", "descriptors-0.bin"} <= {p.name for p in store.path.iterdir()}
    meta = store.meta()
    assert (meta["generation"], meta["slots"], meta["next_row"]) == ("0", "0", "0")
    assert meta["format"] == "pyinstance-index"
    assert store.size_on_disk() == sum(p.stat().st_size for p in store.path.iterdir())
    store.close()

    def failing(path: Path) -> None:
        raise OSError(errno.EIO, "fsync failed")

    monkeypatch.setattr(store_module, "_fsync_dir", failing)
    with pytest.raises(OSError, match="fsync failed"):
        Store.create(tmp_path / "other", tiny_recipe())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep"]


def test_partial_writes_are_continued(store: Store, monkeypatch) -> None:
    real_write = os.write
    calls: list[int] = []

    def short_write(fd: int, data) -> int:  # the kernel may write less than asked
        calls.append(len(data))
        return real_write(fd, bytes(data[:7]))

    x = unit_rows(3)
    monkeypatch.setattr(store_module.os, "write", short_write)
    store.add(x, records(["p", "q", "r"]))
    monkeypatch.undo()
    assert calls[0] == 3 * ROW_BYTES and len(calls) == -(-3 * ROW_BYTES // 7)
    np.testing.assert_array_equal(store.snapshot().descriptors, x)


def test_a_pinned_view_answers_from_its_commit(store: Store) -> None:
    store.add(unit_rows(3), records(["p", "q"], "a") + [ImageRecord("r", "b", None, "hr")])
    store.set_settings({"threshold": 0.5})
    store.set_instance_metadata({"a": {"title": "A"}})
    view = store.pinned()
    assert view.pinned() is view
    store.remove(images=["q"])
    store.set_settings({"threshold": 0.9})
    store.set_instance_metadata({"a": {"title": "changed"}})
    assert [i["id"] for i in view.images()] == ["p", "q", "r"]
    assert view.image_by_sha(["hr", "sha-q", "x"]) == {"hr": "r", "sha-q": "q"}
    assert view.image_sha(["q", "r", "x"]) == {"q": "sha-q", "r": "hr"}
    assert view.get_setting("threshold") == 0.5 and view.get_setting("x", 3) == 3
    assert view.settings() == {"threshold": 0.5}
    assert view.instance_metadata() == {"a": {"title": "A"}}
    assert view.meta()["slots"] == "3" and view.meta()["next_row"] == "3"
    assert view.snapshot().image_ids == ("p", "q", "r")
    assert view.size_on_disk() > 0
    # what a caller does to the answers does not change the view
    view.images()[0]["id"] = "changed"
    view.settings()["threshold"] = 1.0
    view.instance_metadata()["a"]["title"] = "changed"
    view.meta()["slots"] = "9"
    assert view.images()[0]["id"] == "p" and view.get_setting("threshold") == 0.5
    assert view.instance_metadata() == {"a": {"title": "A"}} and view.meta()["slots"] == "3"
    view.close()  # nothing to close: still answers
    assert view.images()[2]["id"] == "r"
    with pytest.raises(PermissionError, match=r"^index: a pinned view of .* is read-only"):
        view.compact()
    assert store.pinned().image_sha(["p", "q"]) == {"p": "sha-p"}  # q removed since


def test_metadata_changes_count_commits(store: Store) -> None:
    assert store.metadata_changes() == 0 and store.instance_metadata() == {}
    store.add(unit_rows(2), records(["p"], "a") + records(["q"], "b"))
    assert store.set_instance_metadata({"a": {"x": 1}, "zz": {"x": 2}}) == ["zz"]
    assert store.metadata_changes() == 1
    store.set_instance_metadata({"a": {"y": "v"}})
    assert store.instance_metadata() == {"a": {"x": 1, "y": "v"}}
    store.set_instance_metadata({"a": {"z": True}}, replace=True)
    assert store.instance_metadata() == {"a": {"z": True}} and store.metadata_changes() == 3
    store.set_instance_metadata({"a": {"z": None}})
    assert store.instance_metadata() == {} and store.metadata_changes() == 4
    store.add(unit_rows(1, seed=4), records(["r"], "c"), metadata={"c": {"t": "é"}})
    assert store.instance_metadata() == {"c": {"t": "é"}} and store.metadata_changes() == 5


def test_an_empty_snapshot_has_int64_rows_and_labels(store: Store) -> None:
    snapshot = store.snapshot()
    for array in (snapshot.slots, snapshot.rows, snapshot.labels):
        assert array.shape == (0,) and array.dtype == np.int64
    assert snapshot.descriptors.shape == (0, DIM) and snapshot.instances == ()
