"""Seeded batches of sample indices: P instances × K views (online mining), or mined triplets.

A batch is a list of indices into the training set, the same on every process for a given
seed and epoch. An index may appear several times: each appearance becomes its own
augmented view, so an instance with one photo still has K views — its positives are
augmented copies of the same photo.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from pyinstance._validate import check_int


class PKSampler:
    """Every epoch, the instances shuffled into batches of ``instances`` × ``views``.

    Each batch holds ``instances`` distinct instances (the last batch of an epoch may hold
    fewer, never fewer than 2) and ``views`` sample indices of each: its photos in a random
    order, cycled when it has fewer than ``views``.
    """

    def __init__(self, labels: Sequence[int], instances: int, views: int, *, seed: int = 0):
        self.labels = np.asarray(labels, dtype=np.int64)
        if self.labels.ndim != 1 or self.labels.size == 0:
            raise ValueError(f"labels: expected a non-empty 1-D sequence, got {labels!r}")
        self.instances = check_int(instances, "instances", minimum=2)
        self.views = check_int(views, "views", minimum=1)
        self.seed = check_int(seed, "seed", minimum=0)
        classes = np.unique(self.labels)
        if classes.size < 2:
            raise ValueError(f"labels: expected at least 2 instances, got {classes.size}")
        self._members = {int(c): np.flatnonzero(self.labels == c) for c in classes}

    def epoch(self, epoch: int) -> list[list[int]]:
        """The batches of ``epoch`` (deterministic in seed and epoch)."""
        rng = np.random.default_rng([self.seed, check_int(epoch, "epoch", minimum=0)])
        order = rng.permutation(np.array(sorted(self._members)))
        groups = [order[i : i + self.instances] for i in range(0, order.size, self.instances)]
        if len(groups) > 1 and groups[-1].size < 2:
            groups[-2] = np.concatenate([groups[-2], groups[-1]])
            groups.pop()
        batches = []
        for group in groups:
            batch: list[int] = []
            for label in group:
                members = rng.permutation(self._members[int(label)])
                batch.extend(int(members[v % members.size]) for v in range(self.views))
            batches.append(batch)
        return batches

    def __len__(self) -> int:
        return len(self.epoch(0))


def triplet_batches(
    triplets: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    per_batch: int,
    *,
    seed: int,
    epoch: int,
) -> list[list[int]]:
    """Offline-mined (anchor, positive, negative) sample triplets shuffled into batches.

    Each batch lists ``3 × per_batch`` sample indices: anchor, positive and negative of
    each triplet in turn (the positive may be the anchor's own photo: another view of it).
    """
    per_batch = check_int(per_batch, "per_batch", minimum=1)
    anchors, positives, negatives = (t.cpu().numpy() for t in triplets)
    if anchors.size == 0:
        raise ValueError("triplets: offline mining found no triplet")
    rng = np.random.default_rng([check_int(seed, "seed", minimum=0), epoch, 1])
    order = rng.permutation(anchors.size)
    batches = []
    for start in range(0, order.size, per_batch):
        chosen = order[start : start + per_batch]
        rows = np.stack([anchors[chosen], positives[chosen], negatives[chosen]], axis=1)
        batches.append([int(i) for i in rows.reshape(-1)])
    return batches
