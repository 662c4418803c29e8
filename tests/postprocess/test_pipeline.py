"""PostProcessConfig / FittedPostProcessing: parsing, fitting, both sides, stored state."""

from __future__ import annotations

import numpy as np
import pytest

from pyinstance.postprocess import (
    DatabaseAugmentation,
    FittedPostProcessing,
    PCAWhitening,
    PostProcessConfig,
    QueryExpansion,
)
from pyinstance.postprocess.pipeline import scale_weights_state, whitening_skipped

from .conftest import unit_sets


def test_round_trip_and_defaults() -> None:
    data = {"whiten": {"dim": 4}, "qe": {"k": 2, "alpha": 3.0}}
    config = PostProcessConfig.from_dict(data)
    assert config.to_dict() == {
        "whiten": {"dim": 4, "power": 1.0, "ridge": 0.0, "method": "pca"},
        "qe": {"k": 2, "alpha": 3.0},
    }
    assert PostProcessConfig.from_dict(config.to_dict()) == config
    assert config.learnt and bool(config)
    empty = PostProcessConfig.from_dict({})
    assert not empty and not empty.learnt and empty.to_dict() == {}


def test_whiten_dba_qe_match_the_steps() -> None:
    config = PostProcessConfig.from_dict(
        {"whiten": {"dim": 6, "ridge": 0.1}, "dba": {"k": 2, "alpha": 1.0}, "qe": {"k": 3}}
    )
    refs, queries = unit_sets(30), unit_sets(4, 2, seed=1)
    fitted = config.fit(refs, [f"i{i}" for i in range(30)])
    whitening = PCAWhitening.fit(refs[:, 0], dim=6, ridge=0.1)
    expected_refs = DatabaseAugmentation(2, 1.0).apply(whitening.apply(refs[:, 0]))
    got_refs = fitted.references(refs)
    np.testing.assert_allclose(got_refs[:, 0], expected_refs, atol=1e-5)
    flat = whitening.apply(queries.reshape(8, 12))
    expected = QueryExpansion(3).apply(flat, expected_refs).reshape(4, 2, 6)
    np.testing.assert_allclose(fitted.queries(queries, got_refs), expected, atol=1e-5)


def test_small_collections_cut_dim_and_k() -> None:
    config = PostProcessConfig.from_dict({"whiten": {"dim": 50}, "dba": {"k": 5}, "qe": {"k": 9}})
    refs = unit_sets(4)
    fitted = config.fit(refs, ["a", "b", "c", "d"])
    assert fitted.whitening.out_dim == 3  # N - 1
    out = fitted.references(refs)
    expected = DatabaseAugmentation(3).apply(fitted.whitening.apply(refs[:, 0]))
    np.testing.assert_allclose(out[:, 0], expected, atol=1e-5)
    assert fitted.queries(unit_sets(2), out).shape == (2, 1, 3)
    with pytest.raises(ValueError, match="at least 2 reference descriptors"):
        config.fit(unit_sets(1), ["a"])


def test_pairs_whitening_needs_an_instance_with_two_descriptors() -> None:
    config = PostProcessConfig.from_dict({"whiten": {"method": "pairs"}})
    with pytest.raises(ValueError, match="method 'pairs' needs an instance"):
        config.fit(unit_sets(5), list("abcde"))
    fitted = config.fit(unit_sets(6), list("aabbcc"))
    assert fitted.whitening.method == "pairs" and fitted.whitening.out_dim == 12
    with pytest.raises(ValueError, match="takes no power or ridge"):
        PostProcessConfig.from_dict({"whiten": {"method": "pairs", "power": 0.5}})


def test_multiscale_sets_are_whitened_row_by_row() -> None:
    config = PostProcessConfig.from_dict({"whiten": {}, "multiscale": {"reduction": "max"}})
    refs = unit_sets(8, 3)
    fitted = config.fit(refs, list("abcdefgh"))
    whitening = PCAWhitening.fit(refs.reshape(24, 12))
    got = fitted.references(refs)
    np.testing.assert_allclose(
        got, whitening.apply(refs.reshape(24, 12)).reshape(8, 3, 12), atol=1e-5
    )


def test_state_round_trip_and_damage() -> None:
    config = PostProcessConfig.from_dict({"whiten": {"dim": 5, "power": 0.5}})
    fitted = config.fit(unit_sets(20), ["x"] * 20)
    state = fitted.state_bytes()
    again = FittedPostProcessing.from_state(config, state)
    np.testing.assert_array_equal(again.whitening.projection, fitted.whitening.projection)
    assert (again.whitening.power, again.whitening.method) == (0.5, "pca")
    assert (
        PostProcessConfig.from_dict({"dba": {"k": 1}}).fit(unit_sets(3), list("abc")).state_bytes()
        is None
    )
    with pytest.raises(ValueError, match="post-processing state: damaged"):
        FittedPostProcessing.from_state(config, b"not an npz")
    with pytest.raises(ValueError, match="exactly when configured"):
        FittedPostProcessing(config)  # whitening configured but not given
    with pytest.raises(ValueError, match="instances: expected 20 ids"):
        config.fit(unit_sets(20), ["x"])


