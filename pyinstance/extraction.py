"""Multi-scale descriptor extraction: images of any size -> N×S×D descriptors.

Every image is resized so that its longest side is ``scale × max_side`` for each scale
(aspect ratio kept), normalised with the backbone's ``input_mean``/``input_std``, and
passed through backbone and head. Images are never padded or cropped: within a chunk of
``batch_size × 8`` images, the resized images of identical size are batched together, so
a descriptor does not depend on the other images of its batch (padding would change what
the head pools). Collections of one size (e.g. photos of one camera) batch fully; mixed
aspect ratios fall back to smaller batches, unless ``size_multiple`` rounds both sides to
a multiple (e.g. the backbone's stride): aspect ratios then change by a few percent and
far fewer distinct sizes remain, which matters on GPUs.

Image files are decoded only as large as the largest scale needs (JPEG draft mode, see
:func:`pyinstance.data.decode_image`); the resized sizes are computed from the file's
full size, so they do not depend on how far the decoder reduced it. Backbone and head are
modules: names are resolved at the API edge (:func:`pyinstance.get_backbone`,
:func:`pyinstance.get_head`), never here.
"""

from __future__ import annotations

import math
import numbers
import os
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from pyinstance.data.images import (
    DecodedImage,
    ImageLike,
    decode_image,
    image_tensor,
    normalize,
    resize,
    scaled_size,
)
from pyinstance.engine.base import torch_threads
from pyinstance.models.backbone import IMAGENET_MEAN, IMAGENET_STD
from pyinstance.models.contracts import min_input_size
from pyinstance.models.pooling import l2_normalize

_OUTPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_CHUNK_BATCHES = 8

#: The largest resized side (pixels) that :func:`extract` accepts (scale × max_side).
MAX_RESIZED_SIDE = 16384


