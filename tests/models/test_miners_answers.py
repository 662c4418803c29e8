"""Which anchors RandomMiner draws for, and how the wrapped miners describe themselves."""

from __future__ import annotations

import torch

from pyinstance.models.miners import BatchAllMiner, OfflineMiner, RandomMiner, SemiHardMiner


def _unit(rows: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(rows, 5, generator=generator), dim=1)


def test_random_miner_draws_for_each_anchor_with_a_positive_in_order():
    labels = torch.tensor([0, 0, 0, 1, 1, 2])  # image 5 has no positive: no triplet
    anchors, positives, negatives = RandomMiner(per_anchor=2, seed=0)(_unit(6, 0), labels)
    assert anchors.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert bool((labels[anchors] == labels[positives]).all())
    assert bool((anchors != positives).all())
    assert bool((labels[anchors] != labels[negatives]).all())


def test_random_miner_anchors_are_query_rows_against_references():
    queries = _unit(3, 1)
    labels = torch.tensor([0, 3, 1])  # query 1's instance has no reference
    references, ref_labels = _unit(4, 2), torch.tensor([1, 0, 0, 2])
    anchors, positives, negatives = RandomMiner(per_anchor=3, seed=5)(
        queries, labels, references, ref_labels
    )
    assert anchors.tolist() == [0, 0, 0, 2, 2, 2]
    assert bool((ref_labels[positives] == labels[anchors]).all())
    assert bool((ref_labels[negatives] != labels[anchors]).all())


def test_wrapped_miners_list_their_options():
    assert repr(BatchAllMiner(margin=0.2, max_triplets=5, seed=1)) == (
        "BatchAllMiner(margin=0.2, max_triplets=5, seed=1, threads=None)"
    )
    assert repr(SemiHardMiner(fallback="drop", threads=2)) == (
        "SemiHardMiner(semihard_fallback='drop', threads=2)"
    )
    assert repr(OfflineMiner(n_pos=2, n_neg=3)) == (
        "OfflineMiner(n_pos=2, n_neg=3, n_triplets=None, threads=None)"
    )
