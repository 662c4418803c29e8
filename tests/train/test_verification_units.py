"""The verification trainer's mining, split and validation on hand-made descriptors: a fake
index (a few 2-D or random references), every candidate list and score worked out here."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pyinstance.train import verification
from pyinstance.train.config import VerificationConfig, parse_config
from pyinstance.train.verification import (
    Pairs,
    VerificationTrainer,
    _separation,
    _torch_bytes,
    validate,
)
from tests.recipes import GEM_ONE_SCALE


class FakeIndex:
    def __init__(self, references, codes):
        self.references = np.asarray(references, np.float32)
        self.codes = np.asarray(codes, np.int64)

    def descriptors(self):
        return self.references.copy()

    def labels(self):
        return self.codes.copy()


def trainer(references, codes, *, candidates=2, fraction=0.2, seed=0) -> VerificationTrainer:
    made = VerificationTrainer.__new__(VerificationTrainer)
    made.settings = VerificationConfig(candidates=candidates, validation_fraction=fraction)
    made.index = FakeIndex(references, codes)
    made.config = SimpleNamespace(seed=seed)
    return made


def unit(*angles_degrees):
    return [[math.cos(math.radians(a)), math.sin(math.radians(a))] for a in angles_degrees]


# -- mine -------------------------------------------------------------------------------------


def test_each_view_gets_its_nearest_references_then_the_nearest_others():
    # references at 0, 10, 20 degrees (instance 0: the widest, 3 references), 40, 60 (1),
    # 90 (2); one query window at 0 degrees: similarity falls with the angle.
    references = unit(0, 10, 20, 40, 60, 90)
    codes = [0, 0, 0, 1, 1, 2]
    queries = np.array([unit(0)], np.float32)  # (1 view, 1 window, 2)
    pairs = trainer(references, codes, candidates=2).mine(queries, np.array([0]))
    assert len(pairs) == 2
    # present: the two nearest (both instance 0); absent: the nearest two of other instances,
    # the 4th and 5th nearest overall (the search must reach k + the widest instance's 3)
    assert np.allclose(pairs.candidates.numpy(), np.array([unit(0, 10), unit(40, 60)]))
    assert pairs.labels.tolist() == [[1.0, 1.0], [0.0, 0.0]]
    assert pairs.labels.dtype == torch.float32
    assert pairs.instances.tolist() == [0, 0]
    assert np.array_equal(pairs.queries.numpy(), np.stack([queries[0], queries[0]]))


def test_a_reference_is_scored_by_its_best_window():
    # windows at 0 and 90 degrees; references at 30 (best window 0: cos 30 = .87) and 80
    # (best window 90: cos 10 = .98), 135 (cos 45 = .71 with window 90), 200 (cos 20 .94 with
    # nothing: -0.94 and -.34: best -.34)
    references = unit(30, 80, 135, 200)
    codes = [1, 0, 2, 3]
    queries = np.array([unit(0, 90)], np.float32)
    pairs = trainer(references, codes, candidates=3).mine(queries, np.array([2]))
    assert np.allclose(pairs.candidates[0].numpy(), np.array(unit(80, 30, 135)), atol=1e-6)
    assert pairs.labels[0].tolist() == [0.0, 0.0, 1.0]
    assert np.allclose(pairs.candidates[1].numpy(), np.array(unit(80, 30, 200)), atol=1e-6)
    assert pairs.labels[1].tolist() == [0.0, 0.0, 0.0]
    assert pairs.instances.tolist() == [2, 2]


def brute_force(references, codes, queries, view_codes, k):
    """Every pair list by sorting all references by their best window's similarity."""
    expected = []
    for windows, code in zip(queries, view_codes, strict=True):
        best = (windows.astype(np.float64) @ references.astype(np.float64).T).max(axis=0)
        order = sorted(range(len(references)), key=lambda r: (-best[r], r))
        others = [r for r in order if codes[r] != code]
        for chosen in (order[:k], others[:k]):
            if len(chosen) == k:
                expected.append((windows, references[chosen], codes[chosen] == code, code))
    return expected


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mining_matches_a_brute_force_search(seed):
    rng = np.random.default_rng(seed)
    references = rng.normal(size=(12, 5)).astype(np.float32)
    references /= np.linalg.norm(references, axis=1, keepdims=True)
    codes = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 3, 4, 4])
    queries = rng.normal(size=(6, 3, 5)).astype(np.float32)
    view_codes = np.array([0, 0, 1, 2, 3, 4])
    pairs = trainer(references, codes, candidates=4).mine(queries, view_codes)
    expected = brute_force(references, codes, queries, view_codes, 4)
    assert len(pairs) == len(expected) == 12
    for m, (windows, candidates, labels, code) in enumerate(expected):
        assert np.array_equal(pairs.queries[m].numpy(), windows)
        assert np.allclose(pairs.candidates[m].numpy(), candidates)
        assert pairs.labels[m].tolist() == labels.astype(float).tolist()
        assert int(pairs.instances[m]) == code


