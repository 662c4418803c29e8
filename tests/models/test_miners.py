"""Built-in miner plugins: registration, contract, equivalence with triplet_mine, curriculum."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pyinstance
from pyinstance import testing
from pyinstance.models.miners import (
    CurriculumMiner,
    HardNegativeMiner,
    RandomMiner,
    SemiHardMiner,
)
from pyinstance.ops import MiningWarning, triplet_mine

NAMES = {
    "batch_hard": "batch_hard",
    "hard_negative": "hard_negative",
    "semihard": "semihard",
    "batch_all": "batch_all",
    "offline": "offline",
}


def batch(seed: int = 0, b: int = 48, classes: int = 12, d: int = 16):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(b, d, generator=g), dim=1)
    return x, torch.arange(b) % classes


@pytest.mark.parametrize(
    "name", ["batch_hard", "hard_negative", "semihard", "batch_all", "offline", "curriculum"]
)
def test_miner_passes_contract(name):
    testing.check_miner(pyinstance.get_miner(name))


def test_random_miner_passes_contract_seeded_or_not():
    testing.check_miner(pyinstance.get_miner("random", seed=1))
    testing.check_miner(pyinstance.get_miner("random", per_anchor=3), deterministic=False)


@pytest.mark.parametrize("name", sorted(NAMES))
def test_miner_equals_op(name):
    x, labels = batch()
    miner = pyinstance.get_miner(name)
    x.requires_grad_(True)
    got = miner(x, labels)
    expected = triplet_mine(x.detach(), labels, strategy=NAMES[name], **miner.options)
    for g, e in zip(got, expected, strict=True):
        assert torch.equal(g, e) and not g.requires_grad


def test_miner_options_are_passed_and_validated():
    x, labels = batch()
    a, _, _ = pyinstance.get_miner("batch_all", margin=0.5, max_triplets=10, seed=2)(x, labels)
    assert a.numel() == 10
    a, _, _ = pyinstance.get_miner("offline", n_pos=1, n_neg=2, n_triplets=1)(x, labels)
    assert a.numel() == 48
    dropped = pyinstance.get_miner("semihard", fallback="drop")(x, labels)[0].numel()
    kept = pyinstance.get_miner("semi_hard")(x, labels)[0].numel()
    assert dropped <= kept == 48 * 3
    with pytest.raises(ValueError, match="fallback: expected one of 'easiest', 'drop'"):
        pyinstance.get_miner("semihard", fallback="nope")
    with pytest.raises(ValueError, match="max_triplets"):
        pyinstance.get_miner("batch_all", max_triplets=0)
    with pytest.raises(ValueError, match="n_neg"):
        pyinstance.get_miner("offline", n_neg=0)


def test_miner_options_accept_numpy_scalars_and_refuse_booleans():
    x, labels = batch()
    offline = pyinstance.get_miner("offline", n_pos=np.int64(1), n_neg=np.int32(2))
    assert offline.options["n_pos"] == 1 and type(offline.options["n_neg"]) is int
    assert offline(x, labels)[0].numel() == 48 * 2  # n_pos × n_neg per anchor
    batch_all = pyinstance.get_miner(
        "batch_all", margin=np.float32(0.5), max_triplets=np.int64(10), seed=np.uint8(2)
    )
    assert batch_all(x, labels)[0].numel() == 10 and type(batch_all.options["margin"]) is float
    assert pyinstance.get_miner("batch_hard", threads=np.int64(2)).options["threads"] == 2
    assert RandomMiner(per_anchor=np.int64(2), seed=np.int64(1)).per_anchor == 2
    for name, kwargs, match in [
        ("offline", {"n_neg": True}, "n_neg: expected an integer >= 1, got True"),
        ("batch_all", {"max_triplets": False}, "max_triplets"),
        ("batch_hard", {"threads": True}, "threads"),
        ("random", {"per_anchor": True}, "per_anchor"),
        ("random", {"seed": 1.0}, "seed"),
        ("batch_all", {"margin": "0.1"}, "margin: expected a finite number >= 0"),
    ]:
        with pytest.raises(TypeError, match=match):
            pyinstance.get_miner(name, **kwargs)
    for kwargs, match in [
        ({"margin": -0.1}, "margin: expected a finite number >= 0, got -0.1"),
        ({"margin": float("nan")}, "margin: .* got nan"),
    ]:
        with pytest.raises(ValueError, match=match):
            pyinstance.get_miner("batch_all", **kwargs)


def test_miner_output_feeds_pytorch_metric_learning_loss():
    losses = pytest.importorskip("pytorch_metric_learning.losses")
    x, labels = batch()
    x.requires_grad_(True)
    triplets = pyinstance.get_miner("batch_hard")(x, labels)
    value = losses.TripletMarginLoss(margin=0.1)(x, labels, triplets)
    value.backward()
    assert torch.isfinite(value) and x.grad is not None


def test_random_miner_draws_valid_uniform_triplets():
    x, labels = batch(b=40, classes=4)
    a, p, n = RandomMiner(per_anchor=200, seed=3)(x, labels)
    assert a.numel() == 40 * 200
    assert bool((labels[a] == labels[p]).all() & (a != p).all() & (labels[a] != labels[n]).all())
    # anchor 0 has 9 positives and 30 negatives: every one is drawn
    assert set(p[a == 0].tolist()) == {i for i in range(1, 40) if labels[i] == 0}
    assert set(n[a == 0].tolist()) == {i for i in range(40) if labels[i] != 0}
    refs, ref_labels = batch(seed=1, b=12, classes=6)
    a, p, n = RandomMiner(seed=3)(x, labels, refs, ref_labels)
    assert bool((labels[a] == ref_labels[p]).all() & (labels[a] != ref_labels[n]).all())
    with pytest.warns(MiningWarning):
        assert RandomMiner()(x[:3], torch.zeros(3, dtype=torch.int64))[0].numel() == 0
    with pytest.raises(ValueError, match="per_anchor"):
        RandomMiner(per_anchor=0)


def test_curriculum_switches_by_epoch():
    x, labels = batch()
    miner = pyinstance.get_miner(
        "curriculum",
        schedule=[(2, "semihard"), (5, ("batch_all", {"margin": 0.3})), (None, "batch_hard")],
    )
    semihard = triplet_mine(x, labels, strategy="semihard")
    batch_all = triplet_mine(x, labels, strategy="batch_all", margin=0.3)
    batch_hard = triplet_mine(x, labels, strategy="batch_hard")
    for epoch, expected in [
        (0, semihard),
        (1, semihard),
        (2, batch_all),
        (4, batch_all),
        (5, batch_hard),
        (99, batch_hard),
    ]:
        miner.set_epoch(epoch)
        for g, e in zip(miner(x, labels), expected, strict=True):
            assert torch.equal(g, e), epoch
    default = pyinstance.get_miner("curriculum")
    default.set_epoch(2)
    assert default.current.strategy == "hard_negative"


def test_curriculum_takes_miner_objects_and_looks_up_no_names():
    semihard, hard = SemiHardMiner(), HardNegativeMiner()
    miner = CurriculumMiner([(np.int64(1), semihard), (None, hard)])
    assert miner.current is semihard
    miner.set_epoch(np.int32(1))
    assert miner.current is hard and miner.epoch == 1
    with pytest.raises(TypeError, match=r"schedule\[0\]: expected a miner object .*get_miner"):
        CurriculumMiner([(None, "semihard")])


@pytest.mark.parametrize(
    ("schedule", "error", "match"),
    [
        ([], ValueError, "at least one"),
        ([(2, "semihard")], ValueError, "only the last stage"),
        ([(None, "semihard"), (None, "batch_hard")], ValueError, "only the last stage"),
        (
            [(2, "semihard"), (2, "batch_hard"), (None, "batch_all")],
            ValueError,
            r"schedule\[1\] until_epoch: expected an integer >= 3, got 2",
        ),
        ([(0, "semihard"), (None, "batch_hard")], ValueError, "integer >= 1"),
        ([("2", "semihard"), (None, "batch_hard")], TypeError, "integer >= 1"),
        ([(True, "semihard"), (None, "batch_hard")], TypeError, "integer >= 1, got True"),
        ([(None, 3)], TypeError, "expected a miner object"),
        ([3], ValueError, "expected \\(until_epoch, miner\\)"),
    ],
)
def test_curriculum_rejects_bad_schedules(schedule, error, match):
    with pytest.raises(error, match=match):
        pyinstance.get_miner("curriculum", schedule=schedule)


def test_curriculum_unknown_miner_and_bad_epoch():
    with pytest.raises(ValueError, match="unknown miner"):
        pyinstance.get_miner("curriculum", schedule=[(None, "hardest")])
    with pytest.raises(ValueError, match="epoch: expected an integer >= 0, got -1"):
        pyinstance.get_miner("curriculum").set_epoch(-1)
