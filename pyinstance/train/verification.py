"""Training the verification re-ranker of an index on the collection itself.

``train.objective = "verification"`` (see :class:`~pyinstance.train.config.VerificationConfig`):

1. views: every training photo becomes ``verification.views`` views (the trainer's
   :class:`~pyinstance.train.views.ViewMaker`: augmented, and composited into gallery
   scenes with probability ``augment.composite``), described as queries by the index
   (``R`` window descriptors each, in its post-processed space);
2. pairs: each view is searched (``knn_dot`` over its windows, a reference scored by its
   best window, as the index searches) for its ``k`` nearest references, labelled 1 where
   the reference is of the view's instance; and again with its instance left out, all
   labelled 0: the hardest other references, what a photo of an absent object meets;
3. the :class:`~pyinstance.rerank.VerificationNet` is fitted with a class-balanced binary
   cross-entropy (AdamW, ``train.lr_head``, ``train.weight_decay``, ``train.epochs``
   passes), validated after every epoch on the views of held-out instances;
4. the verifier file is written with the index's recipe (``OUTPUT/verifier.pt``), the
   per-epoch metrics beside it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from pyinstance._files import write_atomic
from pyinstance.index import InstanceIndex
from pyinstance.models.backbone import IMAGENET_MEAN, IMAGENET_STD
from pyinstance.ops import knn_dot
from pyinstance.rerank import VerificationNet, VerifierFile
from pyinstance.train.config import Config
from pyinstance.train.data import TrainingSet
from pyinstance.train.metrics import write_metrics
from pyinstance.train.setup import set_up_run
from pyinstance.train.views import ViewMaker, view_generator

#: The verifier file written into the output folder.
VERIFIER = "verifier.pt"
#: The described views kept between runs of the same set-up (the costly part).
VIEWS_CACHE = "verification-views.pt"


@dataclass(frozen=True)
class Pairs:
    """Training examples: per query its windows, its candidates and their labels.

    Attributes:
        queries: ``(M, R, D)`` window descriptors.
        candidates: ``(M, k, D)`` reference descriptors, nearest first.
        labels: ``(M, k)`` 1.0 where the candidate shows the query's object.
        instances: ``(M,)`` instance code of each query's photo (for the validation split).
    """

    queries: torch.Tensor
    candidates: torch.Tensor
    labels: torch.Tensor
    instances: torch.Tensor

    def subset(self, mask: torch.Tensor) -> Pairs:
        return Pairs(
            self.queries[mask], self.candidates[mask], self.labels[mask], self.instances[mask]
        )

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class VerificationResult:
    """What a verification run produced."""

    model_path: Path
    epochs: list[dict[str, Any]]
    seconds: float
    describe_seconds: float
    pairs: int


class VerificationTrainer:
    """Trains the verification re-ranker of ``config.verification.index``.

    Args:
        config: a configuration with ``train.objective = "verification"``.
        training_set: already loaded photos (default: read ``config.data.source``).
        index: the open index (default: open ``config.verification.index``).
    """

    def __init__(
        self,
        config: Config,
        *,
        training_set: TrainingSet | None = None,
        index: InstanceIndex | None = None,
    ):
        if config.train.objective != "verification" or config.verification.index is None:
            raise ValueError(
                "train.objective: VerificationTrainer needs objective = 'verification' and "
                f"verification.index, got {config.train.objective!r}"
            )
        self.config = config
        self.settings = config.verification
        self.index = (
            index if index is not None else InstanceIndex.open(self.settings.index, engine="auto")
        )
        if len(self.index) == 0:
            raise ValueError(f"verification.index: {str(self.index.path)!r} holds no references")
        setup = set_up_run(config, training_set)
        self.device, self.data, self.output = setup.device, setup.data, setup.output
        codes = {name: code for code, name in enumerate(self.index.instances)}
        missing = sorted({name for name in self.data.instances if name not in codes})
        if missing:
            raise ValueError(
                f"data.source: instance(s) {', '.join(missing[:5])} are not in the index "
                f"{str(self.index.path)!r}; train the verifier on the index's own collection"
            )
        self.codes = np.array([codes[self.data.instances[label]] for label in self.data.labels])
        self.views = ViewMaker(
            config.augment, self.data.images, self.data.labels, mean=IMAGENET_MEAN, std=IMAGENET_STD
        )

    # -- data -----------------------------------------------------------------------------
    def describe_views(self) -> tuple[np.ndarray, np.ndarray]:
        """``(V, R, D)`` query descriptors of every view and ``(V,)`` instance codes, read
        from the output folder's cache when it was made by the same set-up."""
        key = json.dumps(
            {
                "recipe": self.index.recipe.to_json(),
                "index_version": self.index.version(),
                "augment": self.config.to_dict()["augment"],
                "data": self.config.to_dict()["data"],
                "views": self.settings.views,
                "seed": self.config.seed,
            },
            sort_keys=True,
        )
        cache = self.output / VIEWS_CACHE
        if cache.is_file():
            saved = torch.load(cache, map_location="cpu", weights_only=True)
            if isinstance(saved, dict) and saved.get("key") == key:
                return saved["queries"].numpy(), saved["codes"].numpy()
        described, codes = [], []
        total = len(self.data) * self.settings.views
        with tqdm(
            total=total, desc="describe views", disable=not self.config.train.progress
        ) as bar:
            for photo in range(len(self.data)):
                for view in range(self.settings.views):
                    image = self.views.image(
                        photo, view_generator(self.config.seed, 0, photo, view)
                    )
                    described.append(self.index.describe_queries([image])[0])
                    codes.append(self.codes[photo])
                    bar.update(1)
        queries, instance_codes = np.stack(described), np.asarray(codes, np.int64)
        buffer = _torch_bytes(
            {
                "key": key,
                "queries": torch.from_numpy(queries),
                "codes": torch.from_numpy(instance_codes),
            }
        )
        write_atomic(cache, buffer)
        return queries, instance_codes

    def mine(self, queries: np.ndarray, codes: np.ndarray) -> Pairs:
        """Each view against its ``k`` nearest references, and again with its instance left
        out (see the module doc); candidates found with ``knn_dot``."""
        references = self.index.descriptors()
        reference_codes = self.index.labels()
        n = references.shape[0]
        k = min(self.settings.candidates, n)
        widest = int(np.bincount(reference_codes[reference_codes >= 0]).max())
        found = min(n, k + widest)  # enough to keep k once the instance is left out
        windows = queries.shape[1]
        scores, rows = knn_dot(queries.reshape(-1, queries.shape[2]), references, found)
        scores = scores.reshape(len(queries), windows * found)
        rows = rows.reshape(len(queries), windows * found)
        out_queries, out_candidates, out_labels, out_instances = [], [], [], []
        for view, code in enumerate(codes):
            best = np.full(n, -np.inf, np.float32)
            np.maximum.at(best, rows[view], scores[view])
            order = np.argsort(-best, kind="stable")
            order = order[np.isfinite(best[order])]
            present = order[:k]
            absent = order[reference_codes[order] != code][:k]
            for chosen in (present, absent):
                if chosen.size < k:
                    continue  # a collection too small to leave the instance out
                out_queries.append(queries[view])
                out_candidates.append(references[chosen])
                out_labels.append((reference_codes[chosen] == code).astype(np.float32))
                out_instances.append(code)
        if not out_labels:
            raise ValueError("verification: no training pairs (is the collection empty?)")
        return Pairs(
            torch.from_numpy(np.stack(out_queries)),
            torch.from_numpy(np.stack(out_candidates)),
            torch.from_numpy(np.stack(out_labels)),
            torch.as_tensor(out_instances),
        )

    def split(self, pairs: Pairs) -> tuple[Pairs, Pairs | None]:
        """Training pairs and the held-out instances' pairs (None: nothing held out)."""
        instances = torch.unique(pairs.instances)
        held = round(self.settings.validation_fraction * instances.numel())
        if held == 0 or held == instances.numel():
            return pairs, None
        generator = torch.Generator().manual_seed(self.config.seed)
        chosen = instances[torch.randperm(instances.numel(), generator=generator)[:held]]
        out = torch.isin(pairs.instances, chosen)
        return pairs.subset(~out), pairs.subset(out)

    # -- fitting --------------------------------------------------------------------------
    def fit(self) -> VerificationResult:
        """Describe, mine, fit, validate; write the verifier file and the metrics."""
        start = time.perf_counter()
        queries, codes = self.describe_views()
        described = time.perf_counter()
        pairs = self.mine(queries, codes)
        training, validation = self.split(pairs)
        net = VerificationNet(
            int(queries.shape[2]),
            projection=self.settings.projection,
            hidden=self.settings.hidden,
        ).to(self.device)
        train = self.config.train
        optimizer = torch.optim.AdamW(
            net.parameters(), lr=train.lr_head, weight_decay=train.weight_decay
        )
        positives = float(training.labels.sum())
        balance = torch.tensor(
            max(training.labels.numel() - positives, 1.0) / max(positives, 1.0), device=self.device
        )
        generator = torch.Generator().manual_seed(self.config.seed)
        history: list[dict[str, Any]] = []
        for epoch in range(train.epochs):
            net.train()
            order = torch.randperm(len(training), generator=generator)
            total, batches = 0.0, 0
            for first in range(0, len(training), self.settings.batch):
                batch = order[first : first + self.settings.batch]
                logits = net(
                    training.queries[batch].to(self.device),
                    training.candidates[batch].to(self.device),
                )
                loss = F.binary_cross_entropy_with_logits(
                    logits, training.labels[batch].to(self.device), pos_weight=balance
                )
                if not torch.isfinite(loss):
                    raise ValueError(
                        f"verification: the loss became {float(loss.detach())} at epoch {epoch + 1}; "
                        "lower train.lr_head"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach())
                batches += 1
            row: dict[str, Any] = {"epoch": epoch + 1, "loss": total / max(batches, 1)}
            row.update(validate(net, training, "train"))
            if validation is not None:
                row.update(validate(net, validation, "val"))
            history.append(row)
        write_metrics(self.output, history)
        seconds = time.perf_counter() - start
        path = VerifierFile(
            options=net.options(),
            state={name: value.cpu() for name, value in net.state_dict().items()},
            k=self.settings.candidates,
            recipe=self.index.recipe.to_dict(),
            info={
                "config": self.config.to_dict(),
                "index": str(self.index.path),
                "pairs": len(pairs),
                "validation_pairs": 0 if validation is None else len(validation),
                "epochs": history,
                "seconds": round(seconds, 1),
                "describe_seconds": round(described - start, 1),
            },
        ).save(self.output / VERIFIER)
        return VerificationResult(path, history, seconds, described - start, len(pairs))


