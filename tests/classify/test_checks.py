"""The classifiers' shared validators: every boundary, each argument named from the start."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyinstance.classify import NearestNeighbour
from pyinstance.classify._checks import check_neighbours, float32_rows
from pyinstance.index.neighbours import Neighbours


def _neighbours(scores, labels, instances=2):
    labels = np.asarray(labels, np.int64)
    rows = np.where(labels >= 0, 0, -1)
    names = tuple(f"i{c}" for c in range(instances))
    return Neighbours(np.asarray(scores, np.float32), rows, labels, names)


@pytest.mark.parametrize(
    "descriptors", [np.zeros((2, 2), np.int64), torch.zeros(2, 2, dtype=torch.int64)]
)
def test_integer_descriptors_are_refused_by_name(descriptors):
    with pytest.raises(ValueError, match="^descriptors: expected floating-point"):
        NearestNeighbour().fit(descriptors, np.array([0, 1]))


def test_a_nan_in_the_first_row_or_a_later_chunk_is_refused(monkeypatch):
    x = np.ones((5, 1), np.float32)
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="^descriptors: NaN or infinite"):
        NearestNeighbour().fit(x, np.zeros(5, np.int64))
    monkeypatch.setattr("pyinstance.classify._checks.CHUNK_ROWS", 2)
    x = np.ones((5, 1), np.float32)
    x[4, 0] = np.inf
    with pytest.raises(ValueError, match="^descriptors: NaN or infinite"):
        NearestNeighbour().fit(x, np.zeros(5, np.int64))


def test_float32_rows_converts_any_float_rows():
    for array in (np.arange(6.0).reshape(3, 2), torch.arange(6.0, dtype=torch.float64).view(3, 2)):
        rows = float32_rows(array, 1, 3)
        assert rows.dtype == torch.float32 and rows.tolist() == [[2, 3], [4, 5]]


@pytest.mark.parametrize(
    "queries", [np.zeros((1, 2), np.int64), torch.zeros(1, 2, dtype=torch.int32)]
)
def test_integer_queries_are_refused_by_name(queries):
    classifier = NearestNeighbour().fit(np.eye(2, dtype=np.float32), np.array([0, 1]))
    with pytest.raises(ValueError, match="^queries: expected floating-point"):
        classifier.predict(_neighbours([[0.5]], [[0]]), queries)


@pytest.mark.parametrize("shape", [(1, 0), (1, 2, 0)])
def test_queries_without_components_are_refused(shape):
    with pytest.raises(ValueError, match=r"^queries: expected a \(Q, D\) or \(Q, R, D\)"):
        NearestNeighbour().predict(_neighbours([[0.5]], [[0]]), np.zeros(shape, np.float32))


def test_one_component_descriptors_and_queries_work():
    classifier = NearestNeighbour().fit(np.array([[1.0], [-1.0]], np.float32), np.array([0, 1]))
    p = classifier.predict(_neighbours([[0.5]], [[1]]), np.array([[[0.5], [-0.5]]], np.float32))
    assert p.labels.tolist() == [1] and p.confidence.tolist() == [0.5]


def test_check_neighbours_returns_float64_scores_and_int64_codes():
    scores, labels = check_neighbours(_neighbours([[0.5, 0.25, 0.0]], [[1, 0, -1]]), 2)
    assert scores.dtype == np.float64 and scores.tolist() == [[0.5, 0.25]]
    assert labels.dtype == np.int64 and labels.tolist() == [[1, 0]]


def test_neighbour_codes_from_minus_one_to_the_last_instance_only():
    assert check_neighbours(_neighbours([[0.5, 0.4]], [[1, -1]]), 2)[1].tolist() == [[1, -1]]
    for labels in ([[1, -2]], [[2, 0]]):
        with pytest.raises(ValueError, match=r"^neighbours.labels: expected codes in \[0, 2\)"):
            check_neighbours(_neighbours([[0.5, 0.4]], labels), 2)


def test_a_non_finite_score_of_instance_zero_is_refused():
    with pytest.raises(ValueError, match="^neighbours.scores: NaN or infinite"):
        check_neighbours(_neighbours([[0.5, np.nan]], [[1, 0]]), 2)
