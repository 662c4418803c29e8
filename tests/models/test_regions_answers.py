"""Window descriptors in low precision against GeM written out in float64."""

from __future__ import annotations

import pytest
import torch

from pyinstance.models import GeM
from pyinstance.models.regions import pool_windows, window_boxes


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_power_mean_windows_keep_a_half_precision_map_in_its_dtype(dtype):
    generator = torch.Generator().manual_seed(0)
    features = (0.1 + 3 * torch.rand(2, 4, 6, 5, generator=generator)).to(dtype)
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
