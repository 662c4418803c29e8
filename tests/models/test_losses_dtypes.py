"""Losses on half-precision embeddings: the loss keeps their dtype, and its value is the
float64 formula's within a few roundings of that dtype."""

from __future__ import annotations

import math

import pytest
import torch

from pyinstance.models.losses import SoftmaxRatioLoss

LABELS = torch.tensor([0, 0, 1, 1])
TRIPLETS = (torch.tensor([0, 1, 2, 3]), torch.tensor([1, 0, 3, 2]), torch.tensor([2, 3, 0, 1]))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_softmax_ratio_keeps_a_half_precision_dtype(dtype):
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(4, 3, generator=generator).to(dtype)
    loss = SoftmaxRatioLoss()(embeddings, LABELS, TRIPLETS)
    assert loss.dtype == dtype
    rows = embeddings.double().tolist()
    terms = []
    for a, p, n in zip(*(t.tolist() for t in TRIPLETS), strict=True):
        positive = math.dist(rows[a], rows[p])
        negative = math.dist(rows[a], rows[n])
        d_plus = 1 / (1 + math.exp(negative - positive))
        terms.append(2 * d_plus**2)
    eps = torch.finfo(dtype).eps
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=16 * eps)
