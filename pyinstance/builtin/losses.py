"""Registers the built-in losses (implemented in :mod:`pyinstance.models.losses`)."""

from __future__ import annotations

from pyinstance.hookspecs import Register, hookimpl
from pyinstance.models.losses import (
    ContrastiveLoss,
    CrossEntropyLoss,
    FCNMultiscaleCrossEntropyLoss,
    GeneralizedLogisticLoss,
    JointIdentificationVerificationLoss,
    SoftmaxRatioLoss,
    TripletMarginLoss,
    TripletRegionCrossEntropyLoss,
    TripletSquaredLoss,
)


@hookimpl
def pyinstance_register_losses(register: Register) -> None:
    register("triplet_margin", TripletMarginLoss, aliases=("triplet",))
    register("triplet_squared", TripletSquaredLoss)
    register("softmax_ratio", SoftmaxRatioLoss)
    register("contrastive", ContrastiveLoss)
    register("generalized_logistic", GeneralizedLogisticLoss)
    register("cross_entropy", CrossEntropyLoss)
    register("fcn_multiscale_ce", FCNMultiscaleCrossEntropyLoss)
    register("triplet_region_ce", TripletRegionCrossEntropyLoss)
    register("joint_identification_verification", JointIdentificationVerificationLoss)
