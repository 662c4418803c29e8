"""InstanceIndex's life cycle and reading answers: what open/create/pinned pass on
(timeout, device, engine, describer, processed view), automatic compaction, refit,
settings, info, repr and searches (no network: a fake describer where one is built)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

import pyinstance.index.instance_index as instance_index_module
from pyinstance.index import InstanceIndex
from pyinstance.index.processed import StalePostProcessingError
from pyinstance.index.store import ImageRecord
from pyinstance.index.thresholds import record_key

from .conftest import DIM, tiny_recipe, unit_rows
from .test_instance_index_describe import FakeDescriber, fake  # noqa: F401 (fixture)


def test_open_and_create_pass_timeout_device_and_engine_on(tmp_path: Path, fake) -> None:  # noqa: F811
    created = InstanceIndex.create(tmp_path / "ix", tiny_recipe(), device="cuda:7")
    assert created._store.timeout == 30.0
    assert created.describer is fake[0] and (fake[0].device, fake[0].engine) == ("cuda:7", "torch")
    assert created.describer is fake[0] and len(fake) == 1  # built once
    created.close()
    with InstanceIndex.open(tmp_path / "ix") as index:
        assert index._store.timeout == 30.0
        assert (index.describer.device, index.describer.engine) == (None, "torch")
    with InstanceIndex.open(tmp_path / "ix", timeout=2.5, device="cpu", engine="openvino") as index:
        assert index._store.timeout == 2.5
        assert (index.describer.device, index.describer.engine) == ("cpu", "openvino")
        assert index.pinned().describer is index.describer
    with InstanceIndex.open(tmp_path / "ix", device="meta") as index:
        view = index.pinned()  # no describer built yet: the view builds its own, on the device
        assert view.describer.device == "meta" and view.describer is not None
        assert index._describer is None
    with InstanceIndex.create(tmp_path / "other", tiny_recipe(), timeout=2.5) as index:
        assert index._store.timeout == 2.5
    with pytest.raises(TypeError, match=r"^use InstanceIndex.open\(path\)"):
        InstanceIndex(tmp_path / "ix")


def test_a_pinned_view_shares_the_processed_view(tmp_path: Path, monkeypatch) -> None:
    recipe = tiny_recipe().with_(postprocess={"whiten": {"dim": 8}})
    made = []
    real = instance_index_module.processed_view

    def counted(*args):
        made.append(args)
        return real(*args)

    monkeypatch.setattr(instance_index_module, "processed_view", counted)
    with InstanceIndex.create(tmp_path / "ix", recipe) as index:
        index.add_descriptors(
            unit_rows(20), [f"i{i % 4}" for i in range(20)], [str(i) for i in range(20)], recipe
        )
        expected = index.descriptors()
        assert len(made) == 1 and index.descriptors().shape == (20, 8) and len(made) == 1
        np.testing.assert_array_equal(index.pinned().descriptors(), expected)
        assert len(made) == 1  # the same snapshot: not processed again
        assert made[0][2] == str(index.path)


def test_refit_repairs_a_change_made_without_it(tmp_path: Path) -> None:
    recipe = tiny_recipe().with_(postprocess={"whiten": {}})
    with InstanceIndex.create(tmp_path / "ix", recipe) as index:
        index.add_descriptors(unit_rows(20), ["a", "b"] * 10, [str(i) for i in range(20)], recipe)
        index._store.add(unit_rows(1, seed=4), [ImageRecord("raw", "a", None, None)])
        with pytest.raises(StalePostProcessingError):
            index.search(unit_rows(1), 1)
        assert index.refit() is True
        assert (
            index.info()["fitted"] == {"whitening": 21}
            and len(index.search(unit_rows(1), 1).rows) == 1
        )
    plain = tiny_recipe()
    with InstanceIndex.create(tmp_path / "plain", plain) as index:
        index.add_descriptors(unit_rows(3), ["a"] * 3, ["x", "y", "z"], plain)
        assert index.refit() is False and index.info()["fitted"] == {}


def test_settings_repr_and_info(filled: tuple[InstanceIndex, np.ndarray]) -> None:
    index, _ = filled
    assert repr(index) == f"InstanceIndex({str(index.path)!r}, 60 images, 6 instances)"
    index.set_settings({"a": 1, "b": "x"})
    index.set_setting("c", [1, 2])
    assert (index.get_setting("a"), index.get_setting("b"), index.get_setting("c")) == (
        1,
        "x",
        [1, 2],
    )
    index.set_settings({"a": None})
    assert index.get_setting("a") is None and index.get_setting("a", 5) == 5
    index.remove(image=["im0", "im1"])
    index.set_metadata({"i3": {"title": "T"}})
    before = time.time()
    info = index.info()
    assert before - 600 < info["created"] <= before and isinstance(info["created"], float)
    del info["created"]
    size = sum(p.stat().st_size for p in index.path.iterdir() if p.is_file())
    assert info == {
        "path": str(index.path),
        "images": 58,
        "instances": 6,
        "version": 1,
        "pyinstance_version": index.recipe.pyinstance_version,
        "recipe": tiny_recipe().to_dict(),
        "dim": DIM,
        "dtype": "float32",
        "removed_rows": 2,
        "generation": 0,
        "settings": {"b": "x", "c": [1, 2]},
        "postprocess": {},
        "fitted": {},
        "whitening_set": None,
        "whitening_skipped": None,
        "collection": 62,
        "stale_thresholds": {},
        "metadata_changes": 1,
        "size_on_disk": size,
    }
    index.compact()
    assert (index.info()["generation"], index.info()["removed_rows"]) == (1, 0)


def test_info_of_a_skipped_whitening_and_a_stale_threshold(tmp_path: Path) -> None:
    recipe = tiny_recipe().with_(postprocess={"whiten": {"min_references": 5}})
    with InstanceIndex.create(tmp_path / "ix", recipe) as index:
        index.add_descriptors(unit_rows(4), ["a", "a", "b", "b"], list("wxyz"), recipe)
        index.set_settings(
            {
                "objects_threshold": 0.5,
                record_key("objects_threshold"): {"whitened": True, "references": 9},
            }
        )
        info = index.info()
        assert info["version"] == 2 and info["fitted"] == {"whitening": 4}
        assert (
            info["postprocess"] == recipe.postprocess
            and info["postprocess"]["whiten"]["min_references"] == 5
        )
        assert info["whitening_skipped"].startswith(
            "whitening skipped: the collection holds 4 reference"
        )
        assert list(info["stale_thresholds"]) == ["objects_threshold"]
        assert info["stale_thresholds"]["objects_threshold"].startswith(
            "the index's objects threshold was calibrated on whitened descriptors (9 references)"
        )


def test_search_of_raw_descriptors_is_the_exact_inner_product_ranking(
    filled: tuple[InstanceIndex, np.ndarray],
) -> None:
    index, x = filled
    queries = unit_rows(4, seed=11)
    scores = queries @ x.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :3]
    found = index.search(queries, 3)
    np.testing.assert_array_equal(found.rows, order)
    np.testing.assert_allclose(found.scores, np.take_along_axis(scores, order, 1), atol=1e-5)
    left_out = index.search(x[:2], 1, exclude=[0, -1])
    assert left_out.rows[:, 0].tolist()[1] == 1 and left_out.rows[0, 0] != 0
    np.testing.assert_array_equal(index.descriptors(), x)
    np.testing.assert_array_equal(index.raw_descriptors(), x)
    assert index.postprocess_queries(queries).shape in {(4, DIM), (4, 1, DIM)}


def test_describe_and_search_images_post_process_the_queries(tmp_path: Path, fake) -> None:  # noqa: F811
    recipe = tiny_recipe().with_(postprocess={"whiten": {"dim": 8}})
    with InstanceIndex.create(tmp_path / "ix", recipe) as index:
        with pytest.raises(ValueError, match=r"holds no references to fit the post-processing on$"):
            index.postprocess_queries(unit_rows(1))
        index.add_descriptors(unit_rows(20), ["a", "b"] * 10, [str(i) for i in range(20)], recipe)
        images = [b"q1", b"q2"]
        described = index.describe_queries(images)
        expected = index.postprocess_queries(FakeDescriber(recipe).queries(images))
        assert described.shape == (2, 1, 8)
        np.testing.assert_allclose(described, expected, atol=1e-6)
        found = index.search_images(images, 2)
        direct = index.search(expected, 2)
        np.testing.assert_array_equal(found.rows, direct.rows)
        assert found.rows.shape == (2, 2)


def test_a_post_processed_search_leaves_out_the_excluded_rows(tmp_path: Path) -> None:
    recipe = tiny_recipe().with_(postprocess={"whiten": {"dim": 8}})
    with InstanceIndex.create(tmp_path / "ix", recipe) as index:
        x = unit_rows(20)
        index.add_descriptors(x, ["a", "b"] * 10, [str(i) for i in range(20)], recipe)
        queries = index.postprocess_queries(x[:3])
        assert index.search(queries, 1).rows[:, 0].tolist() == [0, 1, 2]
        found = index.search(queries, 1, exclude=[0, 1, -1])
        assert (
            found.rows[:, 0].tolist()[2] == 2 and 0 not in found.rows[0] and 1 not in found.rows[1]
        )


def test_raw_descriptors_stored_as_bfloat16_read_back_as_float32(tmp_path: Path) -> None:
    recipe = tiny_recipe("bfloat16")
    with InstanceIndex.create(tmp_path / "ix", recipe) as index:
        x = unit_rows(5)
        index.add_descriptors(x, list("aabbc"), list("vwxyz"), recipe)
        raw = index.raw_descriptors()
        assert raw.dtype == np.float32 and raw.shape == (5, DIM)
        np.testing.assert_allclose(raw, x, rtol=2**-8, atol=0)


def test_descriptors_of_stored_scales_are_their_normalised_mean(tmp_path: Path) -> None:
    recipe = tiny_recipe().with_(
        scales=(1.0, 0.5), postprocess={"multiscale": {"reduction": "row_max_sum"}}
    )
    with InstanceIndex.create(tmp_path / "ix", recipe) as index:
        x = unit_rows(12).reshape(6, 2, DIM)
        index.add_descriptors(x, list("aabbcc"), list("uvwxyz"), recipe)
        mean = x.mean(axis=1)
        expected = mean / np.linalg.norm(mean, axis=1, keepdims=True)
        got = index.descriptors()
        assert got.shape == (6, DIM)
        np.testing.assert_allclose(got, expected, atol=1e-6)
        np.testing.assert_array_equal(index.raw_descriptors(), x)


def test_descriptors_are_the_stored_rows_while_the_whitening_is_skipped(tmp_path: Path) -> None:
    recipe = tiny_recipe().with_(postprocess={"whiten": {"min_references": 5}})
    with InstanceIndex.create(tmp_path / "ix", recipe) as index:
        x = 3 * unit_rows(3)  # not unit vectors: returned as stored, not re-normalised
        index.add_descriptors(x, list("aab"), list("xyz"), recipe)
        assert index.whitened is False
        np.testing.assert_array_equal(index.descriptors(), x)
