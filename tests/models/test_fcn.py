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


def _literal_same_size(features: torch.Tensor, conv: PooledDilatedConv) -> torch.Tensor:
    """float64 loops: max over the pool cells inside the map, dilated taps inside the map only.

    Interior alignment (which pooled cell feeds which tap) is the one checked against the
    original network above; here every tap or pool cell falling outside the map is dropped.
    """
    pool, k = conv.pool, conv.kernel_size[0]
    x = features.double()
    weight, bias = conv.weight.double(), conv.bias.double()
    _, _, height, width = x.shape
    first_cell = -((pool - 1) // 2)  # the pool window of cell r starts at r + first_cell
    first_tap = -(k - 1)  # tap u of output i reads pooled cell i + first_tap + 2u
    pooled = torch.empty_like(x)
    for r in range(height):
        for c in range(width):
            rows = slice(max(0, r + first_cell), min(height, r + first_cell + pool))
            cols = slice(max(0, c + first_cell), min(width, c + first_cell + pool))
            pooled[:, :, r, c] = x[:, :, rows, cols].amax(dim=(2, 3))
    out = bias[None, :, None, None].repeat(x.shape[0], 1, height, width)
    for i in range(height):
        for j in range(width):
            for u in range(k):
                for v in range(k):
                    r, c = i + first_tap + 2 * u, j + first_tap + 2 * v
                    if 0 <= r < height and 0 <= c < width:
                        out[:, :, i, j] += pooled[:, :, r, c] @ weight[:, :, u, v].T
    return out


@pytest.mark.parametrize(("pool", "k"), [(2, 3), (3, 2), (2, 7)])
def test_border_locations_see_padding_not_wraparound(pool: int, k: int) -> None:
    generator = torch.Generator().manual_seed(1)
    conv = PooledDilatedConv(2, 3, k, pool=pool)
    reach = 2 * (k - 1) + pool  # wider than the receptive field of one output column
    width = reach + 3
    # All features negative: a max-pool padded with 0 instead of -inf would show at borders.
    features = torch.randn(1, 2, 9, width, generator=generator) - 4
    out = conv(features)
    assert out.shape == (1, 3, 9, width)
    torch.testing.assert_close(
        out.double(), _literal_same_size(features, conv), rtol=1e-5, atol=1e-5
    )
    # Wrapping around would make the first column read the last ones: change the columns
    # beyond its receptive field, and that column stays put while the last one changes.
    changed = features.clone()
    changed[..., reach:] = torch.randn(1, 2, 9, width - reach, generator=generator) + 4
    torch.testing.assert_close(conv(changed)[..., 0], out[..., 0], rtol=0, atol=0)
    assert not torch.equal(conv(changed)[..., -1], out[..., -1])


def test_linear_to_conv_leaves_conv_weights_and_bad_shapes_alone() -> None:
    conv_weight = torch.randn(4, 3, 2, 2)
    odd = torch.randn(4, 7)
    out = linear_to_conv({"a.weight": conv_weight, "b.weight": odd}, ["a", "b"], {"b": 2})
    assert out["a.weight"] is conv_weight
    assert out["b.weight"] is odd
