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


class _CupyLike:
    """What ``to_tensor`` reads of a cupy array: its class's module, the CUDA array
    interface, and DLPack (here over a CPU tensor, so no GPU or cupy is needed)."""

    __module__ = "cupy._core.core"

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor

    @property
    def __cuda_array_interface__(self) -> dict:
        return {"shape": tuple(self.tensor.shape), "typestr": "<f4", "data": (0, False)}

    def __dlpack__(self, **kwargs):  # noqa: ANN003, ANN204
        return self.tensor.__dlpack__(**kwargs)

    def __dlpack_device__(self):  # noqa: ANN204
        return self.tensor.__dlpack_device__()


def test_a_cupy_array_is_recognised_by_its_module_and_cuda_interface() -> None:
    source = torch.arange(4.0)
    tensor, kind = _arrays.to_tensor(_CupyLike(source), "x")
    assert kind is ArrayKind.CUPY
    assert tensor.data_ptr() == source.data_ptr() and tensor.tolist() == [0.0, 1.0, 2.0, 3.0]

    class CupyWithoutInterface:
        __module__ = "cupy._core.core"

    with pytest.raises(TypeError, match=r"^x: expected a numpy array, torch tensor or cupy"):
        _arrays.to_tensor(CupyWithoutInterface(), "x")
