"""Equal values and gradients to pytorch-metric-learning where it has the same loss, and
our miners' (a, p, n) tuples accepted by its losses as ``indices_tuple``."""

from __future__ import annotations

import pytest
import torch

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
from pytorch_metric_learning.distances import DotProductSimilarity, LpDistance  # noqa: E402
from pytorch_metric_learning.reducers import MeanReducer, SumReducer  # noqa: E402

import pyinstance  # noqa: E402
from pyinstance.models.losses import (  # noqa: E402
    ContrastiveLoss,
    TripletMarginLoss,
    TripletSquaredLoss,
)

LABELS = torch.arange(4).repeat_interleave(3)


def _batch(seed):
    generator = torch.Generator().manual_seed(seed)
    raw = torch.randn(12, 6, generator=generator, dtype=torch.float64)
    return torch.nn.functional.normalize(raw, dim=1)


def _value_and_gradient(loss, embeddings, *args, **kwargs):
    leaf = embeddings.clone().requires_grad_(True)
    value = loss(leaf, *args, **kwargs)
    value.backward()
    return value.detach(), leaf.grad


def _pml_dot_triplet(margin):
    return pml_losses.TripletMarginLoss(
        margin=margin,
        distance=DotProductSimilarity(normalize_embeddings=False),
        reducer=MeanReducer(),
    )


def _pml_squared_triplet(margin):
    # ½·mean(max(0, ‖a−p‖² − ‖a−n‖² + 2m)) is half of pml's triplet loss on squared distances
    return pml_losses.TripletMarginLoss(
        margin=2 * margin,
        distance=LpDistance(power=2, normalize_embeddings=False),
        reducer=MeanReducer(),
    )


def _assert_same(ours, theirs):
    assert ours[0].item() > 0
    torch.testing.assert_close(ours[0], theirs[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ours[1], theirs[1], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("margin", [0.1, 0.4])
def test_triplet_margin_equals_pml_with_dot_product_similarity(margin):
    embeddings = _batch(0)
    triplets = pyinstance.get_miner("batch_all")(embeddings, LABELS)
    ours = _value_and_gradient(TripletMarginLoss(margin), embeddings, LABELS, triplets)
    theirs = _value_and_gradient(
        _pml_dot_triplet(margin), embeddings, LABELS, indices_tuple=triplets
    )
    _assert_same(ours, theirs)


@pytest.mark.parametrize("margin", [0.1, 0.4])
def test_triplet_squared_equals_half_of_pml_on_squared_distances(margin):
    embeddings = _batch(1) * 1.5  # off the unit sphere: the squared form holds anywhere
    triplets = pyinstance.get_miner("batch_all")(embeddings, LABELS)
    ours = _value_and_gradient(TripletSquaredLoss(margin), embeddings, LABELS, triplets)
    pml = _pml_squared_triplet(margin)
    theirs = _value_and_gradient(
        lambda e, labels, **kw: 0.5 * pml(e, labels, **kw),
        embeddings,
        LABELS,
        indices_tuple=triplets,
    )
    _assert_same(ours, theirs)


def test_contrastive_equals_pml_summed_over_all_ordered_pairs():
    embeddings = _batch(2)
    ours = _value_and_gradient(ContrastiveLoss(0.8, 0.3), embeddings, LABELS)
    pml = pml_losses.ContrastiveLoss(
        pos_margin=0.8,
        neg_margin=0.3,
        distance=DotProductSimilarity(normalize_embeddings=False),
        reducer=SumReducer(),
    )
    pairs = LABELS.numel() * (LABELS.numel() - 1)  # ours averages over every ordered pair
    theirs = _value_and_gradient(lambda e, labels: pml(e, labels) / pairs, embeddings, LABELS)
    _assert_same(ours, theirs)


@pytest.mark.parametrize(
    ("miner", "options"),
    [
        ("batch_hard", {}),
        ("hard_negative", {}),
        ("semihard", {}),
        ("batch_all", {}),
        ("random", {"seed": 3, "per_anchor": 2}),
    ],
)
def test_our_miners_triplets_are_pml_indices_tuples(miner, options):
    embeddings = _batch(3)
    triplets = pyinstance.get_miner(miner, **options)(embeddings, LABELS)
    assert triplets[0].numel() > 0
    for ours_loss, pml_loss in (
        (TripletMarginLoss(0.2), _pml_dot_triplet(0.2)),
        (TripletSquaredLoss(0.2), _pml_squared_triplet(0.2)),
    ):
        scale = 0.5 if isinstance(ours_loss, TripletSquaredLoss) else 1.0
        ours = ours_loss(embeddings, LABELS, triplets)
        theirs = scale * pml_loss(embeddings, LABELS, indices_tuple=triplets)
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)
