"""The FCN rewrite of pooled fully connected layers (VGG/AlexNet fc6) equals the original."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pyinstance.models.fcn import PooledDilatedConv
from pyinstance.models.weights import linear_to_conv

# (pool kernel of the stride-2 max-pool, k of the k×k fully connected grid)
CASES = [
    pytest.param(2, 7, id="vgg16-pool2-fc7x7"),
    pytest.param(3, 6, id="alexnet-pool3-fc6x6"),
]


def _original(
    features: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    pool: int,
    k: int,
    top: int,
    left: int,
) -> torch.Tensor:
    """Max-pool (stride 2) the window starting at (top, left), flatten k×k cells, Linear."""
    span = 2 * (k - 1) + pool
    window = features[:, :, top : top + span, left : left + span]
    pooled = F.max_pool2d(window, pool, stride=2)
    assert pooled.shape[-2:] == (k, k)
    return F.linear(pooled.flatten(1), weight, bias)


@pytest.mark.parametrize(("pool", "k"), CASES)
def test_every_location_is_the_original_fc_on_its_window(pool: int, k: int) -> None:
    torch.manual_seed(0)
    channels, classes = 5, 4
    size = 2 * (k - 1) + pool + 3
    features = torch.randn(2, channels, size, size + 1)
    weight = torch.randn(classes, channels * k * k)
    bias = torch.randn(classes)
    conv = PooledDilatedConv(channels, classes, k, pool)
    converted = linear_to_conv({"fc.weight": weight, "fc.bias": bias}, ["fc"], {"fc": k})
    conv.load_state_dict({"weight": converted["fc.weight"], "bias": converted["fc.bias"]})
    out = conv(features)
    assert out.shape == (2, classes, size, size + 1)  # same resolution as the features
    before = (k - 1) + (pool - 1) // 2  # output index of the window starting at 0
    for top in range(0, size - (2 * (k - 1) + pool) + 1):
        for left in range(0, size + 1 - (2 * (k - 1) + pool) + 1):
            expected = _original(features, weight, bias, pool, k, top, left)
            torch.testing.assert_close(
                out[:, :, top + before, left + before], expected, rtol=1e-4, atol=1e-4
            )


def test_border_locations_see_padding_not_wraparound() -> None:
    torch.manual_seed(1)
    conv = PooledDilatedConv(2, 3, 3, pool=2)
    features = torch.randn(1, 2, 4, 4)
    out = conv(features)
    assert out.shape == (1, 3, 4, 4)
    assert torch.isfinite(out).all()  # -inf pool padding never reaches the output


def test_linear_to_conv_leaves_conv_weights_and_bad_shapes_alone() -> None:
    conv_weight = torch.randn(4, 3, 2, 2)
    odd = torch.randn(4, 7)
    out = linear_to_conv({"a.weight": conv_weight, "b.weight": odd}, ["a", "b"], {"b": 2})
    assert out["a.weight"] is conv_weight
    assert out["b.weight"] is odd
