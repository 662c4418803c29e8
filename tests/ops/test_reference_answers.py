"""The pure references (pyinstance.ops._reference) on cases worked out by hand.

The kernels' tests compare each op with its reference; a reference with the same bug as
its kernel would pass them. These pin the references to answers written here:
knn_dot on four 2-D references, splitmix64 against the published algorithm's outputs
(Steele, Lea and Flood 2014; seed 0 gives 0xE220A8397B1DCDAF as in Vigna's splitmix64.c),
Floyd's sampler on those outputs, and every triplet strategy on five 2-D points.
(topk_region_pool_reference: tests/ops/test_topk_region_pool_answers.py.)
"""

from __future__ import annotations

import pytest
import torch

from pyinstance.ops._reference import (
    _splitmix64,
    knn_dot_reference,
    sample_triplet_numbers,
    triplet_mine_reference,
)

GOLDEN = 0x9E3779B97F4A7C15
MASK = (1 << 64) - 1
# splitmix64's first outputs from seed 0 and seed 42 (the published algorithm).
FROM_0 = [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F, 0xF88BB8A8724C81EC]
FROM_42 = [0xBDD732262FEB6E95, 0x28EFE333B266F103, 0x47526757130F9F52]


# --- knn_dot --------------------------------------------------------------------------------

QUERIES = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
REFS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
# Scores: query 0 [1, 0, 1, -1], query 1 [0, 1, 1, 0].


def test_knn_dot_ranks_by_score_then_smaller_index():
    scores, indices = knn_dot_reference(QUERIES, REFS, 3)
    assert scores.dtype == torch.float64 and indices.dtype == torch.int64
    assert indices.tolist() == [[0, 2, 1], [1, 2, 0]]
    assert scores.tolist() == [[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]]
    scores, indices = knn_dot_reference(QUERIES, REFS, 4)
    assert indices.tolist() == [[0, 2, 1, 3], [1, 2, 0, 3]]
    assert scores.tolist() == [[1.0, 1.0, 0.0, -1.0], [1.0, 1.0, 0.0, 0.0]]


def test_knn_dot_exclude_removes_one_reference_per_query():
    # Query 0 excludes reference 0 (index 0 itself), query 1 excludes nothing.
    scores, indices = knn_dot_reference(QUERIES, REFS, 4, torch.tensor([0, -1]))
    assert indices.tolist() == [[2, 1, 3, 0], [1, 2, 0, 3]]
    assert scores.tolist() == [[1.0, 0.0, -1.0, float("-inf")], [1.0, 1.0, 0.0, 0.0]]
    scores, indices = knn_dot_reference(QUERIES, REFS, 2, torch.tensor([-1, 2]))
    assert indices.tolist() == [[0, 2], [1, 0]]
    assert scores.tolist() == [[1.0, 1.0], [1.0, 0.0]]


def test_knn_dot_sums_in_float64():
    # (1 + 2**-12)**2 = 1 + 2**-11 + 2**-24: the last term is lost in float32.
    a = 1 + 2**-12
    scores, _ = knn_dot_reference(torch.tensor([[a]]), torch.tensor([[a]]), 1)
    assert scores.item() == 1 + 2**-11 + 2**-24


# --- splitmix64 and the sampler -------------------------------------------------------------


@pytest.mark.parametrize(("seed", "outputs"), [(0, FROM_0), (42, FROM_42)])
def test_splitmix64_gives_the_published_sequence(seed, outputs):
    state = seed
    for step, output in enumerate(outputs, start=1):
        state, value = _splitmix64(state)
        assert state == (seed + step * GOLDEN) & MASK
        assert value == output


def test_splitmix64_wraps_the_state_at_64_bits():
    state, value = _splitmix64(MASK)
    assert state == GOLDEN - 1
    assert value == 0xE4D971771B652C20


