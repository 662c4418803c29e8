"""Built-in losses against hand-computed values."""

import pytest
import torch

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
    with pytest.raises(ValueError, match="margin: expected >= 0"):
        TripletMarginLoss(margin=-1)
    with pytest.raises(ValueError, match="needs .* from a miner"):
        TripletMarginLoss()(embeddings, torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError, match="labels: expected 4 labels"):
        TripletMarginLoss()(embeddings, torch.zeros(3, dtype=torch.int64), None)
    with pytest.raises(ValueError, match="embeddings: expected B×D"):
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
