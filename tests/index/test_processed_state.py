"""processed.py's learnt state without an index: what ``refit_function`` fits, the separate
whitening's entry, when searches whiten, which stored state a snapshot's post-processing
takes, and the post-processed view of hand-made snapshots, each against the
post-processing steps applied by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pyinstance.index.processed import (
    SCALE_WEIGHTS_KEY,
    WHITENING_KEY,
    WHITENING_SET_KEY,
    ProcessedView,
    StalePostProcessingError,
    _fitted,
    processed_view,
    refit_function,
    search_sets,
    searches_whitened,
    whitening_set_state,
)
from pyinstance.index.store import Snapshot, to_storage
from pyinstance.postprocess import (
    DatabaseAugmentation,
    FittedPostProcessing,
    PCAWhitening,
    ScaleAggregation,
)
from pyinstance.postprocess.pipeline import (
    scale_weights_state,
    state_fitted_on,
    whitening_state,
)

from .conftest import DIM, tiny_recipe, unit_rows

SCALES = (1.0, 0.7, 0.5)
WHITEN = {"whiten": {"dim": 8, "power": 0.5}}
SEPARATE = {"whiten": {"dim": 6, "power": 0.5, "fit_on": "separate"}}
SKIPPED = json.dumps({"skipped": "too few"}).encode()
PATH = "/idx/here"


def _pairs(instances: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Every ordered pair of distinct rows of one instance, by loops."""
    pairs = [
        (i, j)
        for i in range(len(instances))
        for j in range(len(instances))
        if i != j and instances[i] == instances[j]
    ]
    return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def _same_map(got: PCAWhitening, expected: PCAWhitening) -> None:
    probe = unit_rows(5, dim=expected.mean.shape[0], seed=11)
    np.testing.assert_allclose(got.apply(probe), expected.apply(probe), atol=1e-5)
    assert got.projection.shape == expected.projection.shape


def _snapshot(
    stored: np.ndarray,
    slots: list[int],
    *,
    dtype: str = "float32",
    collection: int = 5,
    fitted: dict | None = None,
) -> Snapshot:
    """``stored``: every slot's float32 row (the live ones at ``slots``)."""
    rows = np.array([10 + s for s in slots], dtype=np.int64)
    return Snapshot(
        version=1,
        generation=0,
        descriptors=to_storage(np.ascontiguousarray(stored, dtype=np.float32), dtype),
        slots=np.array(slots, dtype=np.int64),
        rows=rows,
        labels=rows % 2,
        image_ids=tuple(f"im{s}" for s in slots),
        instances=("a", "b"),
        dtype=dtype,
        collection=collection,
        fitted=fitted or {},
    )


# -- refit_function -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("postprocess", "scales"),
    [
        ({}, (1.0,)),
        ({"dba": {"k": 2}, "qe": {"k": 2}}, (1.0,)),
        (SEPARATE, (1.0,)),
        ({"scale_weights": [0.5, 0.3, 0.2]}, SCALES),
    ],
)
def test_nothing_learnt_means_no_refit(postprocess: dict, scales: tuple) -> None:
    assert refit_function(tiny_recipe().with_(postprocess=postprocess, scales=scales)) is None


def test_refit_stores_the_pca_whitening_of_the_rows() -> None:
    recipe = tiny_recipe().with_(postprocess=WHITEN)
    rows = unit_rows(20, seed=1)
    state = refit_function(recipe)(rows, [f"i{i % 4}" for i in range(20)])
    assert set(state) == {WHITENING_KEY}
    got = FittedPostProcessing.from_state(recipe.postprocessing, state[WHITENING_KEY]).whitening
    _same_map(got, PCAWhitening.fit(rows, dim=8, power=0.5))


