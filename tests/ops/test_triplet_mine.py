"""pyinstance.ops.triplet_mine against the plain torch reference, pml, and bad inputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyinstance import _backend
from pyinstance.ops import MiningWarning, triplet_mine
from pyinstance.ops._reference import sample_triplet_numbers, triplet_mine_reference

STRATEGIES = ["batch_hard", "hard_negative", "semihard", "batch_all", "offline"]
ISAS = ["generic", "avx2", "avx512"]


@pytest.fixture(params=ISAS)
def isa(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every SIMD variant (capped to what the CPU has; the cap is read at every call)."""
    monkeypatch.setenv("PYINSTANCE_ISA", request.param)
    return request.param


def integer_batch(generator: torch.Generator, b: int, d: int, classes: int, values: int = 2):
    """Small-integer embeddings: every dot product is exact in float32 whatever the summation
    order, so kernel and reference agree bit for bit, and ties and duplicates are frequent."""
    x = torch.randint(-values, values + 1, (b, d), generator=generator).float()
    labels = torch.randint(0, classes, (b,), generator=generator)
    return x, labels


def mine_both(x, labels, device, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MiningWarning)
        expected = triplet_mine_reference(x, labels, **kwargs)
        ref = kwargs.pop("ref_embeddings", None)
        ref_labels = kwargs.pop("ref_labels", None)
        got = triplet_mine(
            x.to(device), labels.to(device), ref_embeddings=None if ref is None else ref.to(device),
            ref_labels=None if ref_labels is None else ref_labels.to(device), **kwargs,
        )  # fmt: skip
    return expected, got


def assert_same(expected, got):
    for e, g in zip(expected, got, strict=True):
        assert g.dtype == torch.int64
        assert torch.equal(e, g.cpu()), (e, g)


