"""The store's look-ups by image id and content hash, asked in chunks of bound parameters."""

from __future__ import annotations

from pathlib import Path

from pyinstance.index import InstanceIndex
from pyinstance.index.store import ImageRecord

from .conftest import tiny_recipe, unit_rows

#: More than two chunks of 500 keys.
COUNT = 1203


def test_lookups_answer_every_chunk_and_skip_unknown_keys(tmp_path: Path) -> None:
    with InstanceIndex.create(tmp_path / "index", tiny_recipe()) as index:
        store = index._store
        records = [ImageRecord(f"im{i}", f"i{i % 6}", None, f"sha{i}") for i in range(COUNT)]
        store.add(unit_rows(COUNT), records)
        ids = [f"im{i}" for i in range(COUNT)] + ["nope"]
        shas = [f"sha{i}" for i in range(COUNT)] + ["nosha"]
        assert store.image_sha(ids) == {f"im{i}": f"sha{i}" for i in range(COUNT)}
        assert store.image_by_sha(shas) == {f"sha{i}": f"im{i}" for i in range(COUNT)}
        assert store.image_sha([]) == {} and store.image_by_sha(["nosha"]) == {}
