"""Fused top-k region pooling: class map -> k best locations -> sum of L2-normalised features.

``topk_region_pool(features, scores, k)`` is a ``torch.library.custom_op``
(``pyinstance::topk_region_pool``) with a compiled forward and a compiled backward
(``pyinstance::topk_region_pool_backward``), so it trains, works under ``torch.compile``
and passes ``torch.library.opcheck``.

Gradients flow to ``features`` only, and only at the selected locations. The selection
itself is piecewise constant in ``scores``: no gradient flows to ``scores`` (train a class
map through a separate loss, e.g. the cross-entropy over the k regions of the
``topk_region`` head).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pyinstance.ops import _arrays
from pyinstance.ops._args import check_int

__all__ = ["topk_region_pool"]

_FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


@torch.library.custom_op("pyinstance::topk_region_pool", mutates_args=())
def _topk_region_pool_op(
    features: torch.Tensor, scores: torch.Tensor, k: int, valid_hw: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled B×C, locations B×k int64) from validated features and scores."""
    features, scores, valid_hw = _check_inputs(features, scores, k, valid_hw)
    batch, channels, height, width = features.shape
    scores = scores.contiguous()
    pooled = features.new_empty((batch, channels))
    locations = torch.empty((batch, k), dtype=torch.int64, device=features.device)
    module = _arrays.kernel_module(features.device)
    common = dict(
        features=features.data_ptr(),
        features_dtype=_arrays.dtype_code(features),
        batch=batch,
        channels=channels,
        height=height,
        width=width,
        strides=list(features.stride()),
        scores=scores.data_ptr(),
        scores_dtype=_arrays.dtype_code(scores),
        classes=scores.shape[1],
        k=k,
        valid_hw=valid_hw.data_ptr() if valid_hw is not None else 0,
        pooled=pooled.data_ptr(),
        locations=locations.data_ptr(),
    )
    if features.device.type == "cuda":
        device = features.device
        scratch = torch.empty((batch, height * width), dtype=_acc_dtype(scores), device=device)
        coeffs = torch.empty((batch, k, 2), dtype=_acc_dtype(features), device=device)
        status = torch.zeros((batch,), dtype=torch.int32, device=device)
        # torch's current stream: the public wrapper makes it cupy's for cupy arrays.
        index, stream = _arrays.cuda_launch(device, _arrays.ArrayKind.TORCH)
        module.topk_region_pool_forward(
            **common,
            scratch=scratch.data_ptr(),
            coeffs=coeffs.data_ptr(),
            status=status.data_ptr(),
            stream=stream,
            device=index,
        )
        _raise_cuda_status(status, k)
    else:
        module.topk_region_pool_forward(**common)
    return pooled, locations


def _acc_dtype(tensor: torch.Tensor) -> torch.dtype:
    """The kernels' arithmetic type for ``tensor``: float64 for float64, else float32."""
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


def _raise_cuda_status(status: torch.Tensor, k: int) -> None:
    """Turn the CUDA kernels' per-image status codes into the CPU kernels' errors (syncs)."""
    codes = status.cpu()
    for image, code in enumerate(codes.tolist()):
        if code == 1:
            raise ValueError(f"scores: contains NaN values (image {image})")
        if code == 2:
            raise ValueError(
                f"features: contains NaN or infinite values at a selected location (image {image})"
            )
        if code == 3:
            raise ValueError(f"k={k} exceeds the valid locations of image {image}")
        if code == 4:
            raise ValueError(f"locations: out of range [0, H*W) in image {image}")


@_topk_region_pool_op.register_fake
def _(features, scores, k, valid_hw):
    batch, channels = features.shape[0], features.shape[1]
    pooled = features.new_empty((batch, channels))
    locations = features.new_empty((batch, k), dtype=torch.int64)
    return pooled, locations


_NUMPY_STORAGE = {
    torch.float32: np.float32,
    torch.float64: np.float64,
    torch.float16: np.float16,
    torch.bfloat16: np.uint16,  # same bits, viewed as bfloat16
}


