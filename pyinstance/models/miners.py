"""Triplet miners: thin wrappers over :func:`pyinstance.ops.triplet_mine`, plus random and curriculum.

A miner is called ``miner(embeddings, labels, ref_embeddings=None, ref_labels=None)`` and
returns int64 index tensors (anchors, positives, negatives) on the embeddings' device, a
format pytorch-metric-learning's losses accept as ``indices_tuple`` too.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch

from pyinstance._validate import check_choice, check_float, check_int, check_optional_int
from pyinstance.models.contracts import MinerContract, Triplets
from pyinstance.ops import MiningWarning, triplet_mine


def _threads(threads: Any) -> int | None:
    return check_optional_int(threads, "threads", minimum=1)


class TripletMiner:
    """Runs one ``triplet_mine`` strategy with fixed options under ``torch.no_grad``.

    Subclasses check their arguments with :mod:`pyinstance._validate` (numpy scalars
    accepted, booleans refused) and pass plain ints and floats on.
    """

    strategy: str = ""

    def __init__(self, **options: Any):
        self.options = options
        # Fail at construction, not in the training loop: a tiny two-class batch validates
        # every option the kernel checks.
        probe = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MiningWarning)
            triplet_mine(probe, torch.tensor([0, 0, 1, 1]), strategy=self.strategy, **options)

    def __call__(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        ref_embeddings: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> Triplets:
        with torch.no_grad():
            return triplet_mine(
                embeddings.detach(),
                labels,
                strategy=self.strategy,
                ref_embeddings=None if ref_embeddings is None else ref_embeddings.detach(),
                ref_labels=ref_labels,
                **self.options,
            )

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({options})"


class BatchHardMiner(TripletMiner):
    """Per anchor its least similar positive and most similar negative (Hermans et al.)."""

    strategy = "batch_hard"

    def __init__(self, *, threads: int | None = None):
        super().__init__(threads=_threads(threads))


class HardNegativeMiner(TripletMiner):
    """Every positive pair with the anchor's most similar negative."""

    strategy = "hard_negative"

    def __init__(self, *, threads: int | None = None):
        super().__init__(threads=_threads(threads))


class SemiHardMiner(TripletMiner):
    """Every positive pair with the most similar negative still less similar than the positive.

    ``fallback="easiest"`` (FaceNet) gives pairs without one the anchor's least similar
    negative; ``"drop"`` drops them.
    """

    strategy = "semihard"

    def __init__(self, *, fallback: str = "easiest", threads: int | None = None):
        fallback = check_choice(fallback, "fallback", ("easiest", "drop"))
        super().__init__(semihard_fallback=fallback, threads=_threads(threads))


class BatchAllMiner(TripletMiner):
    """Every triplet with a positive hinge, or a uniform sample of ``max_triplets`` of them.

    ``margin`` is the hinge margin, a finite number >= 0 (as for the triplet loss).
    """

    strategy = "batch_all"

    def __init__(
        self,
        *,
        margin: float = 0.1,
        max_triplets: int | None = None,
        seed: int | None = None,
        threads: int | None = None,
    ):
        super().__init__(
            margin=check_float(margin, "margin", minimum=0),
            max_triplets=check_optional_int(max_triplets, "max_triplets", minimum=1),
            seed=check_optional_int(seed, "seed", minimum=0, maximum=2**64 - 1),
            threads=_threads(threads),
        )


class OfflineMiner(TripletMiner):
    """Dataset-level mining (Gordo et al.): n easiest positives × m hardest negatives, best o.

    Call it once per epoch on the descriptors of the whole training set (optionally against
    a separate reference set).
    """

    strategy = "offline"

    def __init__(
        self,
        *,
        n_pos: int = 5,
        n_neg: int = 20,
        n_triplets: int | None = None,
        threads: int | None = None,
    ):
        super().__init__(
            n_pos=check_int(n_pos, "n_pos", minimum=1),
            n_neg=check_int(n_neg, "n_neg", minimum=1),
            n_triplets=check_optional_int(n_triplets, "n_triplets", minimum=1),
            threads=_threads(threads),
        )