def test_equal_scores_keep_the_reference_order():
    """Ties (exact scores: axis-aligned unit vectors) go to the earlier reference, as the
    index's own search breaks them; 20 references, more than an unstable sort leaves alone."""
    rng = np.random.default_rng(7)
    basis = np.array([[1, 0], [0, 1], [-1, 0]], np.float32)
    references = basis[rng.integers(0, 3, 20)]
    codes = np.array([0] * 16 + [1, 2, 3, 4])
    rng.shuffle(codes)
    queries = basis[:, None, :]  # one window each, along each basis vector
    view_codes = np.array([0, 1, 3])
    pairs = trainer(references, codes, candidates=4).mine(queries, view_codes)
    expected = brute_force(references, codes, queries, view_codes, 4)
    assert len(pairs) == len(expected) == 6
    for m, (_, candidates, labels, _) in enumerate(expected):
        assert np.array_equal(pairs.candidates[m].numpy(), candidates)
        assert pairs.labels[m].tolist() == labels.astype(float).tolist()
    assert pairs.labels[0].tolist() == [1.0, 1.0, 1.0, 0.0]  # references 7, 8, 9, 10


def test_queries_near_their_widest_instance_need_the_deepest_search():
    # the view's instance (0) holds the 4 nearest references: the others start 5th
    references = unit(0, 1, 2, 3, 50, 60, 70)
    codes = [0, 0, 0, 0, 1, 2, 1]
    pairs = trainer(references, codes, candidates=3).mine(np.array([unit(0)], np.float32), [0])
    assert np.allclose(pairs.candidates[1].numpy(), np.array(unit(50, 60, 70)), atol=1e-6)
    assert pairs.labels.tolist() == [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]


def test_more_candidates_than_references_use_them_all_and_skip_a_short_absent_list():
    references = unit(0, 40, 80)
    codes = [0, 1, 1]
    pairs = trainer(references, codes, candidates=10).mine(np.array([unit(45)], np.float32), [1])
    # k becomes 3; leaving instance 1 out leaves 1 reference: only the present pair is made
    assert len(pairs) == 1
    assert np.allclose(pairs.candidates[0].numpy(), np.array(unit(40, 80, 0)), atol=1e-6)
    assert pairs.labels.tolist() == [[1.0, 1.0, 0.0]]


def test_no_views_make_no_pairs_and_are_refused():
    with pytest.raises(ValueError, match="^verification: no training pairs"):
        trainer(unit(0, 90), [0, 1]).mine(np.zeros((0, 1, 2), np.float32), np.zeros(0, int))


# -- split ------------------------------------------------------------------------------------


def pairs_of(instances) -> Pairs:
    m = len(instances)
    return Pairs(
        torch.arange(m, dtype=torch.float32).reshape(m, 1, 1),
        torch.zeros(m, 2, 1),
        torch.zeros(m, 2),
        torch.as_tensor(instances),
    )


def test_pairs_subset_and_length():
    pairs = pairs_of([3, 4, 3])
    part = pairs.subset(torch.tensor([True, False, True]))
    assert len(pairs) == 3 and len(part) == 2
    assert part.queries.flatten().tolist() == [0.0, 2.0]
    assert part.instances.tolist() == [3, 3]
    assert part.candidates.shape == (2, 2, 1) and part.labels.shape == (2, 2)


