"""PostProcessConfig / FittedPostProcessing at their edges: every configuration error by
name, the smallest collections and whitening sets, pairs, and the stored states."""

from __future__ import annotations

import numpy as np
import pytest

from pyinstance.postprocess import (
    FittedPostProcessing,
    PCAWhitening,
    PostProcessConfig,
    ScaleAggregation,
    WhiteningConfig,
)
from pyinstance.postprocess import pipeline as pipeline_module
from pyinstance.postprocess.pipeline import (
    scale_weights_state,
    state_fitted_on,
    whitening_state,
)

from .conftest import unit_sets


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "^postprocess: expected a dict, got list"),
        ({"whitening": {}}, "^postprocess: unknown key.s. whitening; expected whiten, dba, qe, multiscale, scale_weights"),
        ({"whiten": {"dims": 3}}, "^postprocess.whiten: unknown key.s. dims; expected dim, power, ridge, method, fit_on"),
        ({"whiten": 3}, "^postprocess.whiten: expected a dict, got int"),
        ({"whiten": {"dim": 0}}, "^postprocess.whiten.dim: expected an integer >= 1, got 0"),
        ({"whiten": {"power": 1.5}}, r"^postprocess.whiten.power: expected a number in \[0.0, 1.0\]"),
        ({"whiten": {"ridge": -1}}, r"^postprocess.whiten.ridge: expected a number in \[0.0, inf\]"),
        ({"whiten": {"method": "lda"}}, "^postprocess.whiten.method: expected one of"),
        ({"whiten": {"method": "pairs", "ridge": 0.1}}, "^postprocess.whiten.method: 'pairs' whitening takes no power or ridge"),
        ({"whiten": {"method": "pairs", "fit_on": "separate"}}, "^postprocess.whiten.fit_on: a whitening fitted on a separate set takes method 'pca'"),
        ({"dba": {"k": 0}}, "^postprocess.dba.k: expected an integer >= 1"),
        ({"dba": {"kk": 1}}, "^postprocess.dba: unknown key.s. kk; expected k, alpha"),
        ({"qe": {"k": 1, "alpha": -1}}, "^postprocess.qe.alpha: expected a number"),
        ({"qe": {"q": 1}}, "^postprocess.qe: unknown key.s. q; expected k, alpha"),
        ({"multiscale": {}}, "^postprocess.multiscale: missing key reduction"),
        ({"multiscale": {"reduction": "max", "x": 1}}, "^postprocess.multiscale: unknown key.s. x; expected reduction"),
        ({"multiscale": {"reduction": "mean"}}, "^postprocess.multiscale.reduction: expected one of"),
        ({"multiscale": {"reduction": "max"}, "dba": {"k": 1}}, "^postprocess.multiscale: similarity-matrix scoring keeps several"),
        ({"multiscale": {"reduction": "max"}, "qe": {"k": 1}}, "^postprocess.multiscale: similarity-matrix scoring keeps several"),
        ({"multiscale": {"reduction": "max"}, "scale_weights": [1, 1]}, "^postprocess.scale_weights: sums the scales into one"),
        ({"scale_weights": "learned"}, "^postprocess.scale_weights: expected a list of weights .one per scale. or 'learnt', got 'learned'"),
        ({"scale_weights": {"a": 1}}, "^postprocess.scale_weights: expected a list of weights"),
        ({"scale_weights": 2.0}, "^postprocess.scale_weights: expected a list of weights"),
        ({"scale_weights": [1, True]}, r"^postprocess.scale_weights: expected numbers, got \[1, True\]"),
        ({"scale_weights": [1, "2"]}, "^postprocess.scale_weights: expected numbers"),
        ({"scale_weights": [0, 0]}, "^postprocess.scale_weights.weights: expected finite non-negative"),
    ],
)  # fmt: skip
def test_configuration_errors_name_the_key(data, message) -> None:
    with pytest.raises(ValueError, match=message):
        PostProcessConfig.from_dict(data)


