"""Registers the built-in losses (implemented in :mod:`pyinstance.models.losses`)."""

from __future__ import annotations

from pyinstance.hookspecs import Register, hookimpl
from pyinstance.models.losses import ContrastiveLoss, TripletMarginLoss


@hookimpl
def pyinstance_register_losses(register: Register) -> None:
    register("triplet_margin", TripletMarginLoss, aliases=("triplet",))
    register("contrastive", ContrastiveLoss)