def strategy_kwargs(strategy: str, variant: int) -> dict:
    if strategy == "semihard":
        return {"semihard_fallback": ["easiest", "drop"][variant % 2]}
    if strategy == "batch_all":
        return {
            "margin": [0.5, 0.0, 3.0][variant % 3],
            "max_triplets": [None, 7][variant % 2],
            "seed": 11,
        }
    if strategy == "offline":
        return {
            "n_pos": 1 + variant % 3,
            "n_neg": 1 + variant % 4,
            "n_triplets": [None, 2, 50][variant % 3],
        }
    return {}


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    b=st.integers(2, 40),
    d=st.integers(1, 20),
    classes=st.integers(1, 12),
    values=st.integers(0, 3),
    with_ref=st.booleans(),
    strategy=st.sampled_from(STRATEGIES),
    variant=st.integers(0, 5),
    seed=st.integers(0, 2**31),
)
def test_matches_reference_on_ties_and_duplicates(
    device, isa, b, d, classes, values, with_ref, strategy, variant, seed
):
    g = torch.Generator().manual_seed(seed)
    x, labels = integer_batch(g, b, d, classes, values)
    if variant % 2:  # exact duplicate rows
        x[b // 2 :] = x[: b - b // 2].clone()
    kwargs = {"strategy": strategy, **strategy_kwargs(strategy, variant)}
    if with_ref:
        r = int(torch.randint(1, 30, (1,), generator=g))
        kwargs["ref_embeddings"], kwargs["ref_labels"] = integer_batch(g, r, d, classes, values)
    assert_same(*mine_both(x, labels, device, **kwargs))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_matches_reference_across_many_tiles(device, isa, strategy):
    # 300 anchors: several symmetric 128-blocks, partial panels, per-thread states merged.
    g = torch.Generator().manual_seed(5)
    x, labels = integer_batch(g, 300, 19, 60)
    kwargs = {"strategy": strategy, **strategy_kwargs(strategy, 1)}
    assert_same(*mine_both(x, labels, device, **kwargs))
    refs, ref_labels = integer_batch(g, 170, 19, 60)
    assert_same(*mine_both(x, labels, device, ref_embeddings=refs, ref_labels=ref_labels, **kwargs))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_result_does_not_depend_on_threads(strategy):
    g = torch.Generator().manual_seed(6)
    x = torch.nn.functional.normalize(torch.randn(400, 32, generator=g), dim=1)
    labels = torch.randint(0, 100, (400,), generator=g)
    kwargs = {"strategy": strategy, **strategy_kwargs(strategy, 1)}
    one = triplet_mine(x, labels, threads=1, **kwargs)
    two = triplet_mine(x, labels, threads=2, **kwargs)
    three = triplet_mine(x, labels, threads=3, **kwargs)
    for a, b, c in zip(one, two, three, strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_float_data_picks_optimal_triplets(device, strategy):
    # Real-valued data: summation order may differ from torch's matmul in the last bits, so
    # compare the similarity of what was picked, not indices.
    g = torch.Generator().manual_seed(7)
    x = torch.nn.functional.normalize(torch.randn(96, 24, generator=g), dim=1)
    labels = torch.arange(96) // 4
    kwargs = {"strategy": strategy, **strategy_kwargs(strategy, 0)}
    expected, got = mine_both(x, labels, device, **kwargs)
    got = [t.cpu() for t in got]
    sim = x @ x.T
    assert got[0].numel() == expected[0].numel()
    assert torch.equal(got[0], expected[0])
    assert torch.allclose(sim[got[0], got[1]], sim[expected[0], expected[1]], atol=1e-5)
    assert torch.allclose(sim[got[0], got[2]], sim[expected[0], expected[2]], atol=1e-5)
    assert bool((labels[got[0]] == labels[got[1]]).all() & (labels[got[0]] != labels[got[2]]).all())


@pytest.mark.parametrize("strategy", ["batch_hard", "hard_negative"])
@pytest.mark.parametrize("scale", [1.0, 1e-15, 1e15])
def test_near_ties_below_bf16_resolution_pick_the_float32_hardest(device, isa, strategy, scale):
    # 300 negatives whose similarities to the anchors lie about 1e-4 apart near 0.9: bf16
    # (8 bits, steps of 4e-3 there) cannot tell them apart, so screened tiles (AVX512_BF16
    # CPUs) must re-score them in float32, which ranks them reliably.
    g = torch.Generator().manual_seed(8)
    e0, e1 = torch.linalg.qr(torch.randn(64, 2, generator=g, dtype=torch.float64))[0].T
    anchors = e0 + 1e-3 * torch.randn(20, 64, generator=g, dtype=torch.float64)
    c = 0.9 + 1e-4 * torch.randperm(300, generator=g, dtype=torch.float64)[:, None]
    negatives = c * e0 + (1 - c**2).sqrt() * e1
    x64 = torch.nn.functional.normalize(torch.cat([anchors, negatives]), dim=1) * scale
    x = x64.float()
    labels = torch.cat([torch.arange(20) // 2, 100 + torch.arange(300)])
    expected, got = mine_both(x, labels, device, strategy=strategy)
    got = [t.cpu() for t in got]
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    sim = x.double() @ x.double().T
    picked, best = sim[got[0], got[2]], sim[expected[0], expected[2]]
    assert torch.allclose(picked, best, rtol=0, atol=1e-6 * scale**2), (picked - best).abs().max()


def test_batch_hard_matches_pytorch_metric_learning():
    pml_miners = pytest.importorskip("pytorch_metric_learning.miners")
    distances = pytest.importorskip("pytorch_metric_learning.distances")
    g = torch.Generator().manual_seed(8)
    for b, classes in [(64, 16), (200, 50), (37, 5)]:
        x = torch.nn.functional.normalize(torch.randn(b, 32, generator=g), dim=1)
        labels = torch.randint(0, classes, (b,), generator=g)
        pml = pml_miners.BatchHardMiner(distance=distances.CosineSimilarity())(x, labels)
        ours = triplet_mine(x, labels, strategy="batch_hard")
        for theirs, mine in zip(pml, ours, strict=True):
            assert torch.equal(theirs, mine)
        refs = torch.nn.functional.normalize(torch.randn(50, 32, generator=g), dim=1)
        ref_labels = torch.randint(0, classes, (50,), generator=g)
        pml = pml_miners.BatchHardMiner(distance=distances.CosineSimilarity())(
            x, labels, refs, ref_labels
        )
        ours = triplet_mine(
            x, labels, strategy="batch_hard", ref_embeddings=refs, ref_labels=ref_labels
        )
        for theirs, mine in zip(pml, ours, strict=True):
            assert torch.equal(theirs, mine)


def test_hand_computed_example():
    # 1-D embeddings make the answers easy to read off.
    x = torch.tensor([[1.0], [0.9], [0.2], [0.5], [-1.0], [0.2]])
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    a, p, n = triplet_mine(x, labels, strategy="batch_hard")
    # anchor 0: positives 1 (0.9), 2 (0.2) -> hardest 2; negatives 3 (0.5), 4 (-1), 5 (0.2) -> 3
    assert (a[0].item(), p[0].item(), n[0].item()) == (0, 2, 3)
    a, p, n = triplet_mine(x, labels, strategy="semihard", semihard_fallback="drop")
    # pair (0, 1): s_ap 0.9, negatives below: 0.5 (3) -> 3.  pair (0, 2): s_ap 0.2, below: -1 (4).
    triplets = set(zip(a.tolist(), p.tolist(), n.tolist(), strict=True))
    assert {(0, 1, 3), (0, 2, 4)} <= triplets


def test_batch_all_subset_is_uniform_sample_of_the_full_set():
    g = torch.Generator().manual_seed(9)
    x, labels = integer_batch(g, 60, 8, 10)
    full = triplet_mine(x, labels, strategy="batch_all", margin=1.0)
    total = full[0].numel()
    assert total > 500
    sub = triplet_mine(x, labels, strategy="batch_all", margin=1.0, max_triplets=100, seed=3)
    assert sub[0].numel() == 100
    full_set = set(zip(*(t.tolist() for t in full), strict=True))
    sub_list = list(zip(*(t.tolist() for t in sub), strict=True))
    assert len(set(sub_list)) == 100 and set(sub_list) <= full_set
    assert sub_list == sorted(sub_list)  # canonical (a, p, n) order kept
    again = triplet_mine(x, labels, strategy="batch_all", margin=1.0, max_triplets=100, seed=3)
    other = triplet_mine(x, labels, strategy="batch_all", margin=1.0, max_triplets=100, seed=4)
    assert all(torch.equal(u, v) for u, v in zip(sub, again, strict=True))
    assert not torch.equal(sub[2], other[2]) or not torch.equal(sub[0], other[0])
    # max_triplets >= total returns everything
    everything = triplet_mine(x, labels, strategy="batch_all", margin=1.0, max_triplets=total)
    assert all(torch.equal(u, v) for u, v in zip(full, everything, strict=True))
    # seed=None draws from torch's generator: reproducible under manual_seed
    torch.manual_seed(0)
    first = triplet_mine(x, labels, strategy="batch_all", margin=1.0, max_triplets=50)
    torch.manual_seed(0)
    second = triplet_mine(x, labels, strategy="batch_all", margin=1.0, max_triplets=50)
    assert all(torch.equal(u, v) for u, v in zip(first, second, strict=True))


@settings(max_examples=30, deadline=None)
@given(total=st.integers(1, 5000), fraction=st.floats(0, 1), seed=st.integers(0, 2**64 - 1))
def test_sampler_matches_python_and_is_distinct_sorted(total, fraction, seed):
    k = int(total * fraction)
    out = torch.empty(k, dtype=torch.int64)
    _backend._C.triplet_sample(total, k, seed, out.data_ptr())
    values = out.tolist()
    assert values == sample_triplet_numbers(total, k, seed)
    assert values == sorted(set(values)) and all(0 <= v < total for v in values)


def test_sampler_is_uniform():
    # Each of 20 numbers is drawn with probability 5/20 over 4000 seeds: 1000 ± 5 sigma.
    hits = np.zeros(20)
    out = torch.empty(5, dtype=torch.int64)
    for seed in range(4000):
        _backend._C.triplet_sample(20, 5, seed, out.data_ptr())
        hits[out.numpy()] += 1
    assert np.all(np.abs(hits - 1000) < 5 * np.sqrt(4000 * 0.25 * 0.75))


def test_offline_orders_best_first_and_respects_sizes():
    g = torch.Generator().manual_seed(10)
    x = torch.nn.functional.normalize(torch.randn(200, 16, generator=g), dim=1)
    labels = torch.arange(200) // 8
    a, p, n = triplet_mine(x, labels, strategy="offline", n_pos=3, n_neg=4, n_triplets=5)
    assert torch.equal(torch.bincount(a, minlength=200), torch.full((200,), 5))
    score = (x[a] * x[n]).sum(1) - (x[a] * x[p]).sum(1)
    per_anchor = score.view(200, 5)
    assert bool((per_anchor[:, :-1] >= per_anchor[:, 1:] - 1e-6).all())
    a, _, _ = triplet_mine(x, labels, strategy="offline", n_pos=2, n_neg=2)
    assert a.numel() == 200 * 4


def test_array_kinds_dtypes_and_layouts():
    g = torch.Generator().manual_seed(12)
    x, labels = integer_batch(g, 30, 6, 6)
    expected = triplet_mine(x, labels, strategy="semihard")
    got = triplet_mine(x.numpy(), labels.numpy(), strategy="semihard")
    assert all(isinstance(t, np.ndarray) and t.dtype == np.int64 for t in got)
    assert all(np.array_equal(e.numpy(), t) for e, t in zip(expected, got, strict=True))
    wide = torch.zeros(30, 12)
    wide[:, ::2] = x  # non-contiguous view
    for variant in (wide[:, ::2], x.double(), x.half(), x.bfloat16()):
        got = triplet_mine(variant, labels.int(), strategy="semihard")
        assert all(torch.equal(e, t) for e, t in zip(expected, got, strict=True))


@pytest.mark.parametrize("scale", [1e18, 1e-20], ids=["huge", "tiny"])
def test_huge_and_tiny_values_keep_the_ranking(isa, scale):
    # Similarities scale·scale·{-2, -1, 1, 2, 3, 6}: about 1e36 (near float32's top) or 1e-40
    # (subnormal: flushing them to zero would tie every pair and change the hardest negative).
    x = torch.tensor([[1.0], [2.0], [3.0], [-1.0]]) * scale
    a, p, n = triplet_mine(x, torch.tensor([0, 0, 1, 1]), strategy="batch_hard")
    assert (a.tolist(), p.tolist(), n.tolist()) == ([0, 1, 2, 3], [1, 0, 3, 2], [2, 2, 1, 0])


# --- bad input --------------------------------------------------------------------------

X = torch.nn.functional.normalize(
    torch.randn(8, 4, generator=torch.Generator().manual_seed(0)), dim=1
)
L = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_one_class_gives_empty_result_and_warning(strategy):
    with pytest.warns(MiningWarning, match="one class"):
        a, p, n = triplet_mine(X, torch.zeros(8, dtype=torch.int64), strategy=strategy)
    assert a.numel() == p.numel() == n.numel() == 0 and a.dtype == torch.int64


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_no_positive_pairs_gives_empty_result_and_warning(strategy):
    with pytest.warns(MiningWarning, match="no positive pairs"):
        a, _, _ = triplet_mine(X, torch.arange(8), strategy=strategy)
    assert a.numel() == 0
    with pytest.warns(MiningWarning, match="no positive pairs"):
        triplet_mine(X, L, strategy=strategy, ref_embeddings=X, ref_labels=L + 10)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"labels": L[:7]}, ValueError, "labels: expected 8 labels"),
        ({"labels": L.view(4, 2)}, ValueError, "labels: expected a 1-D"),
        ({"labels": L.float()}, TypeError, "labels: expected dtype"),
        ({"embeddings": X[0]}, ValueError, "embeddings: expected a 2-D"),
        ({"embeddings": X[:0], "labels": L[:0]}, ValueError, "embeddings: expected a non-empty"),
        ({"embeddings": X.masked_fill(X > 0.5, float("nan"))}, ValueError, "NaN"),
        ({"embeddings": X.masked_fill(X > 0.5, float("inf"))}, ValueError, "NaN or infinite"),
        ({"embeddings": X.long()}, TypeError, "embeddings: expected dtype"),
        ({"embeddings": [[1.0]]}, TypeError, "embeddings: expected a numpy array"),
        ({"strategy": "hardest"}, ValueError, "strategy: expected one of"),
        ({"semihard_fallback": "random"}, ValueError, "semihard_fallback"),
        ({"margin": float("nan")}, ValueError, "margin"),
        ({"margin": "0.1"}, TypeError, "margin: expected a real number"),
        ({"margin": True}, TypeError, "margin: expected a real number"),
        ({"margin": -0.1}, ValueError, "margin: expected a number >= 0"),
        ({"strategy": ["batch_hard"]}, ValueError, "strategy: expected one of"),
        ({"semihard_fallback": None}, ValueError, "semihard_fallback: expected one of"),
        ({"max_triplets": 10}, ValueError, "max_triplets: only applies"),
        ({"strategy": "batch_all", "max_triplets": 0}, ValueError, "max_triplets"),
        ({"strategy": "batch_all", "seed": -1}, ValueError, "seed"),
        ({"strategy": "offline", "n_pos": 0}, ValueError, "n_pos"),
        ({"strategy": "offline", "n_neg": 1.5}, TypeError, "n_neg: expected an integer"),
        ({"strategy": "offline", "n_pos": True}, TypeError, "n_pos: expected an integer"),
        ({"strategy": "batch_all", "max_triplets": True}, TypeError, "max_triplets"),
        ({"strategy": "offline", "n_triplets": 0}, ValueError, "n_triplets"),
        ({"threads": 0}, ValueError, "threads"),
        ({"threads": 10**6}, ValueError, r"threads: expected None or an integer in \[1, 1024\]"),
        ({"threads": 2**31}, ValueError, "threads"),
        ({"threads": 2.0}, TypeError, "threads"),
        ({"ref_embeddings": X}, ValueError, "give both or neither"),
        ({"ref_labels": L}, ValueError, "give both or neither"),
        (
            {"ref_embeddings": X[:, :3], "ref_labels": L},
            ValueError,
            "ref_embeddings: expected dimension 4",
        ),
        ({"ref_embeddings": X, "ref_labels": L[:3]}, ValueError, "ref_labels: expected 8 labels"),
        ({"labels": L.to("meta")}, ValueError, "labels: unsupported device meta"),
        ({"ref_embeddings": X, "ref_labels": L.to("meta")}, ValueError, "ref_labels: unsupported"),
        ({"embeddings": X.to_sparse()}, TypeError, "embeddings: expected a dense tensor"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_message(kwargs, error, match):
    args = {"embeddings": X, "labels": L, "strategy": "batch_hard", **kwargs}
    with pytest.raises(error, match=match):
        triplet_mine(args.pop("embeddings"), args.pop("labels"), **args)


def _ties_batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    e = rng.normal(size=(4, 16)).astype(np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    e[3] = e[1]
    return e, np.array([0, 0, 1, 1])


def _triplets(result) -> set[tuple[int, int, int]]:
    return set(zip(*(t.tolist() for t in result), strict=True))


def test_identical_vectors_tie_exactly_in_batch_all(isa):
    # s(0, 1) and s(0, 3) are the same similarity (e[3] == e[1]): hinge exactly 0 at margin 0.
    e, labels = _ties_batch()
    found = _triplets(triplet_mine(e, labels, strategy="batch_all", margin=0.0))
    assert (0, 1, 3) not in found
    expected = triplet_mine_reference(
        torch.from_numpy(e), torch.from_numpy(labels), strategy="batch_all", margin=0.0
    )
    assert found == _triplets(expected)


def test_semihard_negatives_are_strictly_easier_than_the_positive(isa):
    e, labels = _ties_batch()
    found = triplet_mine(e, labels, strategy="semihard", semihard_fallback="drop")
    sim = e.astype(np.float64) @ e.astype(np.float64).T
    for a, p, n in _triplets(found):
        assert sim[a, n] < sim[a, p] and not np.array_equal(e[n], e[p])
    generator = torch.Generator().manual_seed(5)
    for _ in range(20):
        x = torch.nn.functional.normalize(torch.randn(12, 8, generator=generator), dim=1)
        x[6:] = x[:6]  # every vector twice
        lab = torch.randint(0, 3, (12,), generator=generator)
        for strategy, kwargs in (
            ("semihard", {"semihard_fallback": "drop"}),
            ("batch_all", {"margin": 0.0}),
        ):
            got = _triplets(triplet_mine(x, lab, strategy=strategy, **kwargs))
            assert got == _triplets(triplet_mine_reference(x, lab, strategy=strategy, **kwargs))


@pytest.mark.parametrize("same_set", [True, False])
def test_batch_hard_identical_positives_tie_to_the_smaller_index(isa, same_set):
    # batch_hard scores positives by direct dot products, not the tile kernel: identical
    # positives must still tie exactly, in either argument order, at every size and ISA.
    generator = torch.Generator().manual_seed(3)
    for dim in (3, 8, 17, 256):
        x = torch.nn.functional.normalize(torch.randn(40, dim, generator=generator), dim=1)
        labels = torch.arange(40) % 5
        x[35:] = x[30:35]  # the same vector at index i and i + 5 (same label)
        refs = {} if same_set else {"ref_embeddings": x.flip(0).contiguous()}
        if not same_set:
            refs["ref_labels"] = labels.flip(0).contiguous()
        ref, ref_labels = (x, labels) if same_set else (refs["ref_embeddings"], refs["ref_labels"])
        x64, ref64 = x.double(), ref.double()
        expected = []
        for i in range(40):  # least similar positive, ties to the smaller index
            positives = [
                j for j in range(40) if ref_labels[j] == labels[i] and (j != i or not same_set)
            ]
            expected.append(min(positives, key=lambda j: (float((x64[i] * ref64[j]).sum()), j)))
        a, p, _ = triplet_mine(x, labels, strategy="batch_hard", **refs)
        assert a.tolist() == list(range(40)) and p.tolist() == expected


@pytest.mark.parametrize("seed", range(3))
def test_identical_embeddings_have_no_semihard_negative(isa, seed):
    row = np.random.default_rng(seed).normal(size=(1, 8)).astype(np.float32)
    e = np.repeat(row / np.linalg.norm(row), 6, axis=0)
    a, _, _ = triplet_mine(
        e, np.array([0, 0, 1, 1, 2, 2]), strategy="semihard", semihard_fallback="drop"
    )
    assert len(a) == 0


def test_hardest_negative_is_right_for_any_finite_magnitude(isa):
    # bf16 screening (AVX-512) used to pick a wrong hardest negative here: 3.4e38 rounds to
    # an infinite bf16. No similarity that is used overflows (column 0 of the others ~1e-38).
    rng = np.random.default_rng(0)
    e = rng.normal(size=(40, 8)).astype(np.float32)
    e[1:, 0] *= 1e-38
    e[0, 0] = 3.4e38
    labels = np.arange(40) % 4
    got = triplet_mine(e, labels, strategy="batch_hard")
    sim = e.astype(np.float64) @ e.astype(np.float64).T
    negatives = labels[:, None] != labels[None, :]
    hardest = np.where(negatives, sim, -np.inf).argmax(axis=1)
    assert got[2].tolist() == hardest.tolist()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_similarities_that_overflow_float32_are_refused(isa, strategy):
    x = np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32) * 1e30
    labels = np.arange(20) % 4
    with pytest.raises(ValueError, match="embeddings: similarities may overflow float32"):
        triplet_mine(x, labels, strategy=strategy)
    with pytest.raises(ValueError, match="embeddings: similarities may overflow float32"):
        triplet_mine_reference(torch.from_numpy(x), torch.from_numpy(labels), strategy=strategy)
    small = x[:10] / 1e10  # norms ~3e20 against references ~3e30
    with pytest.raises(ValueError, match="similarities may overflow"):
        triplet_mine(small, labels[:10], strategy=strategy, ref_embeddings=x, ref_labels=labels)


def test_offline_sizes_beyond_the_references_act_as_all(isa):
    x, labels = integer_batch(torch.Generator().manual_seed(3), 16, 4, 3)
    huge = triplet_mine(x, labels, strategy="offline", n_pos=10**9, n_neg=10**9, n_triplets=10**12)
    whole = triplet_mine(x, labels, strategy="offline", n_pos=16, n_neg=16)
    assert all(torch.equal(a, b) for a, b in zip(huge, whole, strict=True))


def test_numpy_scalars_are_accepted_like_python_numbers(isa):
    x, labels = integer_batch(torch.Generator().manual_seed(4), 16, 4, 3)
    plain = triplet_mine(x, labels, strategy="offline", n_pos=2, n_neg=3, n_triplets=4, threads=1)
    numpy_args = triplet_mine(
        x, labels, strategy="offline", n_pos=np.int64(2), n_neg=np.int32(3),
        n_triplets=np.uint8(4), threads=np.int64(1),
    )  # fmt: skip
    assert all(torch.equal(a, b) for a, b in zip(plain, numpy_args, strict=True))
    sampled = triplet_mine(
        x, labels, strategy="batch_all", margin=np.float32(0.5), max_triplets=np.int64(5),
        seed=np.uint64(7),
    )  # fmt: skip
    assert len(sampled[0]) <= 5


@pytest.mark.parametrize("same_set", [True, False])
def test_positive_pairs_of_mixed_class_sizes_match_the_reference(isa, same_set):
    # Classes of 1 to 60 images: small ones share a positive-pair tile, big ones span
    # several tiles; every strategy sees the same positive similarities as the reference.
    generator = torch.Generator().manual_seed(11)
    sizes = [1, 2, 3, 5, 4, 4, 17, 60, 2, 9]
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(sizes)])
    labels = labels[torch.randperm(labels.numel(), generator=generator)]
    x = torch.randint(-2, 3, (labels.numel(), 6), generator=generator).float()
    extra = {}
    if not same_set:
        extra = {"ref_embeddings": x.flip(0), "ref_labels": labels.flip(0)}
    for strategy in STRATEGIES:
        kwargs = {"strategy": strategy, "margin": 0.5, **extra}
        got = triplet_mine(x, labels, **kwargs)
        expected = triplet_mine_reference(x, labels, **kwargs)
        assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True)), strategy