def test_steps_set_to_none_are_off_and_defaults_are_written_out() -> None:
    config = PostProcessConfig.from_dict(
        {"whiten": None, "dba": None, "qe": None, "multiscale": None, "scale_weights": None}
    )
    assert config == PostProcessConfig() and config.to_dict() == {}
    config = PostProcessConfig.from_dict(
        {"dba": {"k": 2}, "multiscale": None, "whiten": {"method": "pairs", "dim": 1}}
    )
    assert config.to_dict() == {
        "whiten": {"dim": 1, "power": 1.0, "ridge": 0.0, "method": "pairs"},
        "dba": {"k": 2, "alpha": None},
    }
    assert config.learnt and config.learnt_whitening and not config.separate_whitening
    reduction = PostProcessConfig.from_dict({"multiscale": {"reduction": "col_max_sum"}})
    assert reduction.to_dict() == {"multiscale": {"reduction": "col_max_sum"}}
    assert reduction and not reduction.learnt
    weights = PostProcessConfig(scale_weights=[1, 2.5])
    assert weights.scale_weights == (1.0, 2.5) and weights.to_dict() == {
        "scale_weights": [1.0, 2.5]
    }
    assert PostProcessConfig(scale_weights="learnt").to_dict() == {"scale_weights": "learnt"}


def test_whitening_config_bounds_are_inclusive() -> None:
    config = WhiteningConfig(dim=1, power=0.0, ridge=0.0)
    assert (config.dim, config.power) == (1, 0.0)
    assert WhiteningConfig(power=1.0, ridge=2.0).ridge == 2.0
    assert WhiteningConfig(method="pairs").method == "pairs"
    assert WhiteningConfig(fit_on="separate").fit_on == "separate"


def test_same_instance_pairs_are_every_ordered_pair() -> None:
    queries, positives = pipeline_module._same_instance_pairs(["a", "b", "a", "a", "c", "b"])
    assert list(zip(queries.tolist(), positives.tolist(), strict=True)) == [
        (0, 2), (0, 3), (2, 0), (2, 3), (3, 0), (3, 2), (1, 5), (5, 1)
    ]  # fmt: skip
    assert queries.dtype == np.int64
    none = pipeline_module._same_instance_pairs(["a", "b"])
    assert none[0].shape == (0,) and none[1].shape == (0,)


def test_separate_whitening_set_sizes() -> None:
    rows = unit_sets(4, d=6)[:, 0]
    config = WhiteningConfig(dim=3, fit_on="separate")
    whitening = config.fit_separate(rows)  # N - 1 = 3 = dim: just enough
    expected = PCAWhitening.fit(rows, dim=3)
    np.testing.assert_array_equal(whitening.projection, expected.projection)
    with pytest.raises(ValueError, match="^whiten_from: the whitening set needs at least 4 images for dim 3, got 3 described"):  # fmt: skip
        config.fit_separate(rows[:3])
    with pytest.raises(ValueError, match="^extra: the whitening set needs at least 2 images, got 1 described"):  # fmt: skip
        WhiteningConfig(fit_on="separate").fit_separate(rows[:1], "extra")
    assert WhiteningConfig(fit_on="separate").fit_separate(rows).out_dim == 3  # min(D, N - 1)
    assert WhiteningConfig(fit_on="separate").fit_separate(rows[:2]).out_dim == 1
    shrunk = WhiteningConfig(power=0.5, ridge=0.2, fit_on="separate").fit_separate(rows)
    assert (shrunk.power, shrunk.ridge) == (0.5, 0.2)
    with pytest.raises(ValueError, match=r"^whiten_from: expected a \(M, D\) array"):
        config.fit_separate(rows[:, :, None])


def test_whitening_fit_cuts_dim_to_the_collection() -> None:
    rows = unit_sets(5, d=6)[:, 0]
    assert WhiteningConfig().fit(rows[:2], ["a", "b"]).out_dim == 1  # two rows are enough
    assert WhiteningConfig(dim=9).fit(rows, list("abcde")).out_dim == 4  # N - 1
    assert WhiteningConfig(dim=2).fit(rows, list("abcde")).out_dim == 2
    wide = unit_sets(9, d=3)[:, 0]
    assert WhiteningConfig(dim=9).fit(wide, list("abcdefghi")).out_dim == 3  # D
    pairs = WhiteningConfig(dim=9, method="pairs").fit(wide, list("aabbccdde"))
    assert pairs.out_dim == 3 and pairs.method == "pairs"
    assert WhiteningConfig(dim=2, method="pairs").fit(wide, list("aabbccdde")).out_dim == 2
    shrunk = WhiteningConfig(power=0.5, ridge=0.1).fit(rows, list("abcde"))
    np.testing.assert_array_equal(
        shrunk.projection, PCAWhitening.fit(rows, power=0.5, ridge=0.1).projection
    )
    with pytest.raises(ValueError, match="^whitening: needs at least 2 reference descriptors to fit, the index would hold 1"):  # fmt: skip
        WhiteningConfig().fit(rows[:1], ["a"])


