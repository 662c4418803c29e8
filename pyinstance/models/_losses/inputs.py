"""Checks of the arguments every loss receives: embeddings, labels, triplets, logits.

Each error names the argument and what was expected. The calling convention is
``loss(embeddings, labels, triplets=None, *, logits=None)`` (see
:class:`pyinstance.models.contracts.LossContract`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

Triplets = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _shape(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"shape {tuple(value.shape)}"
    return type(value).__name__


def check_batch(embeddings: Any, labels: Any) -> None:
    """Finite floating B×D ``embeddings`` and B int64 ``labels``."""
    if not isinstance(embeddings, torch.Tensor) or embeddings.dim() != 2:
        raise ValueError(f"embeddings: expected a B×D tensor, got {_shape(embeddings)}")
    if not embeddings.is_floating_point():
        raise TypeError(f"embeddings: expected a floating-point tensor, got {embeddings.dtype}")
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels: expected a torch.Tensor, got {type(labels).__name__}")
    if labels.dim() != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"labels: expected {embeddings.shape[0]} labels (one per embedding), got shape {tuple(labels.shape)}"
        )
    if labels.dtype != torch.int64:
        raise TypeError(f"labels: expected int64, got {labels.dtype}")
    if labels.device != embeddings.device:
        raise ValueError(
            f"labels: expected a tensor on {embeddings.device} (the embeddings' device), got {labels.device}"
        )
    if not bool(torch.isfinite(embeddings.detach()).all()):
        raise ValueError("embeddings: expected finite values, got NaN or infinity")


def check_triplets(triplets: Any, batch: int, owner: str) -> Triplets:
    """Equal-length 1-D int64 (anchors, positives, negatives) indexing a batch of ``batch``."""
    if triplets is None:
        raise ValueError(f"triplets: {owner} needs (anchors, positives, negatives) from a miner")
    if not isinstance(triplets, (tuple, list)) or len(triplets) != 3:
        raise TypeError(
            f"triplets: expected a tuple (anchors, positives, negatives), got {type(triplets).__name__}"
        )
    for name, index in zip(("anchors", "positives", "negatives"), triplets, strict=True):
        if not isinstance(index, torch.Tensor) or index.dim() != 1 or index.dtype != torch.int64:
            raise TypeError(
                f"triplets: expected {name} as a 1-D int64 tensor, got "
                f"{getattr(index, 'dtype', type(index).__name__)} {_shape(index)}"
            )
    anchors, positives, negatives = triplets
    if not anchors.shape == positives.shape == negatives.shape:
        raise ValueError(
            "triplets: anchors, positives and negatives differ in length: "
            f"{anchors.numel()}, {positives.numel()}, {negatives.numel()}"
        )
    if anchors.numel():
        stacked = torch.stack(list(triplets))
        if bool((stacked < 0).any()) or bool((stacked >= batch).any()):
            raise ValueError(f"triplets: expected indices in [0, {batch}) (the batch)")
    return anchors, positives, negatives


def _check_classes(logits: torch.Tensor, labels: torch.Tensor, classes: int) -> None:
    if not logits.is_floating_point():
        raise TypeError(f"logits: expected a floating-point tensor, got {logits.dtype}")
    if logits.device != labels.device:
        raise ValueError(
            f"logits: expected a tensor on {labels.device} (the labels' device), got {logits.device}"
        )
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        raise ValueError(
            f"labels: expected class indices in [0, {classes}) for logits of {classes} classes, "
            f"got values in [{int(labels.min())}, {int(labels.max())}]"
        )


def check_image_logits(logits: Any, labels: torch.Tensor) -> torch.Tensor:
    """B×K class scores, one row per label, every label < K."""
    batch = labels.shape[0]
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != batch:
        raise ValueError(
            f"logits: expected {batch}×K image class scores (logits='image'), got {_shape(logits)}"
        )
    _check_classes(logits, labels, logits.shape[1])
    return logits


def check_map_logits(logits: Any, labels: torch.Tensor) -> list[torch.Tensor]:
    """FCN class maps: one B×K×H×W tensor or a non-empty sequence of them (one per scale)."""
    batch = labels.shape[0]
    wanted = f"logits: expected a {batch}×K×H×W class map or a sequence of them, one per scale"
    maps = [logits] if isinstance(logits, torch.Tensor) else logits
    if not isinstance(maps, Sequence) or isinstance(maps, str) or len(maps) == 0:
        raise ValueError(f"{wanted}, got {_shape(logits)}")
    classes = None
    for scale, class_map in enumerate(maps):
        if not isinstance(class_map, torch.Tensor) or class_map.dim() != 4:
            raise ValueError(f"{wanted} (logits='map'), got {_shape(class_map)} at scale {scale}")
        if class_map.shape[0] != batch or class_map.shape[2] * class_map.shape[3] == 0:
            raise ValueError(
                f"{wanted} with at least one location, got {_shape(class_map)} at scale {scale}"
            )
        if classes is not None and class_map.shape[1] != classes:
            raise ValueError(
                f"logits: expected the same classes K={classes} at every scale, "
                f"got {class_map.shape[1]} at scale {scale}"
            )
        classes = class_map.shape[1]
        _check_classes(class_map, labels, classes)
    return list(maps)


def check_region_logits(logits: Any, labels: torch.Tensor) -> torch.Tensor:
    """B×k×K class scores of each image's k selected regions."""
    batch = labels.shape[0]
    if (
        not isinstance(logits, torch.Tensor)
        or logits.dim() != 3
        or logits.shape[0] != batch
        or logits.shape[1] == 0
    ):
        raise ValueError(
            f"logits: expected {batch}×k×K region class scores (logits='regions', "
            f"e.g. RegionPooling.region_logits), got {_shape(logits)}"
        )
    _check_classes(logits, labels, logits.shape[2])
    return logits


def zero_with_graph(*tensors: torch.Tensor) -> torch.Tensor:
    """0 connected to ``tensors``: a zero gradient for an empty selection, not a constant."""
    return sum(tensor.sum() * 0.0 for tensor in tensors)  # type: ignore[return-value]
