"""generalized_logistic (DDML) against a float64 oracle written out with loops."""

from __future__ import annotations

import math

import pytest
import torch

import pyinstance
from pyinstance.models.losses import ContrastiveLoss, GeneralizedLogisticLoss

LABELS = torch.tensor([0, 0, 1, 1, 1, 2])


def _unit(rows, dim, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(
        torch.randn(rows, dim, generator=generator, dtype=torch.float64), dim=1
    )


def _oracle(embeddings, labels, tau, beta):
    terms = []
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            squared = sum(
                (float(a) - float(b)) ** 2
                for a, b in zip(embeddings[i], embeddings[j], strict=True)
            )
            sign = 1.0 if labels[i] == labels[j] else -1.0
            terms.append(math.log1p(math.exp(beta * (1 - sign * (tau - squared)))) / beta)
    return sum(terms) / len(terms)


@pytest.mark.parametrize(("tau", "beta"), [(2.0, 2.0), (1.5, 0.5), (3.0, 10.0)])
def test_generalized_logistic_matches_ddml(tau, beta):
    embeddings = _unit(6, 4, seed=0)
    got = GeneralizedLogisticLoss(tau=tau, beta=beta)(embeddings, LABELS)
    assert got.item() == pytest.approx(_oracle(embeddings, LABELS, tau, beta), rel=1e-12)


def test_generalized_logistic_approaches_the_hinge_and_stays_finite():
    embeddings = _unit(6, 4, seed=1) * 30  # far apart: exp(β·…) overflows a naive formula
    loss = GeneralizedLogisticLoss(tau=2.0, beta=1e4)(embeddings, LABELS)
    hinge = []
    for i in range(6):
        for j in range(i + 1, 6):
            squared = float((embeddings[i] - embeddings[j]).square().sum())
            sign = 1.0 if LABELS[i] == LABELS[j] else -1.0
            hinge.append(max(0.0, 1 - sign * (2.0 - squared)))
    assert math.isfinite(loss.item())
    assert loss.item() == pytest.approx(sum(hinge) / len(hinge), abs=1e-3)


def test_generalized_logistic_ignores_triplets_and_keeps_the_graph_for_one_image():
    embeddings = _unit(6, 4, seed=2)
    loss = GeneralizedLogisticLoss()
    some = (torch.tensor([0]), torch.tensor([1]), torch.tensor([2]))
    assert loss(embeddings, LABELS, some) == loss(embeddings, LABELS)
    single = embeddings[:1].clone().requires_grad_(True)
    value = loss(single, LABELS[:1])
    value.backward()
    assert value.item() == 0.0 and single.grad is not None


@pytest.mark.parametrize(
    "loss",
    [GeneralizedLogisticLoss(tau=1.7, beta=3.0), ContrastiveLoss(0.9, 0.2)],
    ids=lambda loss: type(loss).__name__,
)
def test_gradients_match_finite_differences(loss):
    embeddings = _unit(6, 3, seed=3).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: loss(e, LABELS), (embeddings,))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"tau": 0}, ValueError, "tau: expected a finite number > 0, got 0"),
        ({"tau": math.nan}, ValueError, "tau: expected a finite number > 0"),
        ({"beta": -1.0}, ValueError, "beta: expected a finite number > 0, got -1.0"),
        ({"beta": "2"}, TypeError, "beta: expected a finite number > 0"),
    ],
)
def test_generalized_logistic_rejects_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        pyinstance.get_loss("generalized_logistic", **kwargs)