@pytest.mark.parametrize(
    ("total", "k", "seed", "expected"),
    [
        # j = 9, 10, 11: FROM_0[0] % 10 = 5, FROM_0[1] % 11 = 10, FROM_0[2] % 12 = 7.
        (12, 3, 0, [5, 7, 10]),
        # j = 5: FROM_0[0] % 6 = 1; j = 6: FROM_0[1] % 7 = 1 again, so j = 6 is taken.
        (7, 2, 0, [1, 6]),
        # j = 5: 1; j = 6: 1 is taken -> 6; j = 7: FROM_0[2] % 8 = 7.
        (8, 3, 0, [1, 6, 7]),
        # k = total: all of them.
        (3, 3, 0, [0, 1, 2]),
        # j = 1 from seed 42: FROM_42[0] % 2 = 1 (0x...95 is odd).
        (2, 1, 42, [1]),
        # Bound 2**63: the limit is 2**63, so FROM_0[0] (>= 2**63) is rejected and the next
        # output is taken as it is.
        (2**63, 1, 0, [FROM_0[1]]),
        (2**63, 1, 42, [FROM_42[1]]),
        # The seed is taken modulo 2**64.
        (2**63, 1, 42 + 2**64, [FROM_42[1]]),
        # Bound 2**63 + 1: MASK % bound = 2**63 - 2, limit 2**63 + 1; same rejection.
        (2**63 + 1, 1, 0, [FROM_0[1]]),
    ],
)
def test_sampler_by_hand(total, k, seed, expected):
    assert sample_triplet_numbers(total, k, seed) == expected


def test_sampler_rejects_an_output_equal_to_the_limit():
    # Seed found by inverting splitmix64's finaliser for the output 2**63 (the limit of
    # bound 2**63); its outputs (checked with a C transcription of Vigna's splitmix64.c):
    # 2**63, 0xB0BA7BB91A374A28, 0xEA82D5E10F8510DC (all >= 2**63, rejected), then
    # 0x61B20ADE327932E5 (taken).
    seed = 0x2FEDF1EFCE1D5545
    assert _splitmix64(seed)[1] == 2**63
    assert sample_triplet_numbers(2**63, 1, seed) == [0x61B20ADE327932E5]


def test_sampler_of_nothing_is_empty():
    assert sample_triplet_numbers(5, 0, 0) == []


# --- triplet_mine ---------------------------------------------------------------------------

# Five 2-D points, labels 0 0 0 1 1; similarities (dot products):
#        p0  p1  p2  p3  p4
#   p0    9   6   0   3   3
#   p1    6   5   1   2   4
#   p2    0   1   1   0   2
#   p3    3   2   0   1   1
#   p4    3   4   2   1   5
POINTS = torch.tensor([[3.0, 0.0], [2.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 2.0]])
LABELS = torch.tensor([0, 0, 0, 1, 1])
# Positive pairs (a, p), row-major: (0,1) (0,2) (1,0) (1,2) (2,0) (2,1) (3,4) (4,3).
PAIR_A = [0, 0, 1, 1, 2, 2, 3, 4]
PAIR_P = [1, 2, 0, 2, 0, 1, 4, 3]
# Hardest negative of each anchor (largest similarity, ties to the smaller index):
# 0: p3 = p4 = 3 -> 3; 1: p4 (4); 2: p4 (2); 3: p0 (3); 4: p1 (4).
HARDEST_NEG = [3, 4, 4, 0, 1]


def _columns(triplets):
    return tuple(list(column) for column in zip(*triplets, strict=True))


def _mine(**kwargs):
    a, p, n = triplet_mine_reference(POINTS, LABELS, **kwargs)
    assert a.dtype == p.dtype == n.dtype == torch.int64
    return a.tolist(), p.tolist(), n.tolist()


def test_batch_hard_by_hand():
    # Hardest positive (smallest similarity): 0: p2 (0); 1: p2 (1); 2: p0 (0); 3: p4; 4: p3.
    assert _mine(strategy="batch_hard") == ([0, 1, 2, 3, 4], [2, 2, 0, 4, 3], HARDEST_NEG)


def test_hard_negative_by_hand():
    expected_n = [HARDEST_NEG[a] for a in PAIR_A]
    assert _mine(strategy="hard_negative") == (PAIR_A, PAIR_P, expected_n)
    assert expected_n == [3, 3, 4, 4, 4, 4, 0, 1]


