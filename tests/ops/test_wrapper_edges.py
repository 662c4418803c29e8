"""The ops' Python wrappers at the edges their other tests leave out (found by mutation
testing): each check at its boundary, with the exact answer or error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyinstance.ops import _arrays, knn_dot
from pyinstance.ops._arrays import ArrayKind


def test_boolean_numpy_arrays_are_viewed_as_they_are() -> None:
    tensor, kind = _arrays.to_tensor(np.array([True, False]), "mask")
    assert kind is ArrayKind.NUMPY and tensor.dtype == torch.bool
    assert tensor.tolist() == [True, False]


def test_an_object_with_a_cuda_interface_that_is_not_cupy_is_refused_by_name() -> None:
    class Imitation:
        __cuda_array_interface__ = {"shape": (1,), "typestr": "<f4", "data": (0, False)}

    with pytest.raises(
        TypeError, match=r"^x: expected a numpy array, torch tensor or cupy array, got Imitation$"
    ):
        _arrays.to_tensor(Imitation(), "x")


def test_common_device_needs_at_least_one_array() -> None:
    with pytest.raises(ValueError, match=r"^all arrays must be on the same device, got $"):
        _arrays.common_device(a=None)


def test_excluding_the_first_reference_with_k_equal_n_is_refused() -> None:
    queries, refs = torch.ones(3, 4), torch.ones(5, 4)
    with pytest.raises(ValueError, match=r"^k: expected k <= N - 1 = 4 when exclude removes"):
        knn_dot(queries, refs, 5, exclude=torch.tensor([0, -1, -1]))
