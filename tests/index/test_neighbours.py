"""Neighbours: the shape checks and the sizes it reports."""

from __future__ import annotations

import numpy as np
import pytest

from pyinstance.index.neighbours import Neighbours


def test_sizes_are_the_queries_and_the_neighbours_per_query() -> None:
    scores = np.zeros((3, 5), dtype=np.float32)
    rows = np.arange(15).reshape(3, 5)
    found = Neighbours(scores, rows, rows % 2, ("a", "b"))
    assert (len(found), found.k) == (3, 5)
    assert isinstance(found.k, int) and isinstance(len(found), int)
    empty = Neighbours(np.zeros((0, 2)), np.zeros((0, 2), int), np.zeros((0, 2), int), ())
    assert (len(empty), empty.k) == (0, 2)


@pytest.mark.parametrize(
    ("scores", "rows", "labels", "message"),
    [
        (np.zeros(3), np.zeros(3), np.zeros(3), r"^scores: expected a \(Q, k\) array, got shape \(3,\)"),
        (np.zeros((1, 2, 3)), np.zeros((1, 2, 3)), np.zeros((1, 2, 3)), r"^scores: expected a \(Q, k\) array, got shape \(1, 2, 3\)"),
        (np.zeros((2, 3)), np.zeros((2, 2)), np.zeros((2, 3)), r"^rows: expected shape \(2, 3\) like scores, got \(2, 2\)"),
        (np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((3, 2)), r"^labels: expected shape \(2, 3\) like scores, got \(3, 2\)"),
    ],
)  # fmt: skip
def test_shapes_must_agree(scores, rows, labels, message) -> None:
    with pytest.raises(ValueError, match=message):
        Neighbours(scores, rows, labels, ("a",))
