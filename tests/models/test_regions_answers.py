"""Window descriptors in low precision against GeM written out in float64."""

from __future__ import annotations

import pytest
import torch

from pyinstance.models import MAC, GeM
from pyinstance.models.regions import pool_boxes, pool_windows, window_boxes


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_power_mean_windows_keep_a_half_precision_map_in_its_dtype(dtype):
    generator = torch.Generator().manual_seed(0)
    # cubes up to 729: a window's sum of cubes overflows float16, its mean does not
    features = (0.1 + 9 * torch.rand(2, 4, 6, 5, generator=generator)).to(dtype)
    layout = ((1.0, 1), (0.5, 2))
    pooled = pool_windows(features, GeM(4, p=3.0, learn_p=False), layout)
    assert pooled.dtype == dtype
    exact = features.double()
    for r, (top, left, bottom, right) in enumerate(window_boxes(6, 5, layout)):
        mean = exact[:, :, top:bottom, left:right].pow(3).mean(dim=(2, 3)).pow(1 / 3)
        expected = mean / mean.norm(dim=1, keepdim=True)
        # a few roundings of the dtype's precision (bfloat16: 2**-8, float16: 2**-11)
        eps = torch.finfo(dtype).eps
        torch.testing.assert_close(pooled[:, r].double(), expected, rtol=8 * eps, atol=8 * eps)


def test_boxes_of_equal_edge_sums_but_different_sizes_are_pooled_apart():
    features = torch.arange(2 * 3 * 5 * 4, dtype=torch.float64).reshape(2, 3, 5, 4)
    boxes = [(0, 0, 4, 2), (1, 0, 3, 2), (0, 1, 2, 3), (0, 0, 2, 3), (2, 1, 4, 2)]
    # top + bottom 4, 4 for heights 4, 2; left + right 3, 3 for widths 3, 1
    pooled = pool_boxes(features, MAC(3), boxes)
    for r, (top, left, bottom, right) in enumerate(boxes):
        peak = features[:, :, top:bottom, left:right].amax(dim=(2, 3))
        torch.testing.assert_close(pooled[:, r], peak / peak.norm(dim=1, keepdim=True))


@pytest.mark.parametrize(
    "boxes",
    [
        [],
        [(0, 0, 0, 2)],  # no row
        [(0, 1, 2, 1)],  # no column
        [(0, 0, 6, 2)],  # below the map, columns fine
        [(0, 0, 2, 5)],  # right of the map, rows fine
        [(-1, 0, 2, 2)],
    ],
)
def test_boxes_outside_the_map_or_empty_are_refused(boxes):
    with pytest.raises(ValueError, match=r"^boxes: expected \(top, left, bottom, right\) boxes"):
        pool_boxes(torch.rand(1, 3, 5, 4), MAC(3), boxes)


def test_a_wide_float16_window_near_the_top_of_the_range():
    # GeM (p = 3) of a constant map is the constant: (30, 15) -> (2, 1)/√5. The mean of the
    # cubes (27000) fits float16 (max 65504); the window's sum of cubes does not.
    features = torch.ones(1, 2, 2, 8, dtype=torch.float16)
    features[:, 0] *= 30
    features[:, 1] *= 15
    pooled = pool_windows(features, GeM(2, p=3.0, learn_p=False), ((1.0, 1),))
    expected = torch.tensor([2.0, 1.0], dtype=torch.float64) / 5**0.5
    eps = torch.finfo(torch.float16).eps
    torch.testing.assert_close(pooled[0, 0].double(), expected, rtol=8 * eps, atol=8 * eps)
