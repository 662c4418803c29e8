"""Post-processing inside the index: stored, refitted in each commit, applied on every path."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from pyinstance.index import InstanceIndex, Recipe
from pyinstance.index.processed import StalePostProcessingError
from pyinstance.index.store import ImageRecord
from pyinstance.ops import knn_dot
from pyinstance.postprocess import (
    DatabaseAugmentation,
    PCAWhitening,
    QueryExpansion,
    ScaleAggregation,
    multiscale_scores,
)
from tests.index.conftest import DIM, tiny_recipe, unit_rows

WHITEN_DBA_QE = {"whiten": {"dim": 8, "power": 0.5}, "dba": {"k": 2}, "qe": {"k": 3, "alpha": 3.0}}


def make(tmp_path: Path, postprocess: dict, n: int = 40, **fields) -> tuple[InstanceIndex, Recipe]:
    recipe = tiny_recipe().with_(postprocess=postprocess, **fields)
    index = InstanceIndex.create(tmp_path / "index", recipe)
    per_image = recipe.descriptors_per_image
    x = unit_rows(n * per_image).reshape(n, per_image, DIM)
    index.add_descriptors(
        x if per_image > 1 else x[:, 0],
        [f"i{i % 8}" for i in range(n)],
        [f"im{i}" for i in range(n)],
        recipe,
    )
    return index, recipe


def oracle(raw: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """WHITEN_DBA_QE applied step by step with the post-processing functions."""
    whitening = PCAWhitening.fit(raw, dim=8, power=0.5)
    references = DatabaseAugmentation(k=2).apply(whitening.apply(raw))
    expanded = QueryExpansion(k=3, alpha=3.0).apply(whitening.apply(queries), references)
    return references, expanded


def test_search_applies_whitening_dba_and_qe_as_the_functions_do(tmp_path: Path) -> None:
    index, _ = make(tmp_path, WHITEN_DBA_QE)
    raw = index.raw_descriptors()
    queries = unit_rows(5, seed=7)
    references, expanded = oracle(raw, queries)
    np.testing.assert_allclose(index.descriptors(), references, atol=1e-5)
    processed = index.postprocess_queries(queries)
    assert processed.shape == (5, 1, 8)
    np.testing.assert_allclose(processed[:, 0], expanded, atol=1e-5)
    scores, positions = knn_dot(expanded, references, 4)
    found = index.search(processed, 4)
    np.testing.assert_array_equal(found.rows, index.rows()[positions])
    np.testing.assert_allclose(found.scores, scores, atol=1e-5)
    index.close()


def test_every_change_refits_in_its_commit(tmp_path: Path) -> None:
    index, recipe = make(tmp_path, WHITEN_DBA_QE)
    assert index.info()["fitted"] == {"whitening": index.info()["collection"]}
    before = index.descriptors()
    index.add_descriptors(unit_rows(6, seed=3), ["new"] * 6, [f"n{i}" for i in range(6)], recipe)
    index.remove(image=["im0", "im1"])
    info = index.info()
    assert info["fitted"] == {"whitening": info["collection"]} and info["images"] == 44
    references, _ = oracle(index.raw_descriptors(), unit_rows(1))
    np.testing.assert_allclose(index.descriptors(), references, atol=1e-5)
    assert index.descriptors().shape == before.shape[:0] + (44, 8)
    reopened = InstanceIndex.open(index.path)
    np.testing.assert_allclose(reopened.descriptors(), references, atol=1e-5)
    reopened.close()
    index.close()


def test_a_change_without_refit_is_refused_until_refit(tmp_path: Path) -> None:
    index, _ = make(tmp_path, WHITEN_DBA_QE)
    other = InstanceIndex.open(index.path)
    other._store.add(unit_rows(1, seed=9), [ImageRecord("raw", "i0", None, None)])  # no refit
    other.close()
    with pytest.raises(StalePostProcessingError, match="fitted on collection version 40.*41"):
        index.search(unit_rows(1)[:, None, :], 3)
    with pytest.raises(StalePostProcessingError, match="index refit"):
        index.descriptors()
    assert index.refit() is True
    assert index.info()["fitted"] == {"whitening": 41}
    assert index.search(index.postprocess_queries(unit_rows(1)), 3).rows.shape == (1, 3)
    index.close()


def test_missing_state_is_refused(tmp_path: Path) -> None:
    index, _ = make(tmp_path, WHITEN_DBA_QE)
    with sqlite3.connect(index.path / "index.sqlite") as db:
        db.execute("DELETE FROM fitted")
    with pytest.raises(StalePostProcessingError, match="no whitening is stored"):
        InstanceIndex.open(index.path).descriptors()
    index.close()


def test_a_commit_whose_refit_fails_changes_nothing(tmp_path: Path) -> None:
    index, _ = make(tmp_path, {"whiten": {}}, n=2)
    with pytest.raises(ValueError, match="whitening: needs at least 2"):
        index.remove(image="im0")
    assert len(index) == 2 and index.info()["fitted"] == {"whitening": 2}
    assert index.remove(image=["im0", "im1"]) == 2  # an empty collection needs no state
    assert index.info()["fitted"] == {} and index.search(unit_rows(1), 2).rows.tolist() == [
        [-1, -1]
    ]
    with pytest.raises(ValueError, match="no references to fit"):
        index.postprocess_queries(unit_rows(1))
    index.close()


def test_format_version_two_only_with_postprocessing(tmp_path: Path) -> None:
    plain = InstanceIndex.create(tmp_path / "plain", tiny_recipe())
    processed, _ = make(tmp_path, {"dba": {"k": 1}})
    assert (plain.info()["version"], processed.info()["version"]) == (1, 2)
    assert processed.refit() is False  # DBA learns nothing: nothing stored
    assert processed.info()["fitted"] == {}
    plain.close()
    processed.close()


def test_pinned_view_and_pairs_whitening(tmp_path: Path) -> None:
    index, _ = make(tmp_path, {"whiten": {"method": "pairs"}})
    raw = index.raw_descriptors()
    labels = index.labels()
    pairs = np.array(
        [(i, j) for i in range(40) for j in range(40) if i != j and labels[i] == labels[j]]
    )
    expected = PCAWhitening.fit_pairs(raw, pairs[:, 0], pairs[:, 1]).apply(raw)
    got = index.descriptors()  # equal up to the sign of each principal direction:
    np.testing.assert_allclose(got @ got.T, expected @ expected.T, atol=1e-4)
    view = index.pinned()
    index.remove(instance="i0")
    assert len(view.descriptors()) == 40 and len(index.descriptors()) == 35
    view.close()
    index.close()


@pytest.mark.parametrize("reduction", ["max", "row_max_sum", "col_max_squared_sum"])
def test_similarity_matrix_scoring_over_stored_scales(tmp_path: Path, reduction: str) -> None:
    index, recipe = make(
        tmp_path, {"multiscale": {"reduction": reduction}}, n=12, scales=(1.0, 0.7, 0.5)
    )
    assert index.raw_descriptors().shape == (12, 3, DIM)
    queries = unit_rows(8, seed=4).reshape(4, 2, DIM)
    expected = multiscale_scores(queries, index.raw_descriptors(), reduction)
    expected /= {"row": 2, "col": 3}.get(reduction[:3], 1)  # sums become means
    found = index.search(index.postprocess_queries(queries), 20, exclude=[-1, 0, 5, -1])
    for q in range(4):
        scores = expected[q].copy()
        if q in (1, 2):
            scores[[0, 5][q - 1]] = -np.inf
        order = np.argsort(-scores, kind="stable")
        kept = order[np.isfinite(scores[order])]
        np.testing.assert_array_equal(found.rows[q, : kept.size], index.rows()[kept])
        np.testing.assert_allclose(found.scores[q, : kept.size], scores[kept], rtol=1e-5)
        assert (found.rows[q, kept.size :] == -1).all()
    with pytest.raises(ValueError, match="expected 3 descriptors per image"):
        index.add_descriptors(unit_rows(4).reshape(2, 2, DIM), ["a", "b"], ["x", "y"], recipe)
    with pytest.raises(ValueError, match="exclude: row id"):
        index.search(queries, 2, exclude=[99, -1, -1, -1])
    index.close()


def test_whitened_multiscale_sets(tmp_path: Path) -> None:
    index, _ = make(
        tmp_path,
        {"whiten": {"dim": 6}, "multiscale": {"reduction": "row_max_sum"}},
        n=12,
        scales=(1.0, 0.5),
    )
    raw = index.raw_descriptors()
    whitening = PCAWhitening.fit(raw.reshape(-1, DIM), dim=6)
    queries = unit_rows(6, seed=2).reshape(3, 2, DIM)
    white = whitening.apply(queries.reshape(-1, DIM)).reshape(3, 2, 6)
    np.testing.assert_allclose(index.postprocess_queries(queries), white, atol=1e-5)
    refs = whitening.apply(raw.reshape(-1, DIM)).reshape(12, 2, 6)
    best = multiscale_scores(white, refs, "row_max_sum").argmax(axis=1)
    assert index.search(white, 1).rows[:, 0].tolist() == index.rows()[best].tolist()
    assert index.descriptors().shape == (12, 6)
    index.close()


def test_an_index_of_the_first_format_is_read_as_before(tmp_path: Path) -> None:
    recipe = tiny_recipe()
    index = InstanceIndex.create(tmp_path / "old", recipe)
    index.close()
    with sqlite3.connect(tmp_path / "old" / "index.sqlite") as db:
        db.execute("DROP TABLE fitted")  # as version 1 wrote it
    with InstanceIndex.open(tmp_path / "old") as old:
        old.add_descriptors(unit_rows(3), ["a", "b", "c"], ["x", "y", "z"], recipe)
        assert old.info()["fitted"] == {} and old.info()["version"] == 1
        np.testing.assert_array_equal(old.descriptors(), unit_rows(3))
        assert old.search(unit_rows(3), 1).rows[:, 0].tolist() == [0, 1, 2]


SEPARATE = {"whiten": {"dim": 6, "power": 0.5, "fit_on": "separate"}}


def test_whitening_from_a_separate_set_is_fitted_once_and_kept(tmp_path: Path) -> None:
    recipe = tiny_recipe().with_(postprocess=SEPARATE)
    whitening_set = unit_rows(30, seed=3)
    index = InstanceIndex.create(tmp_path / "index", recipe, whitening_set=whitening_set)
    expected = PCAWhitening.fit(whitening_set, dim=6, power=0.5)
    index.add_descriptors(
        unit_rows(12), [f"i{i % 4}" for i in range(12)], [f"im{i}" for i in range(12)], recipe
    )
    stored = index.info()["fitted"]["whitening_set"]
    index.add_descriptors(unit_rows(3, seed=5), ["i9"] * 3, ["a", "b", "c"], recipe)
    index.remove(instance="i0")
    assert index.refit() is False  # nothing learnt from the collection: the set's state stays
    info = index.info()
    assert info["fitted"] == {"whitening_set": stored}
    assert info["whitening_set"] == {"source": "descriptors", "images": 30}
    np.testing.assert_allclose(
        index.descriptors(), expected.apply(index.raw_descriptors()), atol=1e-5
    )
    queries = unit_rows(2, seed=8)
    np.testing.assert_allclose(
        index.postprocess_queries(queries)[:, 0], expected.apply(queries), atol=1e-5
    )
    index.close()
    with InstanceIndex.open(tmp_path / "index") as reopened:
        np.testing.assert_allclose(
            reopened.descriptors(), expected.apply(reopened.raw_descriptors()), atol=1e-5
        )


def test_whitening_set_is_checked(tmp_path: Path) -> None:
    separate = tiny_recipe().with_(postprocess=SEPARATE)
    for recipe, rows, message in (
        (separate, None, "whitening_set: expected a whitening set exactly when"),
        (tiny_recipe().with_(postprocess={"whiten": {}}), unit_rows(9), "exactly when"),
        (separate, unit_rows(6), "whitening_set: the whitening set needs at least 7 images"),
        (separate, unit_rows(1), "whitening_set: the whitening set needs at least 2 images"),
        (separate, np.ones((9, DIM + 1), np.float32), "descriptors of size"),
        (separate, np.full((9, DIM), np.nan, np.float32), "whitening_set: contains NaN"),
    ):
        with pytest.raises(ValueError, match=message):
            InstanceIndex.create(tmp_path / "bad", recipe, whitening_set=rows)
        assert not (tmp_path / "bad").exists()
    with pytest.raises(ValueError, match="fit_on: a whitening fitted on a separate set takes"):
        Recipe.from_dict(
            {
                **tiny_recipe().to_dict(),
                "postprocess": {"whiten": {"method": "pairs", "fit_on": "separate"}},
            }
        )


def test_a_separate_whitening_state_that_does_not_match_is_refused(tmp_path: Path) -> None:
    recipe = tiny_recipe().with_(postprocess=SEPARATE)
    index = InstanceIndex.create(tmp_path / "index", recipe, whitening_set=unit_rows(20))
    index.add_descriptors(unit_rows(4), ["a", "a", "b", "b"], ["1", "2", "3", "4"], recipe)
    other = tiny_recipe().with_(
        postprocess={"whiten": {"dim": 6, "power": 1.0, "fit_on": "separate"}}
    )
    wrong = InstanceIndex.create(tmp_path / "other", other, whitening_set=unit_rows(20))
    with sqlite3.connect(wrong.path / "index.sqlite") as db:
        (state,) = db.execute("SELECT value FROM fitted").fetchone()
    wrong.close()
    with sqlite3.connect(index.path / "index.sqlite") as db:
        db.execute("UPDATE fitted SET value = ?", (state,))
    with pytest.raises(ValueError, match="is not the recipe's"):
        InstanceIndex.open(index.path).descriptors()
    with sqlite3.connect(index.path / "index.sqlite") as db:
        db.execute("DELETE FROM fitted")
    with pytest.raises(StalePostProcessingError, match="none is stored"):
        InstanceIndex.open(index.path).search(unit_rows(1), 2)
    index.close()


SCALES = (1.0, 0.7, 0.5)


def test_fixed_scale_weights_sum_the_stored_scales(tmp_path: Path) -> None:
    index, _ = make(tmp_path, {"scale_weights": [0.5, 0.3, 0.2]}, n=12, scales=SCALES)
    raw = index.raw_descriptors()
    assert raw.shape == (12, 3, DIM) and index.info()["fitted"] == {}
    weighted = ScaleAggregation(np.array([0.5, 0.3, 0.2]))
    np.testing.assert_allclose(index.descriptors(), weighted.apply(raw), atol=1e-5)
    queries = unit_rows(6, seed=4).reshape(2, 3, DIM)
    processed = index.postprocess_queries(queries)
    np.testing.assert_allclose(processed[:, 0], weighted.apply(queries), atol=1e-5)
    assert not np.allclose(processed[:, 0], ScaleAggregation(np.ones(3)).apply(queries))
    assert index.refit() is False
    index.close()


def test_learnt_scale_weights_are_refitted_with_the_collection(tmp_path: Path) -> None:
    postprocess = {"scale_weights": "learnt", "whiten": {"dim": 8}}
    index, _ = make(tmp_path, postprocess, n=16, scales=SCALES)
    assert index.info()["fitted"] == {"scale_weights": 16, "whitening": 16}

    def expected() -> np.ndarray:
        raw = index.raw_descriptors()
        instances = [index.instances[label] for label in index.labels()]
        query_idx, positive_idx = zip(
            *[
                (i, j)
                for i in range(len(raw))
                for j in range(len(raw))
                if i != j and instances[i] == instances[j]
            ],
            strict=True,
        )
        weights = ScaleAggregation.fit_pairs(raw, np.array(query_idx), np.array(positive_idx))
        assert not np.allclose(weights.weights, 1 / 3)  # learnt, not the scales' mean
        summed = weights.apply(raw)
        return PCAWhitening.fit(summed, dim=8).apply(summed)

    np.testing.assert_allclose(index.descriptors(), expected(), atol=1e-5)
    index.remove(image=["im0", "im1", "im2"])
    assert index.info()["fitted"] == {"scale_weights": 19, "whitening": 19}
    np.testing.assert_allclose(index.descriptors(), expected(), atol=1e-5)
    other = InstanceIndex.open(index.path)
    other._store.add(
        unit_rows(3, seed=9).reshape(1, 3 * DIM), [ImageRecord("raw", "i0", None, None)]
    )
    other.close()
    with pytest.raises(StalePostProcessingError, match="fitted on collection version 19"):
        index.descriptors()
    assert index.refit() is True
    np.testing.assert_allclose(index.descriptors(), expected(), atol=1e-5)
    with pytest.raises(
        ValueError, match="scale_weights: 'learnt' needs an instance with at least 2"
    ):
        index.remove(image=[f"im{i}" for i in range(3, 16) if i not in (3, 4, 5, 6)])
    index.close()


def test_scale_weights_are_checked() -> None:
    for postprocess, scales, message in (
        ({"scale_weights": [1.0, 2.0]}, SCALES, "one weight per scale"),
        ({"scale_weights": "learnt"}, (1.0,), "at least 2 scales"),
        ({"scale_weights": "best"}, SCALES, "scale_weights: expected a list of weights"),
        ({"scale_weights": [1.0, -1.0, 0.0]}, SCALES, "non-negative"),
        ({"scale_weights": [1, "a", 2]}, SCALES, "scale_weights: expected numbers"),
        (
            {"scale_weights": [1, 1, 1], "multiscale": {"reduction": "max"}},
            SCALES,
            "cannot be combined with multiscale",
        ),
    ):
        with pytest.raises(ValueError, match=message):
            tiny_recipe().with_(postprocess=postprocess, scales=scales)


def test_a_whitening_set_with_learnt_scale_weights(tmp_path: Path) -> None:
    postprocess = {**SEPARATE, "scale_weights": "learnt"}
    recipe = tiny_recipe().with_(postprocess=postprocess, scales=SCALES)
    whitening_set = unit_rows(30, seed=3).reshape(10, 3, DIM)
    index = InstanceIndex.create(tmp_path / "index", recipe, whitening_set=whitening_set)
    rows = unit_rows(36, seed=1).reshape(12, 3, DIM)
    index.add_descriptors(
        rows, [f"i{i % 4}" for i in range(12)], [f"im{i}" for i in range(12)], recipe
    )
    assert index.info()["fitted"] == {"whitening_set": 0, "scale_weights": 12}
    assert index.info()["whitening_set"] == {"source": "descriptors", "images": 10}
    index.remove(image="im0")
    assert index.info()["fitted"] == {"whitening_set": 0, "scale_weights": 13}
    expected = PCAWhitening.fit(whitening_set.reshape(30, DIM), dim=6, power=0.5)
    with sqlite3.connect(index.path / "index.sqlite") as db:
        (weights,) = db.execute("SELECT value FROM fitted WHERE key = 'scale_weights'").fetchone()
    summed = ScaleAggregation.from_dict(json.loads(weights)).apply(index.raw_descriptors())
    np.testing.assert_allclose(index.descriptors(), expected.apply(summed), atol=1e-5)
    index.close()
    with pytest.raises(ValueError, match="whiten_from: the recipe's post-processing has no"):
        InstanceIndex.build(tmp_path / "x", tmp_path, tiny_recipe(), whiten_from=tmp_path)


def test_whitening_starts_when_the_collection_reaches_min_references(tmp_path: Path) -> None:
    index, recipe = make(tmp_path, {"whiten": {"min_references": 10}}, n=8)
    info = index.info()
    assert info["whitening_skipped"].startswith("whitening skipped: the collection holds 8")
    assert info["fitted"] == {"whitening": info["collection"]}  # the reason, stored as state
    np.testing.assert_allclose(index.descriptors(), index.raw_descriptors(), atol=1e-6)
    queries = unit_rows(2, seed=5)
    np.testing.assert_allclose(index.postprocess_queries(queries)[:, 0], queries, atol=1e-6)
    # the commit that brings the collection to 10 references fits the whitening
    index.add_descriptors(unit_rows(2, seed=4), ["i0", "i1"], ["n0", "n1"], recipe)
    assert index.info()["whitening_skipped"] is None
    whitening = PCAWhitening.fit(index.raw_descriptors())
    np.testing.assert_allclose(
        index.descriptors(), whitening.apply(index.raw_descriptors()), atol=1e-5
    )
    assert index.descriptors().shape == (10, 9)
    # and the removal that takes it below stops it; a reopened index reads the same state
    index.remove(image="n0")
    index.close()
    with InstanceIndex.open(tmp_path / "index") as reopened:
        assert reopened.info()["whitening_skipped"].startswith(
            "whitening skipped: the collection holds 9"
        )
        assert reopened.descriptors().shape == (9, DIM)
