"""The losses' argument checks name the offending value, and the joint loss's default margin.

Written for survivors of mutation testing (docs/mutation-mut-models2-lane.md): a non-tensor
argument named by its type, each triplet member named in its error, a non-tensor triplet
member refused with a TypeError (not an AttributeError), a class map without columns, and
``JointIdentificationVerificationLoss``'s default margin of 1.
"""

from __future__ import annotations

import math

import pytest
import torch

from pyinstance.models.losses import (
    FCNMultiscaleCrossEntropyLoss,
    JointIdentificationVerificationLoss,
    TripletMarginLoss,
)

_EMBEDDINGS = torch.eye(4, 3)
_LABELS = torch.tensor([0, 0, 1, 1])


def test_a_non_tensor_is_named_by_its_type():
    with pytest.raises(ValueError, match=r"^embeddings: expected a B×D tensor, got list$"):
        TripletMarginLoss()([[1.0, 0.0]], torch.tensor([0]), (torch.tensor([0]),) * 3)


@pytest.mark.parametrize("position", [0, 1, 2])
def test_each_triplet_member_is_named(position):
    name = ("anchors", "positives", "negatives")[position]
    triplets = [torch.tensor([0]), torch.tensor([1]), torch.tensor([2])]
    triplets[position] = torch.tensor([0.0])
    with pytest.raises(
        TypeError,
        match=rf"^triplets: expected {name} as a 1-D int64 tensor, got torch.float32 shape \(1,\)$",
    ):
        TripletMarginLoss()(_EMBEDDINGS, _LABELS, tuple(triplets))


def test_a_triplet_member_that_is_no_tensor_is_a_type_error():
    triplets = ([0], torch.tensor([1]), torch.tensor([2]))
    with pytest.raises(
        TypeError, match=r"^triplets: expected anchors as a 1-D int64 tensor, got list list$"
    ):
        TripletMarginLoss()(_EMBEDDINGS, _LABELS, triplets)


@pytest.mark.parametrize("size", [(3, 0), (0, 3)])
def test_a_class_map_without_locations_is_refused(size):
    class_map = torch.zeros(4, 2, *size)
    with pytest.raises(ValueError, match=r"^logits: .* with at least one location, got shape"):
        FCNMultiscaleCrossEntropyLoss()(_EMBEDDINGS, _LABELS, logits=class_map)


def test_joint_loss_default_margin_is_one():
    # Two images of different instances 0.5 apart: verification ½·(1 − 0.5)² = 0.125
    # (with margin 2 it would be 1.125). Logits (0, 0): cross-entropy log 2.
    embeddings = torch.tensor([[0.0, 0.0], [0.5, 0.0]], dtype=torch.float64)
    labels = torch.tensor([0, 1])
    logits = torch.zeros(2, 2, dtype=torch.float64)
    loss = JointIdentificationVerificationLoss()(embeddings, labels, logits=logits)
    assert loss.item() == pytest.approx(math.log(2) + 0.05 * 0.125, rel=1e-12)
