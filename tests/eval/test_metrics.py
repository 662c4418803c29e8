"""pyinstance.eval.metrics: hand-computed cases, pytorch-metric-learning and sklearn oracles."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from pyinstance.eval import (
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

T, F = True, False
# Query 0: relevant at ranks 1 and 3 of 2; query 1: at rank 2 of 3; query 2: unknown.
HITS = np.array([[T, F, T, F], [F, T, F, F], [F, F, F, F]])
N_RELEVANT = np.array([2, 3, 0])


def test_precision_and_recall_at_k_by_hand():
    np.testing.assert_allclose(precision_at_k(HITS, 1), [1, 0, 0])
    np.testing.assert_allclose(precision_at_k(HITS, 3), [2 / 3, 1 / 3, 0])
    np.testing.assert_allclose(recall_at_k(HITS, 1), [1, 0, 0])
    np.testing.assert_allclose(recall_at_k(HITS, 2), [1, 1, 0])
    assert mean_precision_at_1(HITS, N_RELEVANT) == 0.5  # the unknown query is skipped


def test_average_precision_by_hand():
    np.testing.assert_allclose(average_precision(HITS, N_RELEVANT), [5 / 6, 1 / 6, np.nan])


def test_map_at_r_and_r_precision_by_hand():
    # Query 0 (R=2): rank 1 relevant -> (1/1)/2; query 1 (R=3): rank 2 -> (1/2)/3.
    np.testing.assert_allclose(average_precision_at_r(HITS, N_RELEVANT), [0.5, 1 / 6, np.nan])
    np.testing.assert_allclose(r_precision(HITS, N_RELEVANT), [0.5, 1 / 3, np.nan])


def test_perfect_ranking_scores_one():
    hits = np.array([[T, T, F, F], [T, F, F, F]])
    counts = np.array([2, 1])
    for metric in (average_precision, average_precision_at_r, r_precision):
        np.testing.assert_allclose(metric(hits, counts), [1.0, 1.0])


def test_labels_to_hits_and_counts():
    ranked = np.array([[3, 1, 3], [2, -1, -1], [5, 2, 1]])
    queries = np.array([3, -1, 7])
    np.testing.assert_array_equal(
        hits_from_labels(ranked, queries), [[T, F, T], [F, F, F], [F, F, F]]
    )
    np.testing.assert_array_equal(count_relevant(queries, np.array([3, 1, 3, 2, 5])), [2, 0, 0])


def test_label_sets_match_any_of_their_labels():
    ranked = np.array([["a", "b", "c"], ["c", "a", "b"]])
    queries = [{"b", "c"}, None]
    np.testing.assert_array_equal(hits_from_labels(ranked, queries), [[F, T, T], [F, F, F]])
    np.testing.assert_array_equal(
        count_relevant(["a", ("a", "b"), None], np.array(["a", "b", "a"])), [2, 3, 0]
    )


def test_micro_ap_by_hand():
    # Sorted predictions: q0 right (0.9), q1 unknown (0.8), q2 right (0.7), q3 wrong (0.6);
    # q4 answered "unknown". Four known queries: (1/1 + 2/3) / 4.
    correct = np.array([T, F, T, F, F])
    confidence = np.array([0.9, 0.8, 0.7, 0.6, 0.1])
    known = np.array([T, F, T, T, T])
    accepted = np.array([T, T, T, T, F])
    assert micro_average_precision(correct, confidence, known, accepted) == pytest.approx(5 / 12)
    # Rejecting the unknown query lifts the second right answer to precision 2/2.
    accepted[1] = False
    assert micro_average_precision(correct, confidence, known, accepted) == pytest.approx(2 / 4)


def test_micro_ap_ties_rank_wrong_answers_first_whatever_the_order():
    known = np.array([T, T])
    confidence = np.array([0.5, 0.5])
    for correct in (np.array([T, F]), np.array([F, T])):
        assert micro_average_precision(correct, confidence, known) == pytest.approx(0.25)


def test_micro_ap_all_right_is_one_and_no_known_query_is_nan():
    assert micro_average_precision(np.array([T, T]), np.array([0.2, 0.9]), np.array([T, T])) == 1
    assert math.isnan(micro_average_precision(np.array([F]), np.array([0.3]), np.array([F])))


def test_auroc_by_hand_with_ties():
    confidence = np.array([0.9, 0.5, 0.3, 0.4, 0.5])
    known = np.array([T, T, T, F, F])
    # Pairs (known > unknown): 0.9: 2; 0.5: 1 + 1/2 (tie); 0.3: 0 -> 3.5 / 6.
    assert open_set_auroc(confidence, known) == pytest.approx(3.5 / 6)
    assert math.isnan(open_set_auroc(confidence, np.ones(5, dtype=bool)))


def test_auroc_matches_sklearn_on_random_data():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    known = rng.random(300) < 0.7
    confidence = np.round(rng.random(300) + 0.3 * known, 2)  # rounding makes ties
    assert open_set_auroc(confidence, known) == pytest.approx(roc_auc_score(known, confidence))


def test_open_set_rates_by_hand():
    known = np.array([T, T, T, F, F])
    accepted = np.array([T, F, T, T, F])
    correct = np.array([T, F, F, F, F])
    rates = open_set_rates(known, accepted, correct)
    assert rates == pytest.approx({"far": 1 / 2, "frr": 1 / 3, "misidentification": 1 / 3})
    at = rates_at_threshold(np.array([0.9, 0.1, 0.5, 0.5, 0.4]), known, 0.5, correct)
    assert at == pytest.approx(rates)  # accepted iff confidence >= threshold
    assert math.isnan(open_set_rates(np.array([T]), np.array([T]))["far"])


def test_triplet_accuracy_by_hand():
    anchor = np.zeros((3, 2))
    positive = np.array([[1.0, 0], [2, 0], [1, 0]])
    negative = np.array([[2.0, 0], [1, 0], [0, 1]])  # right, wrong, tie (wrong)
    assert triplet_accuracy(anchor, positive, negative) == pytest.approx(1 / 3)


def _answers_for(hits: np.ndarray, n_relevant: np.ndarray, rng: np.random.Generator):
    correct = hits[:, 0] & (n_relevant > 0)
    confidence = rng.random(hits.shape[0])
    accepted = confidence > 0.2
    return correct & accepted, confidence, accepted


def test_identification_metrics_keys_and_values():
    rng = np.random.default_rng(0)
    correct, confidence, accepted = _answers_for(HITS, N_RELEVANT, rng)
    out = identification_metrics(HITS, N_RELEVANT, correct, confidence, accepted, ks=(1, 3))
    assert out["queries"] == 3 and out["known_queries"] == 2 and out["unknown_queries"] == 1
    assert out["p_at_1"] == 0.5
    assert out["p_at_3"] == pytest.approx(0.5)
    assert out["recall_at_3"] == 1.0
    assert out["map"] == pytest.approx(0.5)
    assert out["map_at_r"] == pytest.approx((0.5 + 1 / 6) / 2)
    assert out["r_precision"] == pytest.approx((0.5 + 1 / 3) / 2)
    known = N_RELEVANT > 0
    assert out["micro_ap"] == micro_average_precision(correct, confidence, known, accepted)
    assert out["auroc_unknown"] == open_set_auroc(confidence, known)
    assert {"far", "frr", "misidentification"} <= out.keys()


def test_metrics_by_group_restricts_every_array():
    rng = np.random.default_rng(1)
    hits = rng.random((8, 4)) < 0.3
    counts = hits.sum(axis=1) + rng.integers(0, 2, 8)
    correct, confidence, accepted = _answers_for(hits, counts, rng)
    groups = ["crop", "gallery", "crop", None, "gallery", "crop", "gallery", "crop"]
    arrays = dict(
        hits=hits, n_relevant=counts, correct=correct, confidence=confidence, accepted=accepted
    )
    out = metrics_by_group(groups, identification_metrics, **arrays, ks=(1, 2))
    assert out["queries"] == 8 and set(out["groups"]) == {"crop", "gallery"}
    mask = np.array([g == "crop" for g in groups])
    expected = identification_metrics(**{k: v[mask] for k, v in arrays.items()}, ks=(1, 2))
    np.testing.assert_equal(out["groups"]["crop"], expected)
    assert out["groups"]["gallery"]["queries"] == 3


# --------------------------------------------------------------------------- vs pml


def _ranking(query: np.ndarray, reference: np.ndarray, exclude_self: bool) -> np.ndarray:
    distances = ((query[:, None, :] - reference[None, :, :]) ** 2).sum(axis=2)
    if exclude_self:
        np.fill_diagonal(distances, np.inf)
    order = np.argsort(distances, axis=1, kind="stable")
    return order[:, :-1] if exclude_self else order


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ref_includes_query", [False, True])
def test_ranking_metrics_match_pytorch_metric_learning(seed, ref_includes_query):
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    rng = np.random.default_rng(seed)
    reference = rng.standard_normal((120, 6)).astype(np.float32)
    reference_labels = rng.integers(0, 15, 120)
    if ref_includes_query:
        query, query_labels = reference, reference_labels
    else:  # labels 15..17 are absent from the references: "lone" / unknown queries
        query = rng.standard_normal((50, 6)).astype(np.float32)
        query_labels = rng.integers(0, 18, 50)

    order = _ranking(query.astype(np.float64), reference.astype(np.float64), ref_includes_query)
    hits = hits_from_labels(reference_labels[order], query_labels)
    counts = count_relevant(query_labels, reference_labels) - int(ref_includes_query)

    calculator = AccuracyCalculator(
        include=(
            "precision_at_1",
            "mean_average_precision",
            "mean_average_precision_at_r",
            "r_precision",
        ),
        device=torch.device("cpu"),
    )
    if ref_includes_query:
        expected = calculator.get_accuracy(query, query_labels)
    else:
        expected = calculator.get_accuracy(query, query_labels, reference, reference_labels)

    assert mean_precision_at_1(hits, counts) == pytest.approx(expected["precision_at_1"])
    assert np.nanmean(average_precision(hits, counts)) == pytest.approx(
        expected["mean_average_precision"]
    )
    assert np.nanmean(average_precision_at_r(hits, counts)) == pytest.approx(
        expected["mean_average_precision_at_r"]
    )
    assert np.nanmean(r_precision(hits, counts)) == pytest.approx(expected["r_precision"])


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: precision_at_k(HITS.astype(int), 1), TypeError, "hits: expected a boolean"),
        (lambda: precision_at_k(HITS[0], 1), ValueError, "hits: expected a 2-D"),
        (lambda: precision_at_k(HITS[:0], 1), ValueError, "hits: expected at least one"),
        (lambda: precision_at_k(HITS, 5), ValueError, "k: expected 1 <= k <= K=4"),
        (lambda: precision_at_k(HITS, 1.0), TypeError, "k: expected an integer"),
        (lambda: average_precision(HITS, [2, 3]), ValueError, "n_relevant: expected 3 entries"),
        (lambda: average_precision(HITS, [1, 3, 0]), ValueError, "n_relevant: query 0 has 2"),
        (lambda: average_precision(HITS, [2, -3, 0]), ValueError, "n_relevant: expected non-neg"),
        (lambda: average_precision(HITS, [2.0, 3, 0]), TypeError, "n_relevant: expected an int"),
        (lambda: r_precision(HITS, [2, 5, 0]), ValueError, "hits: R-precision needs the top R"),
        (
            lambda: micro_average_precision([T, F], [0.5, np.nan], [T, T]),
            ValueError,
            "confidence: contains NaN",
        ),
        (
            lambda: micro_average_precision([T, T], [0.5, 0.1], [T, F]),
            ValueError,
            "correct: query 1 is unknown",
        ),
        (
            lambda: micro_average_precision([T], [0.5], [T], [F]),
            ValueError,
            "correct: query 0 was answered 'unknown'",
        ),
        (lambda: open_set_auroc([0.5, 0.2], [T]), ValueError, "confidence: expected 1 entries"),
        (lambda: open_set_auroc([], []), ValueError, "known: expected at least one query"),
        (lambda: open_set_rates([T], ["yes"]), TypeError, "accepted: expected a boolean"),
        (lambda: rates_at_threshold([0.5], [T], float("nan")), ValueError, "threshold"),
        (
            lambda: triplet_accuracy(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 4))),
            ValueError,
            "negative: expected shape (2, 3)",
        ),
        (
            lambda: triplet_accuracy(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3))),
            ValueError,
            "anchor: expected at least one triplet",
        ),
        (
            lambda: hits_from_labels(np.array([[1, 2]]), np.array([1, 2])),
            ValueError,
            "ranked_labels: expected 2 rows",
        ),
        (lambda: count_relevant([1], np.array([])), ValueError, "reference_labels: expected at"),
        (
            lambda: metrics_by_group(["a"], identification_metrics, hits=HITS),
            ValueError,
            "hits: expected 1 rows",
        ),
        (lambda: metrics_by_group("ab", dict), TypeError, "groups: expected a sequence"),
    ],
)
def test_bad_input_names_the_argument(call, error, message):
    # Anchored: the message starts with the argument's name (not "XXhits: ..." or "None: ...").
    with pytest.raises(error, match="^" + re.escape(message)):
        call()


def test_a_group_of_unknown_queries_gets_nan_ranking_metrics_and_a_far():
    hits = np.array([[T, F], [F, F], [F, F]])
    counts = np.array([1, 0, 0])
    out = metrics_by_group(
        ["known", "unknown", "unknown"],
        identification_metrics,
        hits=hits,
        n_relevant=counts,
        correct=np.array([T, F, F]),
        confidence=np.array([0.9, 0.8, 0.1]),
        accepted=np.array([T, T, F]),
        ks=(1,),
    )
    unknown = out["groups"]["unknown"]
    assert math.isnan(unknown["p_at_1"]) and math.isnan(unknown["map"])
    assert math.isnan(unknown["micro_ap"]) and math.isnan(unknown["frr"])
    assert unknown["far"] == 0.5
    assert out["micro_ap"] == 1.0 and out["groups"]["known"]["p_at_1"] == 1.0
