"""Metric-learning losses on L2-normalised embeddings (dot-product similarity)."""

from __future__ import annotations

import torch
from torch import nn

from pyinstance._validate import check_float

Triplets = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _check_batch(embeddings: torch.Tensor, labels: torch.Tensor) -> None:
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings: expected B×D, got shape {tuple(embeddings.shape)}")
    if labels.dim() != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"labels: expected {embeddings.shape[0]} labels (one per embedding), got shape {tuple(labels.shape)}"
        )


class TripletMarginLoss(nn.Module):
    """Mean of ``max(0, x_a·x_n - x_a·x_p + margin)`` over mined triplets (Kohl's form).

    Args:
        margin: how much more similar the positive must be than the negative; a finite
            number >= 0 (the rule for every hinge margin in pyinstance: a negative margin
            would reward triplets whose negative is the more similar one).
    """

    def __init__(self, margin: float = 0.1):
        super().__init__()
        self.margin = check_float(margin, "margin", minimum=0)

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor, triplets: Triplets | None = None
    ) -> torch.Tensor:
        _check_batch(embeddings, labels)
        if triplets is None:
            raise ValueError(
                "triplets: TripletMarginLoss needs (anchors, positives, negatives) from a miner"
            )
        anchors, positives, negatives = triplets
        if anchors.numel() == 0:
            return embeddings.sum() * 0.0  # keeps the graph: a zero gradient, not an error
        anchor = embeddings[anchors]
        positive_sim = (anchor * embeddings[positives]).sum(dim=1)
        negative_sim = (anchor * embeddings[negatives]).sum(dim=1)
        return torch.relu(negative_sim - positive_sim + self.margin).mean()


class ContrastiveLoss(nn.Module):
    """Siamese loss over all pairs: pull positives above ``pos_margin``, push negatives below ``neg_margin``.

    Args:
        pos_margin, neg_margin: thresholds on the dot-product similarity of L2-normalised
            embeddings, finite numbers in [-1, 1] with ``neg_margin <= pos_margin``.
    """

    def __init__(self, pos_margin: float = 1.0, neg_margin: float = 0.5):
        super().__init__()
        self.pos_margin = check_float(pos_margin, "pos_margin", minimum=-1, maximum=1)
        self.neg_margin = check_float(neg_margin, "neg_margin", minimum=-1, maximum=1)
        if self.neg_margin > self.pos_margin:
            raise ValueError(
                f"neg_margin: expected <= pos_margin ({self.pos_margin}), got {self.neg_margin}"
            )

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor, triplets: Triplets | None = None
    ) -> torch.Tensor:
        _check_batch(embeddings, labels)
        similarity = embeddings @ embeddings.T
        same = labels[:, None] == labels[None, :]
        same.fill_diagonal_(False)
        different = labels[:, None] != labels[None, :]
        positive = torch.relu(self.pos_margin - similarity[same])
        negative = torch.relu(similarity[different] - self.neg_margin)
        terms = torch.cat([positive, negative])
        if terms.numel() == 0:
            return embeddings.sum() * 0.0
        return terms.mean()