@pytest.mark.parametrize(
    ("fraction", "instances", "held"),
    [(0.2, 5, 1), (0.2, 10, 2), (0.5, 3, 2), (0.5, 4, 2), (0.3, 5, 2)],
)
def test_the_held_out_share_of_instances_is_rounded(fraction, instances, held):
    labels = [i for i in range(instances) for _ in range(3)]  # 3 pairs per instance
    training, validation = trainer(unit(0), [0], fraction=fraction).split(pairs_of(labels))
    assert len(torch.unique(validation.instances)) == held
    assert len(validation) == 3 * held and len(training) == 3 * (instances - held)
    assert not set(validation.instances.tolist()) & set(training.instances.tolist())
    together = sorted(training.queries.flatten().tolist() + validation.queries.flatten().tolist())
    assert together == [float(i) for i in range(3 * instances)]


def test_the_held_out_instances_depend_on_the_seed_only():
    labels = list(range(10))
    held = {
        seed: tuple(trainer(unit(0), [0], seed=seed).split(pairs_of(labels))[1].instances.tolist())
        for seed in range(6)
    }
    again = trainer(unit(0), [0], seed=3).split(pairs_of(labels))[1]
    assert tuple(again.instances.tolist()) == held[3]
    assert len(set(held.values())) > 1


@pytest.mark.parametrize(("fraction", "instances"), [(0.1, 4), (0.0, 5), (1.0, 3)])
def test_nothing_or_everything_held_out_means_no_validation(fraction, instances):
    pairs = pairs_of(list(range(instances)))
    training, validation = trainer(unit(0), [0], fraction=fraction).split(pairs)
    assert training is pairs and validation is None


# -- validation metrics -----------------------------------------------------------------------


def test_separation_counts_top1_among_known_queries_and_ties_as_half():
    scores = torch.tensor([[0.9, 0.2], [0.3, 0.6], [0.5, 0.1], [0.6, 0.4]])
    labels = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    out = _separation(scores, labels, "val")
    # known queries 0, 1: best candidates 0 (right) and 1 (wrong); best scores .9, .6
    # against the unknown ones' .5, .6: 3 above, 1 tie of 4 pairs
    assert out == {"val_top1": 0.5, "val_auroc": 0.875}


def test_separation_without_unknown_or_known_queries():
    scores = torch.tensor([[0.2, 0.9], [0.7, 0.1]])
    known = _separation(scores, torch.tensor([[0.0, 1.0], [0.0, 1.0]]), "t")
    assert known == {"t_top1": 0.5}
    unknown = _separation(scores, torch.zeros(2, 2), "t")
    assert list(unknown) == ["t_top1"] and math.isnan(unknown["t_top1"])