class RandomMiner:
    """``per_anchor`` uniformly random (positive, negative) pairs for every anchor that has both.

    With ``seed`` the generator restarts at every call (the same batch gives the same
    triplets); without, it draws from torch's global generator.
    """

    def __init__(self, *, per_anchor: int = 1, seed: int | None = None):
        self.per_anchor = check_int(per_anchor, "per_anchor", minimum=1)
        self.seed = check_optional_int(seed, "seed", minimum=0, maximum=2**64 - 1)

    def __call__(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        ref_embeddings: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> Triplets:
        # Validation (shapes, devices, NaN, one class) is triplet_mine's: batch_hard is cheap
        # and leaves the same anchors.
        embeddings = embeddings.detach()
        if ref_embeddings is not None:
            ref_embeddings = ref_embeddings.detach()
        valid = triplet_mine(
            embeddings, labels, strategy="batch_hard",
            ref_embeddings=ref_embeddings, ref_labels=ref_labels,
        )[0]  # fmt: skip
        device = embeddings.device
        lab = torch.as_tensor(labels, device=device).long()
        same_set = ref_labels is None
        ref_lab = lab if same_set else torch.as_tensor(ref_labels, device=device).long()
        order = torch.argsort(ref_lab, stable=True)  # references grouped by label
        start = torch.searchsorted(ref_lab[order], lab)  # each anchor's label range
        end = torch.searchsorted(ref_lab[order], lab, right=True)
        anchors = valid.repeat_interleave(self.per_anchor)
        if anchors.numel() == 0:
            return anchors, anchors.clone(), anchors.clone()
        generator = torch.Generator(device=device)
        if self.seed is None:
            generator.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        else:
            generator.manual_seed(self.seed)
        s, e = start[anchors], end[anchors]
        n_pos = e - s - int(same_set)
        n_neg = ref_lab.numel() - (e - s)
        u = torch.rand(anchors.numel(), 2, generator=generator, device=device, dtype=torch.float64)
        pos_rank = torch.minimum((u[:, 0] * n_pos).long(), n_pos - 1)
        neg_rank = torch.minimum((u[:, 1] * n_neg).long(), n_neg - 1)
        pos_at = s + pos_rank
        if same_set:  # skip the anchor's own place in its label range
            place = torch.empty_like(order)
            place[order] = torch.arange(order.numel(), device=device)
            pos_at = pos_at + (pos_at >= place[anchors]).long()
        neg_at = torch.where(neg_rank < s, neg_rank, neg_rank + (e - s))
        return anchors, order[pos_at], order[neg_at]

    def __repr__(self) -> str:
        return f"RandomMiner(per_anchor={self.per_anchor}, seed={self.seed})"


class CurriculumMiner:
    """Switches miners by epoch, e.g. semi-hard for 2 epochs then hard negatives.

    ``schedule`` lists ``(until_epoch, miner)`` stages in order: a stage is used while
    ``epoch < until_epoch`` (epochs count from 0); the last stage has ``until_epoch=None``.
    ``miner`` is a miner object (names are resolved by ``get_miner("curriculum", ...)``).
    Call :meth:`set_epoch` at the start of every epoch.
    """

    def __init__(self, schedule: Sequence[tuple[int | None, MinerContract]]):
        stages = list(schedule)
        if not stages:
            raise ValueError("schedule: expected at least one (until_epoch, miner) stage")
        self._stages: list[tuple[int | None, MinerContract]] = []
        previous = 0
        for position, stage in enumerate(stages):
            if not isinstance(stage, (tuple, list)) or len(stage) != 2:
                raise ValueError(
                    f"schedule[{position}]: expected (until_epoch, miner), got {stage!r}"
                )
            until, miner = stage
            last = position == len(stages) - 1
            if last != (until is None):
                raise ValueError(
                    f"schedule[{position}]: only the last stage has until_epoch=None, got {until!r}"
                )
            if until is not None:
                until = check_int(until, f"schedule[{position}] until_epoch", minimum=previous + 1)
                previous = until
            if isinstance(miner, str) or not callable(miner):
                raise TypeError(
                    f"schedule[{position}]: expected a miner object (callable), got {miner!r}; "
                    'resolve names with get_miner("curriculum", schedule=...)'
                )
            self._stages.append((until, miner))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the stage for ``epoch`` (>= 0)."""
        self.epoch = check_int(epoch, "epoch", minimum=0)

    @property
    def current(self) -> MinerContract:
        """The miner of the current epoch."""
        for until, miner in self._stages:
            if until is None or self.epoch < until:
                return miner
        raise AssertionError("unreachable: the last stage has no end")

    def __call__(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        ref_embeddings: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> Triplets:
        return self.current(embeddings, labels, ref_embeddings, ref_labels)

    def __repr__(self) -> str:
        return f"CurriculumMiner(epoch={self.epoch}, stages={self._stages!r})"
