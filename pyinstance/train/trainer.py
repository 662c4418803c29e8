"""The trainer: one shared network fine-tuned with a metric or a classification loss.

Each step takes one global batch of sample indices (the same on every process), makes the
views of this process's share, and:

- ``metric`` objective: describes every view in micro-batches without gradients, gathers
  the descriptors (and the class scores a loss asks for) of all processes, mines triplets
  on the whole batch (or takes the offline-mined ones), computes the loss and its gradient
  with respect to the descriptors, then runs each micro-batch again with gradients and
  back-propagates its rows of that gradient. The parameter gradient equals the one of a
  single big batch, whatever the micro-batch size (exactly, with BatchNorm statistics
  frozen), while only one micro-batch's activations are ever held.
- ``classifier`` objective: the FCN class maps of each view at ``train.scales`` and a
  ``map`` loss (e.g. ``fcn_multiscale_ce``) per micro-batch, accumulated.

Names (backbone, head, loss, miners) are resolved once, in :class:`Trainer`'s constructor.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from pyinstance import plugins
from pyinstance.builtin.miners import curriculum
from pyinstance.extraction import extract
from pyinstance.models.backbone import IMAGENET_MEAN, IMAGENET_STD
from pyinstance.models.trained import TrainedModel, read_model
from pyinstance.train.checkpoint import load_checkpoint, save_checkpoint
from pyinstance.train.config import Config
from pyinstance.train.data import TrainingSet
from pyinstance.train.distributed import LocalContext, ProcessContext, parallel_map
from pyinstance.train.metrics import write_metrics
from pyinstance.train.sampler import PKSampler, triplet_batches
from pyinstance.train.setup import set_up_run
from pyinstance.train.validation import ValidationSet, precision_at_1
from pyinstance.train.views import ViewMaker, view_generator

#: Micro-batches smaller than this freeze BatchNorm statistics when the config says "auto".
BATCHNORM_MIN_BATCH = 8
CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the step, the batch and a hint."""


@dataclass
class TrainResult:
    """What a finished (or stopped) run produced."""

    model_path: Path | None
    steps: int
    epochs: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    skipped: int = 0


@dataclass
class LearningRateFactor:
    """The factor of the learning rates at each step: 1 (``constant``) or a cosine from 1 to 0
    over ``total`` steps. An object of its own (not a method of the trainer), so that the
    scheduler's state, which holds its attributes, pickles."""

    scheduler: str
    total: int

    def __call__(self, step: int) -> float:
        if self.scheduler == "constant":
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * min(step, self.total) / self.total))


