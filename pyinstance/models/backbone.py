"""The base class of every built-in backbone: input checks, FCN class map, partial freezing.

A backbone maps an image batch B×3×H×W (RGB, normalised with ``input_mean``/``input_std``)
to a feature map B×C×H'×W' with ``C = out_channels`` and ``H' ≈ H / out_stride``. Its
classifier is fully convolutional (Long et al.): the fully connected layers are 1×1 (or
k×k) convolutions, so ``class_map(features)`` gives class scores B×K×H'×W' for any input
size, at the resolution of the feature map.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

#: ImageNet RGB statistics of torchvision-trained models (inputs in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Backbone(nn.Module):
    """Shared behaviour; subclasses define ``forward_features``, ``classifier`` and ``blocks``."""

    out_channels: int
    out_stride: int
    #: Smallest input side (pixels) that gives a feature map of at least 1×1.
    min_input_size: int
    #: Classes of the FCN classifier (K of the class map).
    num_classes: int
    #: Per-channel RGB mean and std the network expects after scaling pixels to [0, 1].
    input_mean: tuple[float, float, float] = IMAGENET_MEAN
    input_std: tuple[float, float, float] = IMAGENET_STD
    #: The fully convolutional classifier: B×C×H'×W' features -> B×K×H'×W' class scores.
    classifier: nn.Module

    def blocks(self) -> OrderedDict[str, nn.Module]:
        """Named blocks from the input to the classifier (the names ``trainable_from`` takes)."""
        raise NotImplementedError

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """The feature map of checked images."""
        raise NotImplementedError

    # -- public -----------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Feature map B×C×H'×W' of ``images`` B×3×H×W."""
        self.check_images(images)
        return self.forward_features(images)

    def class_map(self, features: torch.Tensor) -> torch.Tensor:
        """Class scores B×K×H'×W' of a feature map from :meth:`forward` (same H'×W')."""
        if not isinstance(features, torch.Tensor) or features.dim() != 4:
            raise ValueError(
                f"features: expected a B×{self.out_channels}×H×W tensor, got {_describe(features)}"
            )
        if features.shape[1] != self.out_channels:
            raise ValueError(
                f"features: expected {self.out_channels} channels, got {features.shape[1]}"
            )
        return self.classifier(features)

    def forward_with_class_map(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features, class_map)`` of ``images`` in one pass."""
        features = self(images)
        return features, self.classifier(features)

    def check_images(self, images: torch.Tensor) -> None:
        """Raise a clear error unless ``images`` is a finite float B×3×H×W batch large enough."""
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images: expected a torch.Tensor, got {type(images).__name__}")
        if images.dim() != 4:
            raise ValueError(f"images: expected B×3×H×W, got shape {tuple(images.shape)}")
        if images.shape[1] != 3:
            raise ValueError(
                f"images: expected 3 (RGB) channels, got {images.shape[1]} "
                f"(shape {tuple(images.shape)}); convert grey or RGBA images to RGB"
            )
        if not images.is_floating_point():
            raise TypeError(
                f"images: expected a floating-point tensor (normalised RGB), got {images.dtype}"
            )
        height, width = images.shape[2:]
        if min(height, width) < self.min_input_size:
            raise ValueError(
                f"images: {height}×{width} is too small for {type(self).__name__} (output "
                f"stride {self.out_stride}): each side needs at least {self.min_input_size} pixels"
            )
        if images.shape[0] == 0:
            raise ValueError("images: empty batch")
        if not bool(torch.isfinite(images).all()):
            raise ValueError("images: contains NaN or infinite values")

    def set_trainable_from(self, block: str | None) -> None:
        """Freeze every block below ``block`` (None: everything trainable).

        Frozen blocks keep their batch-norm statistics: they stay in eval mode even when
        the backbone is put in training mode.
        """
        names = list(self.blocks())
        if block is not None and block not in names:
            raise ValueError(
                f"trainable_from: unknown block {block!r} of {type(self).__name__}; "
                f"expected one of {', '.join(names)}"
            )
        frozen = names[: names.index(block)] if block is not None else []
        self._frozen = frozenset(frozen)
        for name, module in self.blocks().items():
            for parameter in module.parameters():
                parameter.requires_grad_(name not in self._frozen)
        self.train(self.training)

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        for name, module in self.blocks().items():
            if name in getattr(self, "_frozen", ()):
                module.eval()
        return self


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"shape {tuple(value.shape)}"
    return type(value).__name__
