"""ScaleAggregation.fit_pairs at its smallest grid: one scale has one weight vector."""

from __future__ import annotations

import numpy as np

from pyinstance.postprocess import ScaleAggregation

from .conftest import unit_sets


def test_a_single_scale_is_learnt_as_weight_one() -> None:
    descriptors = unit_sets(4, p=1, d=5, seed=2)
    learnt = ScaleAggregation.fit_pairs(descriptors, [0, 2], [1, 3], steps=3)
    np.testing.assert_array_equal(learnt.weights, [1.0])
    np.testing.assert_allclose(learnt.apply(descriptors), descriptors[:, 0], rtol=0, atol=1e-7)