def test_refit_of_pairs_whitening_uses_each_rows_instance() -> None:
    recipe = tiny_recipe().with_(postprocess={"whiten": {"method": "pairs", "dim": 6}})
    rows = unit_rows(24, seed=2)
    instances = [f"i{(i * 7) % 5}" for i in range(24)]
    state = refit_function(recipe)(rows, instances)
    assert set(state) == {WHITENING_KEY}
    got = FittedPostProcessing.from_state(recipe.postprocessing, state[WHITENING_KEY]).whitening
    query_idx, positive_idx = _pairs(instances)
    _same_map(got, PCAWhitening.fit_pairs(rows, query_idx, positive_idx, dim=6))


def test_refit_of_an_empty_collection_deletes_both_states() -> None:
    recipe = tiny_recipe().with_(postprocess=WHITEN)
    state = refit_function(recipe)(np.empty((0, DIM), np.float32), [])
    assert state == {WHITENING_KEY: None, SCALE_WEIGHTS_KEY: None}


def _learnt_scales(n: int = 16) -> tuple[np.ndarray, list[str], ScaleAggregation]:
    sets = unit_rows(n * 3, seed=4).reshape(n, 3, DIM)
    instances = [f"i{i % 5}" for i in range(n)]
    weights = ScaleAggregation.fit_pairs(sets, *_pairs(instances))
    assert not np.allclose(weights.weights, 1 / 3)
    return sets, instances, weights


def test_refit_learns_scale_weights_then_whitens_the_sums() -> None:
    recipe = tiny_recipe().with_(
        postprocess={"scale_weights": "learnt", "whiten": {"dim": 8}}, scales=SCALES
    )
    sets, instances, weights = _learnt_scales()
    state = refit_function(recipe)(sets.reshape(len(sets), 3 * DIM), instances)
    assert set(state) == {WHITENING_KEY, SCALE_WEIGHTS_KEY}
    assert state[SCALE_WEIGHTS_KEY] == scale_weights_state(weights)
    fitted = FittedPostProcessing.from_state(
        recipe.postprocessing, state[WHITENING_KEY], state[SCALE_WEIGHTS_KEY]
    )
    _same_map(fitted.whitening, PCAWhitening.fit(weights.apply(sets), dim=8))


def test_refit_of_learnt_scale_weights_alone_stores_no_whitening() -> None:
    recipe = tiny_recipe().with_(postprocess={"scale_weights": "learnt"}, scales=SCALES)
    sets, instances, weights = _learnt_scales()
    state = refit_function(recipe)(sets.reshape(len(sets), 3 * DIM), instances)
    assert state == {SCALE_WEIGHTS_KEY: scale_weights_state(weights)}


def test_refit_with_fixed_scale_weights_stores_the_whitening_only() -> None:
    recipe = tiny_recipe().with_(
        postprocess={"scale_weights": [0.5, 0.3, 0.2], "whiten": {"dim": 8}}, scales=SCALES
    )
    sets = unit_rows(12 * 3, seed=6).reshape(12, 3, DIM)
    state = refit_function(recipe)(sets.reshape(12, 3 * DIM), [f"i{i}" for i in range(12)])
    assert set(state) == {WHITENING_KEY}
    summed = ScaleAggregation(np.array([0.5, 0.3, 0.2])).apply(sets)
    got = FittedPostProcessing.from_state(recipe.postprocessing, state[WHITENING_KEY]).whitening
    _same_map(got, PCAWhitening.fit(summed, dim=8))


# -- whitening_set_state --------------------------------------------------------------------


def test_the_separate_whitening_is_stored_with_its_description() -> None:
    recipe = tiny_recipe().with_(postprocess=SEPARATE)
    rows = unit_rows(30, seed=3)
    fitted_on = {"source": "descriptors", "images": 30}
    state = whitening_set_state(recipe, rows, fitted_on)
    assert set(state) == {WHITENING_SET_KEY}
    assert state_fitted_on(state[WHITENING_SET_KEY]) == fitted_on
    got = FittedPostProcessing.from_state(recipe.postprocessing, state[WHITENING_SET_KEY])
    _same_map(got.whitening, PCAWhitening.fit(rows, dim=6, power=0.5))


