"""group_by_instance's documented layout, by hand on one query with padding."""

from __future__ import annotations

import numpy as np

from pyinstance.classify.grouping import group_by_instance


def test_slots_of_one_query_with_padding_by_hand() -> None:
    """Neighbours (0.7: i2, 0.9: i1, 0.8: i1, padding): instance 1 has 2 members, best 0.9
    at column 1; instance 2 one, 0.7 at column 0; the other slots are empty (label -1,
    count 0, best -inf, first k = 4); each neighbour points at its instance's slot, the
    padding column at -1."""
    scores = np.array([[0.7, 0.9, 0.8, -np.inf]])
    labels = np.array([[2, 1, 1, -1]])
    groups = group_by_instance(scores, labels)
    filled = groups.label[0] >= 0
    found = {
        int(label): (int(count), float(best), int(first))
        for label, count, best, first in zip(
            groups.label[0][filled],
            groups.count[0][filled],
            groups.best[0][filled],
            groups.first[0][filled],
            strict=True,
        )
    }
    assert found == {1: (2, 0.9, 1), 2: (1, 0.7, 0)}
    assert groups.count.dtype == np.int64
    assert (groups.count[0][~filled] == 0).all() and (groups.first[0][~filled] == 4).all()
    assert (groups.best[0][~filled] == -np.inf).all() and (groups.label[0][~filled] == -1).all()
    assert groups.slot[0, 3] == -1
    assert groups.label[0][groups.slot[0, :3]].tolist() == [2, 1, 1]
