"""The average ranks behind the open-set AUROC (Mann-Whitney U with ties)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import rankdata

from pyinstance.eval.metrics import _average_ranks, open_set_auroc


def test_ties_share_their_mean_rank_in_input_order() -> None:
    values = np.array([0.3, 0.1, 0.3, 0.2, 0.3, 0.1])
    # ascending: 0.1 0.1 | 0.2 | 0.3 0.3 0.3 -> ranks 1.5, 3, 5
    np.testing.assert_array_equal(_average_ranks(values), [5.0, 1.5, 5.0, 3.0, 5.0, 1.5])


def test_distinct_values_get_their_ascending_positions() -> None:
    np.testing.assert_array_equal(_average_ranks(np.array([2.0, -1.0, 7.0])), [2.0, 1.0, 3.0])


@pytest.mark.parametrize("seed", range(5))
def test_matches_scipy_rankdata_with_many_ties(seed: int) -> None:
    values = np.random.default_rng(seed).integers(0, 6, size=40).astype(np.float64)
    np.testing.assert_array_equal(_average_ranks(values), rankdata(values, method="average"))


def test_auroc_counts_a_tie_across_kinds_as_one_half() -> None:
    # one known and one unknown query at the same confidence: U = 0.5
    assert open_set_auroc([0.4, 0.4], [True, False]) == 0.5
    # the tie sits in the middle of the ranking: 2 wins + 1 half of 2 × 2 pairs
    assert open_set_auroc([0.9, 0.5, 0.5, 0.1], [True, True, False, False]) == 3.5 / 4
