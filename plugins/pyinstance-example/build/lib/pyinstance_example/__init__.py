"""A third-party pyinstance plugin: the ``example_tiny`` backbone and ``example_centroid`` miner."""

from __future__ import annotations

import torch
from torch import nn

import pyinstance


class TinyBackbone(nn.Module):
    """Three stride-2 conv layers: B×3×H×W -> B×32×H/8×W/8."""

    out_stride = 8

    def __init__(self, width: int = 32):
        super().__init__()
        self.out_channels = width
        self.layers = nn.Sequential(
            nn.Conv2d(3, width // 2, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(width // 2, width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)


class CentroidMiner:
    """Per anchor: the positive and the negative most similar to the anchor's class centroid."""

    def __call__(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        ref_embeddings: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        same_set = ref_embeddings is None
        refs = embeddings if same_set else ref_embeddings
        ref_labels = labels if same_set else ref_labels
        classes, inverse = torch.unique(labels, return_inverse=True)
        centroids = torch.zeros(len(classes), embeddings.shape[1], dtype=embeddings.dtype)
        centroids.index_add_(0, inverse, embeddings)
        score = centroids[inverse] @ refs.T  # anchor's centroid vs every reference
        same = labels[:, None] == ref_labels[None, :]
        if same_set:
            same.fill_diagonal_(False)
        different = labels[:, None] != ref_labels[None, :]
        valid = same.any(dim=1) & different.any(dim=1)
        positives = score.masked_fill(~same, float("-inf")).argmax(dim=1)
        negatives = score.masked_fill(~different, float("-inf")).argmax(dim=1)
        anchors = torch.arange(labels.numel())[valid]
        return anchors, positives[valid], negatives[valid]


@pyinstance.hookimpl
def pyinstance_register_backbones(register) -> None:
    register("example_tiny", TinyBackbone)


@pyinstance.hookimpl
def pyinstance_register_miners(register) -> None:
    register("example_centroid", CentroidMiner)
