"""Metric cases that mutation testing of pyinstance/eval/metrics.py found unchecked."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest

from pyinstance.eval.metrics import (
    average_precision,
    average_precision_at_r,
    count_relevant,
    hits_from_labels,
    identification_metrics,
    mean_precision_at_1,
    metrics_by_group,
    micro_average_precision,
    open_set_auroc,
    open_set_rates,
    precision_at_k,
    r_precision,
    rates_at_threshold,
    recall_at_k,
    triplet_accuracy,
)


def test_triplet_accuracy_uses_the_anchor_positive_difference():
    # d(a, p) = 0 < d(a, n) = 1: right. With the sum a + p, |a + p|^2 = 4 > 1 would be wrong
    # (an earlier version of this test had a second triplet that flipped the other way and
    # kept the mean at 0.5 under the mutant too).
    anchor = np.array([[1.0, 0.0]])
    positive = np.array([[1.0, 0.0]])
    negative = np.array([[1.0, 1.0]])
    assert triplet_accuracy(anchor, positive, negative) == 1.0
    assert triplet_accuracy(anchor, negative, positive) == 0.0


def test_metrics_by_group_refuses_a_per_query_argument_named_groups():
    with pytest.raises(ValueError, match="^per_query: the name 'groups' is reserved"):
        metrics_by_group(["a"], identification_metrics, groups=np.array([1]))


def test_triplet_accuracy_refuses_infinite_descriptors():
    finite = np.zeros((1, 2))
    with pytest.raises(ValueError, match="anchor: contains infinite values"):
        triplet_accuracy(np.array([[np.inf, 0.0]]), finite, finite)


def test_misidentification_counts_accepted_known_queries_answered_wrong():
    known = [True, True, True, False]
    accepted = [True, True, False, True]
    correct = [True, False, False, False]
    rates = open_set_rates(known, accepted, correct)
    assert rates["misidentification"] == pytest.approx(1 / 3)
    assert rates["frr"] == pytest.approx(1 / 3) and rates["far"] == 1.0
    # Two of three known queries accepted with the wrong instance: 2/3 (counting the right
    # ones instead would give 1/3, which the case above cannot tell apart).
    rates = open_set_rates(known, [True, True, True, True], correct)
    assert rates["misidentification"] == pytest.approx(2 / 3) and rates["frr"] == 0.0


def test_rates_without_unknown_or_known_queries_are_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 0/0 would warn "invalid value encountered"
        only_known = open_set_rates([True, True], [True, False], [True, False])
        only_unknown = open_set_rates([False], [True], [False])
    assert math.isnan(only_known["far"]) and only_known["frr"] == 0.5
    assert math.isnan(only_unknown["frr"]) and math.isnan(only_unknown["misidentification"])
    assert only_unknown["far"] == 1.0


def test_micro_ap_of_identification_metrics_leaves_rejected_queries_out():
    # The rejected unknown query (confidence 0.9) makes no prediction: micro-AP 1.0. Counted
    # as a prediction it would rank first, wrong, and halve the precision of the right one.
    out = identification_metrics(
        np.array([[True], [False]]), np.array([1, 0]), np.array([True, False]),
        np.array([0.5, 0.9]), np.array([True, False]), ks=(1,),
    )  # fmt: skip
    assert out["micro_ap"] == 1.0


def test_precision_at_1_counts_queries_with_a_single_relevant_reference():
    hits = np.array([[True, False], [False, False], [False, True]])
    assert mean_precision_at_1(hits, [1, 0, 1]) == 0.5  # the unknown query is left out
    assert math.isnan(mean_precision_at_1(hits[1:2], [0]))


def test_auroc_with_one_known_query():
    assert open_set_auroc([0.9, 0.1, 0.2], [True, False, False]) == 1.0


def test_recall_at_k_accepts_every_ranked_column():
    hits = np.array([[False, False, True]])
    assert recall_at_k(hits, 3).tolist() == [1.0]
    assert recall_at_k(hits[:, :1], 1).tolist() == [0.0]


_HITS = np.array([[True, False], [False, True]])
_COUNTS = np.array([1, 1])
_FLAGS = np.array([True, True])
_SCORES = np.array([0.9, 0.8])
_WRONG = np.zeros((2, 1, 1), dtype=bool)  # 3-D: wrong for every argument


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: precision_at_k(_WRONG, 1), "hits: expected a 2-D (Q, K) boolean array"),
        (lambda: average_precision(_HITS, _WRONG), "n_relevant: expected a 1-D (Q,) integer"),
        (lambda: open_set_rates(_WRONG, _FLAGS), "known: expected a 1-D (Q,) boolean array"),
        (lambda: open_set_rates(_FLAGS, _WRONG), "accepted: expected a 1-D (Q,) boolean array"),
        (
            lambda: open_set_rates(_FLAGS, _FLAGS, _WRONG),
            "correct: expected a 1-D (Q,) boolean array",
        ),
        (lambda: open_set_auroc(_WRONG, _FLAGS), "confidence: expected a 1-D (Q,) real array"),
        (
            lambda: rates_at_threshold(_WRONG, _FLAGS, 0.5),
            "confidence: expected a 1-D (Q,) real array",
        ),
        (
            lambda: triplet_accuracy(_WRONG, _WRONG, _WRONG),
            "anchor: expected a 2-D (T, D) real array",
        ),
        (
            lambda: hits_from_labels(np.zeros(2), np.zeros(2)),
            "ranked_labels: expected a 2-D (Q, K) label array",
        ),
        (
            lambda: count_relevant([1], np.zeros((1, 1))),
            "reference_labels: expected a 1-D (N,) label array",
        ),
        (
            lambda: hits_from_labels(np.zeros((2, 1)), np.zeros((2, 1))),
            "query_labels: expected a 1-D (Q,) array",
        ),
        (lambda: hits_from_labels(None, [1]), "ranked_labels: expected an array, got NoneType"),
        (
            lambda: count_relevant([1], None),
            "reference_labels: expected an array, got NoneType",
        ),
        (lambda: precision_at_k(_HITS[:0], 1), "hits: expected at least one query, got none"),
        (
            lambda: hits_from_labels(np.zeros((0, 1)), np.zeros(0)),
            "ranked_labels: expected at least one query, got none",
        ),
        (lambda: open_set_rates([], []), "known: expected at least one query, got none"),
        (
            lambda: metrics_by_group([], identification_metrics),
            "groups: expected at least one query, got none",
        ),
        (
            lambda: average_precision(_HITS, [1, 1, 1]),
            "n_relevant: expected 2 entries (one per query, like hits), got 3",
        ),
        (
            lambda: open_set_rates(_FLAGS, [True]),
            "accepted: expected 2 entries (one per query, like known), got 1",
        ),
    ],
)
def test_every_argument_error_gives_its_name_and_expected_shape(call, message):
    # The whole message up to the shape found: the argument's name and what was expected,
    # as every function of pyinstance words it.
    with pytest.raises((TypeError, ValueError), match="^" + re.escape(message)):
        call()


@pytest.mark.parametrize("threshold", [True, "0.5", None])
def test_threshold_must_be_a_real_number_not_a_bool(threshold):
    with pytest.raises(TypeError, match="^threshold: expected a real number"):
        rates_at_threshold(_SCORES, _FLAGS, threshold)


def test_none_labels_never_match_even_each_other():
    # An unknown query (label None) against a padded ranking (None): None == None is True
    # in numpy, so both sides must be masked.
    ranked = np.array([[None, "a"]], dtype=object)
    assert hits_from_labels(ranked, np.array([None], dtype=object)).tolist() == [[False, False]]
    assert hits_from_labels(ranked, np.array(["a"], dtype=object)).tolist() == [[False, True]]
    two = np.array([[None, "a"], ["a", None]], dtype=object)  # the mask keeps the (Q, K) shape
    assert hits_from_labels(two, [None, "a"]).tolist() == [[False, False], [True, False]]


@pytest.mark.parametrize(("labels", "kind"), [("ab", "str"), (b"ab", "bytes"), (5, "int")])
def test_query_labels_must_be_a_sequence_not_a_string(labels, kind):
    with pytest.raises(
        TypeError, match=f"^query_labels: expected a sequence of labels, got {kind}"
    ):
        hits_from_labels(np.array([["a"], ["b"]]), labels)


def test_an_empty_ranking_of_object_labels_gives_empty_boolean_hits():
    hits = hits_from_labels(np.empty((1, 0), dtype=object), ["a"])
    assert hits.shape == (1, 0) and hits.dtype == np.bool_


# --------------------------------------------------------------------------- second half
# (validators, AP / mAP@R / R-precision, AUROC: the mutants not run in the first session)

_T, _F = True, False
_HITS3 = np.array([[_T, _F, _T, _F], [_F, _T, _F, _F], [_F, _F, _F, _F]])
_COUNTS3 = np.array([2, 3, 0])


@pytest.mark.parametrize("value", ["ab", b"ab"])
def test_a_string_is_not_an_array(value):
    kind = type(value).__name__
    with pytest.raises(TypeError, match=f"^hits: expected an array, got {kind}"):
        precision_at_k(value, 1)


def test_ragged_rows_are_refused_as_not_rectangular():
    with pytest.raises(TypeError, match=r"^hits: expected a rectangular array \("):
        precision_at_k([[True, False], [True]], 1)


def test_a_one_entry_integer_array_is_not_boolean():
    # The empty-array shortcut (np.asarray([]) is float64) applies to size 0 only.
    with pytest.raises(TypeError, match="^known: expected a boolean array, got dtype int64"):
        open_set_rates(np.array([1]), np.array([True]))
    with pytest.raises(TypeError, match="^hits: expected a boolean array, got dtype int64"):
        precision_at_k(np.array([[1]]), 1)


@pytest.mark.parametrize(
    "confidence",
    [np.array([True, False]), np.array(["0.5", "0.2"]), np.array([0.5 + 1j, 0.2])],
    ids=["bool", "str", "complex"],
)
def test_confidence_must_be_real_numbers(confidence):
    with pytest.raises(TypeError, match="^confidence: expected a real-valued array, got dtype"):
        open_set_auroc(confidence, [True, False])


def test_infinite_confidences_are_accepted_and_ranked():
    # +inf is the most confident answer, -inf the least; only NaN is refused.
    assert open_set_auroc([np.inf, -np.inf, 0.5], [True, False, False]) == 1.0
    assert open_set_auroc([-np.inf, 0.2, 0.5], [True, False, True]) == 0.5
    assert micro_average_precision([True, False], [np.inf, -np.inf], [True, True]) == 0.5


def test_counts_must_be_integers_not_booleans_and_any_integer_dtype_works():
    with pytest.raises(TypeError, match="^n_relevant: expected an integer array, got dtype bool"):
        average_precision(_HITS3, np.array([True, True, False]))
    for dtype in (np.uint8, np.int16):
        np.testing.assert_allclose(
            average_precision(_HITS3, _COUNTS3.astype(dtype)), [5 / 6, 1 / 6, np.nan]
        )


def test_k_must_be_an_integer_not_a_bool_and_numpy_integers_work():
    with pytest.raises(TypeError, match="^k: expected an integer, got bool"):
        precision_at_k(_HITS3, True)
    assert precision_at_k(_HITS3, np.int64(2)).tolist() == [0.5, 0.5, 0.0]


def test_hits_without_ranked_columns_are_refused():
    with pytest.raises(ValueError, match="^hits: expected K >= 1 ranked references per query"):
        average_precision(np.zeros((2, 0), dtype=bool), [0, 0])


def test_r_may_equal_the_number_of_ranked_columns():
    # R = K = 2: every rank is within R. Query 0: relevant at rank 2 of R = 2.
    hits = np.array([[False, True], [True, True]])
    counts = np.array([2, 2])
    np.testing.assert_allclose(r_precision(hits, counts), [0.5, 1.0])
    np.testing.assert_allclose(average_precision_at_r(hits, counts), [0.25, 1.0])
    with pytest.raises(ValueError, match="^hits: mAP@R needs the top R ranks of every query"):
        average_precision_at_r(hits, [3, 2])


def test_ranking_metrics_of_unknown_queries_are_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 0 / 0 would warn "invalid value encountered"
        for metric in (average_precision, average_precision_at_r, r_precision):
            values = metric(_HITS3, _COUNTS3)
            assert math.isnan(values[2]) and not np.isnan(values[:2]).any()


def test_auroc_is_nan_without_warnings_unless_both_kinds_occur():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(open_set_auroc([0.2, 0.9], [True, True]))
        assert math.isnan(open_set_auroc([0.2, 0.9], [False, False]))


def test_auroc_with_one_unknown_query():
    assert open_set_auroc([0.9, 0.1, 0.2], [False, True, True]) == 0.0
    assert open_set_auroc([0.3, 0.1, 0.2], [False, True, True]) == 0.0
    assert open_set_auroc([0.1, 0.3, 0.2], [False, True, True]) == 1.0


def _pairwise_auroc(confidence: np.ndarray, known: np.ndarray) -> float:
    pairs = [
        1.0 if k > u else 0.5 if k == u else 0.0
        for k in confidence[known]
        for u in confidence[~known]
    ]
    return sum(pairs) / len(pairs)


def _loop_average_precision(row: np.ndarray, n_relevant: int, within: int | None) -> float:
    found, total = 0, 0.0
    for rank, hit in enumerate(row, start=1):
        if hit:
            found += 1
            if within is None or rank <= within:
                total += found / rank
    return total / n_relevant


@pytest.mark.parametrize("seed", [0, 1])
def test_ranking_and_auroc_match_plain_loops_on_random_data(seed):
    rng = np.random.default_rng(seed)
    known = rng.random(40) < 0.6
    confidence = np.round(rng.random(40) + 0.2 * known, 1)  # one decimal: many ties
    assert open_set_auroc(confidence, known) == pytest.approx(_pairwise_auroc(confidence, known))
    hits = rng.random((30, 12)) < 0.3
    counts = np.minimum(hits.sum(axis=1) + rng.integers(0, 3, 30), 12)
    rows = list(zip(hits, counts, strict=True))
    ap = [_loop_average_precision(h, c, None) if c else np.nan for h, c in rows]
    at_r = [_loop_average_precision(h, c, c) if c else np.nan for h, c in rows]
    r_prec = [h[:c].sum() / c if c else np.nan for h, c in rows]
    np.testing.assert_allclose(average_precision(hits, counts), ap)
    np.testing.assert_allclose(average_precision_at_r(hits, counts), at_r)
    np.testing.assert_allclose(r_precision(hits, counts), r_prec)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: average_precision(_HITS3, None), "n_relevant: expected an array, got NoneType"),
        (lambda: open_set_auroc("0.5", [True]), "confidence: expected an array, got str"),
        (lambda: open_set_rates(None, [True]), "known: expected an array, got NoneType"),
    ],
)
def test_not_an_array_names_the_argument(call, message):
    with pytest.raises(TypeError, match="^" + re.escape(message)):
        call()


def test_confidences_of_any_real_dtype_are_accepted():
    # Known 3 and 2 above the unknown 1: AUROC 1 whether int, float32 or float64.
    for dtype in (np.int64, np.uint8, np.float32, np.float64):
        confidence = np.array([3, 1, 2], dtype=dtype)
        assert open_set_auroc(confidence, [True, False, True]) == 1.0