def test_pairs_whitening_of_scale_sets_pairs_the_rows_of_one_image() -> None:
    # two images of different instances, three descriptors each: every pair is within an image
    config = PostProcessConfig.from_dict(
        {"whiten": {"method": "pairs"}, "multiscale": {"reduction": "max"}}
    )
    refs = unit_sets(2, 3, d=4)
    fitted = config.fit(refs, ["a", "b"])
    rows = refs.reshape(6, 4)
    queries = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    positives = [1, 2, 0, 2, 0, 1, 4, 5, 3, 5, 3, 4]
    expected = PCAWhitening.fit_pairs(rows, queries, positives)
    np.testing.assert_allclose(fitted.whitening.projection, expected.projection, rtol=1e-6)


def test_one_reference_is_left_alone_by_dba_and_k_is_cut() -> None:
    config = PostProcessConfig.from_dict({"dba": {"k": 4, "alpha": 1.0}, "qe": {"k": 5}})
    fitted = FittedPostProcessing(config)
    one = unit_sets(1, d=6)
    np.testing.assert_array_equal(fitted.references(one), one)
    refs = unit_sets(3, d=6)
    x = refs[:, 0].astype(np.float64)
    sims = x @ x.T
    expected = []
    for i in range(3):
        others = [j for j in range(3) if j != i]
        expected.append(x[i] + sum(max(sims[i, j], 0.0) * x[j] for j in others))
    augmented = fitted.references(refs)  # k cut to N - 1 = 2
    np.testing.assert_allclose(augmented[:, 0], _unit(np.array(expected)), atol=1e-5)
    queries = unit_sets(2, 2, d=6, seed=3)
    got = fitted.queries(queries, augmented)  # k cut to N = 3: every reference added
    flat = queries.reshape(4, 6).astype(np.float64)
    want = _unit(flat + augmented[:, 0].astype(np.float64).sum(axis=0))
    np.testing.assert_allclose(got, want.reshape(2, 2, 6), atol=1e-5)
    empty = fitted.queries(queries, np.zeros((0, 1, 6), dtype=np.float32))
    np.testing.assert_array_equal(empty, queries)


def test_no_steps_leave_descriptors_as_they_are() -> None:
    fitted = FittedPostProcessing(PostProcessConfig())
    refs = unit_sets(3, 2, d=6)
    np.testing.assert_array_equal(fitted.references(refs), refs)
    np.testing.assert_array_equal(fitted.queries(refs, refs, scale_sets=True), refs)
    assert fitted.state_bytes() is None


def test_fixed_scale_weights_are_fitted_as_given() -> None:
    config = PostProcessConfig.from_dict({"scale_weights": [1, 3], "whiten": {}})
    refs = unit_sets(6, 2, d=6)
    aggregation = config.fit_aggregation(refs, list("abcdef"))
    np.testing.assert_array_equal(aggregation.weights, [0.25, 0.75])
    fitted = config.fit(refs, list("abcdef"))
    summed = _unit(0.25 * refs[:, 0] + 0.75 * refs[:, 1])
    expected = PCAWhitening.fit(summed)
    np.testing.assert_allclose(fitted.whitening.mean, expected.mean, atol=1e-6)
    assert PostProcessConfig().fit_aggregation(refs, list("abcdef")) is None
    given = ScaleAggregation([1.0, 0.0])
    np.testing.assert_allclose(
        config.fit(refs, list("abcdef"), given).whitening.mean,
        PCAWhitening.fit(refs[:, 0]).mean,
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="^aggregation: expected scale weights exactly when configured"):  # fmt: skip
        FittedPostProcessing(PostProcessConfig(), aggregation=given)
    with pytest.raises(ValueError, match="^aggregation: expected scale weights exactly when configured"):  # fmt: skip
        FittedPostProcessing(PostProcessConfig(scale_weights="learnt"))
    with pytest.raises(ValueError, match="^whitening: expected a fitted whitening .*exactly when"):
        FittedPostProcessing(PostProcessConfig(), PCAWhitening(np.zeros(2), np.eye(2)))


def test_learnt_weights_on_the_collection_match_a_direct_fit() -> None:
    config = PostProcessConfig.from_dict({"scale_weights": "learnt"})
    refs = unit_sets(6, 2, d=6, seed=4)
    instances = list("aabbcc")
    fitted = config.fit(refs, instances)
    expected = ScaleAggregation.fit_pairs(refs, [0, 1, 2, 3, 4, 5], [1, 0, 3, 2, 5, 4])
    np.testing.assert_array_equal(fitted.aggregation.weights, expected.weights)
    with pytest.raises(ValueError, match="^instances: expected 6 ids .one per image., got 5"):
        config.fit_aggregation(refs, list("aabbc"))