@pytest.mark.parametrize("postprocess", [{}, WHITEN, {"dba": {"k": 2}}])
def test_a_separate_whitening_needs_a_recipe_that_has_one(postprocess: dict) -> None:
    recipe = tiny_recipe().with_(postprocess=postprocess)
    with pytest.raises(ValueError, match="^whiten_from: the recipe does not whiten with a sep"):
        whitening_set_state(recipe, unit_rows(30), {})
    with pytest.raises(ValueError, match="^my_set: the recipe does not"):
        whitening_set_state(recipe, unit_rows(30), {}, "my_set")


def test_a_separate_whitening_set_is_checked_under_its_name() -> None:
    recipe = tiny_recipe().with_(postprocess=SEPARATE)
    with pytest.raises(ValueError, match="^whiten_from: the whitening set needs at least 7"):
        whitening_set_state(recipe, unit_rows(6), {})
    with pytest.raises(ValueError, match="^my_set: the whitening set needs at least 7"):
        whitening_set_state(recipe, unit_rows(6), {}, "my_set")


# -- searches_whitened ----------------------------------------------------------------------


def _state() -> bytes:
    return whitening_state(PCAWhitening.fit(unit_rows(20), dim=8, power=0.5))


@pytest.mark.parametrize(
    ("postprocess", "fitted", "expected"),
    [
        (WHITEN, {WHITENING_KEY: "state"}, True),
        (WHITEN, {}, False),
        (WHITEN, {WHITENING_KEY: "skipped"}, False),
        (WHITEN, {WHITENING_SET_KEY: "state"}, False),
        (SEPARATE, {WHITENING_SET_KEY: "state"}, True),
        (SEPARATE, {WHITENING_KEY: "state"}, False),
        ({}, {WHITENING_KEY: "state"}, False),
        ({}, {WHITENING_SET_KEY: "state"}, False),
        ({"dba": {"k": 2}}, {}, False),
    ],
)
def test_searches_whiten_only_with_a_stored_whitening(
    postprocess: dict, fitted: dict, expected: bool
) -> None:
    values = {"state": _state(), "skipped": SKIPPED}
    stored = {key: (5, values[value]) for key, value in fitted.items()}
    snapshot = _snapshot(unit_rows(4), [0, 1, 2, 3], fitted=stored)
    assert searches_whitened(tiny_recipe().with_(postprocess=postprocess), snapshot) is expected


# -- _fitted ----------------------------------------------------------------------------------


def test_an_empty_collection_with_learnt_state_has_no_post_processing() -> None:
    snapshot = _snapshot(unit_rows(3), [])
    assert _fitted(tiny_recipe().with_(postprocess=WHITEN), snapshot, PATH) is None


def test_an_empty_collection_without_learnt_state_keeps_its_steps() -> None:
    recipe = tiny_recipe().with_(postprocess={"dba": {"k": 2}})
    fitted = _fitted(recipe, _snapshot(unit_rows(3), []), PATH)
    assert fitted is not None and fitted.config == recipe.postprocessing
    assert fitted.whitening is None and fitted.aggregation is None


def test_the_collections_whitening_is_taken_when_current() -> None:
    recipe = tiny_recipe().with_(postprocess=WHITEN)
    whitening = PCAWhitening.fit(unit_rows(20, seed=5), dim=8, power=0.5)
    snapshot = _snapshot(
        unit_rows(4),
        [0, 1],
        collection=9,
        fitted={
            WHITENING_KEY: (9, whitening_state(whitening)),
            WHITENING_SET_KEY: (9, _state()),
        },
    )
    _same_map(_fitted(recipe, snapshot, PATH).whitening, whitening)


