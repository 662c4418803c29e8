"""A third-party pyinstance plugin: the ``example_tiny`` backbone, ``example_centroid`` miner,
``example_local_centroid`` classifier and ``example_cosine`` re-ranker."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import pyinstance
from pyinstance.classify import Prediction


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


class LocalCentroidClassifier:
    """Among the instances of a query's ``k`` nearest references, the one whose centroid
    (the normalised mean of its references, from ``fit``) is most similar to the query.

    Confidence: that similarity, clipped to [0, 1].
    """

    def __init__(self, k: int = 5):
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k: expected an integer >= 1, got {k!r}")
        self.k = k
        self.centroids: torch.Tensor | None = None

    def fit(self, descriptors, labels) -> LocalCentroidClassifier:
        descriptors = torch.as_tensor(np.asarray(descriptors), dtype=torch.float32)
        labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
        if descriptors.dim() != 2 or labels.shape != (descriptors.shape[0],):
            raise ValueError("descriptors and labels: expected N×D and N codes")
        if not bool(torch.isfinite(descriptors).all()):
            raise ValueError("descriptors: NaN or infinite values")
        keep = labels >= 0
        sums = torch.zeros(int(labels.max()) + 1, descriptors.shape[1])
        sums.index_add_(0, labels[keep], descriptors[keep])
        self.centroids = torch.nn.functional.normalize(sums, dim=1)
        return self

    def predict(self, neighbours, queries) -> Prediction:
        if self.centroids is None:
            raise RuntimeError("call fit() first")
        queries = torch.as_tensor(np.asarray(queries), dtype=torch.float32)
        if queries.shape[-1] != self.centroids.shape[1] or queries.dim() not in (2, 3):
            raise ValueError(
                f"queries: expected Q×{self.centroids.shape[1]} or Q×R×{self.centroids.shape[1]}"
            )
        if queries.dim() == 2:
            queries = queries[:, None, :]
        candidates = torch.as_tensor(np.asarray(neighbours.labels)[:, : self.k])
        padded = candidates < 0
        earlier = torch.ones(self.k, self.k, dtype=torch.bool).tril(-1)
        repeated = ((candidates[:, :, None] == candidates[:, None, :]) & earlier).any(dim=2)
        centroids = self.centroids[candidates.clamp_min(0)]  # Q×k×D
        scores = torch.einsum("qrd,qkd->qrk", queries, centroids).amax(dim=1)
        scores = scores.masked_fill(padded | repeated, float("-inf"))
        scores, order = scores.sort(dim=1, descending=True, stable=True)
        ranked = torch.where(scores > float("-inf"), candidates.gather(1, order), -1)
        labels = ranked[:, 0]
        confidence = torch.where(labels >= 0, scores[:, 0].clamp(0, 1), 0.0)
        return Prediction(labels, confidence, ranked, scores)


class CosineReranker:
    """Scores each of the first ``k`` candidates by its best window's cosine similarity,
    mapped from [-1, 1] to [0, 1]; any recipe will do (``recipe`` None)."""

    recipe = None

    def __init__(self, k: int = 5):
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k: expected an integer >= 1, got {k!r}")
        self.k = k

    def score(self, queries, candidates) -> np.ndarray:
        queries = np.asarray(queries, dtype=np.float32)
        candidates = np.asarray(candidates, dtype=np.float32)
        if queries.ndim == 2:
            queries = queries[:, None, :]
        if queries.ndim != 3 or candidates.ndim != 3 or queries.shape[2] != candidates.shape[2]:
            raise ValueError("queries, candidates: expected Q×R×D and Q×k×D of one size D")
        if not (np.isfinite(queries).all() and np.isfinite(candidates).all()):
            raise ValueError("queries, candidates: NaN or infinite values")
        queries = queries / np.maximum(np.linalg.norm(queries, axis=2, keepdims=True), 1e-12)
        candidates = candidates / np.maximum(
            np.linalg.norm(candidates, axis=2, keepdims=True), 1e-12
        )
        best = np.einsum("qrd,qkd->qkr", queries, candidates).max(axis=2)
        return np.clip((best + 1) / 2, 0.0, 1.0)


@pyinstance.hookimpl
def pyinstance_register_backbones(register) -> None:
    register("example_tiny", TinyBackbone)


@pyinstance.hookimpl
def pyinstance_register_miners(register) -> None:
    register("example_centroid", CentroidMiner)


@pyinstance.hookimpl
def pyinstance_register_classifiers(register) -> None:
    register("example_local_centroid", LocalCentroidClassifier)


@pyinstance.hookimpl
def pyinstance_register_rerankers(register) -> None:
    register("example_cosine", CosineReranker)
