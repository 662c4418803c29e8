"""The topk_region head (Kohl's descriptor) and its plugin registration."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pyinstance
from pyinstance.builtin.region_head import TopKRegionHead
from pyinstance.ops import topk_region_pool


def _features(batch=3, channels=16, height=5, width=6, seed=0):
    return torch.randn(
        batch, channels, height, width, generator=torch.Generator().manual_seed(seed)
    )


def test_registered_with_alias():
    head = pyinstance.get_head("topk_region", in_channels=16, num_classes=7, k=3, out_dim=8)
    assert isinstance(head, TopKRegionHead) and head.out_dim == 8 and head.k == 3
    assert isinstance(pyinstance.get_head("kohl", in_channels=4), TopKRegionHead)
    names = {c.name for c in pyinstance.list_plugins("head")}
    assert "topk_region" in names


@pytest.mark.parametrize("out_dim", [None, 5, 40])
def test_forward_features_alone_gives_normalised_descriptors(out_dim):
    head = TopKRegionHead(16, num_classes=7, out_dim=out_dim)
    descriptor = head(_features())
    assert descriptor.shape == (3, head.out_dim) and head.out_dim == (out_dim or 16)
    torch.testing.assert_close(descriptor.norm(dim=1), torch.ones(3))
    assert head.last_locations.shape == (3, 4) and head.last_locations.dtype == torch.int64


def test_matches_kohl_formula_per_location():
    torch.manual_seed(0)
    head = TopKRegionHead(16, num_classes=7, k=3, out_dim=10)
    with torch.no_grad():
        head.shift.normal_()
    features = _features()
    scores = torch.randn(3, 7, 5, 6)
    descriptor = head(features, scores)
    # Literal form: each selected location normalised, shifted, mapped, then summed.
    locations = topk_region_pool(features, scores, 3)[1]
    gathered = features.flatten(2).gather(2, locations[:, None, :].expand(3, 16, 3)).transpose(1, 2)
    per_location = head.linear(F.normalize(gathered, dim=2) + head.shift)
    expected = F.normalize(per_location.sum(dim=1), dim=1)
    torch.testing.assert_close(descriptor, expected)
    torch.testing.assert_close(head.last_locations, locations)


def test_identity_start_when_out_dim_equals_channels():
    head = TopKRegionHead(16, num_classes=7)
    features = _features()
    pooled, _ = topk_region_pool(features, head.classifier(features), 4)
    torch.testing.assert_close(head(features), F.normalize(pooled, dim=1))


def test_own_classifier_drives_selection_and_region_logits():
    head = TopKRegionHead(16, num_classes=7, k=2, return_locations=True)
    features = _features()
    descriptor, locations = head(features)
    class_map = head.classifier(features)
    torch.testing.assert_close(locations, topk_region_pool(features, class_map, 2)[1])
    expected_logits = torch.stack([class_map[b].flatten(1)[:, locations[b]].T for b in range(3)])
    torch.testing.assert_close(head.last_region_logits, expected_logits)
    assert descriptor.shape == (3, 16)


def test_external_classifier_module():
    fcn = nn.Conv2d(16, 3, 1)
    head = TopKRegionHead(16, classifier=fcn, k=2)
    assert head.classifier is fcn
    head(_features())
    assert head.last_region_logits.shape == (3, 2, 3)


def test_gradients():
    head = TopKRegionHead(16, num_classes=7, k=2, out_dim=12)
    features = _features().requires_grad_(True)
    descriptor = head(features)
    descriptor.pow(2).sum(dim=1).mul(torch.arange(3.0)).sum().backward(retain_graph=True)
    assert head.linear.weight.grad is not None and head.linear.weight.grad.abs().sum() > 0
    assert head.shift.grad is not None and head.shift.grad.abs().sum() > 0
    # The descriptor alone sends no gradient to the classifier (selection is not differentiable)
    assert head.classifier.weight.grad is None
    # and reaches the features only at the selected locations.
    touched = (features.grad.flatten(2) != 0).any(dim=1)
    selected = torch.zeros_like(touched).scatter_(1, head.last_locations, True)
    assert bool((touched <= selected).all())
    loss = head.region_loss(torch.tensor([0, 6, 3]))
    expected = F.cross_entropy(
        head.last_region_logits.reshape(6, 7), torch.tensor([0, 0, 6, 6, 3, 3])
    )
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert head.classifier.weight.grad is not None and head.classifier.weight.grad.abs().sum() > 0


def test_saliency_scores_and_valid_hw():
    head = TopKRegionHead(16, num_classes=7, k=2)
    saliency = torch.randn(3, 5, 6)
    valid_hw = torch.tensor([[2, 2], [5, 6], [1, 3]])
    head(_features(), saliency, valid_hw=valid_hw)
    assert head.last_region_logits is None
    rows, cols = head.last_locations // 6, head.last_locations % 6
    assert bool((rows < valid_hw[:, :1]).all() and (cols < valid_hw[:, 1:]).all())
    with pytest.raises(RuntimeError, match="region_loss needs a forward pass with a class map"):
        head.region_loss(torch.tensor([0, 1, 2]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(in_channels=0), "in_channels: expected a positive int"),
        (dict(in_channels=8, k=0), "k: expected a positive int"),
        (dict(in_channels=8, out_dim=-2), "out_dim: expected a positive int"),
        (dict(in_channels=8, num_classes=0), "num_classes: expected a positive int"),
        (dict(in_channels=8.0), "in_channels: expected a positive int"),
    ],
)
def test_bad_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TopKRegionHead(**kwargs)
    with pytest.raises(TypeError, match="classifier: expected a torch.nn.Module"):
        TopKRegionHead(8, classifier=lambda x: x)


def test_bad_forward_input():
    head = TopKRegionHead(16, num_classes=7, k=4)
    with pytest.raises(ValueError, match="features: expected 16 channels, got 8"):
        head(torch.randn(2, 8, 4, 4))
    with pytest.raises(ValueError, match="features: expected a B×C×H×W tensor"):
        head(torch.randn(16, 4, 4))
    with pytest.raises(ValueError, match="scores: expected shape"):
        head(torch.randn(2, 16, 4, 4), torch.randn(2, 7, 3, 4))
    head(torch.randn(2, 16, 4, 4))
    with pytest.raises(ValueError, match=r"labels: expected shape \(2,\)"):
        head.region_loss(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r"labels: expected class indices in \[0, 7\)"):
        head.region_loss(torch.tensor([1, 7]))
    with pytest.raises(TypeError, match="labels: expected int64"):
        head.region_loss(torch.tensor([1.0, 2.0]))


def test_maps_smaller_than_k_pool_every_location():
    head = TopKRegionHead(16, num_classes=7, k=4)
    features = torch.randn(2, 16, 1, 3)
    descriptor = head(features)
    assert head.last_locations.shape == (2, 3) and descriptor.shape == (2, 16)
    torch.testing.assert_close(
        descriptor, F.normalize(F.normalize(features.flatten(2), dim=1).sum(2), dim=1)
    )
    head(torch.randn(2, 16, 4, 4), valid_hw=torch.tensor([[1, 2], [4, 4]]))
    assert head.last_locations.shape == (2, 2)