def _zeros(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A zero-filled gradient buffer; the kernels write only its nonzeros.

    On the CPU it comes from calloc (numpy.zeros): a large buffer arrives as untouched
    pages that the OS zeroes on first touch (as transparent huge pages: numpy advises
    them), so the kernel's sparse writes are the only pass over it. torch.zeros would
    write every byte once more after the same page faults.
    """
    if device.type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    return torch.from_numpy(np.zeros(shape, dtype=_NUMPY_STORAGE[dtype])).view(dtype)


@torch.library.custom_op("pyinstance::topk_region_pool_backward", mutates_args=())
def _topk_region_pool_backward_op(
    grad_pooled: torch.Tensor, features: torch.Tensor, locations: torch.Tensor
) -> torch.Tensor:
    """Gradient of ``pooled`` w.r.t. ``features``: dense, zero off the selected locations.

    The kernels reject locations outside ``[0, H*W)``.
    """
    if features.dim() != 4 or features.dtype not in _FLOAT_DTYPES:
        raise ValueError(
            f"features: expected a float B×C×H×W array, got {features.dtype} {tuple(features.shape)}"
        )
    batch, channels, height, width = features.shape
    if grad_pooled.shape != (batch, channels):
        raise ValueError(
            f"grad_pooled: expected shape ({batch}, {channels}), got {tuple(grad_pooled.shape)}"
        )
    if locations.dim() != 2 or locations.shape[0] != batch or locations.dtype != torch.int64:
        raise ValueError(
            f"locations: expected int64 of shape ({batch}, k), got {locations.dtype} {tuple(locations.shape)}"
        )
    _arrays.common_device(grad_pooled=grad_pooled, features=features, locations=locations)
    grad_pooled = grad_pooled.to(features.dtype).contiguous()
    locations = locations.contiguous()
    grad_features = _zeros((batch, channels, height, width), features.dtype, features.device)
    module = _arrays.kernel_module(features.device)
    common = dict(
        grad_pooled=grad_pooled.data_ptr(),
        features=features.data_ptr(),
        dtype=_arrays.dtype_code(features),
        batch=batch,
        channels=channels,
        height=height,
        width=width,
        strides=list(features.stride()),
        locations=locations.data_ptr(),
        k=locations.shape[1],
        grad_features=grad_features.data_ptr(),
    )
    if features.device.type == "cuda":
        device = features.device
        scratch = torch.empty(
            (batch, locations.shape[1], 2), dtype=_acc_dtype(features), device=device
        )
        status = torch.zeros((batch,), dtype=torch.int32, device=device)
        index, stream = _arrays.cuda_launch(device, _arrays.ArrayKind.TORCH)
        module.topk_region_pool_backward(
            **common,
            scratch=scratch.data_ptr(),
            status=status.data_ptr(),
            stream=stream,
            device=index,
        )
        _raise_cuda_status(status, locations.shape[1])
    else:
        module.topk_region_pool_backward(**common)
    return grad_features


@_topk_region_pool_backward_op.register_fake
def _(grad_pooled, features, locations):
    return torch.empty_like(features, memory_format=torch.contiguous_format)


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, ...]) -> None:
    features = inputs[0]
    ctx.save_for_backward(features, output[1])


def _backward(ctx: Any, grad_pooled: torch.Tensor, grad_locations: torch.Tensor | None):
    features, locations = ctx.saved_tensors
    grad_features = None
    if ctx.needs_input_grad[0]:
        grad_features = _topk_region_pool_backward_op(grad_pooled, features, locations)
    return grad_features, None, None, None


_topk_region_pool_op.register_autograd(_backward, setup_context=_setup_context)


def _check_inputs(
    features: torch.Tensor, scores: torch.Tensor, k: Any, valid_hw: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Validate shapes, dtypes, devices and k; scores as B×K×H×W, valid_hw as int64."""
    if features.dim() != 4:
        raise ValueError(
            f"features: expected a 4-D B×C×H×W array, got shape {tuple(features.shape)}"
        )
    if features.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"features: expected dtype float32, float64, float16 or bfloat16, got {features.dtype}"
        )
    if features.numel() == 0:
        raise ValueError(f"features: expected a non-empty array, got shape {tuple(features.shape)}")
    batch, _, height, width = features.shape
    if scores.dim() == 3:
        scores = scores.unsqueeze(1)
    elif scores.dim() != 4:
        raise ValueError(
            "scores: expected a B×K×H×W class map or a B×H×W saliency map, "
            f"got shape {tuple(scores.shape)}"
        )
    if scores.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"scores: expected dtype float32, float64, float16 or bfloat16, got {scores.dtype}"
        )
    if scores.shape[0] != batch or scores.shape[2:] != features.shape[2:] or scores.shape[1] == 0:
        raise ValueError(
            f"scores: expected shape ({batch}, K, {height}, {width}) with K >= 1 or "
            f"({batch}, {height}, {width}) to match features {tuple(features.shape)}, "
            f"got {tuple(scores.shape)}"
        )
    k = check_int(k, "k")
    if not 1 <= k <= height * width:
        raise ValueError(f"k: expected 1 <= k <= H*W = {height * width}, got {k}")
    _arrays.common_device(features=features, scores=scores)
    if features.device.type not in ("cpu", "cuda"):
        raise ValueError(f"features: unsupported device {features.device}, expected cpu or cuda")
    if valid_hw is not None:
        valid_hw = _check_valid_hw(valid_hw, batch, height, width, k).to(features.device)
    return features, scores, valid_hw


