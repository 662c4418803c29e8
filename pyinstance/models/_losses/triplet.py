"""Triplet losses over a miner's (anchor, positive, negative) index triplets."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from pyinstance._validate import check_float
from pyinstance.models._losses.inputs import Triplets, check_batch, check_triplets, zero_with_graph


class TripletMarginLoss(nn.Module):
    """Mean of ``max(0, x_a·x_n - x_a·x_p + margin)`` over mined triplets (Kohl's form).

    Args:
        margin: how much more similar the positive must be than the negative; a finite
            number >= 0 (the rule for every hinge margin in pyinstance: a negative margin
            would reward triplets whose negative is the more similar one).
    """

    needs_triplets: ClassVar[bool] = True
    logits: ClassVar[str | None] = None

    def __init__(self, margin: float = 0.1):
        super().__init__()
        self.margin = check_float(margin, "margin", minimum=0)

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        triplets: Triplets | None = None,
        *,
        logits: Any = None,
    ) -> torch.Tensor:
        check_batch(embeddings, labels)
        anchors, positives, negatives = check_triplets(
            triplets, embeddings.shape[0], type(self).__name__
        )
        if anchors.numel() == 0:
            return zero_with_graph(embeddings)
        anchor = embeddings[anchors]
        positive_sim = (anchor * embeddings[positives]).sum(dim=1)
        negative_sim = (anchor * embeddings[negatives]).sum(dim=1)
        return torch.relu(negative_sim - positive_sim + self.margin).mean()


class TripletSquaredLoss(nn.Module):
    """Mean of ``½·max(0, ‖a−p‖² − ‖a−n‖² + 2·margin)`` over mined triplets.

    The squared-distance form; for L2-normalised descriptors it equals
    :class:`TripletMarginLoss` with the same margin (``‖a−p‖² = 2 − 2·a·p``).

    Args:
        margin: a finite number >= 0.
    """

    needs_triplets: ClassVar[bool] = True
    logits: ClassVar[str | None] = None

    def __init__(self, margin: float = 0.1):
        super().__init__()
        self.margin = check_float(margin, "margin", minimum=0)

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        triplets: Triplets | None = None,
        *,
        logits: Any = None,
    ) -> torch.Tensor:
        check_batch(embeddings, labels)
        anchors, positives, negatives = check_triplets(
            triplets, embeddings.shape[0], type(self).__name__
        )
        if anchors.numel() == 0:
            return zero_with_graph(embeddings)
        anchor = embeddings[anchors]
        positive_sq = (anchor - embeddings[positives]).square().sum(dim=1)
        negative_sq = (anchor - embeddings[negatives]).square().sum(dim=1)
        return 0.5 * torch.relu(positive_sq - negative_sq + 2 * self.margin).mean()


class SoftmaxRatioLoss(nn.Module):
    """Hoffer & Ailon's triplet network loss, averaged over mined triplets.

    ``(d+, d−) = softmax(‖a−p‖, ‖a−n‖)`` and the loss is the squared error of that pair
    to (0, 1): ``d+² + (d− − 1)²`` (= ``2·d+²``). It has no margin: it keeps pushing
    until the negative is much farther than the positive.
    """

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
        check_batch(embeddings, labels)
        anchors, positives, negatives = check_triplets(
            triplets, embeddings.shape[0], type(self).__name__
        )
        if anchors.numel() == 0:
            return zero_with_graph(embeddings)
        anchor = embeddings[anchors]
        distances = torch.stack(
            [
                torch.linalg.vector_norm(anchor - embeddings[positives], dim=1),
                torch.linalg.vector_norm(anchor - embeddings[negatives], dim=1),
            ],
            dim=1,
        )
        ratios = torch.softmax(distances, dim=1)
        target = torch.tensor([0.0, 1.0], dtype=ratios.dtype, device=ratios.device)
        return (ratios - target).square().sum(dim=1).mean()
