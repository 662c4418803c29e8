"""The store's helpers checked where the other store tests cannot see them: a read-only
bfloat16 mapping viewed without a warning however often torch would warn; an empty index
mapped in its storage dtype; a snapshot's mapping read-only."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from pyinstance.index.store import ImageRecord, Store, _bf16_view, from_storage, to_storage

from .conftest import DIM, tiny_recipe, unit_rows


def test_a_read_only_bfloat16_mapping_is_viewed_without_a_warning(tmp_path: Path) -> None:
    x = np.array([[1.0, -2.5, 0.1, 3.0e-3]], dtype=np.float32)
    path = tmp_path / "rows.bin"
    path.write_bytes(to_storage(x, "bfloat16").tobytes())
    mapped = np.memmap(path, dtype="<u2", mode="r", shape=(1, 4))
    # torch warns once per process about a read-only array; make it warn every time, so
    # that the filter around the view is exercised whatever ran before
    before = torch.is_warn_always_enabled()
    torch.set_warn_always(True)
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            viewed = _bf16_view(mapped)
            back = from_storage(mapped, "bfloat16")
    finally:
        torch.set_warn_always(before)
    assert [str(w.message) for w in seen] == []
    assert viewed.dtype == torch.bfloat16 and viewed.shape == (1, 4)
    expected = torch.from_numpy(x).to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(viewed.float().numpy(), expected)
    np.testing.assert_array_equal(back, expected)


@pytest.mark.parametrize(
    ("dtype", "stored", "viewed"),
    [
        ("float32", np.float32, np.float32),
        ("float16", np.float16, np.float16),
        ("bfloat16", np.uint16, torch.bfloat16),
    ],
)
def test_an_empty_index_maps_no_rows_of_its_storage_dtype(
    tmp_path: Path, dtype: str, stored: type, viewed: object
) -> None:
    store = Store.create(tmp_path / "ix", tiny_recipe(dtype))
    snapshot = store.snapshot()
    assert snapshot.descriptors.shape == (0, DIM)
    assert snapshot.descriptors.dtype == stored
    refs = snapshot.refs()
    assert tuple(refs.shape) == (0, DIM) and refs.dtype == viewed
    store.close()


def test_a_snapshot_maps_its_rows_read_only(tmp_path: Path) -> None:
    store = Store.create(tmp_path / "ix", tiny_recipe())
    x = unit_rows(3)
    store.add(x, [ImageRecord(f"im{i}", "a", None, None) for i in range(3)])
    descriptors = store.snapshot().descriptors
    assert not descriptors.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        descriptors[0, 0] = 5.0
    np.testing.assert_array_equal(descriptors, x)
    store.close()


def test_refit_gets_bfloat16_rows_as_their_values(tmp_path: Path) -> None:
    store = Store.create(tmp_path / "ix", tiny_recipe("bfloat16"))
    seen = []

    def refit(rows: np.ndarray, instances: list[str]) -> dict:
        seen.append((rows.copy(), list(instances)))
        return {}

    x = unit_rows(3)
    store.add(x, [ImageRecord(f"im{i}", "ab"[i % 2], None, None) for i in range(3)], refit=refit)
    (rows, instances), *_ = seen
    assert rows.dtype == np.float32 and instances == ["a", "b", "a"]
    np.testing.assert_array_equal(rows, torch.from_numpy(x).to(torch.bfloat16).float().numpy())
    store.close()
