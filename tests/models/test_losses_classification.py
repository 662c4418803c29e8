"""Losses with logits (cross_entropy, fcn_multiscale_ce, triplet_region_ce,
joint_identification_verification) against float64 oracles written out with loops."""

from __future__ import annotations

import math

import pytest
import torch

import pyinstance
from pyinstance.models.losses import (
    CrossEntropyLoss,
    FCNMultiscaleCrossEntropyLoss,
    JointIdentificationVerificationLoss,
    TripletMarginLoss,
    TripletRegionCrossEntropyLoss,
)
from pyinstance.models.region_head import TopKRegionHead

LABELS = torch.tensor([0, 0, 1, 1, 2, 3])
TRIPLETS = (torch.tensor([0, 2, 4, 1]), torch.tensor([1, 3, 4, 0]), torch.tensor([2, 0, 1, 5]))


def _random(*shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float64)


def _unit(rows, dim, seed=0):
    return torch.nn.functional.normalize(_random(rows, dim, seed=seed), dim=1)


def _ce(scores, label):
    """-log softmax(scores)[label] for one row of class scores (plain Python)."""
    values = [float(v) for v in scores]
    top = max(values)
    return -(values[label] - top - math.log(sum(math.exp(v - top) for v in values)))


def _dot(x, y):
    return sum(float(a) * float(b) for a, b in zip(x, y, strict=True))


def _triplet_oracle(embeddings, triplets, margin):
    terms = [
        max(0.0, _dot(embeddings[a], embeddings[n]) - _dot(embeddings[a], embeddings[p]) + margin)
        for a, p, n in zip(*(t.tolist() for t in triplets), strict=True)
    ]
    return sum(terms) / len(terms) if terms else 0.0


def test_cross_entropy_matches_the_formula():
    logits = _random(6, 5)
    expected = sum(_ce(logits[i], int(LABELS[i])) for i in range(6)) / 6
    got = CrossEntropyLoss()(_unit(6, 3), LABELS, logits=logits)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_fcn_multiscale_ce_averages_locations_then_scales():
    maps = [_random(6, 4, 3, 5, seed=1), _random(6, 4, 2, 2, seed=2)]
    labels = torch.tensor([0, 1, 2, 3, 3, 0])
    per_scale = []
    for class_map in maps:
        total, count = 0.0, 0
        for b in range(6):
            for y in range(class_map.shape[2]):
                for x in range(class_map.shape[3]):
                    total += _ce(class_map[b, :, y, x], int(labels[b]))
                    count += 1
        per_scale.append(total / count)
    expected = sum(per_scale) / len(per_scale)  # each scale weighs the same
    loss = FCNMultiscaleCrossEntropyLoss()
    assert loss(_unit(6, 3), labels, logits=maps).item() == pytest.approx(expected, rel=1e-12)
    assert loss(_unit(6, 3), labels, logits=tuple(maps)).item() == pytest.approx(expected)
    single = loss(_unit(6, 3), labels, logits=maps[0]).item()
    assert single == pytest.approx(per_scale[0], rel=1e-12)


def test_triplet_region_ce_is_triplet_plus_alpha_times_region_cross_entropy():
    embeddings, regions = _unit(6, 8), _random(6, 4, 5, seed=3)
    region_ce = sum(_ce(regions[b, r], int(LABELS[b])) for b in range(6) for r in range(4)) / 24
    triplet = _triplet_oracle(embeddings, TRIPLETS, 0.2)
    assert triplet > 0 and region_ce > 0
    for alpha in (1.0, 0.5, 0.0):
        loss = TripletRegionCrossEntropyLoss(margin=0.2, alpha=alpha)
        got = loss(embeddings, LABELS, TRIPLETS, logits=regions)
        assert got.item() == pytest.approx(triplet + alpha * region_ce, rel=1e-12)
    empty = torch.empty(0, dtype=torch.int64)
    only_regions = TripletRegionCrossEntropyLoss()(
        embeddings, LABELS, (empty, empty, empty), logits=regions
    )
    assert only_regions.item() == pytest.approx(region_ce, rel=1e-12)


def test_triplet_region_ce_defaults_follow_kohl():
    loss = pyinstance.get_loss("triplet_region_ce")
    assert (loss.triplet.margin, loss.alpha) == (0.1, 1.0)
    assert (loss.needs_triplets, loss.logits) == (True, "regions")


