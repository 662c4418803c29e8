"""Triplet losses over a miner's (anchor, positive, negative) index triplets."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn

from pyinstance._validate import check_float
from pyinstance.models._losses.inputs import (
    Triplets,
    check_batch,
    check_triplets,
    zero_with_graph,
)


class _TripletLoss(nn.Module, ABC):
    """The mean over the mined triplets of :meth:`per_triplet` (0, in the graph, for none)."""

    needs_triplets: ClassVar[bool] = True
    logits: ClassVar[str | None] = None

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        triplets: Triplets | None = None,
        *,
        logits: Any = None,
    ) -> torch.Tensor:
        """``logits`` are not used."""
        check_batch(embeddings, labels)
        anchors, positives, negatives = check_triplets(
            triplets, embeddings.shape[0], type(self).__name__
        )
        if anchors.numel() == 0:
            return zero_with_graph(embeddings)
        return self.per_triplet(
            embeddings[anchors], embeddings[positives], embeddings[negatives]
        ).mean()

    @abstractmethod
    def per_triplet(
        self, anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor
    ) -> torch.Tensor:
        """The loss of each triplet (T×D rows in, T values out)."""


class _MarginTripletLoss(_TripletLoss):
    """A triplet hinge with a ``margin``: a finite number >= 0 (the rule for every hinge
    margin in pyinstance: a negative margin would reward triplets whose negative is the more
    similar one)."""

    def __init__(self, margin: float = 0.1):
        super().__init__()
        self.margin = check_float(margin, "margin", minimum=0)


class TripletMarginLoss(_MarginTripletLoss):
    """Mean of ``max(0, x_a·x_n - x_a·x_p + margin)`` over mined triplets (Kohl's form).

    Args:
        margin: how much more similar the positive must be than the negative; a finite
            number >= 0.
    """

    def per_triplet(
        self, anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor
    ) -> torch.Tensor:
        positive_sim = (anchor * positive).sum(dim=1)
        negative_sim = (anchor * negative).sum(dim=1)
        return torch.relu(negative_sim - positive_sim + self.margin)


class TripletSquaredLoss(_MarginTripletLoss):
    """Mean of ``½·max(0, ‖a−p‖² − ‖a−n‖² + 2·margin)`` over mined triplets.

    The squared-distance form; for L2-normalised descriptors it equals
    :class:`TripletMarginLoss` with the same margin (``‖a−p‖² = 2 − 2·a·p``).

    Args:
        margin: a finite number >= 0.
    """

    def per_triplet(
        self, anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor
    ) -> torch.Tensor:
        positive_sq = (anchor - positive).square().sum(dim=1)
        negative_sq = (anchor - negative).square().sum(dim=1)
        return 0.5 * torch.relu(positive_sq - negative_sq + 2 * self.margin)


class SoftmaxRatioLoss(_TripletLoss):
    """Hoffer & Ailon's triplet network loss, averaged over mined triplets.

    ``(d+, d−) = softmax(‖a−p‖, ‖a−n‖)`` and the loss is the squared error of that pair
    to (0, 1): ``d+² + (d− − 1)²`` (= ``2·d+²``). It has no margin: it keeps pushing
    until the negative is much farther than the positive.
    """

    def per_triplet(
        self, anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor
    ) -> torch.Tensor:
        distances = torch.stack(
            [
                torch.linalg.vector_norm(anchor - positive, dim=1),
                torch.linalg.vector_norm(anchor - negative, dim=1),
            ],
            dim=1,
        )
        ratios = torch.softmax(distances, dim=1)
        target = torch.tensor([0.0, 1.0], dtype=ratios.dtype, device=ratios.device)
        return (ratios - target).square().sum(dim=1)
