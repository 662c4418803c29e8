"""``PooledDilatedConv`` against the definition written out with loops in float64.

At every output location: the max over the ``pool``×``pool`` window of the input (odd pools
centred, even pools reaching one more cell after than before; cells outside the map do not
count), then a k×k convolution of that pooled map with taps two cells apart (zeros outside
the map), centred the same way. The output has the input's size.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyinstance.models.fcn import PooledDilatedConv


def _reference(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, pool: int) -> np.ndarray:
    batch, channels, height, width = x.shape
    before = (pool - 1) // 2
    pooled = np.empty_like(x)
    for y in range(height):
        for z in range(width):
            rows = slice(max(0, y - before), min(height, y - before + pool))
            cols = slice(max(0, z - before), min(width, z - before + pool))
            pooled[:, :, y, z] = x[:, :, rows, cols].max(axis=(2, 3))
    kernel = weight.shape[2]
    centre = kernel - 1  # taps at offsets 2·i − (k − 1), i = 0..k−1 (the first for even k)
    out = np.zeros((batch, weight.shape[0], height, width))
    for y in range(height):
        for z in range(width):
            total = bias[None, :].repeat(batch, 0).astype(np.float64)
            for i in range(kernel):
                for j in range(kernel):
                    row, col = y + 2 * i - centre, z + 2 * j - centre
                    if 0 <= row < height and 0 <= col < width:
                        total = total + pooled[:, :, row, col] @ weight[:, :, i, j].T
            out[:, :, y, z] = total
    return out


@pytest.mark.parametrize(
    ("kernel", "pool", "height", "width"),
    [(3, 2, 5, 7), (3, 3, 6, 4), (2, 2, 5, 6), (1, 1, 3, 4), (2, 3, 4, 5), (4, 4, 9, 8)],
)
def test_matches_the_definition(kernel, pool, height, width):
    torch.manual_seed(kernel * 10 + pool)
    layer = PooledDilatedConv(3, 2, kernel, pool).double()
    # Negative inputs: a zero (instead of -inf) border in the max-pool would show.
    x = torch.randn(2, 3, height, width, dtype=torch.float64) - 3.0
    with torch.no_grad():
        out = layer(x)
    assert out.shape == (2, 2, height, width)
    expected = _reference(
        x.numpy(), layer.weight.detach().numpy(), layer.bias.detach().numpy(), pool
    )
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=1e-10)


def test_is_a_conv2d_with_its_geometry():
    layer = PooledDilatedConv(4, 5, 7, 2)
    assert isinstance(layer, torch.nn.Conv2d)
    assert layer.weight.shape == (5, 4, 7, 7)
    assert (layer.dilation, layer.padding, layer.stride, layer.pool) == ((2, 2), (0, 0), (1, 1), 2)