class Trainer:
    """Fine-tunes the network of ``config`` on its training set.

    Args:
        config: the validated configuration (:func:`pyinstance.train.load_config`).
        context: the processes taking part (default one: :class:`LocalContext`).
        training_set: already loaded photos (default: read ``config.data.source``).
    """

    def __init__(
        self,
        config: Config,
        *,
        context: ProcessContext | None = None,
        training_set: TrainingSet | None = None,
    ):
        self.config = config
        self.context = context if context is not None else LocalContext()
        train = config.train
        setup = set_up_run(config, training_set)
        self.device, self.data, self.output = setup.device, setup.data, setup.output
        self.validation = (
            ValidationSet.from_manifest(config.data.validation) if config.data.validation else None
        )
        self.backbone, self.head = self._network()
        self.loss = plugins.get_loss(train.loss, **train.loss_params)
        self.loss_logits: str | None = getattr(self.loss, "logits", None)
        self.needs_triplets = bool(getattr(self.loss, "needs_triplets", True))
        self._check_objective()
        self.miner = self._miner()
        self.freeze_batchnorm = (
            train.micro_batch < BATCHNORM_MIN_BATCH
            if train.freeze_batchnorm is None
            else train.freeze_batchnorm
        )
        self.optimizer = torch.optim.AdamW(
            self._parameter_groups(), weight_decay=train.weight_decay
        )
        self.sampler = PKSampler(
            self.data.labels, train.instances_per_batch, train.views_per_instance, seed=config.seed
        )
        self.steps_per_epoch = len(self.sampler) if train.mining == "online" else None
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, LearningRateFactor(train.scheduler, self._total_steps())
        )
        self.views = ViewMaker(
            config.augment,
            self.data.images,
            self.data.labels,
            mean=getattr(self.backbone, "input_mean", IMAGENET_MEAN),
            std=getattr(self.backbone, "input_std", IMAGENET_STD),
        )
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.epoch_batches: list[list[int]] | None = None
        self.history: list[dict[str, Any]] = []
        self._running: dict[str, float] = {}

    # -- set-up ---------------------------------------------------------------------------
    def _network(self) -> tuple[nn.Module, nn.Module]:
        model = self.config.model
        backbone = plugins.get_backbone(model.backbone, **model.backbone_params)
        head = plugins.get_head(model.head, in_channels=backbone.out_channels, **model.head_params)
        if model.init is not None:
            saved = read_model(model.init)
            made = (saved.backbone, saved.backbone_params, saved.head, saved.head_params)
            wanted = (model.backbone, model.backbone_params, model.head, model.head_params)
            if made != wanted:
                raise ValueError(
                    f"model.init: {str(model.init)!r} holds {made[0]}{made[1]} + {made[2]}{made[3]}, "
                    f"not the configured {wanted[0]}{wanted[1]} + {wanted[2]}{wanted[3]}"
                )
            saved.load_into(backbone, head)
        if model.trainable_from is not None:
            if not hasattr(backbone, "set_trainable_from"):
                raise ValueError(
                    f"model.trainable_from: backbone {model.backbone!r} cannot freeze blocks"
                )
            backbone.set_trainable_from(model.trainable_from)
        return backbone.to(self.device), head.to(self.device)

    def _check_objective(self) -> None:
        train = self.config.train
        if train.objective == "verification":
            raise ValueError(
                "train.objective: 'verification' trains an index's re-ranker, not this "
                "network: use pyinstance.train.VerificationTrainer (pyinstance train does)"
            )
        if train.objective == "classifier" and self.loss_logits != "map":
            raise ValueError(
                f"train.loss: the classifier objective needs a loss on FCN class maps "
                f"(logits='map', e.g. fcn_multiscale_ce); {train.loss!r} takes "
                f"logits={self.loss_logits!r}"
            )
        if train.objective == "metric" and self.loss_logits == "map":
            raise ValueError(
                f"train.objective: {train.loss!r} scores class maps; use objective = 'classifier'"
            )
        if self.loss_logits == "regions" and not hasattr(self.head, "forward_regions"):
            raise ValueError(
                f"model.head: {train.loss!r} needs region scores; use a region head "
                f"(topk_region), not {self.config.model.head!r}"
            )
        if self.loss_logits is not None:
            classes = self._classifier().out_channels
            if classes != self.data.num_classes:
                where = "head_params" if hasattr(self.head, "classifier") else "backbone_params"
                raise ValueError(
                    f"model.{where}.num_classes: the class map has {classes} classes but the "
                    f"training set has {self.data.num_classes} instances"
                )

    def _classifier(self) -> nn.Module:
        """The FCN classifier the class-map losses train: the head's own, else the backbone's."""
        classifier = getattr(self.head, "classifier", None) or getattr(
            self.backbone, "classifier", None
        )
        if classifier is None:
            raise ValueError(
                f"model: neither head {self.config.model.head!r} nor backbone "
                f"{self.config.model.backbone!r} has an FCN classifier for {self.config.train.loss!r}"
            )
        return classifier

    def _miner(self) -> Callable[..., Any] | None:
        train = self.config.train
        if not self.needs_triplets:
            return None
        if train.mining == "offline":
            return plugins.get_miner("offline", **train.miner_params)
        first = plugins.get_miner(train.miner, **train.miner_params)
        if train.hard_from_epoch is None:
            return first
        return curriculum([(train.hard_from_epoch, first), (None, train.hard_miner)])

    def _parameter_groups(self) -> list[dict[str, Any]]:
        train = self.config.train
        head_ids = {id(p) for p in self.head.parameters()}
        backbone = [
            p for p in self.backbone.parameters() if p.requires_grad and id(p) not in head_ids
        ]
        head = [p for p in self.head.parameters() if p.requires_grad]
        if not backbone and not head:
            raise ValueError("model.trainable_from: every parameter is frozen; nothing to train")
        groups = []
        if backbone:
            groups.append({"params": backbone, "lr": train.lr_backbone, "name": "backbone"})
        if head:
            groups.append({"params": head, "lr": train.lr_head, "name": "head"})
        return groups

    def _total_steps(self) -> int:
        train = self.config.train
        per_epoch = self.steps_per_epoch or math.ceil(
            self.data.num_classes / train.instances_per_batch
        )
        return max(1, per_epoch * train.epochs)  # max_steps stops early; the schedule stays

    # -- state --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue exactly."""
        return {
            "backbone": self.backbone.state_dict(),
            "head": self.head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "epoch_batches": self.epoch_batches,
            "history": self.history,
            "running": self._running,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.backbone.load_state_dict(state["backbone"])
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.step = state["step"]
        self.epoch = state["epoch"]
        self.batch_in_epoch = state["batch_in_epoch"]
        self.epoch_batches = state["epoch_batches"]
        self.history = list(state["history"])
        self._running = dict(state["running"])

    def save_checkpoint(self) -> Path:
        path = self.output / CHECKPOINT
        if self.context.is_main:
            save_checkpoint(path, self.config.recipe_dict(), self.state_dict())
        self.context.barrier()
        return path

    def resume(self, path: str | Path | None = None) -> bool:
        """Load ``path`` (default the output folder's checkpoint); False when there is none."""
        path = Path(path) if path is not None else self.output / CHECKPOINT
        # The main process reads it and hands it (or its error) to the others.
        loaded: dict[str, Any] | Exception | None = None
        if self.context.is_main and path.is_file():
            try:
                loaded = load_checkpoint(path, self.config.recipe_dict())
            except (ValueError, OSError) as error:
                loaded = error
        loaded = self.context.broadcast(loaded)
        if isinstance(loaded, Exception):
            raise loaded
        if loaded is None:
            return False
        self.load_state_dict(loaded)
        return True

    # -- the loop -------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train until ``train.epochs`` (or ``train.max_steps``); save the model; the result."""
        train = self.config.train
        start = time.perf_counter()
        main = self.context.is_main
        while self.epoch < train.epochs:
            if self.epoch_batches is None:
                self.epoch_batches = self._batches(self.epoch)
                self.batch_in_epoch = 0
                self._running = {}
            if hasattr(self.miner, "set_epoch"):
                self.miner.set_epoch(self.epoch)
            bar = tqdm(
                total=len(self.epoch_batches),
                initial=self.batch_in_epoch,
                desc=f"epoch {self.epoch + 1}/{train.epochs}",
                disable=not (main and train.progress),
                unit="batch",
            )
            with bar:
                while self.batch_in_epoch < len(self.epoch_batches):
                    stats = self.train_step(self.epoch_batches[self.batch_in_epoch])
                    for key, value in stats.items():
                        self._running[key] = self._running.get(key, 0.0) + value
                    self._running["batches"] = self._running.get("batches", 0.0) + 1
                    self.batch_in_epoch += 1
                    self.step += 1
                    bar.update(1)
                    bar.set_postfix(loss=f"{stats['loss']:.4f}")
                    if self.step == train.max_steps:
                        self.save_checkpoint()
                        return self._finish(start)
                    if train.checkpoint_steps and self.step % train.checkpoint_steps == 0:
                        self.save_checkpoint()
            self._end_epoch(time.perf_counter() - start)
        return self._finish(start)

    def _batches(self, epoch: int) -> list[list[int]]:
        if self.config.train.mining == "online":
            return self.sampler.epoch(epoch)
        images = list(self.data.images)
        descriptors = parallel_map(
            self.context,
            len(images),
            lambda indices: extract(
                [images[i] for i in indices],
                self.backbone,
                self.head,
                max_side=self.config.model.max_side,
                device=self.device,
                progress=False,
            )[:, 0],
        )
        labels = torch.tensor(self.data.labels)
        triplets = self.miner(descriptors, labels, descriptors, labels)
        return triplet_batches(
            triplets, self.config.train.instances_per_batch, seed=self.config.seed, epoch=epoch
        )

    def _end_epoch(self, seconds: float) -> None:
        batches = max(self._running.get("batches", 1.0), 1.0)
        row: dict[str, Any] = {
            "epoch": self.epoch + 1,
            "step": self.step,
            "seconds": round(seconds, 1),
            **{k: v / batches for k, v in self._running.items() if k != "batches"},
        }
        if self.validation is not None and self.context.is_main:
            row.update(self.validate())
        self.history.append(row)
        self.epoch += 1
        self.epoch_batches = None
        self.batch_in_epoch = 0
        self._running = {}
        self.save_checkpoint()
        if self.context.is_main:
            write_metrics(self.output, self.history)

    def validate(self) -> dict[str, float]:
        """P@1 of the validation queries against the training photos, now."""
        if self.validation is None:
            raise ValueError("data.validation: no validation manifest configured")
        return precision_at_1(
            self.backbone,
            self.head,
            list(self.data.paths),
            tuple(self.data.instances[label] for label in self.data.labels),
            self.validation,
            max_side=self.config.model.max_side,
        )

    def _finish(self, start: float) -> TrainResult:
        model_path = None
        if self.context.is_main:
            model_path = self.save_model(self.output / MODEL)
        self.context.barrier()
        return TrainResult(
            model_path=model_path,
            steps=self.step,
            epochs=list(self.history),
            seconds=time.perf_counter() - start,
            skipped=len(self.data.skipped),
        )

    def save_model(self, path: str | Path) -> Path:
        """The trained network with its recipe, for ``pyinstance index build --model``."""
        model = self.config.model
        return TrainedModel(
            backbone=model.backbone,
            head=model.head,
            backbone_params=model.backbone_params,
            head_params=model.head_params,
            backbone_state=self.backbone.state_dict(),
            head_state=self.head.state_dict(),
            max_side=model.max_side,
            info={"config": self.config.to_dict(), "steps": self.step, "epochs": self.history},
        ).save(path)

    # -- one step -------------------------------------------------------------------------
    def train_step(self, batch: Sequence[int]) -> dict[str, float]:
        """One optimiser step on the global ``batch`` of sample indices; its statistics."""
        positions = self.context.shard(list(range(len(batch))))
        views = [
            self.views(batch[p], view_generator(self.config.seed, self.epoch, self.step, p))
            for p in positions
        ]
        labels = torch.tensor([self.data.labels[batch[p]] for p in positions], device=self.device)
        self._set_train_mode()
        self.optimizer.zero_grad(set_to_none=True)
        if self.config.train.objective == "classifier":
            stats = self._classifier_step(views, labels, len(batch))
            # Each process holds its share of the loss; every one must see the same total
            # (a NaN on one process stops them all, before the gradient all-reduce).
            stats["loss"] = float(self.context.all_sum(torch.tensor(stats["loss"])))
        else:
            stats = self._metric_step(views, labels, len(batch))
        if not math.isfinite(stats["loss"]):
            raise TrainingDiverged(
                f"loss is {stats['loss']} at step {self.step + 1} (epoch {self.epoch + 1}, batch "
                f"{self.batch_in_epoch + 1}, samples {list(batch)[:8]}...); hint: lower "
                f"train.lr_backbone / train.lr_head or check the images; the last good "
                f"checkpoint {str(self.output / CHECKPOINT)!r} is kept"
            )
        self.context.sum_gradients(p for g in self.optimizer.param_groups for p in g["params"])
        self.optimizer.step()
        if not self.freeze_batchnorm:
            self.context.broadcast_buffers(self.backbone, self.head)
        self.scheduler.step()
        return stats

    def _set_train_mode(self) -> None:
        self.backbone.train()
        self.head.train()
        if self.freeze_batchnorm:
            for module in (*self.backbone.modules(), *self.head.modules()):
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()

    def _micro_batches(self, views: list[torch.Tensor]) -> list[tuple[int, int]]:
        """(start, end) of consecutive views of one size, at most ``micro_batch`` long."""
        size = self.config.train.micro_batch
        spans, start = [], 0
        for end in range(1, len(views) + 1):
            if end == len(views) or end - start == size or views[end].shape != views[start].shape:
                spans.append((start, end))
                start = end
        return spans

    def _forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Descriptors and the class scores the loss needs (``image`` or ``regions``)."""
        features = self.backbone(images)
        if self.loss_logits == "regions":
            pooled = self.head.forward_regions(features)
            return pooled.descriptors, pooled.region_logits
        descriptors = self.head(features)
        if self.loss_logits == "image":
            return descriptors, self._classifier()(features).mean(dim=(2, 3))
        return descriptors, None

    def _metric_step(
        self, views: list[torch.Tensor], labels: torch.Tensor, batch_size: int
    ) -> dict[str, float]:
        spans = self._micro_batches(views)
        recompute = self.config.train.recompute
        rng_states = []
        outputs: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        with torch.set_grad_enabled(not recompute):
            for start, end in spans:
                rng_states.append(torch.get_rng_state())
                outputs.append(self._forward(torch.cat(views[start:end]).to(self.device)))
        after = torch.get_rng_state()
        local = torch.cat([o[0] for o in outputs])
        embeddings = self.context.gather(local)
        all_labels = self.context.gather(labels)
        logits = None
        if self.loss_logits is not None:
            logits = self.context.gather(torch.cat([o[1] for o in outputs]))
        if recompute:  # the loss's gradient is taken at the descriptors, then re-forwarded
            embeddings = embeddings.detach().requires_grad_(True)
            if logits is not None:
                logits = logits.detach().requires_grad_(True)
        triplets = self._triplets(embeddings, all_labels, batch_size)
        kwargs = {"logits": logits} if self.loss_logits is not None else {}
        loss = self.loss(embeddings, all_labels, triplets, **kwargs)
        stats = {"loss": float(loss.detach())}
        if triplets is not None:
            stats.update(self._triplet_stats(embeddings.detach(), triplets))
        if not math.isfinite(stats["loss"]):
            return stats
        if not recompute:
            loss.backward()
            return stats
        inputs = [embeddings] + ([logits] if logits is not None else [])
        gradients = torch.autograd.grad(loss, inputs, allow_unused=True)
        offset = self._local_offset(local.shape[0])
        for (start, end), state in zip(spans, rng_states, strict=True):
            torch.set_rng_state(state)  # dropout draws the same masks as in the first pass
            again = self._forward(torch.cat(views[start:end]).to(self.device))
            rows = slice(offset + start, offset + end)
            tensors = [again[0]] + ([again[1]] if logits is not None else [])
            grads = [
                g[rows] if g is not None else torch.zeros_like(t)
                for g, t in zip(gradients, tensors, strict=True)
            ]
            torch.autograd.backward(tensors, grads)
        torch.set_rng_state(after)
        return stats

    def _local_offset(self, local_rows: int) -> int:
        """Where this process's rows start in the gathered batch."""
        sizes = self.context.gather(torch.tensor([local_rows], device=self.device))
        return int(sizes[: self.context.rank].sum())

    def _triplets(
        self, embeddings: torch.Tensor, labels: torch.Tensor, batch_size: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        if not self.needs_triplets:
            return None
        if self.config.train.mining == "offline":
            anchors = torch.arange(0, batch_size, 3, device=embeddings.device)
            return anchors, anchors + 1, anchors + 2
        return self.miner(embeddings.detach(), labels)

    def _triplet_stats(
        self, embeddings: torch.Tensor, triplets: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    ) -> dict[str, float]:
        anchors, positives, negatives = triplets
        if anchors.numel() == 0:
            return {"triplets": 0.0, "active_triplets": 0.0}
        margin = float(getattr(self.loss, "margin", 0.0))
        anchor = embeddings[anchors]
        hinge = (anchor * embeddings[negatives]).sum(1) - (anchor * embeddings[positives]).sum(1)
        return {
            "triplets": float(anchors.numel()),
            "active_triplets": float((hinge + margin > 0).sum()),
        }

    def _classifier_step(
        self, views: list[torch.Tensor], labels: torch.Tensor, batch_size: int
    ) -> dict[str, float]:
        total = 0.0
        for start, end in self._micro_batches(views):
            images = torch.cat(views[start:end]).to(self.device)
            maps, descriptors = [], None
            for scale in self.config.train.scales:
                scaled = images if scale == 1.0 else _rescale(images, scale)
                features = self.backbone(scaled)
                if descriptors is None:
                    descriptors = self.head(features)
                maps.append(self._classifier()(features))
            loss = self.loss(descriptors, labels[start:end], None, logits=maps)
            share = (end - start) / batch_size
            value = float(loss.detach())
            if not math.isfinite(value):
                return {"loss": value}
            total += value * share
            (loss * share).backward()
        return {"loss": total}


def _rescale(images: torch.Tensor, scale: float) -> torch.Tensor:
    height, width = images.shape[2:]
    size = (max(32, round(height * scale)), max(32, round(width * scale)))
    return F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)