def test_scale_weights_and_separate_whitening_parse_and_round_trip() -> None:
    data = {"whiten": {"dim": 3, "fit_on": "separate"}, "scale_weights": [2, 1, 1]}
    config = PostProcessConfig.from_dict(data)
    assert config.to_dict()["scale_weights"] == [2.0, 1.0, 1.0]
    assert config.to_dict()["whiten"]["fit_on"] == "separate"
    assert PostProcessConfig.from_dict(config.to_dict()) == config
    assert not config.learnt and config.separate_whitening
    learnt = PostProcessConfig.from_dict({"scale_weights": "learnt"})
    assert learnt.learnt and not learnt.learnt_whitening
    with pytest.raises(ValueError, match="postprocess.whiten.fit_on: expected one of"):
        PostProcessConfig.from_dict({"whiten": {"fit_on": "queries"}})
    with pytest.raises(ValueError, match="not refitted"):
        config.fit(unit_sets(4, 3), list("abcd"))


def test_fixed_and_learnt_scale_weights_both_sides() -> None:
    config = PostProcessConfig.from_dict({"scale_weights": [3, 1]})
    refs = unit_sets(6, 2)
    fitted = FittedPostProcessing(config)
    summed = 0.75 * refs[:, 0] + 0.25 * refs[:, 1]
    expected = summed / np.linalg.norm(summed, axis=1, keepdims=True)
    np.testing.assert_allclose(fitted.references(refs)[:, 0], expected, atol=1e-6)
    assert fitted.queries(refs, refs, scale_sets=False).shape == (6, 2, 12)  # windows: kept
    np.testing.assert_allclose(
        fitted.queries(refs, refs, scale_sets=True)[:, 0], expected, atol=1e-6
    )
    learnt = PostProcessConfig.from_dict({"scale_weights": "learnt"})
    with pytest.raises(ValueError, match="no learnt scale weights are stored"):
        FittedPostProcessing.from_state(learnt, None)
    with pytest.raises(ValueError, match="'learnt' needs an instance with at least 2"):
        learnt.fit(refs, list("abcdef"))
    weights = learnt.fit_aggregation(refs, list("aabbcc"))
    again = FittedPostProcessing.from_state(learnt, None, scale_weights_state(weights))
    np.testing.assert_array_equal(again.aggregation.weights, weights.weights)


def test_a_stored_whitening_of_another_configuration_is_refused() -> None:
    fitted = PostProcessConfig.from_dict({"whiten": {"power": 0.5}}).fit(unit_sets(9), ["x"] * 9)
    other = PostProcessConfig.from_dict({"whiten": {"power": 1.0}})
    with pytest.raises(ValueError, match="is not the recipe's"):
        FittedPostProcessing.from_state(other, fitted.state_bytes())


def test_whitening_below_min_references_is_skipped_with_its_reason() -> None:
    config = PostProcessConfig.from_dict({"whiten": {"min_references": 6}, "qe": {"k": 2}})
    assert config.to_dict()["whiten"]["min_references"] == 6
    assert PostProcessConfig.from_dict(config.to_dict()) == config
    refs = unit_sets(5)
    fitted = config.fit(refs, list("abcde"))
    assert fitted.whitening is None
    assert fitted.whitening_skipped.startswith("whitening skipped: the collection holds 5")
    np.testing.assert_allclose(fitted.references(refs), refs)  # unwhitened
    queries = unit_sets(2, seed=3)
    expected = QueryExpansion(2).apply(queries[:, 0], refs[:, 0])
    np.testing.assert_allclose(fitted.queries(queries, refs)[:, 0], expected, atol=1e-6)
    state = fitted.state_bytes()
    assert whitening_skipped(state) == fitted.whitening_skipped
    restored = FittedPostProcessing.from_state(config, state)
    assert restored.whitening is None and restored.whitening_skipped == fitted.whitening_skipped
    # at min_references it is fitted, and its state holds no skip reason
    enough = config.fit(unit_sets(6), list("abcdef"))
    assert enough.whitening is not None and enough.whitening.out_dim == 5
    assert enough.whitening_skipped is None and whitening_skipped(enough.state_bytes()) is None
    # without min_references a whitening is always fitted, as before
    assert "min_references" not in PostProcessConfig.from_dict({"whiten": {}}).to_dict()["whiten"]
    assert PostProcessConfig.from_dict({"whiten": {}}).fit(refs, list("abcde")).whitening


def test_min_references_and_skipped_states_are_checked() -> None:
    for value, message in ((1, "expected an integer >= 2"), (2.5, "expected an integer")):
        with pytest.raises(ValueError, match=f"postprocess.whiten.min_references: {message}"):
            PostProcessConfig.from_dict({"whiten": {"min_references": value}})
    with pytest.raises(ValueError, match="min_references: only for a whitening fitted on the"):
        PostProcessConfig.from_dict({"whiten": {"fit_on": "separate", "min_references": 10}})
    config = PostProcessConfig.from_dict({"whiten": {"min_references": 10}})
    with pytest.raises(ValueError, match="the reason it was skipped.*exactly when configured"):
        FittedPostProcessing(config)  # neither
    skipped = config.fit(unit_sets(3), list("abc"))
    with pytest.raises(ValueError, match="exactly when configured"):
        FittedPostProcessing(config, PCAWhitening.fit(unit_sets(3)[:, 0]), None, "too few")  # both
    with pytest.raises(ValueError, match="exactly when configured"):
        FittedPostProcessing(PostProcessConfig(), whitening_skipped=skipped.whitening_skipped)
    with pytest.raises(ValueError, match="damaged"):
        whitening_skipped(b'{"skipped": 3}')
    with pytest.raises(ValueError, match="damaged"):
        FittedPostProcessing.from_state(config, b"{not json")
    with pytest.raises(ValueError, match="the recipe has none"):
        FittedPostProcessing.from_state(PostProcessConfig(), b'{"skipped": "too few"}')