def test_semihard_by_hand():
    # Per pair: the most similar negative below s(a, p); else the easiest (least similar)
    # negative of the anchor: 0: p3 = p4 = 3 -> 3; 1: p3; 2: p3; 3: p2; 4: p2.
    #   (0,1) s=6: p3, p4 (3) -> 3      (0,2) s=0: none -> 3
    #   (1,0) s=6: p3 (2), p4 (4) -> 4  (1,2) s=1: none -> 3
    #   (2,0) s=0: none (p3 = 0 is not below) -> 3
    #   (2,1) s=1: p3 (0) -> 3          (3,4) s=1: p2 (0) -> 2
    #   (4,3) s=1: none -> 2
    assert _mine(strategy="semihard") == (PAIR_A, PAIR_P, [3, 3, 4, 3, 3, 3, 2, 2])
    assert _mine(strategy="semihard", semihard_fallback="easiest") == _mine(strategy="semihard")
    # Without the fallback only the pairs that found one stay.
    assert _mine(strategy="semihard", semihard_fallback="drop") == (
        [0, 1, 2, 3],
        [1, 0, 1, 4],
        [3, 4, 3, 2],
    )


# batch_all with margin m: s(a, n) - s(a, p) + m > 0, lexicographic (a, p, n). At the
# default margin 0.1: (0,2,3) 3 - 0, (0,2,4) 3, (1,2,3) 2 - 1, (1,2,4) 3, (2,0,3) 0 + 0.1,
# (2,0,4) 2, (2,1,4) 1, (3,4,0) 2, (3,4,1) 1, (4,3,0) 2, (4,3,1) 3, (4,3,2) 1; not
# (2,1,3) 0 - 1, (3,4,2) 0 - 1, (1,0,4) 4 - 6, nor any (0,1,n) 3 - 6.
BATCH_ALL = [
    (0, 2, 3), (0, 2, 4), (1, 2, 3), (1, 2, 4), (2, 0, 3), (2, 0, 4),
    (2, 1, 4), (3, 4, 0), (3, 4, 1), (4, 3, 0), (4, 3, 1), (4, 3, 2),
]  # fmt: skip


def test_batch_all_by_hand():
    assert _mine(strategy="batch_all") == _columns(BATCH_ALL)
    assert _mine(strategy="batch_all", margin=0.1) == _columns(BATCH_ALL)
    # At margin 0, (2, 0, 3) (0 - 0) is out.
    assert _mine(strategy="batch_all", margin=0.0) == _columns(
        [t for t in BATCH_ALL if t != (2, 0, 3)]
    )
    # Margin 1.5 adds (2, 1, 3) and (3, 4, 2) (0 - 1 + 1.5); not (1, 0, 4) (4 - 6 + 1.5).
    assert _mine(strategy="batch_all", margin=1.5) == _columns(
        sorted([*BATCH_ALL, (2, 1, 3), (3, 4, 2)])
    )


def test_batch_all_sampled_by_hand():
    # 12 triplets > 3: sample_triplet_numbers(12, 3, 0) = [5, 7, 10].
    expected = _columns([BATCH_ALL[5], BATCH_ALL[7], BATCH_ALL[10]])
    assert _mine(strategy="batch_all", max_triplets=3) == expected
    assert _mine(strategy="batch_all", max_triplets=3, seed=0) == expected
    # Seed 42: FROM_42[0] % 10 = 3, FROM_42[1] % 11 = 5, FROM_42[2] % 12 = 6.
    assert _mine(strategy="batch_all", max_triplets=3, seed=42) == _columns(
        [BATCH_ALL[3], BATCH_ALL[5], BATCH_ALL[6]]
    )
    # Not more than there are: no sampling.
    assert _mine(strategy="batch_all", max_triplets=12) == _columns(BATCH_ALL)
    assert _mine(strategy="batch_all", max_triplets=13) == _columns(BATCH_ALL)


# offline: per anchor the n_pos most similar positives and n_neg most similar negatives
# (ties to the smaller index), combinations by descending s(a, n) - s(a, p), ties by
# u * n_neg + v (u, v their ranks), the first n_triplets (default n_pos * n_neg).
OFFLINE = [
    # anchor 0: positives p1 (6), p2 (0); negatives p3 (3), p4 (3).
    (0, 2, 3),  # 3 - 0 = 3, u=1 v=0
    (0, 2, 4),  # 3, u=1 v=1
    (0, 1, 3),  # 3 - 6 = -3, u=0 v=0
    (0, 1, 4),
    # anchor 1: positives p0 (6), p2 (1); negatives p4 (4), p3 (2).
    (1, 2, 4),  # 3
    (1, 2, 3),  # 1
    (1, 0, 4),  # -2
    (1, 0, 3),  # -4
    # anchor 2: positives p1 (1), p0 (0); negatives p4 (2), p3 (0).
    (2, 0, 4),  # 2
    (2, 1, 4),  # 1
    (2, 0, 3),  # 0
    (2, 1, 3),  # -1
    # anchor 3: positive p4 (1); negatives p0 (3), p1 (2), p2 (0).
    (3, 4, 0),
    (3, 4, 1),
    (3, 4, 2),
    # anchor 4: positive p3 (1); negatives p1 (4), p0 (3), p2 (2).
    (4, 3, 1),
    (4, 3, 0),
    (4, 3, 2),
]


