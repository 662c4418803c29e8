"""Metric-learning and classification losses, one module per family.

Every loss is called as ``loss(embeddings, labels, triplets=None, *, logits=None)`` and
declares ``needs_triplets`` and ``logits`` (see
:class:`pyinstance.models.contracts.LossContract`).
"""

from pyinstance.models._losses.classification import (
    CrossEntropyLoss,
    FCNMultiscaleCrossEntropyLoss,
)
from pyinstance.models._losses.combined import (
    JointIdentificationVerificationLoss,
    TripletRegionCrossEntropyLoss,
)
from pyinstance.models._losses.pairs import ContrastiveLoss, GeneralizedLogisticLoss
from pyinstance.models._losses.triplet import (
    SoftmaxRatioLoss,
    TripletMarginLoss,
    TripletSquaredLoss,
)

__all__ = [
    "ContrastiveLoss",
    "CrossEntropyLoss",
    "FCNMultiscaleCrossEntropyLoss",
    "GeneralizedLogisticLoss",
    "JointIdentificationVerificationLoss",
    "SoftmaxRatioLoss",
    "TripletMarginLoss",
    "TripletRegionCrossEntropyLoss",
    "TripletSquaredLoss",
]