def validate(net: VerificationNet, pairs: Pairs, prefix: str) -> dict[str, float]:
    """On ``pairs``: ``{prefix}_top1``, the share of queries with their object among the
    candidates whose best-scored candidate is it; ``{prefix}_auroc``, how often a query with
    its object among the candidates has a higher best probability than one without; and
    the same two for the raw similarity (``{prefix}_raw_*``, the best window's), the
    baseline the re-ranker must beat."""
    net.eval()
    device = next(net.parameters()).device
    with torch.no_grad():
        logits = net(pairs.queries.to(device), pairs.candidates.to(device))
    probabilities = torch.sigmoid(logits).cpu()
    raw = torch.einsum("qrd,qkd->qkr", pairs.queries, pairs.candidates).amax(dim=2)
    return {
        **_separation(probabilities, pairs.labels, prefix),
        **_separation(raw, pairs.labels, f"{prefix}_raw"),
    }


def _separation(scores: torch.Tensor, labels: torch.Tensor, prefix: str) -> dict[str, float]:
    known = labels.sum(dim=1) > 0
    best = scores.max(dim=1)
    top1 = labels[torch.arange(labels.shape[0]), best.indices][known]
    out = {f"{prefix}_top1": float(top1.mean()) if top1.numel() else float("nan")}
    inside, outside = best.values[known], best.values[~known]
    if inside.numel() and outside.numel():
        above = (inside[:, None] > outside[None, :]).float().mean()
        ties = (inside[:, None] == outside[None, :]).float().mean()
        out[f"{prefix}_auroc"] = float(above + 0.5 * ties)
    return out


def _torch_bytes(value: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()
