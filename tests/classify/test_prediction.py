"""Prediction: stored dtypes, read-only arrays, and every check alone naming its argument."""

from __future__ import annotations

import numpy as np
import pytest

from pyinstance.classify.prediction import Prediction


def _good() -> dict[str, np.ndarray]:
    return {
        "labels": np.array([0, -1], np.int32),
        "confidence": np.array([0.5, 1.0], np.float64),
        "ranked": np.array([[0, 1], [1, -1]], np.int16),
        "ranked_scores": np.array([[0.9, 0.2], [0.4, -np.inf]], np.float64),
    }


def test_arrays_are_stored_in_their_documented_dtypes_read_only() -> None:
    p = Prediction(**_good())
    dtypes = [p.labels.dtype, p.confidence.dtype, p.ranked.dtype, p.ranked_scores.dtype]
    assert dtypes == [np.int64, np.float32, np.int64, np.float32]
    for array in (p.labels, p.confidence, p.ranked, p.ranked_scores):
        assert not array.flags.writeable
    assert p.ranked.tolist() == [[0, 1], [1, -1]]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"labels": np.zeros((2, 1), np.int64)}, r"^labels: expected a 1-D array"),
        ({"confidence": np.zeros((2, 1))}, r"^confidence: expected a 1-D array"),
        ({"ranked": np.zeros(2, np.int64)}, r"^ranked: expected a 2-D array"),
        ({"ranked_scores": np.zeros(2)}, r"^ranked_scores: expected a 2-D array"),
        ({"labels": np.array([0.0, 1.0])}, r"^labels: expected int64 values"),
        (
            {"ranked_scores": np.array([["a", "b"], ["c", "d"]])},
            r"^ranked_scores: expected float32",
        ),
        (
            {"ranked": np.zeros((1, 2), np.int64), "ranked_scores": np.zeros((1, 2))},
            r"^ranked and ranked_scores: expected equal \(2, m\) shapes",
        ),
        ({"labels": np.array([0, -2])}, r"^labels and ranked: expected instance codes"),
        ({"ranked": np.array([[0, 1], [1, -2]])}, r"^labels and ranked: expected instance codes"),
        ({"confidence": np.array([0.5, 1.5])}, r"^confidence: expected values in \[0, 1\]"),
        ({"ranked_scores": np.array([[0.9, np.nan], [0.4, 0.1]])}, r"^ranked_scores: NaN"),
    ],
)
def test_each_bad_argument_alone_is_named(change, message) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=message):
        Prediction(**{**_good(), **change})
