"""Losses against hand-computed values; margins validated."""

import math

import numpy as np
import pytest
import torch

import pyinstance
from pyinstance.models.losses import ContrastiveLoss, TripletMarginLoss


def test_triplet_margin_matches_the_formula():
    embeddings = torch.nn.functional.normalize(
        torch.randn(6, 8, generator=torch.Generator().manual_seed(0)), dim=1
    )
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    a, p, n = torch.tensor([0, 2, 4]), torch.tensor([1, 3, 5]), torch.tensor([2, 0, 1])
    expected = torch.stack(
        [
            torch.relu(embeddings[i] @ embeddings[k] - embeddings[i] @ embeddings[j] + 0.2)
            for i, j, k in zip(a, p, n, strict=True)
        ]
    ).mean()
    got = TripletMarginLoss(margin=0.2)(embeddings, labels, (a, p, n))
    assert torch.allclose(got, expected)


def test_triplet_margin_with_no_triplets_is_zero_with_a_gradient():
    embeddings = torch.randn(4, 3, requires_grad=True)
    empty = torch.empty(0, dtype=torch.int64)
    loss = TripletMarginLoss()(embeddings, torch.zeros(4, dtype=torch.int64), (empty, empty, empty))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(embeddings.grad, torch.zeros(4, 3))


def test_triplet_margin_rejects_bad_input():
    embeddings = torch.randn(4, 3)
    with pytest.raises(ValueError, match="needs .* from a miner"):
        TripletMarginLoss()(embeddings, torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError, match="labels: expected 4 labels"):
        TripletMarginLoss()(embeddings, torch.zeros(3, dtype=torch.int64), None)
    with pytest.raises(ValueError, match="embeddings: expected a B×D tensor"):
        TripletMarginLoss()(torch.randn(4), torch.zeros(4, dtype=torch.int64), None)


def test_contrastive_matches_the_formula():
    embeddings = torch.nn.functional.normalize(
        torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]), dim=1
    )
    labels = torch.tensor([0, 0, 1])
    sim = embeddings @ embeddings.T
    positives = [1 - sim[0, 1], 1 - sim[1, 0]]
    negatives = [torch.relu(sim[i, j] - 0.5) for i, j in [(0, 2), (1, 2), (2, 0), (2, 1)]]
    expected = torch.stack(positives + negatives).mean()
    assert torch.allclose(
        ContrastiveLoss(pos_margin=1.0, neg_margin=0.5)(embeddings, labels), expected
    )


@pytest.mark.parametrize(
    ("margin", "error", "match"),
    [
        (-0.1, ValueError, r"margin: expected a finite number >= 0, got -0.1"),
        (math.nan, ValueError, r"margin: expected a finite number >= 0, got nan"),
        (math.inf, ValueError, r"margin: expected a finite number >= 0, got inf"),
        ("0.1", TypeError, r"margin: expected a finite number >= 0, got '0.1' \(str\)"),
        (True, TypeError, r"margin: expected a finite number >= 0, got True"),
        (None, TypeError, r"margin: expected a finite number >= 0, got None"),
    ],
)
def test_triplet_margin_rejects_bad_margins(margin, error, match):
    with pytest.raises(error, match=match):
        TripletMarginLoss(margin=margin)
    with pytest.raises(error, match=match):
        pyinstance.get_loss("triplet_margin", margin=margin)


@pytest.mark.parametrize("margin", [0, 0.2, np.float32(0.2), np.float64(0.2), np.int64(0)])
def test_triplet_margin_accepts_numpy_and_python_numbers(margin):
    loss = TripletMarginLoss(margin=margin)
    assert type(loss.margin) is float and loss.margin == float(margin)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"pos_margin": math.nan},
            ValueError,
            "pos_margin: expected a finite number >= -1 and <= 1",
        ),
        ({"neg_margin": "0.5"}, TypeError, "neg_margin: expected a finite number"),
        ({"neg_margin": 1.5}, ValueError, "neg_margin: expected a finite number >= -1 and <= 1"),
        (
            {"pos_margin": 0.2, "neg_margin": 0.5},
            ValueError,
            r"neg_margin: expected <= pos_margin \(0.2\)",
        ),
        ({"pos_margin": False}, TypeError, "pos_margin"),
    ],
)
def test_contrastive_rejects_bad_margins(kwargs, error, match):
    with pytest.raises(error, match=match):
        ContrastiveLoss(**kwargs)


def test_contrastive_accepts_numpy_margins():
    loss = ContrastiveLoss(pos_margin=np.float32(0.75), neg_margin=np.float64(-0.25))
    assert (loss.pos_margin, loss.neg_margin) == (0.75, -0.25)


@pytest.mark.parametrize(
    ("name", "needs_triplets", "logits"),
    [
        ("triplet_margin", True, None),
        ("triplet_squared", True, None),
        ("softmax_ratio", True, None),
        ("contrastive", False, None),
        ("generalized_logistic", False, None),
        ("cross_entropy", False, "image"),
        ("fcn_multiscale_ce", False, "map"),
        ("triplet_region_ce", True, "regions"),
        ("joint_identification_verification", False, "image"),
    ],
)
def test_losses_declare_what_the_trainer_feeds_them(name, needs_triplets, logits):
    loss_class = type(pyinstance.get_loss(name))
    assert (loss_class.needs_triplets, loss_class.logits) == (needs_triplets, logits)


@pytest.mark.parametrize(
    ("triplets", "error", "match"),
    [
        ((torch.tensor([0]), torch.tensor([1])), TypeError, "triplets: expected a tuple"),
        (
            (torch.tensor([0]), torch.tensor([1]), torch.tensor([2.0])),
            TypeError,
            "triplets: expected negatives as a 1-D int64 tensor",
        ),
        (
            (torch.tensor([0, 1]), torch.tensor([1]), torch.tensor([2])),
            ValueError,
            "triplets: anchors, positives and negatives differ in length: 2, 1, 1",
        ),
        (
            (torch.tensor([0]), torch.tensor([1]), torch.tensor([4])),
            ValueError,
            r"triplets: expected indices in \[0, 4\)",
        ),
        (
            (torch.tensor([-1]), torch.tensor([1]), torch.tensor([2])),
            ValueError,
            r"triplets: expected indices in \[0, 4\)",
        ),
    ],
)
def test_triplet_losses_reject_bad_triplets(triplets, error, match):
    embeddings = torch.nn.functional.normalize(torch.randn(4, 3), dim=1)
    with pytest.raises(error, match=match):
        TripletMarginLoss()(embeddings, torch.tensor([0, 0, 1, 1]), triplets)