def test_triplet_region_ce_trains_the_topk_region_head_end_to_end():
    head = TopKRegionHead(8, num_classes=4).double()
    assert head.k == 4
    features = _random(6, 8, 5, 5, seed=4).abs()
    labels = torch.tensor([0, 0, 1, 1, 2, 3])
    regions = head.forward_regions(features)
    assert regions.region_logits.shape == (6, 4, 4)
    loss = TripletRegionCrossEntropyLoss()(
        regions.descriptors, labels, TRIPLETS, logits=regions.region_logits
    )
    expected = TripletMarginLoss()(regions.descriptors, labels, TRIPLETS) + regions.region_loss(
        labels
    )
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert head.classifier.weight.grad.abs().sum() > 0  # through the region term
    assert head.linear.weight.grad.abs().sum() > 0  # through the triplet term


def test_joint_identification_verification_matches_deepid2():
    embeddings, logits = _unit(6, 4, seed=5), _random(6, 4, seed=6)
    identification = sum(_ce(logits[i], int(LABELS[i])) for i in range(6)) / 6
    pairs = []
    for i in range(6):
        for j in range(i + 1, 6):
            distance = math.sqrt(
                sum(
                    (float(a) - float(b)) ** 2
                    for a, b in zip(embeddings[i], embeddings[j], strict=True)
                )
            )
            if LABELS[i] == LABELS[j]:
                pairs.append(0.5 * distance**2)
            else:
                pairs.append(0.5 * max(0.0, 1.2 - distance) ** 2)
    verification = sum(pairs) / len(pairs)
    loss = JointIdentificationVerificationLoss(weight=0.3, margin=1.2)
    got = loss(embeddings, LABELS, logits=logits)
    assert got.item() == pytest.approx(identification + 0.3 * verification, rel=1e-12)
    assert JointIdentificationVerificationLoss().weight == 0.05


@pytest.mark.parametrize(
    ("loss", "logits"),
    [
        (CrossEntropyLoss(), lambda: _random(6, 5, seed=7)),
        (
            FCNMultiscaleCrossEntropyLoss(),
            lambda: [_random(6, 4, 2, 3, seed=8), _random(6, 4, 1, 2, seed=9)],
        ),
        (TripletRegionCrossEntropyLoss(margin=0.5), lambda: _random(6, 4, 5, seed=10)),
        (JointIdentificationVerificationLoss(weight=0.5), lambda: _random(6, 4, seed=11)),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, torch.nn.Module) else "",
)
def test_gradients_match_finite_differences(loss, logits):
    embeddings = _unit(6, 3, seed=12).requires_grad_(True)
    scores = logits()
    tensors = scores if isinstance(scores, list) else [scores]
    for tensor in tensors:
        tensor.requires_grad_(True)

    def value(embeddings, *tensors):
        given = list(tensors) if isinstance(scores, list) else tensors[0]
        return loss(embeddings, LABELS, TRIPLETS, logits=given)

    assert torch.autograd.gradcheck(value, (embeddings, *tensors))


@pytest.mark.parametrize(
    "loss",
    [
        CrossEntropyLoss(),
        FCNMultiscaleCrossEntropyLoss(),
        TripletRegionCrossEntropyLoss(),
        JointIdentificationVerificationLoss(),
    ],
    ids=lambda loss: type(loss).__name__,
)
def test_missing_logits_are_refused_naming_the_expected_shape(loss):
    shape = {"image": "6×K", "map": "6×K×H×W", "regions": "6×k×K"}[loss.logits]
    with pytest.raises(ValueError, match=f"logits: expected .*{shape}.* got NoneType"):
        loss(_unit(6, 3), LABELS, TRIPLETS)