def test_a_missing_or_stale_whitening_is_named_with_the_path() -> None:
    recipe = tiny_recipe().with_(postprocess=WHITEN)
    fix = f"run `pyinstance index refit {PATH}` (or InstanceIndex.refit())"
    with pytest.raises(StalePostProcessingError) as missing:
        _fitted(recipe, _snapshot(unit_rows(4), [0, 1], collection=9), PATH)
    assert str(missing.value) == (
        f"index {PATH!r}: its recipe whitens descriptors but no whitening is stored; {fix}"
    )
    stale = _snapshot(unit_rows(4), [0, 1], collection=9, fitted={WHITENING_KEY: (8, _state())})
    with pytest.raises(StalePostProcessingError, match="fitted on collection version 8, the c"):
        _fitted(recipe, stale, PATH)


def test_the_separate_whitening_is_taken_whatever_the_collection() -> None:
    recipe = tiny_recipe().with_(postprocess=SEPARATE)
    whitening = PCAWhitening.fit(unit_rows(20, seed=5), dim=6, power=0.5)
    snapshot = _snapshot(
        unit_rows(4),
        [0, 1],
        collection=9,
        fitted={WHITENING_SET_KEY: (2, whitening_state(whitening))},
    )
    _same_map(_fitted(recipe, snapshot, PATH).whitening, whitening)
    with pytest.raises(StalePostProcessingError, match=f"index {PATH!r}: its recipe whitens wi"):
        _fitted(
            recipe, _snapshot(unit_rows(4), [0, 1], fitted={WHITENING_KEY: (5, _state())}), PATH
        )


def test_learnt_scale_weights_are_taken_when_current_and_named_when_missing() -> None:
    recipe = tiny_recipe().with_(postprocess={"scale_weights": "learnt"}, scales=SCALES)
    weights = ScaleAggregation(np.array([0.6, 0.1, 0.3]))
    snapshot = _snapshot(
        unit_rows(2 * 3).reshape(2, 3 * DIM),
        [0, 1],
        fitted={SCALE_WEIGHTS_KEY: (5, scale_weights_state(weights))},
    )
    fitted = _fitted(recipe, snapshot, PATH)
    assert fitted.whitening is None
    np.testing.assert_allclose(fitted.aggregation.weights, [0.6, 0.1, 0.3])
    fix = f"run `pyinstance index refit {PATH}` (or InstanceIndex.refit())"
    with pytest.raises(StalePostProcessingError) as missing:
        _fitted(recipe, _snapshot(unit_rows(2 * 3).reshape(2, 3 * DIM), [0, 1]), PATH)
    assert str(missing.value) == (
        f"index {PATH!r}: its recipe learns scale weights but no scale weights is stored; {fix}"
    )


# -- processed_view ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_the_view_whitens_and_augments_the_live_rows_only(dtype: str) -> None:
    recipe = tiny_recipe(dtype=dtype).with_(postprocess={**WHITEN, "dba": {"k": 2}})
    stored = unit_rows(14, seed=7)
    live = [0, 2, 3, 5, 6, 7, 8, 9, 11, 12, 13]
    raw = to_storage(stored, dtype)
    raw_live = (
        raw[live].astype(np.float32)
        if dtype != "bfloat16"
        else (raw[live].astype(np.int64).astype(np.uint32) << 16).view(np.float32)
    )
    whitening = PCAWhitening.fit(raw_live, dim=8, power=0.5)
    snapshot = _snapshot(
        stored, live, dtype=dtype, fitted={WHITENING_KEY: (5, whitening_state(whitening))}
    )
    view = processed_view(recipe, snapshot, PATH)
    expected = DatabaseAugmentation(k=2).apply(whitening.apply(raw_live))
    np.testing.assert_allclose(view.references[:, 0], expected, atol=1e-5)
    assert view.references.shape == (11, 1, 8)
    derived = view.snapshot
    assert derived.descriptors.dtype == np.float32 and derived.dtype == "float32"
    assert derived.descriptors.flags.c_contiguous
    np.testing.assert_array_equal(derived.descriptors, view.references[:, 0])
    np.testing.assert_array_equal(derived.slots, np.arange(11))
    np.testing.assert_array_equal(derived.rows, snapshot.rows)
    np.testing.assert_array_equal(derived.labels, snapshot.labels)
    assert derived.image_ids == snapshot.image_ids and derived.collection == 5
    _same_map(view.fitted.whitening, whitening)


