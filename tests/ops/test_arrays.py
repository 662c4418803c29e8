"""The shared array layer: kinds round-trip without copies, bad arrays fail clearly."""

import contextlib

import numpy as np
import pytest
import torch

from pyinstance.ops import _arrays
from pyinstance.ops._arrays import ArrayKind


def test_numpy_round_trip_shares_memory():
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    tensor, kind = _arrays.to_tensor(array, "x")
    assert kind is ArrayKind.NUMPY
    assert tensor.data_ptr() == array.ctypes.data
    back = _arrays.from_tensor(tensor, kind)
    assert isinstance(back, np.ndarray) and np.shares_memory(back, array)


def test_read_only_memmap_is_viewed_without_a_warning(tmp_path):
    path = tmp_path / "refs.f32"
    np.arange(12, dtype=np.float32).tofile(path)
    memmap = np.memmap(path, dtype=np.float32, mode="r", shape=(3, 4))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tensor, kind = _arrays.to_tensor(memmap, "refs")
    assert kind is ArrayKind.NUMPY and tensor.shape == (3, 4) and float(tensor[2, 3]) == 11.0


def test_torch_passes_through():
    tensor = torch.ones(2, 2)
    same, kind = _arrays.to_tensor(tensor, "x")
    assert same is tensor and kind is ArrayKind.TORCH
    assert _arrays.from_tensor(same, kind) is tensor


@pytest.mark.parametrize("value", [[1.0, 2.0], "abc", None, np.array(["a", "b"])])
def test_unsupported_inputs_name_the_argument(value):
    with pytest.raises(TypeError, match="queries"):
        _arrays.to_tensor(value, "queries")


def test_require_checks_rank_dtype_emptiness_and_finiteness():
    good = torch.zeros(2, 3)
    assert _arrays.require(good, "x", ndim=2, dtypes=[torch.float32]) is good
    with pytest.raises(ValueError, match=r"x: expected a 2-D array, got shape \(3,\)"):
        _arrays.require(torch.zeros(3), "x", ndim=2)
    with pytest.raises(TypeError, match="x: expected dtype float32, got int32"):
        _arrays.require(torch.zeros(2, 2, dtype=torch.int32), "x", dtypes=[torch.float32])
    with pytest.raises(ValueError, match="x: expected a non-empty array"):
        _arrays.require(torch.zeros(0, 3), "x")
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="x: contains NaN or infinite values"):
            _arrays.require(torch.tensor([[1.0, bad]]), "x", finite=True)


def test_require_copies_non_contiguous_inputs_once():
    base = torch.arange(12.0).reshape(3, 4)
    view = base.T
    out = _arrays.require(view, "x")
    assert out.is_contiguous() and torch.equal(out, view)


def test_common_device_names_every_argument_when_devices_differ():
    assert _arrays.common_device(a=torch.zeros(1), b=None, c=torch.zeros(1)) == torch.device("cpu")
    with pytest.raises(ValueError, match="a on cpu, b on meta"):
        _arrays.common_device(a=torch.zeros(1), b=torch.zeros(1, device="meta"))


def test_kernel_module_and_stream_for_cpu():
    from pyinstance import _backend

    assert _arrays.kernel_module(torch.device("cpu")) is _backend._C
    assert _arrays.cuda_launch(torch.device("cpu"), ArrayKind.TORCH) == (-1, 0)
    # Only cupy arrays on a GPU switch torch's stream; everything else leaves it alone.
    for kind in ArrayKind:
        assert isinstance(_arrays.torch_stream(torch.device("cpu"), kind), contextlib.nullcontext)
    with pytest.raises(ValueError, match="unsupported device meta"):
        _arrays.kernel_module(torch.device("meta"))


def test_dtype_codes_match_the_cpp_enum():
    assert _arrays.dtype_code(torch.zeros(1)) == 0
    assert _arrays.dtype_code(torch.zeros(1, dtype=torch.float16)) == 1
    assert _arrays.dtype_code(torch.zeros(1, dtype=torch.bfloat16)) == 2
    with pytest.raises(TypeError, match="no kernel code"):
        _arrays.dtype_code(torch.zeros(1, dtype=torch.int8))


def test_numpy_arrays_torch_cannot_view_are_copied_once():
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    reversed_rows, kind = _arrays.to_tensor(data[::-1], "x")
    assert kind is ArrayKind.NUMPY
    assert torch.equal(reversed_rows, torch.from_numpy(data[::-1].copy()))
    big_endian, _ = _arrays.to_tensor(data.astype(">f4"), "x")
    assert big_endian.dtype == torch.float32
    assert torch.equal(big_endian, torch.from_numpy(data))


def test_sparse_and_meta_tensors_are_refused_by_name():
    with pytest.raises(TypeError, match="x: expected a dense tensor"):
        _arrays.to_tensor(torch.eye(3).to_sparse(), "x")
    with pytest.raises(ValueError, match="x: unsupported device meta"):
        _arrays.to_tensor(torch.zeros(3, device="meta"), "x")