def extract(
    images: Sequence[ImageLike] | torch.Tensor,
    backbone: nn.Module,
    head: nn.Module,
    *,
    scales: Sequence[float] = (1.0,),
    max_side: int = 448,
    batch_size: int = 8,
    size_multiple: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    progress: bool = True,
    engine: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Descriptors N×S×D (on the CPU, ``dtype``) of ``images`` at each of ``scales``.

    Args:
        images: file paths, PIL images, numpy H×W×3 uint8 arrays or 3×H×W tensors (uint8,
            or float in [0, 1]; not normalised), or one N×3×H×W tensor. Files are decoded
            only as large as the largest scale needs (JPEG draft mode).
        backbone: a backbone module (build one by name with :func:`pyinstance.get_backbone`).
        head: a head module built for the backbone's ``out_channels``
            (:func:`pyinstance.get_head`).
        scales: factors of ``max_side``; descriptor ``[:, s]`` is from ``scales[s]``. The
            resized longest side may not exceed :data:`MAX_RESIZED_SIDE` pixels.
        max_side: longest image side (pixels) at scale 1.
        batch_size: images per forward pass (at most).
        size_multiple: round both resized sides to the nearest multiple of this (at least
            one multiple), so that more images share a size and batch together.
        dtype: output dtype (float32, float16, bfloat16 or float64); the network runs in
            float32 (or its parameters' dtype) and only the descriptors are cast.
        device: where the networks run; default: the backbone's parameters' device (the CPU
            for modules without values, on 'meta', which only an engine allows). The
            modules are moved there and stay after success; the device is checked before
            anything moves, and after an error the modules are back where they were.
        progress: show a progress bar (tqdm) over the images.
        engine: what maps a normalised float32 batch to descriptors instead of
            ``head(backbone(batch))`` (a :class:`pyinstance.engine.Engine` made from the
            same backbone and head, e.g. ONNX Runtime); ``backbone`` and ``head`` still
            define the sizes and normalisation, and are neither moved nor switched to
            eval mode (the engine runs its own copy; per query that walk of the modules
            costs milliseconds).

    Backbone and head run in eval mode under ``torch.inference_mode``; their training
    modes are restored afterwards. Aggregate the scales with :func:`aggregate_scales`.
    """
    runs_modules = engine is None  # an engine runs its own copy: the modules stay as they are
    _check_module(backbone, "backbone", "get_backbone", runs=runs_modules)
    _check_module(head, "head", "get_head", runs=runs_modules)
    items = _image_list(images)
    max_side = _check_int(max_side, "max_side", maximum=MAX_RESIZED_SIDE)
    scales = _check_scales(scales, max_side)
    batch_size = _check_int(batch_size, "batch_size")
    if size_multiple is not None:
        size_multiple = _check_int(size_multiple, "size_multiple", maximum=MAX_RESIZED_SIDE)
    if dtype not in _OUTPUT_DTYPES:
        raise ValueError(f"dtype: expected one of {_OUTPUT_DTYPES}, got {dtype!r}")
    channels = _attribute(backbone, "out_channels", "backbone")
    head_channels = getattr(head, "in_channels", channels)
    if head_channels != channels:
        raise ValueError(
            f"head: built for {head_channels} input channels but the backbone gives {channels}"
        )
    out_dim = _attribute(head, "out_dim", "head")
    min_size = min_input_size(backbone)
    for scale in scales:
        if round(scale * max_side) < min_size:
            raise ValueError(
                f"scales: scale {scale} of max_side {max_side} gives {round(scale * max_side)} "
                f"pixels, below the backbone's minimum input size {min_size}"
            )
    device = _check_device(device, backbone)
    sizing = _Sizing(scales, max_side, size_multiple, min_size)
    mean = getattr(backbone, "input_mean", IMAGENET_MEAN)
    std = getattr(backbone, "input_std", IMAGENET_STD)
    output = torch.empty(len(items), len(scales), out_dim, dtype=dtype)
    modes = (backbone.training, head.training)
    places = (_module_device(backbone), _module_device(head))
    chunk = batch_size * _CHUNK_BATCHES
    # With an engine, resizing and normalising run on one torch thread: a few milliseconds
    # per image, and a second thread that loses its core to another process makes them
    # slower (the engine budgets the network's threads per request).
    preprocess_threads = None if runs_modules else 1
    try:
        if runs_modules:
            backbone.to(device)
            head.to(device)
            backbone.eval()
            head.eval()
        with (
            torch.inference_mode(),
            tqdm(total=len(items), disable=not progress, desc="extract", unit="img") as bar,
        ):
            for start in range(0, len(items), chunk):
                with torch_threads(preprocess_threads):
                    groups = _resized_groups(items, start, chunk, sizing, device)
                for entries in groups.values():
                    for first in range(0, len(entries), batch_size):
                        batch = entries[first : first + batch_size]
                        with torch_threads(preprocess_threads):
                            stacked = torch.stack([image for _, _, image in batch])
                            pixels = normalize(stacked, mean, std)
                        parameter_dtype = _module_dtype(backbone)
                        if engine is not None:
                            descriptors = engine(pixels.float()).to(device="cpu", dtype=dtype)
                        else:
                            features = backbone(pixels.to(parameter_dtype))
                            descriptors = head(features).to(device="cpu", dtype=dtype)
                        for (index, scale_index, _), descriptor in zip(
                            batch, descriptors, strict=True
                        ):
                            output[index, scale_index] = descriptor
                bar.update(min(chunk, len(items) - start))
    except BaseException:
        if runs_modules:
            backbone.to(places[0])
            head.to(places[1])
        raise
    finally:
        if runs_modules:
            backbone.train(modes[0])
            head.train(modes[1])
    return output


def aggregate_scales(
    descriptors: torch.Tensor, method: str = "mean", p: float = 3.0
) -> torch.Tensor:
    """One L2-normalised N×D descriptor per image from N×S×D multi-scale descriptors.

    ``method="mean"``: mean over scales. ``method="gem"``: generalised mean with exponent
    ``p`` over scales, sign-preserving (``sign(m)·|m|^(1/p)`` with ``m`` the mean of
    ``sign(x)·|x|^p``), so descriptors with negative entries (after a projection) are
    fine.

    ``descriptors`` must be floating point (an integer tensor is refused with a
    ``TypeError``) and finite (NaN or infinity: ``ValueError``). Both methods are
    positively homogeneous, so the values are scaled by their largest magnitude before
    pooling (per image for the mean, per image and dimension for GeM) and the result by
    its own before normalising: any finite input, from subnormal to the dtype's maximum,
    and any ``p`` pool without overflow or underflow to zero. Computed in float64,
    returned in the input's dtype. An all-zero image gives an all-zero descriptor.
    """
    if not isinstance(descriptors, torch.Tensor):
        raise TypeError(f"descriptors: expected an N×S×D tensor, got {type(descriptors).__name__}")
    if descriptors.dim() != 3:
        raise ValueError(
            f"descriptors: expected an N×S×D tensor, got shape {tuple(descriptors.shape)}"
        )
    if not descriptors.is_floating_point():
        raise TypeError(f"descriptors: expected a floating-point tensor, got {descriptors.dtype}")
    if descriptors.shape[1] == 0:
        raise ValueError("descriptors: no scales (S = 0)")
    if descriptors.shape[2] == 0:
        raise ValueError("descriptors: no dimensions (D = 0)")
    if not bool(torch.isfinite(descriptors).all()):
        raise ValueError("descriptors: contains NaN or infinite values")
    x = descriptors.to(torch.float64)
    if method == "mean":
        pooled = _scaled_down(x, dim=(1, 2)).mean(dim=1)
    elif method == "gem":
        p = _check_exponent(p)
        magnitude = x.abs().amax(dim=1, keepdim=True)  # N×1×D: per image and dimension
        unit = x / torch.where(magnitude > 0, magnitude, torch.ones_like(magnitude))
        powered = (unit.sign() * unit.abs().pow(p)).mean(dim=1)
        pooled = powered.sign() * powered.abs().pow(1.0 / p) * magnitude[:, 0]
    else:
        raise ValueError(f"method: expected 'mean' or 'gem', got {method!r}")
    return l2_normalize(_scaled_down(pooled, dim=1)).to(descriptors.dtype)


def _scaled_down(x: torch.Tensor, dim: int | tuple[int, ...]) -> torch.Tensor:
    """``x`` divided by its largest magnitude over ``dim`` (all-zero slices left alone)."""
    magnitude = x.abs().amax(dim=dim, keepdim=True)
    return x / torch.where(magnitude > 0, magnitude, torch.ones_like(magnitude))


def _check_exponent(p: object) -> float:
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, numbers.Real):
        raise TypeError(f"p: expected a finite number > 0, got {p!r} ({type(p).__name__})")
    if not math.isfinite(p) or p <= 0:
        raise ValueError(f"p: expected a finite number > 0, got {p!r}")
    return float(p)


class _Sizing:
    """The resized size of an image at each scale (rounding, size multiple, minimum)."""

    def __init__(
        self,
        scales: Sequence[float],
        max_side: int,
        size_multiple: int | None,
        min_size: int,
    ):
        self.scales = tuple(scales)
        self.max_side = max_side
        self.size_multiple = size_multiple
        self.min_size = min_size

    def size(self, height: int, width: int, scale: float) -> tuple[int, int]:
        size = scaled_size(height, width, round(scale * self.max_side))
        multiple = self.size_multiple
        if multiple is None:
            return size
        return max(multiple, round(size[0] / multiple) * multiple), max(
            multiple, round(size[1] / multiple) * multiple
        )

    def largest(self, height: int, width: int) -> tuple[int, int]:
        """The largest size over the scales: what a file must be decoded to at least."""
        sizes = [self.size(height, width, scale) for scale in self.scales]
        return max(h for h, _ in sizes), max(w for _, w in sizes)


def _resized_groups(
    items: Sequence[ImageLike],
    start: int,
    count: int,
    sizing: _Sizing,
    device: torch.device,
) -> dict[tuple[int, int], list[tuple[int, int, torch.Tensor]]]:
    """Decode and resize ``items[start:start+count]``, grouped by resized size."""
    groups: dict[tuple[int, int], list[tuple[int, int, torch.Tensor]]] = defaultdict(list)
    for index in range(start, min(start + count, len(items))):
        item = items[index]
        name = f"images[{index}]" + (f" ({item})" if isinstance(item, (str, os.PathLike)) else "")
        if isinstance(item, (str, os.PathLike, DecodedImage)):
            decoded = item if isinstance(item, DecodedImage) else decode_image(item, sizing.largest)
            image = image_tensor(decoded.image, name).to(device)
            height, width = decoded.full_size
        else:
            image = image_tensor(item, name).to(device)
            height, width = image.shape[1:]
        for scale_index, scale in enumerate(sizing.scales):
            size = sizing.size(height, width, scale)
            if min(size) < sizing.min_size:
                raise ValueError(
                    f"{name}: {height}×{width} resized to {size[0]}×{size[1]} at scale {scale} "
                    f"is smaller than the backbone's minimum input size {sizing.min_size}; use a "
                    "larger max_side or scale"
                )
            groups[size].append((index, scale_index, resize(image, size)))
    return groups


def _image_list(images: Sequence[ImageLike] | torch.Tensor) -> list[ImageLike]:
    if isinstance(images, torch.Tensor):
        if images.dim() != 4:
            raise ValueError(
                f"images: a tensor must be N×3×H×W, got shape {tuple(images.shape)}; pass a "
                "list for single images"
            )
        items: list[ImageLike] = list(images.unbind(0))
    elif isinstance(images, (str, bytes)) or not isinstance(images, Sequence):
        raise TypeError(
            f"images: expected a sequence of images (paths, PIL images, arrays, tensors), got "
            f"{type(images).__name__}"
        )
    else:
        items = list(images)
    if not items:
        raise ValueError("images: empty; nothing to extract")
    return items


def _check_scales(scales: object, max_side: int) -> tuple[float, ...]:
    expected = "a non-empty sequence of positive numbers"
    if _is_number(scales):
        scales = (scales,)
    if isinstance(scales, (str, bytes)) or not isinstance(scales, (Sequence, np.ndarray)):
        raise TypeError(f"scales: expected {expected}, got {scales!r}")
    values = tuple(scales)
    if not values or not all(_is_number(s) and math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"scales: expected {expected}, got {values!r}")
    for scale in values:
        side = round(float(scale) * max_side)
        if side > MAX_RESIZED_SIDE:
            raise ValueError(
                f"scales: scale {float(scale):g} of max_side {max_side} gives a longest side of "
                f"{side} pixels, above the limit of {MAX_RESIZED_SIDE}"
            )
    return tuple(float(s) for s in values)


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _check_int(value: object, name: str, *, maximum: int | None = None) -> int:
    """A positive int (numpy integer scalars accepted, booleans refused) up to ``maximum``."""
    wanted = "a positive integer" + (f" <= {maximum}" if maximum is not None else "")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected {wanted}, got {value!r} ({type(value).__name__})")
    number = int(value)
    if number < 1 or (maximum is not None and number > maximum):
        raise ValueError(f"{name}: expected {wanted}, got {number}")
    return number


def _check_module(module: object, role: str, factory: str, *, runs: bool) -> None:
    """An ``nn.Module`` (not a plugin name); when it ``runs`` (no engine), one with values.

    With an engine the modules only give sizes and normalisation, and the engine holds its
    own weights: walking every parameter and buffer of EfficientNet-Lite0 costs 0.6 ms of
    CPU per query.
    """
    if isinstance(module, str):
        raise TypeError(
            f"{role}: expected an nn.Module, got the name {module!r}; names are resolved at "
            f"the API edge: build it with pyinstance.{factory}({module!r}"
            + (", in_channels=backbone.out_channels)" if role == "head" else ")")
        )
    if not isinstance(module, nn.Module):
        raise TypeError(f"{role}: expected an nn.Module, got {type(module).__name__}")
    if runs and any(tensor.is_meta for tensor in (*module.parameters(), *module.buffers())):
        raise ValueError(
            f"{role}: its parameters are on the 'meta' device and hold no values; load or "
            "initialise its weights first"
        )


def _check_device(device: object, backbone: nn.Module) -> torch.device:
    """The device to run on, checked usable before any module moves there."""
    if device is None:
        place = _module_device(backbone)
        # modules without values ('meta', allowed with an engine): preprocess on the CPU
        return torch.device("cpu") if place.type == "meta" else place
    try:
        target = torch.device(device)  # type: ignore[arg-type]
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device: expected a torch device, got {device!r} ({error})") from error
    if target.type == "meta":
        raise ValueError(
            "device: 'meta' tensors hold no values; extraction needs a real device such as "
            "'cpu' or 'cuda'"
        )
    try:
        torch.empty(1, device=target)
    except (RuntimeError, AssertionError) as error:
        raise ValueError(f"device: {str(target)!r} is not available here ({error})") from error
    return target


def _attribute(module: object, name: str, role: str) -> int:
    value = getattr(module, name, None)
    if not isinstance(value, int):
        raise TypeError(f"{role}: {type(module).__name__} has no int attribute {name!r}")
    return value


def _module_device(module: nn.Module) -> torch.device:
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _module_dtype(module: nn.Module) -> torch.dtype:
    parameter = next(module.parameters(), None)
    return parameter.dtype if parameter is not None else torch.float32
