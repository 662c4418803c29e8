"""What a classifier returns for a batch of queries."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The label of a query answered "unknown".
UNKNOWN = -1


def _as(value: object, name: str, kind: str, dtype: type, ndim: int) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {array.shape}")
    if array.size and array.dtype.kind not in kind:
        raise ValueError(f"{name}: expected {dtype.__name__} values, got dtype {array.dtype}")
    return np.ascontiguousarray(array, dtype=dtype)


@dataclass(frozen=True)
class Prediction:
    """Per query: the instance or unknown, a confidence, and the ranked instances.

    Attributes:
        labels: ``(Q,)`` int64 instance codes; ``-1`` (:data:`UNKNOWN`) means unknown.
        confidence: ``(Q,)`` float32 in ``[0, 1]``: what open-set rejection thresholds
            (each classifier documents its definition).
        ranked: ``(Q, m)`` int64 instance codes, best first; ``-1`` pads rows with fewer
            than ``m`` instances.
        ranked_scores: ``(Q, m)`` float32 classifier scores of ``ranked`` (on the
            classifier's own scale), non-increasing; ``-inf`` where padded.
    """

    labels: np.ndarray
    confidence: np.ndarray
    ranked: np.ndarray
    ranked_scores: np.ndarray

    def __post_init__(self) -> None:
        labels = _as(self.labels, "labels", "iu", np.int64, 1)
        confidence = _as(self.confidence, "confidence", "fiu", np.float32, 1)
        ranked = _as(self.ranked, "ranked", "iu", np.int64, 2)
        ranked_scores = _as(self.ranked_scores, "ranked_scores", "fiu", np.float32, 2)
        q = labels.shape[0]
        if confidence.shape != (q,):
            raise ValueError(
                f"confidence: expected shape ({q},) like labels, got {confidence.shape}"
            )
        if ranked.shape[0] != q or ranked_scores.shape != ranked.shape:
            raise ValueError(
                f"ranked and ranked_scores: expected equal ({q}, m) shapes, got "
                f"{ranked.shape} and {ranked_scores.shape}"
            )
        if bool((labels < UNKNOWN).any()) or bool((ranked < UNKNOWN).any()):
            raise ValueError("labels and ranked: expected instance codes >= 0 or -1 (unknown)")
        if not bool(((confidence >= 0) & (confidence <= 1)).all()):
            raise ValueError(
                f"confidence: expected values in [0, 1], got {confidence[~((confidence >= 0) & (confidence <= 1))][:5].tolist()}"
            )
        if bool(np.isnan(ranked_scores).any()):
            raise ValueError("ranked_scores: NaN values")
        for name, value in (
            ("labels", labels),
            ("confidence", confidence),
            ("ranked", ranked),
            ("ranked_scores", ranked_scores),
        ):
            value.setflags(write=False)
            object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return int(self.labels.shape[0])