@pytest.mark.parametrize(
    ("loss", "logits", "match"),
    [
        (
            CrossEntropyLoss(),
            _random(5, 4),
            r"logits: expected 6×K image class scores .* got shape \(5, 4\)",
        ),
        (CrossEntropyLoss(), _random(6, 4, 1), r"logits: expected 6×K .* got shape \(6, 4, 1\)"),
        (
            CrossEntropyLoss(),
            torch.zeros(6, 4, dtype=torch.int64),
            "logits: expected a floating-point",
        ),
        (
            CrossEntropyLoss(),
            _random(6, 3),
            r"labels: expected class indices in \[0, 3\) .* got values in \[0, 3\]",
        ),
        (FCNMultiscaleCrossEntropyLoss(), [], "logits: expected a 6×K×H×W class map or a sequence"),
        (
            FCNMultiscaleCrossEntropyLoss(),
            "maps",
            "logits: expected a 6×K×H×W class map or a sequence",
        ),
        (FCNMultiscaleCrossEntropyLoss(), _random(6, 4), r"got shape \(6, 4\) at scale 0"),
        (
            FCNMultiscaleCrossEntropyLoss(),
            [_random(6, 4, 2, 2), _random(6, 5, 2, 2)],
            "logits: expected the same classes K=4 at every scale, got 5 at scale 1",
        ),
        (
            FCNMultiscaleCrossEntropyLoss(),
            [_random(6, 4, 2, 2), _random(5, 4, 2, 2)],
            r"with at least one location, got shape \(5, 4, 2, 2\) at scale 1",
        ),
        (FCNMultiscaleCrossEntropyLoss(), [_random(6, 4, 0, 2)], "with at least one location"),
        (
            TripletRegionCrossEntropyLoss(),
            _random(6, 4),
            r"logits: expected 6×k×K region class scores .* got shape \(6, 4\)",
        ),
        (TripletRegionCrossEntropyLoss(), _random(6, 0, 4), r"got shape \(6, 0, 4\)"),
        (
            JointIdentificationVerificationLoss(),
            _random(6, 4, 4),
            r"logits: expected 6×K image class scores",
        ),
    ],
)
def test_ill_shaped_logits_are_refused(loss, logits, match):
    with pytest.raises((ValueError, TypeError), match=match):
        loss(_unit(6, 3), LABELS, TRIPLETS, logits=logits)


def test_bad_batches_are_refused_naming_the_argument():
    loss = CrossEntropyLoss()
    logits = _random(6, 4)
    with pytest.raises(TypeError, match="labels: expected int64, got torch.int32"):
        loss(_unit(6, 3), LABELS.int(), logits=logits)
    with pytest.raises(ValueError, match="labels: expected 6 labels"):
        loss(_unit(6, 3), LABELS[:5], logits=logits)
    with pytest.raises(TypeError, match="labels: expected a torch.Tensor, got list"):
        loss(_unit(6, 3), LABELS.tolist(), logits=logits)
    poisoned = _unit(6, 3)
    poisoned[2, 1] = math.nan
    with pytest.raises(ValueError, match="embeddings: expected finite values"):
        loss(poisoned, LABELS, logits=logits)
    with pytest.raises(TypeError, match="embeddings: expected a floating-point tensor"):
        loss(torch.zeros(6, 3, dtype=torch.int64), LABELS, logits=logits)
    with pytest.raises(ValueError, match="labels: expected class indices in \\[0, 4\\)"):
        loss(_unit(6, 3), LABELS - 1, logits=logits)


def test_triplet_region_ce_needs_triplets():
    with pytest.raises(ValueError, match="triplets: TripletMarginLoss needs"):
        TripletRegionCrossEntropyLoss()(_unit(6, 3), LABELS, None, logits=_random(6, 4, 5))


@pytest.mark.parametrize(
    ("factory", "kwargs", "error", "match"),
    [
        (
            TripletRegionCrossEntropyLoss,
            {"alpha": -1},
            ValueError,
            "alpha: expected a finite number >= 0",
        ),
        (
            TripletRegionCrossEntropyLoss,
            {"alpha": "1"},
            TypeError,
            "alpha: expected a finite number",
        ),
        (
            TripletRegionCrossEntropyLoss,
            {"margin": -0.1},
            ValueError,
            "margin: expected a finite number >= 0",
        ),
        (
            JointIdentificationVerificationLoss,
            {"weight": math.nan},
            ValueError,
            "weight: expected a finite number >= 0",
        ),
        (
            JointIdentificationVerificationLoss,
            {"margin": 0},
            ValueError,
            "margin: expected a finite number > 0",
        ),
    ],
)
def test_bad_options_are_refused(factory, kwargs, error, match):
    with pytest.raises(error, match=match):
        factory(**kwargs)


def test_half_precision_logits_are_scored_in_float32():
    logits = _random(6, 4, seed=13)
    full = CrossEntropyLoss()(_unit(6, 3), LABELS, logits=logits)
    half = CrossEntropyLoss()(_unit(6, 3).float(), LABELS, logits=logits.to(torch.bfloat16))
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(full.item(), rel=2e-2)