def _check_valid_hw(
    valid_hw: torch.Tensor, batch: int, height: int, width: int, k: int
) -> torch.Tensor:
    """(height, width) of each image's valid window, checked on the host; int64 out."""
    if valid_hw.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise TypeError(f"valid_hw: expected an integer dtype, got {valid_hw.dtype}")
    if tuple(valid_hw.shape) != (batch, 2):
        raise ValueError(f"valid_hw: expected shape ({batch}, 2), got {tuple(valid_hw.shape)}")
    host = valid_hw.to(device="cpu", dtype=torch.int64).contiguous()
    heights, widths = host[:, 0], host[:, 1]
    bad = (heights < 1) | (heights > height) | (widths < 1) | (widths > width)
    if bool(bad.any()):
        image = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"valid_hw: image {image} has valid size {tuple(host[image].tolist())}, expected "
            f"1 <= h <= {height} and 1 <= w <= {width}"
        )
    area = heights * widths
    small = area < k
    if bool(small.any()):
        image = int(small.nonzero()[0, 0])
        raise ValueError(
            f"k={k} exceeds the valid area of image {image} "
            f"({int(heights[image])}×{int(widths[image])} = {int(area[image])} locations)"
        )
    return host


def topk_region_pool(
    features: Any, scores: Any, k: int, *, valid_hw: Any = None
) -> tuple[Any, Any]:
    """Sum of the L2-normalised feature vectors at the k highest-scoring locations.

    Args:
        features: B×C×H×W feature map (float32, float64, float16 or bfloat16; any strides,
            channels-last included, are read without a copy).
        scores: B×K×H×W class map (a location's score is its maximum over the K classes)
            or B×H×W saliency map, same spatial size, any of the float dtypes. NaN is an
            error; ±inf is a valid score.
        k: number of locations per image, ``1 <= k <= H*W`` (an int or numpy integer).
        valid_hw: optional B×2 integer (height, width) of each image's valid top-left window
            when images of different sizes are padded into one batch; padded locations are
            never selected, and k larger than an image's valid area is an error.

    Returns:
        ``(pooled, locations)``: ``pooled[b] = sum_l f_l / max(||f_l||, 1e-12)`` (B×C, the
        features' dtype) with ``f_l = features[b, :, y_l, x_l]``, and ``locations`` (B×k
        int64) the flat indices ``y * W + x`` by descending score, equal scores by smaller
        index.

    Differentiable w.r.t. ``features`` (the gradient is nonzero only at the selected
    locations); no gradient flows through the selection to ``scores``. NaN or infinite
    features at a selected location are an error. numpy arrays give numpy results (no
    autograd); torch tensors on cpu or cuda run the compiled kernels on their device.
    """
    features_t, kind = _arrays.to_tensor(features, "features")
    scores_t, _ = _arrays.to_tensor(scores, "scores")
    valid_t = _arrays.to_tensor(valid_hw, "valid_hw")[0] if valid_hw is not None else None
    k = check_int(k, "k")
    # Checked here too: a meta/cpu mix would otherwise dispatch to the fake kernel.
    _check_inputs(features_t, scores_t, k, valid_t)
    with _arrays.torch_stream(features_t.device, kind):
        pooled, locations = _topk_region_pool_op(features_t, scores_t, k, valid_t)
    return _arrays.from_tensor(pooled, kind), _arrays.from_tensor(locations, kind)
