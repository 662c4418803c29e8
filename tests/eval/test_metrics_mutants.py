"""Metric cases that mutation testing of pyinstance/eval/metrics.py found unchecked."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest

from pyinstance.eval.metrics import (
    average_precision,
    count_relevant,
    hits_from_labels,
    identification_metrics,
    mean_precision_at_1,
    metrics_by_group,
    open_set_auroc,
    open_set_rates,
    precision_at_k,
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