def test_offline_by_hand():
    assert _mine(strategy="offline") == _columns(OFFLINE)
    assert _mine(strategy="offline", n_pos=2, n_neg=3) == _columns(OFFLINE)
    # The first two of each anchor.
    firsts = [t for i, t in enumerate(OFFLINE) if i in (0, 1, 4, 5, 8, 9, 12, 13, 15, 16)]
    assert _mine(strategy="offline", n_triplets=2) == _columns(firsts)
    # One positive, one negative: the most similar of each.
    assert _mine(strategy="offline", n_pos=1, n_neg=1) == _columns(
        [(0, 1, 3), (1, 0, 4), (2, 1, 4), (3, 4, 0), (4, 3, 1)]
    )
    # n_pos = 1, n_neg = 2: ranks key u * 2 + v.
    assert _mine(strategy="offline", n_pos=1, n_neg=2) == _columns(
        [(0, 1, 3), (0, 1, 4), (1, 0, 4), (1, 0, 3), (2, 1, 4), (2, 1, 3)]
        + [(3, 4, 0), (3, 4, 1), (4, 3, 1), (4, 3, 0)]
    )
    # n_pos = 2, n_neg = 1, one triplet each: anchor 0 p2/p3 (3 - 0), anchor 1 p2/p4 (3),
    # anchor 2 p0/p4 (2).
    assert _mine(strategy="offline", n_pos=2, n_neg=1, n_triplets=1) == _columns(
        [(0, 2, 3), (1, 2, 4), (2, 0, 4), (3, 4, 0), (4, 3, 1)]
    )


def test_cross_set_keeps_the_self_pairs():
    a, p, n = triplet_mine_reference(
        POINTS, LABELS, strategy="hard_negative", ref_embeddings=POINTS.clone(), ref_labels=LABELS
    )
    assert list(zip(a.tolist(), p.tolist(), strict=True)) == [
        (0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2),
        (3, 3), (3, 4), (4, 3), (4, 4),
    ]  # fmt: skip
    assert n.tolist() == [3, 3, 3, 4, 4, 4, 4, 4, 4, 0, 0, 1, 1]


def test_cross_set_against_other_references():
    # Queries p0, p3 against references p1 (label 0), p2 (label 0), p4 (label 1).
    a, p, n = triplet_mine_reference(
        POINTS[[0, 3]],
        torch.tensor([0, 1]),
        strategy="batch_hard",
        ref_embeddings=POINTS[[1, 2, 4]],
        ref_labels=torch.tensor([0, 0, 1]),
    )
    # p0: positives p1 (6), p2 (0) -> hardest 1 (p2); negative p4 -> 2.
    # p3: positive p4 -> 2; negatives p1 (2), p2 (0) -> hardest 0 (p1).
    assert (a.tolist(), p.tolist(), n.tolist()) == ([0, 1], [1, 2], [2, 0])


def test_anchors_without_a_positive_or_a_negative_are_left_out():
    # p0, p1 (label 0), p3 (label 1): p3 has no positive.
    a, p, n = triplet_mine_reference(
        POINTS[[0, 1, 3]], torch.tensor([0, 0, 1]), strategy="batch_hard"
    )
    assert (a.tolist(), p.tolist(), n.tolist()) == ([0, 1], [1, 0], [2, 2])
    # Query 0 (label 0) has only positives, query 1 (label 1) only negatives.
    for strategy in ("batch_hard", "hard_negative", "semihard", "batch_all", "offline"):
        a, p, n = triplet_mine_reference(
            POINTS[[0, 3]],
            torch.tensor([0, 1]),
            strategy=strategy,
            ref_embeddings=POINTS[[1, 2]],
            ref_labels=torch.tensor([0, 0]),
        )
        assert a.tolist() == p.tolist() == n.tolist() == []
        assert a.dtype == torch.int64


