"""The array layer's answers that the kernels' own tests do not pin: defaults, the whole
dtype list in a message, the CUDA module on a build without CUDA, no stream switch off
CUDA."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from pyinstance import _backend
from pyinstance.ops import _arrays
from pyinstance.ops._arrays import ArrayKind


def test_require_leaves_non_finite_values_alone_unless_asked() -> None:
    values = torch.tensor([[1.0, float("nan")], [float("inf"), -float("inf")]])
    assert _arrays.require(values, "x") is values


def test_require_names_every_allowed_dtype() -> None:
    with pytest.raises(
        TypeError, match=r"^x: expected dtype float32, float16, bfloat16, got int64$"
    ):
        _arrays.require(
            torch.zeros(2, dtype=torch.int64),
            "x",
            dtypes=[torch.float32, torch.float16, torch.bfloat16],
        )


def test_the_cuda_kernel_module_is_the_cuda_extension() -> None:
    """A CUDA device asks for the CUDA extension: on a build without CUDA that is the
    build's own error, not "unsupported device"."""
    device = torch.device("cuda")
    if _backend._C_cuda is None:
        with pytest.raises(RuntimeError, match="pyinstance was built without CUDA"):
            _arrays.kernel_module(device)
    else:
        assert _arrays.kernel_module(device) is _backend._C_cuda


@pytest.mark.parametrize("kind", list(ArrayKind))
def test_no_stream_is_switched_off_cuda(kind: ArrayKind) -> None:
    """Only cupy arrays on a CUDA device switch torch's stream; on the CPU (a cupy stand-in
    included) the context does nothing."""
    context = _arrays.torch_stream(torch.device("cpu"), kind)
    assert isinstance(context, contextlib.nullcontext)


def test_dtype_codes_and_a_dtype_without_one() -> None:
    expected = {
        torch.float32: 0,
        torch.float16: 1,
        torch.bfloat16: 2,
        torch.float64: 3,
        torch.int64: 4,
    }
    for dtype, code in expected.items():
        assert _arrays.dtype_code(torch.zeros(1, dtype=dtype)) == code
    with pytest.raises(TypeError, match=r"^dtype torch.int32 has no kernel code$"):
        _arrays.dtype_code(torch.zeros(1, dtype=torch.int32))


def test_numpy_results_are_views_of_the_tensor() -> None:
    tensor = torch.arange(6.0).reshape(2, 3)
    out = _arrays.from_tensor(tensor, ArrayKind.NUMPY)
    assert isinstance(out, np.ndarray) and np.shares_memory(out, tensor.numpy())
    assert _arrays.from_tensor(tensor, ArrayKind.TORCH) is tensor


def test_broadcast_numpy_arrays_are_viewed_without_a_copy() -> None:
    """Zero strides (``np.broadcast_to``) are not negative: the tensor views the array."""
    row = np.arange(4, dtype=np.float32)
    wide = np.broadcast_to(row, (3, 4))
    tensor, kind = _arrays.to_tensor(wide, "x")
    assert kind is ArrayKind.NUMPY and tensor.stride() == (0, 1)
    assert tensor.data_ptr() == row.ctypes.data and tensor.tolist() == [row.tolist()] * 3


def test_torch_arrays_on_cuda_keep_torchs_own_stream() -> None:
    """Only cupy arrays switch the stream: torch tensors on CUDA (and numpy) leave it."""
    for kind in (ArrayKind.TORCH, ArrayKind.NUMPY):
        assert isinstance(_arrays.torch_stream(torch.device("cuda"), kind), contextlib.nullcontext)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cupy_arrays_on_cuda_ask_for_the_current_stream() -> None:
    """cupy arrays on a CUDA device look up the caller's stream: without CUDA that lookup
    is torch's error, not a silent no-op."""
    with pytest.raises((AssertionError, RuntimeError)):
        _arrays.torch_stream(torch.device("cuda"), ArrayKind.CUPY)
