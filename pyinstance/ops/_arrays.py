"""One array layer for every op: numpy, torch (CPU/CUDA) and cupy in, the same kind out.

Inputs are viewed as torch tensors without copying (numpy through ``torch.from_numpy``,
cupy through DLPack), validated, and handed to the kernels as raw pointers; results are
converted back to the kind of the caller's array. The kernels never see torch headers.
"""

from __future__ import annotations

import contextlib
import enum
import math
import warnings
from collections.abc import Iterable
from types import ModuleType
from typing import Any

import numpy as np
import torch

from pyinstance import _backend

#: dtype codes shared with csrc/include/pyinstance/dtype.h (enum class DType).
DTYPE_CODES: dict[torch.dtype, int] = {
    torch.float32: 0,
    torch.float16: 1,
    torch.bfloat16: 2,
    torch.float64: 3,
    torch.int64: 4,
}


class ArrayKind(enum.Enum):
    """Which library the caller's array came from."""

    NUMPY = "numpy"
    TORCH = "torch"
    CUPY = "cupy"


def _is_cupy(value: Any) -> bool:
    return type(value).__module__.startswith("cupy") and hasattr(value, "__cuda_array_interface__")


def to_tensor(value: Any, name: str) -> tuple[torch.Tensor, ArrayKind]:
    """View ``value`` as a torch tensor and remember its kind.

    No copy, except for numpy arrays torch cannot view: negative strides (``x[::-1]``) and
    non-native byte order (``">f4"``) are copied once into a native C-contiguous array, as
    non-contiguous inputs are anyway. Sparse tensors and devices other than cpu and cuda
    (``meta``) are refused, naming the argument.
    """
    if isinstance(value, torch.Tensor):
        if value.layout != torch.strided:
            raise TypeError(
                f"{name}: expected a dense tensor, got layout {value.layout} (call .to_dense())"
            )
        if value.device.type not in ("cpu", "cuda"):
            raise ValueError(
                f"{name}: unsupported device {value.device}; pyinstance kernels run on cpu and cuda"
            )
        return value, ArrayKind.TORCH
    if isinstance(value, np.ndarray):
        if value.dtype == object or not (
            np.issubdtype(value.dtype, np.number) or value.dtype == np.bool_
        ):
            raise TypeError(f"{name}: expected a numeric array, got numpy dtype {value.dtype}")
        if not value.dtype.isnative or any(stride < 0 for stride in value.strides):
            value = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("="))
        with warnings.catch_warnings():
            # Read-only arrays (np.memmap mode="r") are fine: kernels never write inputs.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return torch.from_numpy(value), ArrayKind.NUMPY
    if _is_cupy(value):
        return torch.from_dlpack(value), ArrayKind.CUPY
    raise TypeError(
        f"{name}: expected a numpy array, torch tensor or cupy array, got {type(value).__name__}"
    )


def from_tensor(tensor: torch.Tensor, kind: ArrayKind) -> Any:
    """Return ``tensor`` as the caller's kind of array (no copy)."""
    if kind is ArrayKind.TORCH:
        return tensor
    if kind is ArrayKind.NUMPY:
        return tensor.numpy()
    import cupy

    return cupy.from_dlpack(tensor)


def require(
    tensor: torch.Tensor,
    name: str,
    *,
    ndim: int | None = None,
    dtypes: Iterable[torch.dtype] | None = None,
    finite: bool = False,
    nonempty: bool = True,
) -> torch.Tensor:
    """Check rank, dtype, emptiness and finiteness; return a C-contiguous tensor.

    Non-contiguous inputs are copied once rather than read with the wrong strides.
    """
    if ndim is not None and tensor.dim() != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {tuple(tensor.shape)}")
    if dtypes is not None:
        allowed = tuple(dtypes)
        if tensor.dtype not in allowed:
            names = ", ".join(str(d).replace("torch.", "") for d in allowed)
            raise TypeError(
                f"{name}: expected dtype {names}, got {str(tensor.dtype).replace('torch.', '')}"
            )
    if nonempty and tensor.numel() == 0:
        raise ValueError(f"{name}: expected a non-empty array, got shape {tuple(tensor.shape)}")
    if finite and tensor.is_floating_point() and tensor.numel() and not _all_finite(tensor):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return tensor if tensor.is_contiguous() else tensor.contiguous()


def _all_finite(tensor: torch.Tensor) -> bool:
    """Whether no value is NaN or infinite: one min/max pass (NaN propagates through both),
    about 15x faster than ``torch.isfinite(tensor).all()``, which allocates a mask; the two
    extremes are read as Python floats (cheaper than another tensor op for small arrays)."""
    low, high = torch.aminmax(tensor)
    return math.isfinite(low.item()) and math.isfinite(high.item())


def common_device(**tensors: torch.Tensor | None) -> torch.device:
    """The one device all given tensors live on; a clear error when they differ."""
    present = {name: t.device for name, t in tensors.items() if t is not None}
    devices = set(present.values())
    if len(devices) != 1:
        listing = ", ".join(f"{name} on {device}" for name, device in present.items())
        raise ValueError(f"all arrays must be on the same device, got {listing}")
    return devices.pop()


def kernel_module(device: torch.device) -> ModuleType:
    """The extension that runs kernels on ``device``: never a silent host copy."""
    if device.type == "cpu":
        return _backend._C
    if device.type == "cuda":
        return _backend.cuda_module()
    raise ValueError(f"unsupported device {device}: pyinstance kernels run on cpu and cuda")


def cuda_launch(device: torch.device, kind: ArrayKind) -> tuple[int, int]:
    """``(device index, stream handle)`` for a kernel on ``device``: the caller's current
    stream there, cupy's for cupy arrays and torch's otherwise; ``(-1, 0)`` on the CPU.

    The one device/stream convention of every op: every CUDA binding takes ``stream`` and
    ``device`` and makes ``device`` current while it enqueues (csrc/include/pyinstance/
    cuda_utils.cuh, DeviceGuard).
    """
    if device.type != "cuda":
        return -1, 0
    index = device.index if device.index is not None else torch.cuda.current_device()
    if kind is ArrayKind.CUPY:
        import cupy

        with cupy.cuda.Device(index):
            return index, int(cupy.cuda.get_current_stream().ptr)
    return index, int(torch.cuda.current_stream(index).cuda_stream)


def torch_stream(device: torch.device, kind: ArrayKind) -> contextlib.AbstractContextManager:
    """Make torch's current stream on ``device`` the caller's (cupy's for cupy arrays), for
    ops that run through torch (custom ops read torch's current stream via cuda_launch)."""
    if device.type != "cuda" or kind is not ArrayKind.CUPY:
        return contextlib.nullcontext()
    _, stream = cuda_launch(device, kind)
    return torch.cuda.stream(torch.cuda.ExternalStream(stream, device=device))


def dtype_code(tensor: torch.Tensor) -> int:
    """The kernel-side dtype code of ``tensor``."""
    try:
        return DTYPE_CODES[tensor.dtype]
    except KeyError:
        raise TypeError(f"dtype {tensor.dtype} has no kernel code") from None
