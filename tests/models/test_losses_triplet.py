"""Triplet losses (triplet_margin, triplet_squared, softmax_ratio) against float64 oracles
written out with loops, and their gradients against finite differences."""

from __future__ import annotations

import math

import pytest
import torch

import pyinstance
from pyinstance.models.losses import SoftmaxRatioLoss, TripletMarginLoss, TripletSquaredLoss

LABELS = torch.tensor([0, 0, 1, 1, 2, 2, 2])
TRIPLETS = (
    torch.tensor([0, 1, 2, 3, 4, 5, 6, 4]),
    torch.tensor([1, 0, 3, 2, 5, 6, 4, 6]),
    torch.tensor([2, 4, 0, 6, 1, 3, 2, 0]),
)
EMPTY = (torch.empty(0, dtype=torch.int64),) * 3


def _random(rows, dim, seed):
    return torch.randn(
        rows, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )


def _unit(rows, dim, seed):
    return torch.nn.functional.normalize(_random(rows, dim, seed), dim=1)


def _rows(triplets):
    return list(zip(*(t.tolist() for t in triplets), strict=True))


def _squared_distance(x, y):
    return sum((float(a) - float(b)) ** 2 for a, b in zip(x, y, strict=True))


def test_triplet_squared_matches_the_formula():
    embeddings = _random(7, 5, seed=0)  # not normalised: the formula holds anywhere
    for margin in (0.1, 0.7):
        terms = [
            0.5
            * max(
                0.0,
                _squared_distance(embeddings[a], embeddings[p])
                - _squared_distance(embeddings[a], embeddings[n])
                + 2 * margin,
            )
            for a, p, n in _rows(TRIPLETS)
        ]
        assert 0 < sum(t > 0 for t in terms) < len(terms)  # some active, some not
        got = TripletSquaredLoss(margin=margin)(embeddings, LABELS, TRIPLETS)
        assert got.item() == pytest.approx(sum(terms) / len(terms), rel=1e-12)
    assert TripletSquaredLoss().margin == 0.1


def test_triplet_squared_equals_the_dot_form_on_unit_vectors():
    raw = _random(7, 5, seed=1)
    for margin in (0.0, 0.1, 0.5):
        values, gradients = [], []
        for loss in (TripletSquaredLoss(margin), TripletMarginLoss(margin)):
            leaf = raw.clone().requires_grad_(True)
            value = loss(torch.nn.functional.normalize(leaf, dim=1), LABELS, TRIPLETS)
            value.backward()
            values.append(value)
            gradients.append(leaf.grad)
        assert values[0].item() > 0
        torch.testing.assert_close(values[0], values[1], rtol=1e-12, atol=1e-14)
        # equal through the normalisation too (they differ only along each unit vector)
        torch.testing.assert_close(gradients[0], gradients[1], rtol=1e-10, atol=1e-12)


def test_softmax_ratio_matches_hoffer_and_ailon():
    embeddings = _random(7, 5, seed=2)
    terms = []
    for a, p, n in _rows(TRIPLETS):
        positive = math.sqrt(_squared_distance(embeddings[a], embeddings[p]))
        negative = math.sqrt(_squared_distance(embeddings[a], embeddings[n]))
        d_plus = math.exp(positive) / (math.exp(positive) + math.exp(negative))
        d_minus = math.exp(negative) / (math.exp(positive) + math.exp(negative))
        terms.append(d_plus**2 + (d_minus - 1) ** 2)
        assert terms[-1] == pytest.approx(2 * d_plus**2)
    got = SoftmaxRatioLoss()(embeddings, LABELS, TRIPLETS)
    assert got.item() == pytest.approx(sum(terms) / len(terms), rel=1e-12)


def test_softmax_ratio_falls_as_the_negative_moves_away():
    anchor_positive = torch.tensor([[1.0, 0.0], [0.8, 0.6]], dtype=torch.float64)
    triplet = (torch.tensor([0]), torch.tensor([1]), torch.tensor([2]))
    values = [
        SoftmaxRatioLoss()(
            torch.cat([anchor_positive, torch.tensor([[math.cos(t), math.sin(t)]])]),
            torch.tensor([0, 0, 1]),
            triplet,
        ).item()
        for t in (0.7, 1.5, 3.0)
    ]
    assert values[0] > values[1] > values[2] > 0


def test_softmax_ratio_gradient_is_finite_for_duplicate_images():
    embeddings = _unit(3, 4, seed=3)
    embeddings = torch.stack([embeddings[0], embeddings[0], embeddings[2]]).requires_grad_(True)
    triplet = (torch.tensor([0]), torch.tensor([1]), torch.tensor([2]))
    SoftmaxRatioLoss()(embeddings, torch.tensor([0, 0, 1]), triplet).backward()
    assert torch.isfinite(embeddings.grad).all()


@pytest.mark.parametrize(
    "loss",
    [TripletMarginLoss(margin=0.3), TripletSquaredLoss(margin=0.3), SoftmaxRatioLoss()],
    ids=lambda loss: type(loss).__name__,
)
def test_gradients_match_finite_differences(loss):
    embeddings = _unit(7, 4, seed=4).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: loss(e, LABELS, TRIPLETS), (embeddings,))


@pytest.mark.parametrize(
    "loss",
    [TripletMarginLoss(), TripletSquaredLoss(), SoftmaxRatioLoss()],
    ids=lambda loss: type(loss).__name__,
)
def test_no_triplets_is_zero_with_a_gradient_and_none_is_refused(loss):
    embeddings = _unit(7, 4, seed=5).requires_grad_(True)
    value = loss(embeddings, LABELS, EMPTY)
    value.backward()
    assert value.item() == 0.0 and torch.equal(
        embeddings.grad, torch.zeros(7, 4, dtype=torch.float64)
    )
    with pytest.raises(ValueError, match=f"triplets: {type(loss).__name__} needs"):
        loss(embeddings, LABELS)


@pytest.mark.parametrize(
    ("margin", "error", "match"),
    [
        (-0.1, ValueError, r"margin: expected a finite number >= 0, got -0.1"),
        (math.inf, ValueError, r"margin: expected a finite number >= 0, got inf"),
        ("0.1", TypeError, r"margin: expected a finite number >= 0, got '0.1' \(str\)"),
    ],
)
@pytest.mark.parametrize("name", ["triplet_margin", "triplet_squared"])
def test_triplet_hinges_reject_bad_margins(name, margin, error, match):
    with pytest.raises(error, match=match):
        pyinstance.get_loss(name, margin=margin)


def test_softmax_ratio_has_no_options():
    with pytest.raises(TypeError, match="margin"):
        pyinstance.get_loss("softmax_ratio", margin=0.1)
