"""Pair losses on the smallest batches (one image, one pair), their defaults and their
boundary options, each against values written out in the test."""

from __future__ import annotations

import math

import pytest
import torch

from pyinstance.models.losses import (
    ContrastiveLoss,
    GeneralizedLogisticLoss,
    JointIdentificationVerificationLoss,
)

PAIR_LOSSES = [
    ContrastiveLoss(),
    GeneralizedLogisticLoss(),
    JointIdentificationVerificationLoss(),
]


def _logits(rows: int) -> torch.Tensor:
    return torch.zeros(rows, 3, dtype=torch.float64)


@pytest.mark.parametrize("loss", PAIR_LOSSES, ids=lambda loss: type(loss).__name__)
def test_one_image_has_no_pair_zero_loss_and_a_zero_gradient(loss):
    embeddings = torch.tensor([[0.6, 0.8]], dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0])
    value = loss(embeddings, labels, logits=_logits(1))
    value.backward()
    # the identification term of the joint loss: the cross-entropy of 3 equal scores
    expected = math.log(3) if loss.logits == "image" else 0.0
    assert value.item() == pytest.approx(expected, rel=1e-12)
    assert torch.equal(embeddings.grad, torch.zeros(1, 2, dtype=torch.float64))


def test_contrastive_of_one_pair_of_different_instances():
    # one unordered pair: two ordered terms, both max(0, 0.6 - 0.5) for a dot product of 0.6
    embeddings = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)
    value = ContrastiveLoss(pos_margin=1.0, neg_margin=0.5)(embeddings, torch.tensor([0, 1]))
    assert value.item() == pytest.approx(0.1, rel=1e-12)


def test_verification_of_a_single_pair_is_not_zero():
    # two images of one instance at distance 0.5: ½·0.5² = 0.125, weighted by λ = 1
    embeddings = torch.tensor([[1.0, 0.0], [1.0, 0.5]], dtype=torch.float64)
    loss = JointIdentificationVerificationLoss(weight=1.0, margin=1.0)
    value = loss(embeddings, torch.tensor([0, 0]), logits=_logits(2))
    assert value.item() == pytest.approx(math.log(3) + 0.125, rel=1e-12)
    # different instances at distance 0.5 < margin 1: ½·(1 − 0.5)² = 0.125 as well; at 1.5: 0
    far = torch.tensor([[1.0, 0.0], [1.0, 1.5]], dtype=torch.float64)
    value = loss(far, torch.tensor([0, 1]), logits=_logits(2))
    assert value.item() == pytest.approx(math.log(3), rel=1e-12)


def test_generalized_logistic_defaults_are_tau_2_and_beta_2():
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1])
    terms = []
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        squared = float((embeddings[i] - embeddings[j]).square().sum())
        sign = 1.0 if labels[i] == labels[j] else -1.0
        terms.append(math.log1p(math.exp(2.0 * (1 - sign * (2.0 - squared)))) / 2.0)
    value = GeneralizedLogisticLoss()(embeddings, labels)
    assert value.item() == pytest.approx(sum(terms) / 3, rel=1e-12)


def test_contrastive_accepts_equal_margins():
    loss = ContrastiveLoss(pos_margin=0.5, neg_margin=0.5)
    embeddings = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], dtype=torch.float64)
    # ordered pairs: (0,1),(1,0) same: max(0, 0.5 − 0.6) = 0; (0,2),(2,0): max(0, 0 − 0.5) = 0;
    # (1,2),(2,1): max(0, 0.8 − 0.5) = 0.3
    value = loss(embeddings, torch.tensor([0, 0, 1]))
    assert value.item() == pytest.approx(2 * 0.3 / 6, rel=1e-12)
