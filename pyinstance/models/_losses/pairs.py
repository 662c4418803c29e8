"""Pair losses over every pair of the batch (no miner needed)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from pyinstance._validate import check_float
from pyinstance.models._losses.inputs import Triplets, check_batch, zero_with_graph


def _unordered_pairs(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows i < j of every pair and whether the two share a label."""
    first, second = torch.triu_indices(
        labels.numel(), labels.numel(), offset=1, device=labels.device
    )
    return first, second, labels[first] == labels[second]


class ContrastiveLoss(nn.Module):
    """Siamese loss over all pairs: pull positives above ``pos_margin``, push negatives below ``neg_margin``.

    Mean over every ordered pair ``i != j`` of ``max(0, pos_margin − x_i·x_j)`` (same label)
    or ``max(0, x_i·x_j − neg_margin)`` (different labels).

    Args:
        pos_margin, neg_margin: thresholds on the dot-product similarity of L2-normalised
            embeddings, finite numbers in [-1, 1] with ``neg_margin <= pos_margin``.
    """

    needs_triplets: ClassVar[bool] = False
    logits: ClassVar[str | None] = None

    def __init__(self, pos_margin: float = 1.0, neg_margin: float = 0.5):
        super().__init__()
        self.pos_margin = check_float(pos_margin, "pos_margin", minimum=-1, maximum=1)
        self.neg_margin = check_float(neg_margin, "neg_margin", minimum=-1, maximum=1)
        if self.neg_margin > self.pos_margin:
            raise ValueError(
                f"neg_margin: expected <= pos_margin ({self.pos_margin}), got {self.neg_margin}"
            )

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        triplets: Triplets | None = None,
        *,
        logits: Any = None,
    ) -> torch.Tensor:
        """``triplets`` and ``logits`` are not used: every pair of the batch counts."""
        check_batch(embeddings, labels)
        similarity = embeddings @ embeddings.T
        same = labels[:, None] == labels[None, :]
        same.fill_diagonal_(False)
        different = labels[:, None] != labels[None, :]
        positive = torch.relu(self.pos_margin - similarity[same])
        negative = torch.relu(similarity[different] - self.neg_margin)
        terms = torch.cat([positive, negative])
        if terms.numel() == 0:
            return zero_with_graph(embeddings)
        return terms.mean()


def verification_loss(
    embeddings: torch.Tensor, labels: torch.Tensor, margin: float
) -> torch.Tensor:
    """DeepID2's verification loss, averaged over the pairs ``i < j`` of the batch.

    ``½·‖x_i − x_j‖²`` for a pair of one instance, ``½·max(0, margin − ‖x_i − x_j‖)²``
    otherwise (the Euclidean contrastive loss). Inputs are assumed checked.
    """
    first, second, same = _unordered_pairs(labels)
    if first.numel() == 0:
        return zero_with_graph(embeddings)
    distance = torch.linalg.vector_norm(embeddings[first] - embeddings[second], dim=1)
    terms = torch.where(same, distance.square(), torch.relu(margin - distance).square())
    return 0.5 * terms.mean()


class GeneralizedLogisticLoss(nn.Module):
    """DDML's pair loss, averaged over the pairs ``i < j`` of the batch.

    ``(1/β)·log(1 + exp(β·(1 − ℓ·(τ − d²))))`` with ``d² = ‖x_i − x_j‖²`` and ``ℓ = +1``
    for a pair of one instance, ``−1`` otherwise: a smooth hinge asking for ``d² < τ − 1``
    within an instance and ``d² > τ + 1`` across instances.

    Args:
        tau: the distance threshold τ, a finite number > 0. The default 2 suits
            L2-normalised descriptors (``d² ∈ [0, 4]``; it asks for cosine similarities
            above 0.5 within and below −0.5 across instances).
        beta: the sharpness β, a finite number > 0 (large: close to the hinge).
    """

    needs_triplets: ClassVar[bool] = False
    logits: ClassVar[str | None] = None

    def __init__(self, tau: float = 2.0, beta: float = 2.0):
        super().__init__()
        self.tau = check_float(tau, "tau", minimum=0, exclusive_minimum=True)
        self.beta = check_float(beta, "beta", minimum=0, exclusive_minimum=True)

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        triplets: Triplets | None = None,
        *,
        logits: Any = None,
    ) -> torch.Tensor:
        """``triplets`` and ``logits`` are not used: every pair of the batch counts."""
        check_batch(embeddings, labels)
        first, second, same = _unordered_pairs(labels)
        if first.numel() == 0:
            return zero_with_graph(embeddings)
        squared = (embeddings[first] - embeddings[second]).square().sum(dim=1)
        sign = same.to(squared.dtype) * 2 - 1
        scaled = self.beta * (1 - sign * (self.tau - squared))
        return (torch.logaddexp(torch.zeros_like(scaled), scaled) / self.beta).mean()
