"""Scale weights of the wrong length: refused where the number of scales is first seen."""

from __future__ import annotations

import numpy as np
import pytest

from pyinstance.index import DEFAULT_RECIPE
from pyinstance.postprocess import PostProcessConfig, ScaleAggregation

from .conftest import unit_sets


def test_any_non_empty_weight_list_is_accepted_on_its_own() -> None:
    for weights in ([1.0], [0.5, 0.5], [0.2, 0.3, 0.5, 0.0]):
        aggregation = ScaleAggregation(np.asarray(weights))
        assert aggregation.weights.size == len(weights)


def test_apply_refuses_descriptor_sets_with_another_number_of_scales() -> None:
    aggregation = ScaleAggregation(np.asarray([0.5, 0.5]))
    with pytest.raises(
        ValueError, match=r"^descriptors: expected 2 scales \(like weights\), got 3$"
    ):
        aggregation.apply(unit_sets(4, 3))


def test_fitting_fixed_weights_on_references_of_another_number_of_scales() -> None:
    config = PostProcessConfig.from_dict({"scale_weights": [0.5, 0.5]})
    with pytest.raises(ValueError, match=r"expected 2 scales \(like weights\), got 3"):
        config.fit(unit_sets(4, 3), list("abcd"))


def test_a_recipe_refuses_weights_that_do_not_match_its_scales() -> None:
    with pytest.raises(
        ValueError, match=r"^recipe\.postprocess\.scale_weights: expected one weight"
    ):
        DEFAULT_RECIPE.with_(postprocess={"scale_weights": [0.5, 0.5]})
