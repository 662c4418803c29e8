"""The trainer's arithmetic and bookkeeping, answer by answer: the learning-rate schedule,
micro-batch spans, triplet statistics, parameter groups, the epoch loop's checkpoints and
averages (train_step replaced by a counter), on a tiny network or a bare Trainer."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from pyinstance.models.miners import CurriculumMiner
from pyinstance.train import CheckpointMismatchError, Trainer, load_config
from pyinstance.train.checkpoint import load_checkpoint
from pyinstance.train.config import parse_config
from pyinstance.train.distributed import LocalContext
from pyinstance.train.trainer import CHECKPOINT, MODEL, LearningRateFactor, _rescale


def bare(**train) -> Trainer:
    """A Trainer without a network or data: only the config (``train`` keys) and a context."""
    made = Trainer.__new__(Trainer)
    verification = {"index": "i"} if train.get("objective") == "verification" else {}
    made.config = parse_config(
        {"output": "out", "data": {"source": "p"}, "train": train, "verification": verification},
        base=Path("/"),
    )
    made.context = LocalContext()
    return made


# -- schedule ---------------------------------------------------------------------------------


def test_the_cosine_schedule_falls_from_one_to_zero_over_every_step():
    factors = [LearningRateFactor("cosine", 4)(step) for step in range(6)]
    half = 0.5 * (1 + math.cos(math.pi / 4))  # 0.8536
    assert factors == pytest.approx([1.0, half, 0.5, 1 - half, 0.0, 0.0], abs=1e-12)


def test_the_constant_schedule_is_one():
    assert [LearningRateFactor("constant", 4)(step) for step in (0, 3, 100)] == [1.0] * 3


def test_offline_epochs_count_the_instances_in_batches():
    made = bare(epochs=3, instances_per_batch=4, mining="offline")
    made.steps_per_epoch = None
    made.data = SimpleNamespace(num_classes=10)
    assert made._total_steps() == 9  # ceil(10 / 4) = 3 a epoch
    made.data = SimpleNamespace(num_classes=8)
    assert made._total_steps() == 6
    made.data = SimpleNamespace(num_classes=0)
    assert made._total_steps() == 1
    made.steps_per_epoch = 5
    assert made._total_steps() == 15


# -- micro-batches, triplets, rescaling -------------------------------------------------------


def test_micro_batches_are_runs_of_one_size_at_most_micro_batch_long():
    made = bare(micro_batch=2)
    shapes = [(1, 3, 4, 4)] * 3 + [(1, 3, 4, 5)] * 2 + [(1, 3, 4, 4)]
    views = [torch.zeros(shape) for shape in shapes]
    assert made._micro_batches(views) == [(0, 2), (2, 3), (3, 5), (5, 6)]
    made = bare(micro_batch=3)
    assert made._micro_batches(views) == [(0, 3), (3, 5), (5, 6)]
    assert made._micro_batches([torch.zeros(1, 3, 4, 4)]) == [(0, 1)]
    assert made._micro_batches([]) == []


def test_triplet_statistics_count_the_violated_margins():
    made = bare()
    made.loss = SimpleNamespace(margin=0.1)
    embeddings = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0]])
    # a·n − a·p + margin: (0, 1, 2): .6 − .8 + .1 < 0; (0, 2, 1): .8 − .6 + .1 > 0;
    # (3, 2, 1): .6 − .8 + .1 < 0; (3, 1, 0): 0 − .6 + .1 < 0; (1, 0, 2): .96 − .8 + .1 > 0
    triplets = (torch.tensor([0, 0, 3, 3, 1]), torch.tensor([1, 2, 2, 1, 0]))
    triplets += (torch.tensor([2, 1, 1, 0, 2]),)
    assert made._triplet_stats(embeddings, triplets) == {"triplets": 5.0, "active_triplets": 2.0}
    made.loss = SimpleNamespace(margin=0.25)  # (0, 1, 2), (3, 2, 1) at +0.05: active
    assert made._triplet_stats(embeddings, triplets)["active_triplets"] == 4.0
    made.loss = SimpleNamespace()  # no margin: 0
    assert made._triplet_stats(embeddings, triplets)["active_triplets"] == 2.0
    empty = (torch.zeros(0, dtype=torch.long),) * 3
    assert made._triplet_stats(embeddings, empty) == {"triplets": 0.0, "active_triplets": 0.0}


def test_a_triplet_on_the_margin_is_not_active():
    made = bare()
    made.loss = SimpleNamespace(margin=0.5)
    embeddings = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.5, 0.0]])
    triplets = (torch.tensor([0]), torch.tensor([1]), torch.tensor([2]))
    assert made._triplet_stats(embeddings, triplets)["active_triplets"] == 0.0


def test_offline_batches_are_consecutive_triplets_and_online_ones_are_mined():
    made = bare(mining="offline")
    made.needs_triplets = True
    anchors, positives, negatives = made._triplets(torch.zeros(9, 2), torch.zeros(9), 9)
    assert anchors.tolist() == [0, 3, 6]
    assert positives.tolist() == [1, 4, 7] and negatives.tolist() == [2, 5, 8]
    made = bare()
    made.needs_triplets = True
    calls = []
    made.miner = lambda embeddings, labels: calls.append((embeddings, labels)) or "mined"
    embeddings = torch.ones(4, 2, requires_grad=True)
    assert made._triplets(embeddings, torch.arange(4), 4) == "mined"
    assert not calls[0][0].requires_grad and calls[0][1].tolist() == [0, 1, 2, 3]
    made.needs_triplets = False
    assert made._triplets(embeddings, torch.arange(4), 4) is None


def test_the_local_offset_is_the_rows_of_the_ranks_before():
    made = bare()
    made.device = torch.device("cpu")
    made.context = SimpleNamespace(rank=2, gather=lambda local: torch.tensor([3, 4, local[0]]))
    assert made._local_offset(5) == 7
    made.context = LocalContext()
    assert made._local_offset(5) == 0


def test_rescaled_images_keep_at_least_32_pixels_a_side():
    images = torch.full((2, 3, 50, 70), 0.25)
    assert _rescale(images, 2.0).shape == (2, 3, 100, 140)
    assert _rescale(images, 0.9).shape == (2, 3, 45, 63)
    assert _rescale(images, 0.5).shape == (2, 3, 32, 35)
    assert _rescale(images, 0.1).shape == (2, 3, 32, 32)
    assert torch.allclose(_rescale(images, 0.5), torch.full((2, 3, 32, 35), 0.25))
    ramp = torch.linspace(0, 1, 64).repeat(1, 1, 64, 1)
    expected = torch.nn.functional.interpolate(
        ramp, size=(32, 32), mode="bilinear", antialias=True, align_corners=False
    )
    assert torch.equal(_rescale(ramp, 0.5), expected)
    # anti-aliased: inside, each output pixel of a ramp is the mean of its 2 input pixels
    means = ramp[0, 0, 0].reshape(32, 2).mean(1)
    assert torch.allclose(expected[0, 0, 0, 1:-1], means[1:-1], atol=1e-6)


# -- set-up checks on a bare trainer ----------------------------------------------------------


class Classifier(nn.Module):
    def __init__(self, classes):
        super().__init__()
        self.out_channels = classes


def test_the_classifier_is_the_heads_else_the_backbones():
    made = bare()
    made.head, made.backbone = SimpleNamespace(classifier="h"), SimpleNamespace(classifier="b")
    assert made._classifier() == "h"
    made.head = SimpleNamespace()
    assert made._classifier() == "b"
    made.backbone = SimpleNamespace(classifier=None)
    with pytest.raises(ValueError, match="^model: neither head 'gem' nor backbone"):
        made._classifier()


@pytest.mark.parametrize(
    ("train", "logits", "head", "message"),
    [
        ({"objective": "verification"}, None, {}, "^train.objective: 'verification'"),
        ({"objective": "classifier"}, "image", {}, "^train.loss: the classifier objective"),
        ({"objective": "classifier"}, None, {}, "^train.loss: the classifier objective"),
        ({"objective": "metric"}, "map", {}, "^train.objective: 'triplet_margin' scores"),
        ({"objective": "metric"}, "regions", {}, "^model.head: 'triplet_margin' needs region"),
        ({}, "image", {"classifier": Classifier(3)}, r"^model.head_params.num_classes: .* 3 cl"),
    ],
)
def test_objectives_and_losses_that_do_not_fit_are_refused(train, logits, head, message):
    made = bare(**train)
    made.loss_logits = logits
    made.head = SimpleNamespace(**head)
    made.backbone = SimpleNamespace(classifier=Classifier(4))
    made.data = SimpleNamespace(num_classes=4)
    with pytest.raises(ValueError, match=message):
        made._check_objective()


def test_fitting_objectives_pass_the_checks():
    made = bare(objective="classifier")
    made.loss_logits = "map"
    made.head = SimpleNamespace()
    made.backbone = SimpleNamespace(classifier=Classifier(4))
    made.data = SimpleNamespace(num_classes=4)
    made._check_objective()
    made.data = SimpleNamespace(num_classes=5)
    with pytest.raises(ValueError, match=r"^model.backbone_params.num_classes: .* 4 classes"):
        made._check_objective()
    made = bare()
    made.loss_logits = "regions"
    made.head = SimpleNamespace(forward_regions=None, classifier=Classifier(4))
    made.data = SimpleNamespace(num_classes=4)
    made._check_objective()
    made.loss_logits = None
    made.head = SimpleNamespace()
    made._check_objective()


def test_the_miner_follows_mining_and_the_curriculum():
    made = bare()
    made.needs_triplets = False
    assert made._miner() is None
    made = bare(mining="offline")
    made.needs_triplets = True
    assert type(made._miner()).__name__ == "OfflineMiner"
    made = bare(miner="batch_hard")
    made.needs_triplets = True
    assert type(made._miner()).__name__ == "BatchHardMiner"
    made = bare(miner="batch_hard", hard_from_epoch=2, hard_miner="batch_all")
    made.needs_triplets = True
    miner = made._miner()
    assert isinstance(miner, CurriculumMiner)
    stages = [(until, type(m).__name__) for until, m in miner._stages]
    assert stages == [(2, "BatchHardMiner"), (None, "BatchAllMiner")]


def test_parameter_groups_split_backbone_and_head_and_skip_frozen_ones():
    made = bare(lr_backbone=0.1, lr_head=0.2)
    shared = nn.Linear(2, 2)
    made.backbone = nn.Sequential(nn.Linear(2, 2), shared, nn.Linear(2, 2))
    made.head = nn.Sequential(shared, nn.Linear(2, 1))
    made.backbone[0].weight.requires_grad_(False)
    made.head[1].bias.requires_grad_(False)
    groups = made._parameter_groups()
    assert [(g["name"], g["lr"]) for g in groups] == [("backbone", 0.1), ("head", 0.2)]
    backbone = [made.backbone[0].bias, made.backbone[2].weight, made.backbone[2].bias]
    assert [id(p) for p in groups[0]["params"]] == [id(p) for p in backbone]
    head = [shared.weight, shared.bias, made.head[1].weight]
    assert [id(p) for p in groups[1]["params"]] == [id(p) for p in head]
    for module in made.backbone:
        module.requires_grad_(False)
    assert [g["name"] for g in made._parameter_groups()] == ["head"]
    made.head.requires_grad_(False)
    with pytest.raises(ValueError, match="^model.trainable_from: every parameter is frozen"):
        made._parameter_groups()
    made.backbone[2].requires_grad_(True)
    assert [g["name"] for g in made._parameter_groups()] == ["backbone"]


# -- a tiny network: state, resume, the loop --------------------------------------------------


@pytest.fixture
def tiny(tiny_config):
    def make(**train) -> Trainer:
        return Trainer(load_config(tiny_config(instances=5, train=train)))

    return make


def test_batchnorm_is_frozen_below_eight_images_a_micro_batch_unless_told(tiny):
    assert tiny(micro_batch=7).freeze_batchnorm is True
    assert tiny(micro_batch=8).freeze_batchnorm is False
    assert tiny(micro_batch=8, freeze_batchnorm=True).freeze_batchnorm is True
    assert tiny(micro_batch=1, freeze_batchnorm=False).freeze_batchnorm is False


def test_a_new_trainer_starts_at_zero_with_online_epochs(tiny):
    made = tiny(instances_per_batch=2, lr_backbone=0.01, lr_head=0.02, weight_decay=0.5)
    # 5 instances in P = 2: batches of 2 and 3 (the single one joins)
    assert made.steps_per_epoch == 2 == len(made.sampler.epoch(0))
    assert (made.step, made.epoch, made.batch_in_epoch) == (0, 0, 0)
    assert made.epoch_batches is None and made.history == [] and made._running == {}
    assert [g["lr"] for g in made.optimizer.param_groups] == [0.01, 0.02]
    assert [g["weight_decay"] for g in made.optimizer.param_groups] == [0.5, 0.5]
    assert made.sampler.seed == 3 and made.sampler.views == 2 and made.sampler.instances == 2
    assert made.views.mean == tuple(made.backbone.input_mean) == (0.5, 0.5, 0.5)  # not ImageNet
    assert made.views.std == tuple(made.backbone.input_std)
    offline = tiny(mining="offline")
    assert offline.steps_per_epoch is None


def fake_steps(made: Trainer, losses):
    """Replace train_step: step n returns loss losses[n] and 2 triplets, 1 active."""
    seen = []

    def step(batch):
        seen.append(list(batch))
        return {"loss": losses[len(seen) - 1], "triplets": 2.0, "active_triplets": 1.0}

    made.train_step = step
    return seen


def test_the_loop_averages_each_epochs_statistics_and_writes_its_files(tiny):
    made = tiny(epochs=2, instances_per_batch=2)
    checkpoints = []
    original = made.save_checkpoint
    made.save_checkpoint = lambda: checkpoints.append(made.step) or original()
    seen = fake_steps(made, [1.0, 3.0, 5.0, 9.0])
    result = made.fit()
    assert seen == made.sampler.epoch(0) + made.sampler.epoch(1)
    assert result.steps == made.step == 4 and made.epoch == 2
    rows = [{k: v for k, v in row.items() if k != "seconds"} for row in result.epochs]
    assert rows == [
        {"epoch": 1, "step": 2, "loss": 2.0, "triplets": 2.0, "active_triplets": 1.0},
        {"epoch": 2, "step": 4, "loss": 7.0, "triplets": 2.0, "active_triplets": 1.0},
    ]
    assert checkpoints == [2, 4]  # one at every epoch's end
    output = made.output
    assert result.model_path == output / MODEL and result.model_path.is_file()
    lines = (output / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["loss"] for line in lines] == [2.0, 7.0]
    assert made.epoch_batches is None and made._running == {}
    assert result.skipped == 0


def test_the_loop_stops_at_max_steps_and_checkpoints_every_n_steps(tiny):
    made = tiny(epochs=3, instances_per_batch=2, max_steps=5, checkpoint_steps=2)
    checkpoints = []
    original = made.save_checkpoint
    made.save_checkpoint = lambda: checkpoints.append((made.epoch, made.step)) or original()
    fake_steps(made, [1.0] * 6)
    result = made.fit()
    assert result.steps == 5
    # steps 2 (every 2), 2 (epoch 1 ended: epoch 1 next), 4 (every 2), 4 (epoch 2 ended),
    # 5 (max_steps, in epoch 3)
    assert checkpoints == [(0, 2), (1, 2), (1, 4), (2, 4), (2, 5)]
    assert [row["epoch"] for row in result.epochs] == [1, 2]
    assert (made.epoch, made.batch_in_epoch) == (2, 1)
    assert made._running == {"loss": 1.0, "triplets": 2.0, "active_triplets": 1.0, "batches": 1.0}
    resumed = Trainer(made.config)
    assert resumed.resume()
    assert (resumed.step, resumed.epoch, resumed.batch_in_epoch) == (5, 2, 1)
    assert resumed.epoch_batches == made.epoch_batches and resumed.history == made.history
    assert resumed._running == made._running


def test_a_resumed_loop_continues_its_epoch(tiny):
    made = tiny(epochs=2, instances_per_batch=2, max_steps=1)
    fake_steps(made, [4.0])
    made.fit()
    resumed = Trainer(load_config(made.config.path, **{"train.max_steps": ""}))
    assert resumed.resume()
    seen = fake_steps(resumed, [2.0, 6.0, 8.0])
    result = resumed.fit()
    assert seen == [resumed.sampler.epoch(0)[1], *resumed.sampler.epoch(1)]
    assert [row["loss"] for row in result.epochs] == [3.0, 7.0]


def test_the_miner_is_told_every_epoch(tiny):
    made = tiny(epochs=3, instances_per_batch=5, hard_from_epoch=1)
    epochs = []
    made.miner = SimpleNamespace(set_epoch=epochs.append)
    fake_steps(made, [1.0] * 3)
    made.fit()
    assert epochs == [0, 1, 2]


def test_state_round_trips_through_a_checkpoint(tiny):
    made = tiny(epochs=2)
    made.step, made.epoch, made.batch_in_epoch = 3, 1, 1
    made.epoch_batches, made.history, made._running = [[0, 1], [2, 3]], [{"loss": 1.0}], {"a": 2.0}
    with torch.no_grad():
        next(made.backbone.parameters()).add_(1.0)
    assert made.save_checkpoint() == made.output / CHECKPOINT
    other = Trainer(made.config)
    assert other.resume()
    assert (other.step, other.epoch, other.batch_in_epoch) == (3, 1, 1)
    assert other.epoch_batches == [[0, 1], [2, 3]] and other.history == [{"loss": 1.0}]
    assert other._running == {"a": 2.0}
    for mine, theirs in zip(made.backbone.parameters(), other.backbone.parameters(), strict=True):
        assert torch.equal(mine, theirs)
    assert other.scheduler.state_dict() == made.scheduler.state_dict()


def test_resume_without_a_checkpoint_is_false_and_a_foreign_one_raises(tiny, tmp_path):
    made = tiny()
    assert made.resume() is False
    assert made.resume(tmp_path / "none.pt") is False
    made.save_checkpoint()
    assert made.resume(str(made.output / CHECKPOINT)) is True
    other = Trainer(load_config(made.config.path, **{"model.head": "spoc"}))
    with pytest.raises(CheckpointMismatchError, match="head: checkpoint 'gem', config 'spoc'"):
        other.resume()
    (made.output / CHECKPOINT).write_bytes(b"broken")
    with pytest.raises(ValueError, match="^checkpoint: cannot read"):
        made.resume()


def cosine_rates(base: float, total: int, steps: range) -> list[float]:
    return [base * 0.5 * (1 + math.cos(math.pi * min(step, total) / total)) for step in steps]


def scheduled_rates(made: Trainer, steps: int) -> list[float]:
    """The learning rates (backbone, head) at each of ``steps`` scheduler steps, in a row."""
    rates = []
    for _ in range(steps):
        rates += [group["lr"] for group in made.optimizer.param_groups]
        made.optimizer.step()
        made.scheduler.step()
    return rates


def test_the_learning_rates_follow_the_schedule_through_a_checkpoint(tiny):
    made = tiny(epochs=2, instances_per_batch=2, lr_backbone=0.01, lr_head=0.02)
    # 5 instances, P = 2: 2 batches an epoch, 4 steps in all; the factor stays 0 after them
    rates = scheduled_rates(made, 3)
    made.save_checkpoint()
    rates += scheduled_rates(made, 3)
    expected = zip(cosine_rates(0.01, 4, range(6)), cosine_rates(0.02, 4, range(6)), strict=True)
    assert rates == pytest.approx([rate for pair in expected for rate in pair], abs=1e-15)
    state = load_checkpoint(made.output / CHECKPOINT, made.config.recipe_dict())
    # one factor for each group (backbone, head)
    assert state["scheduler"]["lr_lambdas"] == [{"scheduler": "cosine", "total": 4}] * 2
    resumed = Trainer(made.config)
    assert resumed.resume()
    assert scheduled_rates(resumed, 3) == pytest.approx(rates[6:], abs=1e-15)
    constant = tiny(scheduler="constant", lr_backbone=0.01, lr_head=0.02)
    assert scheduled_rates(constant, 3) == [0.01, 0.02] * 3


def bar_states(err: str) -> list[tuple[str, str, str | None]]:
    """(description, done/total, loss shown) of every state tqdm drew, in order."""
    pattern = r"(epoch \d+/\d+): +\d+%\|[^|]*\| (\d+/\d+) \[[^\]]*?(?:loss=([\d.]+))?\]"
    return re.findall(pattern, err)


def test_the_progress_bar_counts_each_epochs_batches_and_shows_the_loss(tiny, capsys):
    made = tiny(epochs=2, instances_per_batch=2, max_steps=1, progress=True)
    fake_steps(made, [4.0])
    made.fit()
    err = capsys.readouterr().err
    assert "?batch/s" in err  # the unit
    assert bar_states(err) == [
        ("epoch 1/2", "0/2", ""),
        ("epoch 1/2", "1/2", "4.0000"),
        ("epoch 1/2", "1/2", "4.0000"),  # closed
    ]
    resumed = Trainer(load_config(made.config.path, **{"train.max_steps": ""}))
    assert resumed.resume()
    fake_steps(resumed, [2.0, 6.0, 8.0])
    resumed.fit()
    assert bar_states(capsys.readouterr().err) == [
        ("epoch 1/2", "1/2", ""),  # the resumed epoch starts at its next batch
        ("epoch 1/2", "2/2", "2.0000"),
        ("epoch 1/2", "2/2", "2.0000"),
        ("epoch 2/2", "0/2", ""),
        ("epoch 2/2", "1/2", "6.0000"),
        ("epoch 2/2", "2/2", "8.0000"),
        ("epoch 2/2", "2/2", "8.0000"),
    ]
    quiet = tiny(epochs=1, instances_per_batch=2)
    fake_steps(quiet, [1.0, 1.0])
    quiet.fit()
    assert capsys.readouterr().err == ""


def test_resume_reads_the_checkpoint_it_is_given(tiny, tmp_path):
    made = tiny()
    made.step = 7
    made.save_checkpoint()
    moved = tmp_path / "elsewhere.pt"
    (made.output / CHECKPOINT).rename(moved)
    other = Trainer(made.config)
    assert other.resume() is False  # none in the output folder
    assert other.resume(moved) is True and other.step == 7


def test_each_epochs_row_has_the_seconds_since_the_start(tiny, monkeypatch):
    import pyinstance.train.trainer as module

    made = tiny(epochs=2, instances_per_batch=2)
    fake_steps(made, [1.0] * 4)
    ticks = iter([100.0, 104.25, 109.5, 110.0])  # start, two epochs' ends, the finish
    monkeypatch.setattr(module.time, "perf_counter", lambda: next(ticks))
    result = made.fit()
    assert [row["seconds"] for row in result.epochs] == [4.2, 9.5]
    assert result.seconds == 10.0