def test_stored_states_round_trip_and_damage_is_named() -> None:
    config = PostProcessConfig.from_dict({"whiten": {"dim": 3, "fit_on": "separate"}})
    rows = unit_sets(8, d=6)[:, 0]
    whitening = config.whiten.fit_separate(rows)
    state = whitening_state(whitening, {"images": 8})
    assert state_fitted_on(state) == {"images": 8}
    assert state_fitted_on(whitening_state(whitening)) is None
    again = FittedPostProcessing.from_state(config, state)
    np.testing.assert_array_equal(again.whitening.projection, whitening.projection)
    np.testing.assert_array_equal(again.whitening.mean, whitening.mean)
    with pytest.raises(ValueError, match="^post-processing state: damaged"):
        state_fitted_on(b"not an npz")
    other_dim = PostProcessConfig.from_dict({"whiten": {"dim": 2, "fit_on": "separate"}})
    with pytest.raises(ValueError, match="^post-processing state: the stored whitening"):
        FittedPostProcessing.from_state(other_dim, state)
    # a whitening fitted on the collection may have fewer dims than asked (a small collection)
    learnt = PostProcessConfig.from_dict({"whiten": {"dim": 2}})
    assert FittedPostProcessing.from_state(learnt, state).whitening.out_dim == 3
    with pytest.raises(ValueError, match="^post-processing state: a whitening is stored, the recipe has none"):  # fmt: skip
        FittedPostProcessing.from_state(PostProcessConfig(), state)
    pairs = PostProcessConfig.from_dict({"whiten": {"method": "pairs"}})
    with pytest.raises(ValueError, match="^post-processing state: the stored whitening"):
        FittedPostProcessing.from_state(pairs, state)
    ridge = PostProcessConfig.from_dict({"whiten": {"ridge": 0.5, "dim": 3}})
    with pytest.raises(ValueError, match="^post-processing state: the stored whitening"):
        FittedPostProcessing.from_state(ridge, state)


def test_learnt_scale_weights_state() -> None:
    learnt = PostProcessConfig.from_dict({"scale_weights": "learnt"})
    weights = scale_weights_state(ScaleAggregation([1.0, 3.0]))
    again = FittedPostProcessing.from_state(learnt, None, weights)
    np.testing.assert_array_equal(again.aggregation.weights, [0.25, 0.75])
    assert again.whitening is None
    for damaged in (b"{", b'{"kind": "scale_sum"}', b'{"kind": "dba", "weights": [1]}'):
        with pytest.raises(ValueError, match="^post-processing state: damaged scale weights"):
            FittedPostProcessing.from_state(learnt, None, damaged)
    fixed = PostProcessConfig.from_dict({"scale_weights": [1, 1]})
    np.testing.assert_array_equal(
        FittedPostProcessing.from_state(fixed, None, weights).aggregation.weights, [0.5, 0.5]
    )


def test_two_images_short_of_a_large_dim_name_the_dim() -> None:
    rows = unit_sets(2, d=6)[:, 0]
    with pytest.raises(ValueError, match="^whiten_from: the whitening set needs at least 4 images for dim 3, got 2 described"):  # fmt: skip
        WhiteningConfig(dim=3, fit_on="separate").fit_separate(rows)


def test_query_descriptors_are_not_summed_over_scales_by_default() -> None:
    fitted = FittedPostProcessing(PostProcessConfig.from_dict({"scale_weights": [1, 1]}))
    windows = unit_sets(3, 2, d=6)
    np.testing.assert_array_equal(fitted.queries(windows, windows), windows)
    with pytest.raises(ValueError, match=r"^queries: expected a \(Q, R, D\) array"):
        fitted.queries(windows[:, 0], windows)


def test_query_expansion_keeps_its_alpha() -> None:
    fitted = FittedPostProcessing(PostProcessConfig.from_dict({"qe": {"k": 2, "alpha": 3.0}}))
    refs = unit_sets(5, d=6)
    query = unit_sets(1, d=6, seed=9)
    sims = refs[:, 0].astype(np.float64) @ query[0, 0]
    top = np.argsort(-sims)[:2]
    expected = query[0, 0] + sum(max(sims[j], 0.0) ** 3 * refs[j, 0] for j in top)
    np.testing.assert_allclose(fitted.queries(query, refs)[0, 0], _unit(expected), atol=1e-5)


def test_references_must_be_sets() -> None:
    with pytest.raises(ValueError, match=r"^references: expected a \(N, P, D\) array"):
        FittedPostProcessing(PostProcessConfig()).references(unit_sets(3, d=6)[:, 0])