class FirstCoordinate(torch.nn.Module):
    """Logits: each candidate's first coordinate times a weight (no use of the query)."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor(2.0))

    def forward(self, queries, candidates):
        return candidates[..., 0] * self.weight


def test_validate_scores_the_net_and_the_raw_similarity():
    queries = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]])
    candidates = torch.tensor([[[0.1, 0.9], [0.5, 0.0]], [[0.3, 0.2], [0.0, 0.0]]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    net = FirstCoordinate().train()
    out = validate(net, Pairs(queries, candidates, labels, torch.tensor([0, 1])), "train")
    assert not net.training
    # net: logits .2, 1.0 | .6, 0: best candidate 1 (wrong); best sigmoid(1.0) vs sigmoid(.6)
    # raw: best window per candidate .9, .5 | .3, 0: candidate 0 (right); .9 > .3
    assert out == {
        "train_top1": 0.0,
        "train_auroc": 1.0,
        "train_raw_top1": 1.0,
        "train_raw_auroc": 1.0,
    }
    candidates[0, 0, 0] = 0.0  # net logits 0, 1.0 vs .6: still above; raw .9 vs .3
    labels[0] = torch.tensor([0.0, 1.0])
    out = validate(net, Pairs(queries, candidates, labels, torch.tensor([0, 1])), "v")
    assert out == {"v_top1": 1.0, "v_auroc": 1.0, "v_raw_top1": 0.0, "v_raw_auroc": 1.0}


# -- fit on described views -------------------------------------------------------------------


BINARY_CROSS_ENTROPY = torch.nn.functional.binary_cross_entropy_with_logits
ADAMW = torch.optim.AdamW


def fitting(tmp_path, monkeypatch, references, codes, angles, **verification):
    """A trainer on ``references`` whose views are at ``angles`` (of instances ``codes``),
    with spies on the loss's positive weight and the optimiser's arguments."""
    settings = {"index": "idx", "candidates": 2, "projection": 3, "hidden": 3, "batch": 4}
    config = parse_config(
        {
            "output": str(tmp_path),
            "data": {"source": "pics"},
            "train": {"objective": "verification", "epochs": 2, "lr_head": 0.01},
            "verification": {**settings, **verification},
        },
        base=tmp_path,
    )
    made = trainer(references, codes)
    made.config, made.settings = config, config.verification
    made.index.recipe, made.index.path = GEM_ONE_SCALE, tmp_path / "idx"
    made.device, made.output = torch.device("cpu"), tmp_path
    queries = np.array([unit(a) for a in angles], np.float32)
    monkeypatch.setattr(made, "describe_views", lambda: (queries, np.array(codes)))
    spied = SimpleNamespace(weights=[], optimizer={}, losses=[], labels=[])
    original = BINARY_CROSS_ENTROPY  # not the attribute: a spy of an earlier call

    def loss(logits, labels, pos_weight):
        spied.weights.append(float(pos_weight))
        spied.labels.append(labels.tolist())
        value = original(logits, labels, pos_weight=pos_weight)
        spied.losses.append(float(value.detach()))
        return value

    monkeypatch.setattr(torch.nn.functional, "binary_cross_entropy_with_logits", loss)
    adamw = ADAMW

    def optimizer(parameters, **kwargs):
        spied.optimizer = kwargs
        return adamw(parameters, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", optimizer)
    return made, spied


def test_fit_trains_on_mined_pairs_and_writes_the_verifier(tmp_path: Path, monkeypatch):
    from pyinstance.index import Recipe
    from pyinstance.rerank import read_verifier

    references = unit(0, 30, 60, 90, 120, 150, 180, 210)
    codes = [0, 0, 1, 1, 2, 2, 3, 3]
    angles = (5, 35, 65, 95, 125, 155, 185, 215)
    made, spied = fitting(
        tmp_path, monkeypatch, references, codes, angles, validation_fraction=0.25
    )
    queries = np.array([unit(a) for a in angles], np.float32)
    training, _ = made.split(made.mine(queries, np.array(codes)))
    positives = float(training.labels.sum())
    readings = iter([100.0, 101.25, 103.75])  # start, views described, end
    monkeypatch.setattr(verification, "time", SimpleNamespace(perf_counter=lambda: next(readings)))
    result = made.fit()
    assert (result.describe_seconds, result.seconds) == (1.25, 3.75)
    # 8 views × (present, absent) = 16 pairs; 1 of 4 instances held out: 4 pairs
    assert result.pairs == 16
    assert [row["epoch"] for row in result.epochs] == [1, 2]
    for row in result.epochs:
        assert set(row) == {
            "epoch", "loss", "train_top1", "train_auroc", "train_raw_top1", "train_raw_auroc",
            "val_top1", "val_auroc", "val_raw_top1", "val_raw_auroc",
        }  # fmt: skip
        assert math.isfinite(row["loss"]) and row["loss"] > 0
    # 12 training pairs of 2 candidates: the positives weighted negatives / positives (9 or
    # 10 of 24, as the held-out instance has 4 or 3), in 3 batches of 4 per epoch
    assert positives in (9.0, 10.0)
    assert spied.weights == pytest.approx([(24 - positives) / positives] * 6)
    assert spied.optimizer == {"lr": 0.01, "weight_decay": 1e-4}
    assert [len(labels) for labels in spied.labels] == [4] * 6  # every pair, every epoch
    # each epoch's loss is the mean of its 3 batches'
    for epoch, row in enumerate(result.epochs):
        assert row["loss"] == pytest.approx(np.mean(spied.losses[3 * epoch : 3 * epoch + 3]))
    assert result.model_path == tmp_path / "verifier.pt"
    saved = read_verifier(result.model_path)
    assert saved.options == {"dim": 2, "projection": 3, "hidden": 3}
    assert saved.k == 2 and Recipe.from_dict(saved.recipe) == GEM_ONE_SCALE
    assert saved.info["pairs"] == 16 and saved.info["validation_pairs"] == 4
    assert saved.info["index"] == str(tmp_path / "idx")
    assert saved.info["epochs"] == result.epochs
    assert saved.info["config"] == made.config.to_dict()
    assert (saved.info["describe_seconds"], saved.info["seconds"]) == (1.2, 3.8)
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 2


def test_the_batch_order_depends_on_the_seed_alone(tmp_path, monkeypatch):
    """The pairs are shuffled by a generator of their own: whatever the global torch random
    state (the network's initialisation draws from it), the same seed gives the same batches."""
    references = unit(0, 30, 60, 90, 120, 150)
    codes = [0, 0, 1, 1, 2, 2]
    angles = (5, 35, 65, 95, 125, 155)
    orders = []
    for state in (1, 2):
        made, spied = fitting(
            tmp_path / str(state), monkeypatch, references, codes, angles, validation_fraction=0
        )
        torch.manual_seed(state)
        made.fit()
        orders.append(spied.labels)
    assert orders[0] == orders[1]
    assert len(orders[0]) == 6  # 12 pairs in batches of 4, two epochs


@pytest.mark.parametrize(
    ("codes", "weight"),
    [
        ([0, 0, 1], 0.5),  # labels 1, 1, 0: 1 negative over 2 positives
        ([0, 1, 1], 2.0),  # labels 1, 0, 0: 2 negatives over 1 positive
        ([0, 0, 0], 1 / 3),  # no negative: counted as 1, over 3 positives
    ],
)
def test_the_positive_weight_balances_the_classes(tmp_path, monkeypatch, codes, weight):
    # one view of instance 0, every reference a candidate: no absent list (too few others)
    made, spied = fitting(tmp_path, monkeypatch, unit(0, 20, 40), codes, (0,), candidates=3)
    made.describe_views = lambda: (np.array([unit(0)], np.float32), np.array([0]))
    result = made.fit()
    assert result.pairs == 1
    assert spied.weights == pytest.approx([weight] * 2)
    # one batch an epoch: its loss is the epoch's
    assert [row["loss"] for row in result.epochs] == pytest.approx(spied.losses)
    from pyinstance.rerank import read_verifier

    assert read_verifier(result.model_path).info["validation_pairs"] == 0  # none held out
    assert "val_top1" not in result.epochs[0]


# -- set-up and described views ---------------------------------------------------------------


class DescribingIndex(FakeIndex):
    """An index of instances a, b, c whose query descriptor of a photo is its mean colour."""

    instances = ("a", "b", "c")
    path = Path("idx")
    recipe = GEM_ONE_SCALE

    def __init__(self, size=3):
        super().__init__(unit(0, 90, 180)[:size], [0, 1, 2][:size])
        self.described = 0
        self.stamp = 1

    def __len__(self):
        return len(self.codes)

    def version(self):
        return self.stamp

    def describe_queries(self, images):
        self.described += len(images)
        means = [np.asarray(image, np.float32).reshape(-1, 3).mean(0)[:2] for image in images]
        return np.array(means, np.float32)[:, None, :]


COLOURS = {"b": (200, 10, 0), "c": (10, 200, 0)}


def training_set(names=("b", "c", "b")):
    from PIL import Image

    from pyinstance.train.data import TrainingSet

    instances = tuple(sorted(set(names)))
    return TrainingSet(
        images=tuple(Image.new("RGB", (40, 30), COLOURS.get(n, (0, 0, 0))) for n in names),
        labels=tuple(instances.index(n) for n in names),
        instances=instances,
        paths=tuple(Path(f"{n}{i}.png") for i, n in enumerate(names)),
    )


def verification_config(tmp_path, **verification):
    return parse_config(
        {
            "output": str(tmp_path / "run"),
            "seed": 5,
            "data": {"source": "pics"},
            "augment": {"sizes": [32], "rotation": 0.0, "axis_scale": [1.0, 1.0],
                        "brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0},
            "train": {"objective": "verification", "progress": False},
            "verification": {"index": "idx", **verification},
        },
        base=tmp_path,
    )  # fmt: skip


def test_the_trainer_maps_the_photos_to_the_index_instances(tmp_path):
    index = DescribingIndex()
    made = VerificationTrainer(
        verification_config(tmp_path), training_set=training_set(), index=index
    )
    assert made.index is index and made.settings.index == tmp_path / "idx"
    assert made.codes.tolist() == [1, 2, 1]  # b and c are the index's instances 1 and 2
    assert made.output == tmp_path / "run" and made.device == torch.device("cpu")
    assert made.views.mean == (0.485, 0.456, 0.406) and made.views.std == (0.229, 0.224, 0.225)
    # the view maker composites among other instances: it needs the photos' labels
    assert made.views.images is made.data.images
    assert made.views.labels.tolist() == [0, 1, 0]  # b, c, b of the training set's (b, c)


def test_the_trainer_refuses_other_objectives_empty_indexes_and_strangers(tmp_path):
    config = verification_config(tmp_path)
    metric = parse_config({"output": "o", "data": {"source": "p"}}, base=tmp_path)
    with pytest.raises(ValueError, match="^train.objective: VerificationTrainer needs"):
        VerificationTrainer(metric, training_set=training_set(), index=DescribingIndex())
    with pytest.raises(ValueError, match="^verification.index: 'idx' holds no references"):
        VerificationTrainer(config, training_set=training_set(), index=DescribingIndex(0))
    strangers = training_set(("b", "x", "z", "c"))
    with pytest.raises(ValueError, match=r"^data.source: instance\(s\) x, z are not in the index"):
        VerificationTrainer(config, training_set=strangers, index=DescribingIndex())


def test_views_are_described_once_per_set_up_and_cached(tmp_path):
    index = DescribingIndex()
    made = VerificationTrainer(
        verification_config(tmp_path, views=2), training_set=training_set(), index=index
    )
    queries, codes = made.describe_views()
    assert index.described == 6
    assert codes.tolist() == [1, 1, 2, 2, 1, 1] and codes.dtype == np.int64
    expected = [COLOURS[n][:2] for n in ("b", "b", "c", "c", "b", "b")]
    assert queries.shape == (6, 1, 2)
    assert np.allclose(queries[:, 0], expected, atol=1.0)  # flat photos keep their colour
    again, again_codes = made.describe_views()
    assert index.described == 6  # read from the cache
    assert np.array_equal(again, queries) and np.array_equal(again_codes, codes)
    saved = torch.load(tmp_path / "run" / "verification-views.pt", weights_only=True)
    assert np.array_equal(saved["queries"].numpy(), queries)
    key = json.loads(saved["key"])
    assert key == {
        "recipe": GEM_ONE_SCALE.to_json(),
        "index_version": 1,
        "augment": made.config.to_dict()["augment"],
        "data": made.config.to_dict()["data"],
        "views": 2,
        "seed": 5,
    }
    index.stamp = 2  # the index changed: described again
    made.describe_views()
    assert index.described == 12


def test_each_view_has_its_own_generator(tmp_path, monkeypatch):
    seen = []
    made = VerificationTrainer(
        verification_config(tmp_path, views=2), training_set=training_set(), index=DescribingIndex()
    )
    monkeypatch.setattr(
        made.views, "image", lambda photo, rng: seen.append((photo, rng.random())) or
        made.data.images[photo]
    )  # fmt: skip
    made.describe_views()
    expected = [
        (photo, np.random.default_rng([5, 0, photo, view]).random())
        for photo in range(3)
        for view in range(2)
    ]
    assert seen == expected


def test_a_cache_of_another_set_up_is_replaced(tmp_path):
    first = VerificationTrainer(
        verification_config(tmp_path, views=1), training_set=training_set(), index=DescribingIndex()
    )
    first.describe_views()
    index = DescribingIndex()
    second = VerificationTrainer(
        verification_config(tmp_path, views=2), training_set=training_set(), index=index
    )
    assert second.describe_views()[0].shape[0] == 6 and index.described == 6
    (tmp_path / "run" / "verification-views.pt").write_bytes(_torch_bytes([1, 2]))
    assert second.describe_views()[0].shape[0] == 6 and index.described == 12


def test_a_cache_written_under_the_canonical_key_is_reused(tmp_path):
    """The key is the set-up as JSON with sorted keys at every level: a cache written by
    another process or version for the same set-up is read, whatever its dicts' order."""
    index = DescribingIndex()
    made = VerificationTrainer(
        verification_config(tmp_path, views=1), training_set=training_set(), index=index
    )
    settings = made.config.to_dict()
    key = {
        "views": 1,
        "seed": 5,
        "recipe": GEM_ONE_SCALE.to_json(),
        "index_version": 1,
        "data": dict(reversed(list(settings["data"].items()))),
        "augment": dict(reversed(list(settings["augment"].items()))),
    }
    queries = torch.arange(6, dtype=torch.float32).reshape(3, 1, 2)
    cache = {
        "key": json.dumps(key, sort_keys=True),
        "queries": queries,
        "codes": torch.tensor([1, 2, 1]),
    }
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "verification-views.pt").write_bytes(_torch_bytes(cache))
    got, codes = made.describe_views()
    assert index.described == 0
    assert np.array_equal(got, queries.numpy()) and codes.tolist() == [1, 2, 1]


class Planted:
    """An object whose unpickling leaves a file behind."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_cache_file_is_never_unpickled_beyond_tensors(tmp_path):
    import pickle

    made = VerificationTrainer(
        verification_config(tmp_path), training_set=training_set(), index=DescribingIndex()
    )
    marker = tmp_path / "executed"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "verification-views.pt").write_bytes(
        _torch_bytes({"key": "x", "planted": Planted(marker)})
    )
    with pytest.raises(pickle.UnpicklingError):
        made.describe_views()
    assert not marker.exists()


def test_the_progress_bar_counts_every_view(tmp_path, monkeypatch):
    bars = []

    class Bar:
        def __init__(self, **kwargs):
            self.kwargs, self.updates = kwargs, []
            bars.append(self)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n):
            self.updates.append(n)

    monkeypatch.setattr(verification, "tqdm", Bar)
    for progress in (False, True):
        config = verification_config(tmp_path / str(progress), views=2)
        train = dataclasses.replace(config.train, progress=progress)
        config = dataclasses.replace(config, train=train)
        made = VerificationTrainer(config, training_set=training_set(), index=DescribingIndex())
        made.describe_views()
    assert [bar.kwargs for bar in bars] == [
        {"total": 6, "desc": "describe views", "disable": True},
        {"total": 6, "desc": "describe views", "disable": False},
    ]
    assert bars[0].updates == [1] * 6


def test_without_an_index_the_configured_one_is_opened_with_the_automatic_engine(
    tmp_path, monkeypatch
):
    opened = []
    index = DescribingIndex()

    class Opener:
        @staticmethod
        def open(path, *, engine):
            opened.append((path, engine))
            return index

    monkeypatch.setattr(verification, "InstanceIndex", Opener)
    made = VerificationTrainer(verification_config(tmp_path), training_set=training_set())
    assert made.index is index
    assert opened == [(tmp_path / "idx", "auto")]


def test_either_a_metric_objective_or_a_missing_index_is_refused(tmp_path):
    config = verification_config(tmp_path)
    metric = dataclasses.replace(
        config, train=dataclasses.replace(config.train, objective="metric")
    )
    no_index = dataclasses.replace(
        config, verification=dataclasses.replace(config.verification, index=None)
    )
    for refused in (metric, no_index):
        with pytest.raises(ValueError, match="^train.objective: VerificationTrainer needs"):
            VerificationTrainer(refused, training_set=training_set(), index=DescribingIndex())
