"""The top-k region head (Kohl's descriptor): descriptors, locations, region loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pyinstance.models.region_head import RegionPooling, TopKRegionHead
from pyinstance.ops import topk_region_pool


def _features(batch=3, channels=16, height=5, width=6, seed=0):
    return torch.randn(
        batch, channels, height, width, generator=torch.Generator().manual_seed(seed)
    )


@pytest.mark.parametrize("out_dim", [None, 5, 40])
def test_forward_features_alone_gives_normalised_descriptors(out_dim):
    head = TopKRegionHead(16, num_classes=7, out_dim=out_dim)
    features = _features()
    descriptor = head(features)
    assert descriptor.shape == (3, head.out_dim) and head.out_dim == (out_dim or 16)
    torch.testing.assert_close(descriptor.norm(dim=1), torch.ones(3))
    regions = head.forward_regions(features)
    assert isinstance(regions, RegionPooling)
    torch.testing.assert_close(regions.descriptors, descriptor)
    assert regions.locations.shape == (3, 4) and regions.locations.dtype == torch.int64
    assert not hasattr(head, "last_locations")  # forward leaves no state behind


def test_matches_kohl_formula_per_location():
    torch.manual_seed(0)
    head = TopKRegionHead(16, num_classes=7, k=3, out_dim=10)
    with torch.no_grad():
        head.shift.normal_()
    features = _features()
    scores = torch.randn(3, 7, 5, 6)
    regions = head.forward_regions(features, scores)
    descriptor = regions.descriptors
    # Literal form: each selected location normalised, shifted, mapped, then summed.
    locations = topk_region_pool(features, scores, 3)[1]
    gathered = features.flatten(2).gather(2, locations[:, None, :].expand(3, 16, 3)).transpose(1, 2)
    per_location = head.linear(F.normalize(gathered, dim=2) + head.shift)
    expected = F.normalize(per_location.sum(dim=1), dim=1)
    torch.testing.assert_close(descriptor, expected)
    torch.testing.assert_close(regions.locations, locations)


def test_identity_start_when_out_dim_equals_channels():
    head = TopKRegionHead(16, num_classes=7)
    features = _features()
    pooled, _ = topk_region_pool(features, head.classifier(features), 4)
    torch.testing.assert_close(head(features), F.normalize(pooled, dim=1))


def test_own_classifier_drives_selection_and_region_logits():
    head = TopKRegionHead(16, num_classes=7, k=2)
    features = _features()
    regions = head.forward_regions(features)
    descriptor, locations = regions.descriptors, regions.locations
    class_map = head.classifier(features)
    torch.testing.assert_close(locations, topk_region_pool(features, class_map, 2)[1])
    expected_logits = torch.stack([class_map[b].flatten(1)[:, locations[b]].T for b in range(3)])
    torch.testing.assert_close(regions.region_logits, expected_logits)
    assert descriptor.shape == (3, 16)


def test_external_classifier_module_drives_selection_and_logits():
    torch.manual_seed(0)
    fcn = nn.Conv2d(16, 3, 3, padding=1)  # a 3×3 class map: unlike any default classifier
    head = TopKRegionHead(16, classifier=fcn, k=2)
    assert head.classifier is fcn
    features = _features()
    regions = head.forward_regions(features)
    class_map = fcn(features)
    # The regions are the top-2 locations of the external class map, not of a default 1×1
    # classifier, and their logits are that map's columns at the chosen locations.
    torch.testing.assert_close(regions.locations, topk_region_pool(features, class_map, 2)[1])
    expected = torch.stack([class_map[b].flatten(1)[:, regions.locations[b]].T for b in range(3)])
    assert regions.region_logits.shape == (3, 2, 3)
    torch.testing.assert_close(regions.region_logits, expected)
    regions.region_loss(torch.tensor([0, 2, 1])).backward()
    assert fcn.weight.grad is not None and fcn.weight.grad.abs().sum() > 0


def test_gradients():
    head = TopKRegionHead(16, num_classes=7, k=2, out_dim=12)
    features = _features().requires_grad_(True)
    regions = head.forward_regions(features)
    descriptor = regions.descriptors
    descriptor.pow(2).sum(dim=1).mul(torch.arange(3.0)).sum().backward(retain_graph=True)
    assert head.linear.weight.grad is not None and head.linear.weight.grad.abs().sum() > 0
    assert head.shift.grad is not None and head.shift.grad.abs().sum() > 0
    # The descriptor alone sends no gradient to the classifier (selection is not differentiable)
    assert head.classifier.weight.grad is None
    # and reaches the features only at the selected locations.
    touched = (features.grad.flatten(2) != 0).any(dim=1)
    selected = torch.zeros_like(touched).scatter_(1, regions.locations, True)
    assert bool((touched <= selected).all())
    loss = regions.region_loss(torch.tensor([0, 6, 3]))
    expected = F.cross_entropy(
        regions.region_logits.reshape(6, 7), torch.tensor([0, 0, 6, 6, 3, 3])
    )
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert head.classifier.weight.grad is not None and head.classifier.weight.grad.abs().sum() > 0


def test_saliency_scores_and_valid_hw():
    head = TopKRegionHead(16, num_classes=7, k=2)
    saliency = torch.randn(3, 5, 6)
    valid_hw = torch.tensor([[2, 2], [5, 6], [1, 3]])
    regions = head.forward_regions(_features(), saliency, valid_hw=valid_hw)
    assert regions.region_logits is None
    rows, cols = regions.locations // 6, regions.locations % 6
    assert bool((rows < valid_hw[:, :1]).all() and (cols < valid_hw[:, 1:]).all())
    with pytest.raises(RuntimeError, match="region_loss needs regions chosen by a class map"):
        regions.region_loss(torch.tensor([0, 1, 2]))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(in_channels=0), ValueError, "in_channels: expected an integer >= 1"),
        (dict(in_channels=8, k=0), ValueError, "k: expected an integer >= 1"),
        (dict(in_channels=8, out_dim=-2), ValueError, "out_dim: expected an integer >= 1"),
        (dict(in_channels=8, num_classes=0), ValueError, "num_classes: expected an integer >= 1"),
        (dict(in_channels=8.0), TypeError, "in_channels: expected an integer >= 1"),
        (dict(in_channels=8, k=True), TypeError, "k: expected an integer >= 1, got True"),
    ],
)
def test_bad_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        TopKRegionHead(**kwargs)
    with pytest.raises(TypeError, match="classifier: expected a torch.nn.Module"):
        TopKRegionHead(8, classifier=lambda x: x)


def test_numpy_integers_are_accepted():
    head = TopKRegionHead(np.int64(16), num_classes=np.int32(7), k=np.int64(3), out_dim=np.int16(8))
    assert (head.in_channels, head.k, head.out_dim) == (16, 3, 8)
    assert all(type(v) is int for v in (head.in_channels, head.k, head.out_dim))
    assert head(_features()).shape == (3, 8)


def test_bad_forward_input():
    head = TopKRegionHead(16, num_classes=7, k=4)
    with pytest.raises(ValueError, match="features: expected 16 channels, got 8"):
        head(torch.randn(2, 8, 4, 4))
    with pytest.raises(ValueError, match="features: expected a B×C×H×W tensor"):
        head(torch.randn(16, 4, 4))
    with pytest.raises(ValueError, match="scores: expected shape"):
        head(torch.randn(2, 16, 4, 4), torch.randn(2, 7, 3, 4))
    regions = head.forward_regions(torch.randn(2, 16, 4, 4))
    with pytest.raises(ValueError, match=r"labels: expected shape \(2,\)"):
        regions.region_loss(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r"labels: expected class indices in \[0, 7\)"):
        regions.region_loss(torch.tensor([1, 7]))
    with pytest.raises(TypeError, match="labels: expected int64"):
        regions.region_loss(torch.tensor([1.0, 2.0]))
    with pytest.raises(TypeError, match="labels: expected a torch.Tensor"):
        regions.region_loss([1, 2])


def test_maps_smaller_than_k_pool_every_location():
    head = TopKRegionHead(16, num_classes=7, k=4)
    features = torch.randn(2, 16, 1, 3)
    regions = head.forward_regions(features)
    descriptor = regions.descriptors
    assert regions.locations.shape == (2, 3) and descriptor.shape == (2, 16)
    torch.testing.assert_close(
        descriptor, F.normalize(F.normalize(features.flatten(2), dim=1).sum(2), dim=1)
    )
    regions = head.forward_regions(
        torch.randn(2, 16, 4, 4), valid_hw=torch.tensor([[1, 2], [4, 4]])
    )
    assert regions.locations.shape == (2, 2)
