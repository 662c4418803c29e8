"""Losses that add a classification term to a metric-learning term."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from pyinstance._validate import check_float
from pyinstance.models._losses.classification import CrossEntropyLoss
from pyinstance.models._losses.inputs import Triplets, check_region_logits
from pyinstance.models._losses.pairs import verification_loss
from pyinstance.models._losses.triplet import TripletMarginLoss
from pyinstance.models.region_head import region_cross_entropy


class TripletRegionCrossEntropyLoss(nn.Module):
    """Kohl's full loss (eq. 3.6): triplet loss + α·cross-entropy over the k selected regions.

    The triplet term is :class:`TripletMarginLoss` (dot form) on the descriptors; the
    cross-entropy scores each of the k regions of an image (``logits``: B×k×K, e.g.
    :attr:`pyinstance.models.region_head.RegionPooling.region_logits`; the ``topk_region``
    head selects k = 4 by default) against its label, averaged over regions and images
    (:func:`~pyinstance.models.region_head.region_cross_entropy`).

    Args:
        margin: the triplet margin, a finite number >= 0.
        alpha: the weight α of the region cross-entropy, a finite number >= 0.
    """

    needs_triplets: ClassVar[bool] = True
    logits: ClassVar[str | None] = "regions"

    def __init__(self, margin: float = 0.1, alpha: float = 1.0):
        super().__init__()
        self.triplet = TripletMarginLoss(margin)
        self.alpha = check_float(alpha, "alpha", minimum=0)

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        triplets: Triplets | None = None,
        *,
        logits: torch.Tensor | None = None,
    ) -> torch.Tensor:
        triplet = self.triplet(embeddings, labels, triplets)
        regions = check_region_logits(logits, labels)
        return triplet + self.alpha * region_cross_entropy(regions, labels)


class JointIdentificationVerificationLoss(nn.Module):
    """DeepID2's joint loss: identification (cross-entropy) + λ·verification (contrastive).

    Identification: the cross-entropy of the image class scores ``logits`` (B×K) against
    ``labels``. Verification: over the pairs ``i < j`` of the batch, ``½·‖x_i − x_j‖²``
    for a pair of one instance and ``½·max(0, m − ‖x_i − x_j‖)²`` otherwise, averaged.

    Args:
        weight: λ, a finite number >= 0 (DeepID2 found 0.05 best).
        margin: m, a finite number > 0; the default 1 suits L2-normalised descriptors
            (distances in [0, 2]).
    """

    needs_triplets: ClassVar[bool] = False
    logits: ClassVar[str | None] = "image"

    def __init__(self, weight: float = 0.05, margin: float = 1.0):
        super().__init__()
        self.identification = CrossEntropyLoss()
        self.weight = check_float(weight, "weight", minimum=0)
        self.margin = check_float(margin, "margin", minimum=0, exclusive_minimum=True)

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        triplets: Triplets | None = None,
        *,
        logits: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``triplets`` are not used: every pair of the batch counts."""
        identification = self.identification(embeddings, labels, logits=logits)
        return identification + self.weight * verification_loss(embeddings, labels, self.margin)
