"""Descriptors of sub-windows of one feature map: zooming in without another CNN pass.

A query photo often shows the object small, among wall, frame and neighbours; pooling
windows of its feature map (as if the photo had been cropped) and keeping each window's
descriptor lets the search score a reference by its best-matching window. One backbone
pass serves every window.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pyinstance.models.pooling import _EPS, GeM, SPoC, l2_normalize

#: The default window layout: the whole map, then 3×3 windows at 0.7 and at 0.5 of each side.
DEFAULT_WINDOWS: tuple[tuple[float, int], ...] = ((1.0, 1), (0.7, 3), (0.5, 3))


def check_windows(windows: Sequence[Sequence[float | int]]) -> tuple[tuple[float, int], ...]:
    """Validate a window layout: ``(fraction of each side in (0, 1], grid count >= 1)`` pairs."""
    if isinstance(windows, (str, bytes)) or not isinstance(windows, Sequence) or not windows:
        raise ValueError(
            f"windows: expected a non-empty sequence of (fraction, count), got {windows!r}"
        )
    checked = []
    for item in windows:
        if not isinstance(item, Sequence) or len(item) != 2:
            raise ValueError(f"windows: expected (fraction, count) pairs, got {item!r}")
        fraction, count = item
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, (int, float))
            or not 0 < fraction <= 1
        ):
            raise ValueError(f"windows: fraction must be a number in (0, 1], got {fraction!r}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"windows: count must be a positive int, got {count!r}")
        checked.append((float(fraction), int(count)))
    return tuple(checked)


def window_boxes(
    height: int, width: int, windows: Sequence[Sequence[float | int]] = DEFAULT_WINDOWS
) -> list[tuple[int, int, int, int]]:
    """``(top, left, bottom, right)`` cells of each window of an ``height × width`` map.

    A ``(fraction, count)`` pair places ``count × count`` windows of ``fraction`` of each
    side (at least one cell), evenly spaced from one edge to the other.
    """
    boxes = []
    for fraction, count in check_windows(windows):
        box_h = max(1, round(fraction * height))
        box_w = max(1, round(fraction * width))
        for top in _starts(height, box_h, count):
            for left in _starts(width, box_w, count):
                boxes.append((top, left, top + box_h, left + box_w))
    return boxes


def _starts(size: int, box: int, count: int) -> list[int]:
    if count == 1:
        return [(size - box) // 2]
    return [round(i * (size - box) / (count - 1)) for i in range(count)]


def pool_windows(
    features: torch.Tensor,
    head: nn.Module,
    windows: Sequence[Sequence[float | int]] = DEFAULT_WINDOWS,
) -> torch.Tensor:
    """Descriptors ``B × R × D`` of the ``R`` windows of a ``B × C × H × W`` feature map.

    Windows of one size are pooled by ``head`` in one call (stacked along the batch). A
    GeM or SPoC head (a power mean) takes a faster path with the same result: the map is
    raised to the power once and every window's mean is read from its summed-area table.
    """
    _check_features(features)
    return pool_boxes(features, head, window_boxes(*features.shape[2:], windows))


def pool_boxes(
    features: torch.Tensor, head: nn.Module, boxes: Sequence[tuple[int, int, int, int]]
) -> torch.Tensor:
    """Descriptors ``B × R × D`` of ``R`` boxes ``(top, left, bottom, right)`` (cells, each
    at least one cell, inside the map) of a ``B × C × H × W`` feature map."""
    _check_features(features)
    batch, _, height, width = features.shape
    boxes = [tuple(int(v) for v in box) for box in boxes]
    if not boxes or any(
        not (0 <= top < bottom <= height and 0 <= left < right <= width)
        for top, left, bottom, right in boxes
    ):
        raise ValueError(
            f"boxes: expected (top, left, bottom, right) boxes inside the {height}×{width} map, "
            f"at least one cell each, got {boxes[:3]}{'...' if len(boxes) > 3 else ''}"
        )
    if type(head).pool in (GeM.pool, SPoC.pool):
        return _power_mean_windows(features, head, boxes)
    by_size: dict[tuple[int, int], list[int]] = {}
    for r, (top, left, bottom, right) in enumerate(boxes):
        by_size.setdefault((bottom - top, right - left), []).append(r)
    out: torch.Tensor | None = None
    for members in by_size.values():
        crops = torch.cat(
            [
                features[:, :, top:bottom, left:right]
                for top, left, bottom, right in (boxes[m] for m in members)
            ],
            dim=0,
        )
        pooled = head(crops).reshape(len(members), batch, -1)
        if out is None:
            out = pooled.new_empty(batch, len(boxes), pooled.shape[-1])
        out[:, members] = pooled.transpose(0, 1)
    assert out is not None
    return out


def _check_features(features: torch.Tensor) -> None:
    if not isinstance(features, torch.Tensor) or features.dim() != 4:
        raise ValueError(
            f"features: expected a B×C×H×W tensor, got {getattr(features, 'shape', type(features))}"
        )


def _power_mean_windows(
    features: torch.Tensor, head: GeM | SPoC, boxes: list[tuple[int, int, int, int]]
) -> torch.Tensor:
    """GeM (``(mean x^p)^(1/p)``) or SPoC (``p = 1``) of every window via a summed-area table."""
    head.check_features(features)
    p = head.p.to(features.dtype) if isinstance(head, GeM) else None
    powered = features.clamp(min=_EPS).pow(p) if p is not None else features
    table = torch.zeros(
        *features.shape[:2],
        features.shape[2] + 1,
        features.shape[3] + 1,
        dtype=torch.float64,
        device=features.device,
    )
    table[:, :, 1:, 1:] = powered.to(torch.float64).cumsum(2).cumsum(3)
    top, left, bottom, right = (
        torch.tensor(column, device=features.device) for column in zip(*boxes, strict=True)
    )
    sums = (
        table[:, :, bottom, right]
        - table[:, :, top, right]
        - table[:, :, bottom, left]
        + table[:, :, top, left]
    )  # B × C × R
    means = (sums / ((bottom - top) * (right - left))).to(features.dtype).transpose(1, 2)
    pooled = means.clamp(min=0).pow(1.0 / p) if p is not None else means  # clamp: rounding
    descriptors = l2_normalize(pooled)
    if head.projection is not None:
        descriptors = l2_normalize(head.projection(descriptors))
    return descriptors
