"""The top-k region head with fixed weights against a hand computation, and the region
loss's precision (float64 kept, half precision computed in float32)."""

from __future__ import annotations

import math

import pytest
import torch

from pyinstance.models.region_head import TopKRegionHead, region_cross_entropy


def _fixed_head() -> TopKRegionHead:
    head = TopKRegionHead(2, num_classes=2, k=2).double()
    with torch.no_grad():
        head.classifier.weight.copy_(torch.eye(2)[..., None, None])  # class map = features
        head.classifier.bias.zero_()
        head.shift.copy_(torch.tensor([0.1, -0.2]))
        head.linear.weight.copy_(torch.tensor([[1.0, 1.0], [1.0, -1.0]]))
    return head


def test_descriptor_locations_and_region_logits_by_hand():
    # One image, one row of three locations: (3, 4), (1, 0), (0, 2). Location scores (the
    # best class): 4, 1, 2 -> the top two are locations 0 and 2.
    features = torch.tensor([[[[3.0, 1.0, 0.0]], [[4.0, 0.0, 2.0]]]], dtype=torch.float64)
    regions = _fixed_head().forward_regions(features)
    assert regions.locations.tolist() == [[0, 2]]
    # (0.6, 0.8) + (0, 1) = (0.6, 1.8); + k·shift = (0.8, 1.4); W: (2.2, −0.6); normalised.
    expected = torch.tensor([[2.2, -0.6]], dtype=torch.float64) / math.sqrt(5.2)
    torch.testing.assert_close(regions.descriptors, expected, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(
        regions.region_logits, torch.tensor([[[3.0, 4.0], [0.0, 2.0]]], dtype=torch.float64)
    )
    # Label 1 for both regions: mean of log(1 + e^−1) and log(1 + e^−2).
    loss = regions.region_loss(torch.tensor([1]))
    assert loss.dtype == torch.float64
    expected_loss = (math.log1p(math.exp(-1)) + math.log1p(math.exp(-2))) / 2
    assert loss.item() == pytest.approx(expected_loss, rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_region_scores_are_computed_in_float32(dtype):
    logits = torch.tensor([[[3.0, 4.0], [0.0, 2.0]]], dtype=dtype)
    loss = region_cross_entropy(logits, torch.tensor([1]))
    assert loss.dtype == torch.float32
    expected = (math.log1p(math.exp(-1)) + math.log1p(math.exp(-2))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_float32_region_scores_stay_float32():
    logits = torch.tensor([[[3.0, 4.0], [0.0, 2.0]]])
    assert region_cross_entropy(logits, torch.tensor([0])).dtype == torch.float32


def test_forward_honours_valid_hw():
    # Location 1 scores highest but lies outside the valid 1×1 corner of the first image.
    features = torch.tensor([[[[3.0, 1.0, 0.0]], [[4.0, 0.0, 2.0]]]], dtype=torch.float64)
    head = _fixed_head()
    head.k = 1
    saliency = torch.tensor([[[0.0, 5.0, 1.0]]], dtype=torch.float64)
    valid_hw = torch.tensor([[1, 1]])
    descriptors = head(features, saliency, valid_hw=valid_hw)
    # Only location 0, (0.6, 0.8): + shift (0.7, 0.6); W: (1.3, 0.1); normalised.
    expected = torch.tensor([[1.3, 0.1]], dtype=torch.float64) / math.sqrt(1.7)
    torch.testing.assert_close(descriptors, expected, rtol=1e-7, atol=1e-7)
    regions = head.forward_regions(features, saliency, valid_hw=valid_hw)
    torch.testing.assert_close(descriptors, regions.descriptors)


@pytest.mark.parametrize(
    ("features", "message"),
    [
        (torch.zeros(2, 4, 4), r"^features: expected a B×C×H×W tensor, got \(2, 4, 4\)$"),
        ([[0.0]], r"^features: expected a B×C×H×W tensor, got list$"),
    ],
)
def test_bad_features_are_described(features, message):
    with pytest.raises(ValueError, match=message):
        TopKRegionHead(2, num_classes=2)(features)


def test_default_classifier_has_imagenet_classes():
    head = TopKRegionHead(8)
    assert head.classifier.out_channels == 1000 and head.classifier.in_channels == 8


def test_float64_features_through_a_float32_head():
    head = _fixed_head().float()
    features = torch.tensor([[[[3.0, 1.0, 0.0]], [[4.0, 0.0, 2.0]]]], dtype=torch.float64)
    descriptors = head(features, features)  # the class map given: the features themselves
    assert descriptors.dtype == torch.float32
    expected = torch.tensor([[2.2, -0.6]]) / math.sqrt(5.2)
    torch.testing.assert_close(descriptors, expected)
