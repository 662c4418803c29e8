"""Which anchors RandomMiner draws for, and how the wrapped miners describe themselves."""

from __future__ import annotations

import re

import pytest
import torch

from pyinstance.models.miners import (
    BatchAllMiner,
    BatchHardMiner,
    HardNegativeMiner,
    OfflineMiner,
    RandomMiner,
    SemiHardMiner,
)
from pyinstance.ops._args import MAX_THREADS


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


def _seeded_draw(labels, ref_labels, anchors, seed, same_set):
    """The documented draw written out with loops: for the t-th triplet, the
    ⌊u[t, 0]·P⌋-th of the anchor's P positives and the ⌊u[t, 1]·N⌋-th of its N negatives,
    the positives in reference order, the negatives by label then reference order (the
    references grouped by label), u a float64 uniform T×2 sample of the seeded generator."""
    u = torch.rand(
        len(anchors), 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    positives, negatives = [], []
    for t, anchor in enumerate(anchors):
        label = int(labels[anchor])
        same = [j for j, other in enumerate(ref_labels.tolist()) if other == label]
        if same_set:
            same.remove(anchor)
        other = sorted((value, j) for j, value in enumerate(ref_labels.tolist()) if value != label)
        other = [j for _, j in other]
        positives.append(same[int(float(u[t, 0]) * len(same))])
        negatives.append(other[int(float(u[t, 1]) * len(other))])
    return positives, negatives


def test_a_seeded_random_miner_draws_the_documented_sample():
    labels = torch.tensor([2, 0, 1, 0, 2, 0, 1, 0, 2, 3])  # image 9 has no positive
    anchors = [a for a in range(9) for _ in range(5)]
    got = RandomMiner(per_anchor=5, seed=11)(_unit(10, 3), labels)
    positives, negatives = _seeded_draw(labels, labels, anchors, 11, same_set=True)
    assert got[0].tolist() == anchors
    assert (got[1].tolist(), got[2].tolist()) == (positives, negatives)
    references, ref_labels = _unit(7, 4), torch.tensor([1, 0, 2, 0, 1, 1, 0])
    queries, query_labels = _unit(3, 5), torch.tensor([1, 0, 2])
    got = RandomMiner(per_anchor=4, seed=2)(queries, query_labels, references, ref_labels)
    anchors = [a for a in range(3) for _ in range(4)]
    positives, negatives = _seeded_draw(query_labels, ref_labels, anchors, 2, same_set=False)
    assert got[0].tolist() == anchors
    assert (got[1].tolist(), got[2].tolist()) == (positives, negatives)


def test_a_single_anchor_gets_a_real_positive_and_negative():
    query, references = _unit(1, 6), _unit(2, 7)
    got = RandomMiner(seed=0)(query, torch.tensor([0]), references, torch.tensor([1, 0]))
    assert [t.tolist() for t in got] == [[0], [1], [0]]


def test_unseeded_draws_differ_from_call_to_call():
    torch.manual_seed(0)
    embeddings, labels = _unit(12, 8), torch.arange(12) % 2
    miner = RandomMiner(per_anchor=4)
    draws = {tuple(torch.cat(miner(embeddings, labels)).tolist()) for _ in range(200)}
    assert len(draws) == 200  # a seed drawn from 2**62, not a few hundred streams


def test_miner_defaults():
    assert repr(BatchHardMiner()) == "BatchHardMiner(threads=None)"
    assert repr(HardNegativeMiner()) == "HardNegativeMiner(threads=None)"
    assert repr(SemiHardMiner()) == "SemiHardMiner(semihard_fallback='easiest', threads=None)"
    assert repr(BatchAllMiner()) == (
        "BatchAllMiner(margin=0.1, max_triplets=None, seed=None, threads=None)"
    )
    assert repr(OfflineMiner()) == "OfflineMiner(n_pos=5, n_neg=20, n_triplets=None, threads=None)"
    assert repr(RandomMiner()) == "RandomMiner(per_anchor=1, seed=None)"


SEEDS = "an integer >= 0 and <= 18446744073709551615"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: BatchHardMiner(threads=0), "threads: expected an integer >= 1, got 0"),
        (lambda: HardNegativeMiner(threads=0), "threads: expected an integer >= 1, got 0"),
        (lambda: SemiHardMiner(threads=0), "threads: expected an integer >= 1, got 0"),
        (lambda: SemiHardMiner(fallback="x"), "fallback: expected one of 'easiest', 'drop'"),
        (lambda: BatchAllMiner(margin=-1.0), "margin: expected a finite number >= 0, got -1.0"),
        (lambda: BatchAllMiner(max_triplets=0), "max_triplets: expected an integer >= 1, got 0"),
        (lambda: BatchAllMiner(seed=-1), f"seed: expected {SEEDS}, got -1"),
        (lambda: BatchAllMiner(seed=2**64), f"seed: expected {SEEDS}, got {2**64}"),
        (lambda: BatchAllMiner(threads=0), "threads: expected an integer >= 1, got 0"),
        (lambda: OfflineMiner(n_pos=0), "n_pos: expected an integer >= 1, got 0"),
        (lambda: OfflineMiner(n_neg=0), "n_neg: expected an integer >= 1, got 0"),
        (lambda: OfflineMiner(n_triplets=0), "n_triplets: expected an integer >= 1, got 0"),
        (lambda: OfflineMiner(threads=0), "threads: expected an integer >= 1, got 0"),
        (lambda: RandomMiner(per_anchor=0), "per_anchor: expected an integer >= 1, got 0"),
        (lambda: RandomMiner(seed=-1), f"seed: expected {SEEDS}, got -1"),
        (lambda: RandomMiner(seed=2**64), f"seed: expected {SEEDS}, got {2**64}"),
    ],
)
def test_each_bad_option_is_named_from_the_start_of_the_message(make, message):
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        make()


def test_the_bounds_themselves_are_accepted():
    miner = BatchAllMiner(max_triplets=1, seed=0)
    assert (miner.options["max_triplets"], miner.options["seed"]) == (1, 0)
    assert RandomMiner(seed=0).seed == 0
    assert BatchHardMiner(threads=1).options["threads"] == 1
    assert BatchAllMiner(seed=2**64 - 1).options["seed"] == 2**64 - 1
    assert RandomMiner(seed=2**64 - 1).seed == 2**64 - 1


@pytest.mark.parametrize(
    "make", [BatchHardMiner, HardNegativeMiner, SemiHardMiner, BatchAllMiner, OfflineMiner]
)
def test_options_only_the_kernel_bounds_are_refused_at_construction(make):
    # The miners check threads >= 1 themselves; the upper bound is the kernel's, reached
    # by the construction probe with every option: a miner must not wait for training.
    message = f"threads: expected None or an integer in [1, {MAX_THREADS}], got {MAX_THREADS + 1}"
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        make(threads=MAX_THREADS + 1)