@pytest.mark.parametrize("labels", [[0, 0, 0, 0, 0], [0, 1, 2, 3, 4]])
@pytest.mark.parametrize(
    "strategy", ["batch_hard", "hard_negative", "semihard", "batch_all", "offline"]
)
def test_no_negatives_or_no_positives_give_nothing(labels, strategy):
    a, p, n = triplet_mine_reference(POINTS, torch.tensor(labels), strategy=strategy)
    assert a.tolist() == p.tolist() == n.tolist() == []
    assert a.dtype == p.dtype == n.dtype == torch.int64


def test_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match="unknown strategy 'hardest'"):
        triplet_mine_reference(POINTS, LABELS, strategy="hardest")
    # also with nothing to mine (one label: no negatives), as the op refuses it
    with pytest.raises(ValueError, match="unknown strategy 'hardest'"):
        triplet_mine_reference(POINTS, torch.zeros(len(POINTS)), strategy="hardest")


def test_similarity_range_within_the_batch_leaves_out_the_self_pairs():
    # Row 1's self-similarity 4e38 overflows float32, and is never used within the batch;
    # against itself as references it is a pair, and refused.
    emb = torch.tensor([[2e19, 0.0], [0.0, 2e19], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    a, p, n = triplet_mine_reference(emb, labels, strategy="batch_hard")
    # Anchor 0: positive 1 (0), negative 2 (0); anchor 1: positive 0, negative 2 (2e19).
    assert (a.tolist(), p.tolist(), n.tolist()) == ([0, 1], [1, 0], [2, 2])
    with pytest.raises(ValueError, match="embeddings: similarities may overflow float32"):
        triplet_mine_reference(
            emb, labels, strategy="batch_hard", ref_embeddings=emb.clone(), ref_labels=labels
        )


def test_knn_dot_ties_among_many_references_keep_index_order():
    # Twenty references scoring i % 3 (torch's unstable sort reorders ties from 17 up).
    refs = torch.tensor([[float(i % 3), 0.0] for i in range(20)])
    twos, ones, zeros = list(range(2, 20, 3)), list(range(1, 20, 3)), list(range(0, 20, 3))
    scores, indices = knn_dot_reference(torch.tensor([[1.0, 0.0]]), refs, 20)
    assert indices.tolist() == [twos + ones + zeros]
    assert scores.tolist() == [[2.0] * 6 + [1.0] * 7 + [0.0] * 7]


def test_offline_defaults_are_five_positives_and_twenty_negatives():
    # One query (1.0, label 0) against six positives 1..6 (refs 0-5) and 21 negatives
    # -1..-21 (refs 6-26): the five most similar positives (refs 1-5) times the twenty
    # most similar negatives (refs 6-25), all 100.
    refs = torch.tensor([[float(v)] for v in [*range(1, 7), *range(-1, -22, -1)]])
    ref_labels = torch.tensor([0] * 6 + [1] * 21)
    a, p, n = triplet_mine_reference(
        torch.tensor([[1.0]]),
        torch.tensor([0]),
        strategy="offline",
        ref_embeddings=refs,
        ref_labels=ref_labels,
    )
    assert a.tolist() == [0] * 100
    assert sorted(set(p.tolist())) == [1, 2, 3, 4, 5]
    assert sorted(set(n.tolist())) == list(range(6, 26))
    # Largest s(a, n) - s(a, p) first: -1 - 2 (refs 1, 6); smallest last: -20 - 6 (5, 25).
    assert (p[0].item(), n[0].item(), p[-1].item(), n[-1].item()) == (1, 6, 5, 25)


def test_offline_equal_scores_keep_positive_then_negative_rank_order():
    # Query 1.0 (label 0); positives 2, 2 (refs 0, 1), negatives 1, 1 (refs 2, 3): every
    # combination scores 1 - 2 = -1, so the ranks (u, v) decide: (0,0) (0,1) (1,0) (1,1).
    a, p, n = triplet_mine_reference(
        torch.tensor([[1.0]]),
        torch.tensor([0]),
        strategy="offline",
        ref_embeddings=torch.tensor([[2.0], [2.0], [1.0], [1.0]]),
        ref_labels=torch.tensor([0, 0, 1, 1]),
    )
    assert list(zip(a.tolist(), p.tolist(), n.tolist(), strict=True)) == [
        (0, 0, 2),
        (0, 0, 3),
        (0, 1, 2),
        (0, 1, 3),
    ]
