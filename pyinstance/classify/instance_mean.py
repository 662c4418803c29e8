"""``instance_mean``: 1-NN against one averaged descriptor per instance."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pyinstance.classify._checks import (
    CHUNK_ROWS,
    check_collection,
    check_count,
    check_queries,
    float32_rows,
)
from pyinstance.classify.prediction import Prediction
from pyinstance.index.neighbours import Neighbours


class InstanceMean:
    """Each instance is the re-normalised mean of its reference descriptors (built in
    ``fit``); a query goes to the instance whose mean is most similar (for Q×R×D
    multi-region queries, the best region counts).

    Reads no neighbours (``k = 0``); ``top`` instances are ranked per query.

    Confidence: the similarity to the winning instance's mean, clipped to [0, 1].
    """

    k = 0

    def __init__(self, *, top: int = 5):
        self.top = check_count(top, "top", minimum=1)
        self.means: torch.Tensor | None = None

    def fit(self, descriptors: Any, labels: Any) -> InstanceMean:
        """Average each instance's descriptors (codes -1 are ignored) and re-normalise."""
        array, codes = check_collection(descriptors, labels)
        sums = torch.zeros(int(codes.max()) + 1, array.shape[1], dtype=torch.float64)
        for start in range(0, array.shape[0], CHUNK_ROWS):
            chunk = torch.from_numpy(codes[start : start + CHUNK_ROWS])
            keep = chunk >= 0
            rows = float32_rows(array, start, start + CHUNK_ROWS)[keep].to(torch.float64)
            sums.index_add_(0, chunk[keep], rows)
        norms = sums.norm(dim=1, keepdim=True)
        present = torch.from_numpy(np.bincount(codes[codes >= 0], minlength=sums.shape[0]) > 0)
        if bool((norms[present] == 0).any()):
            raise ValueError("descriptors: an instance's descriptors average to zero")
        means = (sums / norms.clamp_min(1e-300)).to(torch.float32)
        means[~present] = float("nan")  # codes without references: never ranked
        self.means = means
        return self

    def predict(self, neighbours: Neighbours, queries: Any) -> Prediction:
        """Rank instance means by similarity to each query (``neighbours`` gives Q only)."""
        if self.means is None:
            raise RuntimeError("InstanceMean.predict: call fit() with the collection first")
        if not isinstance(neighbours, Neighbours):
            raise TypeError(
                f"neighbours: expected a pyinstance.index.Neighbours, got {type(neighbours).__name__}"
            )
        tensor = torch.as_tensor(check_queries(queries, len(neighbours), self.means.shape[1]))
        tensor = tensor.to(torch.float32)
        similarity = torch.nan_to_num(tensor @ self.means.T, nan=-torch.inf)
        if similarity.dim() == 3:  # Q×R×I: the best region per instance
            similarity = similarity.amax(dim=1)
        present = int(torch.isfinite(self.means[:, 0]).sum())
        scores, ranked = similarity.topk(min(self.top, present), dim=1)
        return Prediction(ranked[:, 0], scores[:, 0].clamp(0.0, 1.0), ranked, scores)

    def __repr__(self) -> str:
        return f"InstanceMean(top={self.top})"
