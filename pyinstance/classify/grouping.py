"""Per-query grouping of k-NN results by instance, vectorised (no loop over queries)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class InstanceGroups:
    """The instances among each query's neighbours, one slot per instance.

    A query with ``g`` distinct instances among its ``k`` neighbours fills ``g`` of its
    ``k`` slots; the others are empty (``label`` -1, ``count`` 0, ``best`` -inf).

    Attributes:
        label: ``(Q, k)`` instance code per slot.
        count: ``(Q, k)`` neighbours of that instance.
        best: ``(Q, k)`` similarity of its best neighbour.
        first: ``(Q, k)`` column of its best neighbour (``k`` for empty slots).
        slot: ``(Q, k)`` slot of each neighbour column (-1 for padding).
    """

    label: np.ndarray
    count: np.ndarray
    best: np.ndarray
    first: np.ndarray
    slot: np.ndarray

    def total(self, values: np.ndarray, include: np.ndarray | None = None) -> np.ndarray:
        """Per slot, the sum of ``values`` (Q×k, per neighbour) over its members (in ``include``)."""
        q, k = self.slot.shape
        member = self.slot >= 0 if include is None else (self.slot >= 0) & include
        flat = (np.arange(q)[:, None] * k + self.slot)[member]
        return np.bincount(flat, weights=values[member], minlength=q * k).reshape(q, k)

    def of_member(self, per_slot: np.ndarray) -> np.ndarray:
        """``per_slot`` (Q×k) read at each neighbour's slot (padding reads slot 0)."""
        return np.take_along_axis(per_slot, np.maximum(self.slot, 0), axis=1)


def group_by_instance(scores: np.ndarray, labels: np.ndarray) -> InstanceGroups:
    """Group each row's neighbours (``scores``, ``labels``: Q×k, -1 = padding) by instance."""
    q, k = labels.shape
    columns = np.broadcast_to(np.arange(k), (q, k))
    # By label, then best score first, then earliest column (lexsort is stable).
    order = np.lexsort((columns, -scores, labels), axis=1)
    sorted_labels = np.take_along_axis(labels, order, axis=1)
    starts = np.ones((q, k), dtype=bool)
    starts[:, 1:] = sorted_labels[:, 1:] != sorted_labels[:, :-1]
    sorted_slot = np.cumsum(starts, axis=1) - 1
    sorted_slot[sorted_labels < 0] = -1
    slot = np.empty_like(sorted_slot)
    np.put_along_axis(slot, order, sorted_slot, axis=1)

    label = np.full((q, k), -1, dtype=np.int64)
    best = np.full((q, k), -np.inf)
    first = np.full((q, k), k, dtype=np.int64)
    head = starts & (sorted_labels >= 0)
    rows = np.nonzero(head)[0]
    slots = sorted_slot[head]
    label[rows, slots] = sorted_labels[head]
    best[rows, slots] = np.take_along_axis(scores, order, axis=1)[head]
    first[rows, slots] = order[head]
    groups = InstanceGroups(label, np.zeros((q, k), dtype=np.int64), best, first, slot)
    count = groups.total(np.ones((q, k))).astype(np.int64)
    return InstanceGroups(label, count, best, first, slot)


def rank_instances(groups: InstanceGroups, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slots ordered by ``key`` (descending; ties: the best neighbour ranked first).

    Returns ``(order, ranked_labels)``: Q×k slot indices and their instance codes, -1 for
    empty slots (always last).
    """
    key = np.where(groups.label >= 0, key, -np.inf)
    order = np.lexsort((groups.first, -key), axis=1)
    return order, np.take_along_axis(groups.label, order, axis=1)