def test_a_multiscale_view_keeps_every_scale_of_every_live_row() -> None:
    recipe = tiny_recipe().with_(
        postprocess={"multiscale": {"reduction": "row_max_sum"}}, scales=SCALES
    )
    stored = unit_rows(5 * 3, seed=8).reshape(5, 3 * DIM)
    view = processed_view(recipe, _snapshot(stored, [1, 2, 4]), PATH)
    np.testing.assert_array_equal(view.references, stored[[1, 2, 4]].reshape(3, 3, DIM))
    np.testing.assert_array_equal(view.snapshot.descriptors, stored[[1, 2, 4]])
    assert view.fitted is not None and view.fitted.whitening is None


def test_weighted_scales_view_sums_the_scales() -> None:
    recipe = tiny_recipe().with_(postprocess={"scale_weights": [0.5, 0.3, 0.2]}, scales=SCALES)
    stored = unit_rows(4 * 3, seed=9).reshape(4, 3 * DIM)
    view = processed_view(recipe, _snapshot(stored, [0, 3]), PATH)
    expected = ScaleAggregation(np.array([0.5, 0.3, 0.2])).apply(stored[[0, 3]].reshape(2, 3, DIM))
    np.testing.assert_allclose(view.references[:, 0], expected, atol=1e-6)
    assert view.references.shape == (2, 1, DIM) and view.snapshot.descriptors.shape == (2, DIM)


@pytest.mark.parametrize("postprocess", [WHITEN, {"dba": {"k": 2}}])
def test_an_empty_view_has_no_rows(postprocess: dict) -> None:
    recipe = tiny_recipe().with_(postprocess=postprocess)
    view = processed_view(recipe, _snapshot(unit_rows(3), []), PATH)
    assert view.references.shape == (0, 1, DIM)
    assert view.snapshot.descriptors.shape == (0, DIM)
    assert view.snapshot.slots.shape == (0,) and view.snapshot.slots.dtype == np.int64
    assert (view.fitted is None) is (postprocess is WHITEN)


def test_a_view_without_post_processing_is_the_raw_live_rows() -> None:
    stored = unit_rows(6, seed=10)
    view = processed_view(tiny_recipe(), _snapshot(stored, [5, 1]), PATH)
    np.testing.assert_array_equal(view.references[:, 0], stored[[5, 1]])
    np.testing.assert_array_equal(view.snapshot.descriptors, stored[[5, 1]])


def test_a_view_of_a_stale_state_names_the_index() -> None:
    recipe = tiny_recipe().with_(postprocess=WHITEN)
    stale = _snapshot(unit_rows(4), [0, 1], collection=9, fitted={WHITENING_KEY: (8, _state())})
    with pytest.raises(StalePostProcessingError, match=f"^index {PATH!r}: the whitening was fi"):
        processed_view(recipe, stale, PATH)


def test_many_tied_references_rank_by_position() -> None:
    # 24 references, three distinct: numpy's default (unstable) sort reorders ties of this
    # many, the stable one keeps them by position
    base = unit_rows(3, seed=12)
    references = base[np.arange(24) % 3][:, None, :]
    view = ProcessedView(_snapshot(references[:, 0], list(range(24))), None, references)
    queries = unit_rows(2, seed=13)[:, None, :]
    found = search_sets(view, queries, 10, None, "max")
    scores = queries[:, 0] @ base.T
    for q in range(2):
        ranked = sorted(range(24), key=lambda p, q=q: (-scores[q, p % 3], p))[:10]
        assert found.rows[q].tolist() == [10 + p for p in ranked]
