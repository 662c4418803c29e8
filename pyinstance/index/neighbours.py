"""The result of a k-NN search over an index: what classifiers read."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Neighbours:
    """The ``k`` nearest references of each of ``Q`` queries, best first.

    Attributes:
        scores: ``(Q, k)`` float32 similarities (dot products of L2-normalised
            descriptors), non-increasing along each row; ``-inf`` where the collection
            holds fewer than ``k`` references.
        rows: ``(Q, k)`` int64 stable reference row ids (never renumbered, not even by
            compaction; ``InstanceIndex.image_ids(rows)`` names their images); ``-1`` where
            padded.
        labels: ``(Q, k)`` int64 instance codes of those rows (positions in
            ``instances``); ``-1`` where padded.
        instances: the instance id of each code.
    """

    scores: np.ndarray
    rows: np.ndarray
    labels: np.ndarray
    instances: tuple[str, ...]

    def __post_init__(self) -> None:
        shape = np.shape(self.scores)
        if len(shape) != 2:
            raise ValueError(f"scores: expected a (Q, k) array, got shape {shape}")
        for name in ("rows", "labels"):
            if np.shape(getattr(self, name)) != shape:
                raise ValueError(
                    f"{name}: expected shape {shape} like scores, got {np.shape(getattr(self, name))}"
                )

    @property
    def k(self) -> int:
        """Neighbours per query."""
        return int(np.shape(self.scores)[1])

    def __len__(self) -> int:
        return int(np.shape(self.scores)[0])
