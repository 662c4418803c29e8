"""InstanceIndex's own answers on indexes filled with descriptors (no network): image ids of
rows, removed rows and padding; what add_descriptors takes and refuses; removal by one id."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyinstance.index import InstanceIndex

from .conftest import DIM, tiny_recipe, unit_rows


def test_image_ids_of_rows_live_removed_and_padding(
    filled: tuple[InstanceIndex, np.ndarray],
) -> None:
    index, _ = filled
    assert index.image_ids() == [f"im{i}" for i in range(60)]
    index.remove(image="im3")
    assert index.image_ids()[:4] == ["im0", "im1", "im2", "im4"]
    assert index.image_ids([3, 0, -1, 59]) == [None, "im0", None, "im59"]
    # any array of row ids, flattened in order (a search's rows are Q × k)
    rows = np.array([[59, 1], [-1, 2]], dtype=np.int64)
    assert index.image_ids(rows) == ["im59", "im1", None, "im2"]
    assert index.image_ids([]) == []
    assert index.image_ids(np.int64(7)) == ["im7"]


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_add_descriptors_takes_tensors_and_checks_the_float32_values(tmp_path) -> None:
    recipe = tiny_recipe()
    with InstanceIndex.create(tmp_path / "ix", recipe) as index:
        x = unit_rows(2)
        assert index.add_descriptors(
            torch.from_numpy(x).double(), ["a", "b"], ["p", "q"], recipe
        ) == [0, 1]
        np.testing.assert_array_equal(index.descriptors(), x)
        big = np.full((1, DIM), 1e39)  # finite in float64, infinite in float32
        with pytest.raises(ValueError, match=r"^descriptors: contains NaN or infinite values$"):
            index.add_descriptors(big, ["a"], ["r"], recipe)
        with pytest.raises(ValueError, match=r"^descriptors: expected an N×D float array"):
            index.add_descriptors(np.ones((1, DIM), np.int64), ["a"], ["r"], recipe)
        with pytest.raises(ValueError, match=r"^image_ids: expected 1 ids \(one per descriptor\)"):
            index.add_descriptors(unit_rows(1), ["a"], ["r", "s"], recipe)
        with pytest.raises(ValueError, match=r"^image_ids: expected non-empty str ids$"):
            index.add_descriptors(unit_rows(1), ["a"], [""], recipe)
        assert len(index) == 2


def test_rows_of_several_scales_are_checked_per_image(tmp_path) -> None:
    recipe = tiny_recipe().with_(
        scales=(1.0, 0.5, 0.25), postprocess={"scale_weights": [0.5, 0.3, 0.2]}
    )
    with InstanceIndex.create(tmp_path / "ix", recipe) as index:
        for bad in (unit_rows(2), np.ones((2, 3, DIM, 1), np.float32)):
            with pytest.raises(ValueError, match=r"^descriptors: expected an N×3×D float array"):
                index.add_descriptors(bad, ["a", "b"], ["p", "q"], recipe)
        with pytest.raises(ValueError, match=r"^descriptors: expected 3 descriptors per image"):
            index.add_descriptors(np.ones((2, 2, DIM), np.float32), ["a", "b"], ["p", "q"], recipe)
        with pytest.raises(
            ValueError, match=r"^descriptors: size 15 does not match the index's D=16"
        ):
            index.add_descriptors(
                np.ones((2, 3, DIM - 1), np.float32), ["a", "b"], ["p", "q"], recipe
            )
        two = recipe.with_(scales=(1.0, 0.5), postprocess={"scale_weights": [0.5, 0.5]})
        with (
            InstanceIndex.create(tmp_path / "two", two) as pairs,
            pytest.raises(ValueError, match=r"^descriptors: expected 2 descriptors per image"),
        ):
            pairs.add_descriptors(np.ones((2, 1, DIM), np.float32), ["a", "b"], ["p", "q"], two)
        x = unit_rows(6).reshape(2, 3, DIM)
        assert index.add_descriptors(x, ["a", "b"], ["p", "q"], recipe) == [0, 1]
        np.testing.assert_array_equal(index.raw_descriptors(), x)


def test_remove_one_image_by_its_id_and_metadata_of_a_non_str_instance(
    filled: tuple[InstanceIndex, np.ndarray],
) -> None:
    index, _ = filled
    assert index.remove(image="im12") == 1
    assert "im12" not in index.image_ids() and len(index) == 59
    for bad in (3, ""):
        with pytest.raises(ValueError, match=r"^metadata: instance ids must be non-empty str"):
            index.set_metadata({bad: {"t": 1}})
    with pytest.raises(ValueError, match=r"^metadata of 'i1': 't' must be a str"):
        index.set_metadata({"i1": {"t": [1]}})


def test_every_commit_that_changes_the_collection_refits_its_state(tmp_path) -> None:
    recipe = tiny_recipe().with_(postprocess={"whiten": {}})
    with InstanceIndex.create(tmp_path / "ix", recipe) as index:
        ids = [f"im{i}" for i in range(40)]
        index.add_descriptors(unit_rows(40), [f"i{i % 8}" for i in range(40)], ids, recipe)
        assert index.info()["fitted"] == {"whitening": 40} == {"whitening": len(index)}
        index.remove(image="im3")  # stamped with the collection it was fitted on
        assert (index.info()["fitted"], index.info()["collection"]) == ({"whitening": 41}, 41)
