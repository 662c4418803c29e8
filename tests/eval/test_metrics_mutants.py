"""Metric cases that mutation testing of pyinstance/eval/metrics.py found unchecked."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pyinstance.eval.metrics import (
    mean_precision_at_1,
    open_set_auroc,
    open_set_rates,
    recall_at_k,
    triplet_accuracy,
)


def test_triplet_accuracy_uses_the_anchor_positive_difference():
    # d(a, p) = 0 < d(a, n) = 1 for the first triplet; the sum a + p would be the larger.
    anchor = np.array([[1.0, 0.0], [0.0, 1.0]])
    positive = np.array([[1.0, 0.0], [0.0, -1.0]])
    negative = np.array([[1.0, 1.0], [0.0, 1.5]])
    assert triplet_accuracy(anchor, positive, negative) == 0.5


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
