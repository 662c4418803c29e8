"""One training step of the Trainer, answer by answer, on a bare Trainer with a tiny fixed
network: the accumulated gradient of micro-batches (with and without recomputation) equals
plain autograd on the whole batch written here, dropout draws the same masks in both passes,
the class scores the loss asks for, the classifier objective's weighted per-scale loss, and
what train_step hands the views, the context, the optimiser and the scheduler."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from pyinstance.train import Trainer, TrainingDiverged
from pyinstance.train.config import parse_config
from pyinstance.train.distributed import LocalContext


def bare(**train) -> Trainer:
    made = Trainer.__new__(Trainer)
    made.config = parse_config(
        {"output": "out", "data": {"source": "p"}, "train": train}, base=Path("/")
    )
    made.context = LocalContext()
    made.device = torch.device("cpu")
    made.output = Path("/nowhere")
    made.step, made.epoch, made.batch_in_epoch = 0, 0, 0
    return made


class Backbone(nn.Module):
    """A 1×1 convolution to 4 channels, a BatchNorm and a ReLU: features N×4×H×W."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.conv = nn.Conv2d(3, 4, 1)
        self.norm = nn.BatchNorm2d(4)
        self.classifier = nn.Conv2d(4, 3, 1)

    def forward(self, images):
        return torch.relu(self.norm(self.conv(images)))


class Head(nn.Module):
    """Mean pooling, dropout, a linear layer: descriptors N×3."""

    def __init__(self, dropout=0.0):
        super().__init__()
        torch.manual_seed(6)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(4, 3)

    def forward(self, features):
        return self.fc(self.drop(features.mean((2, 3))))


def triplet_loss(embeddings, labels, triplets, **kwargs):
    """A loss every row of which matters differently (so a misplaced row shows)."""
    anchors, positives, negatives = triplets
    weights = torch.arange(1, embeddings.shape[0] + 1, dtype=embeddings.dtype)[:, None]
    hinge = (embeddings[anchors] * (embeddings[negatives] - embeddings[positives])).sum()
    total = hinge + (weights * embeddings**2).sum() * 0.1
    if "logits" in kwargs and kwargs["logits"] is not None:
        total = total + (kwargs["logits"] * torch.arange(1.0, 4.0)).sum() * 0.3
    return total


def views_of(count, seed=0, size=(5, 6)):
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(1, 3, *size, generator=generator) for _ in range(count)]


TRIPLETS = (torch.tensor([0, 2, 4]), torch.tensor([1, 3, 0]), torch.tensor([2, 4, 1]))


def metric_trainer(*, recompute, dropout=0.0, logits=None, micro_batch=2) -> Trainer:
    made = bare(micro_batch=micro_batch, recompute=recompute)
    made.backbone, made.head = Backbone(), Head(dropout)
    made.loss = triplet_loss
    made.loss_logits = logits
    made.needs_triplets = True
    made.miner = lambda embeddings, labels: TRIPLETS
    made.freeze_batchnorm = True
    made._set_train_mode()
    return made


def expected_gradients(made: Trainer, views, labels, *, seed, logits=None):
    """Plain autograd over the whole batch (micro-batches forwarded in order from ``seed``,
    as the trainer's first pass draws its dropout masks): the gradient of every parameter."""
    backbone, head = Backbone(), Head(made.head.drop.p)
    backbone.load_state_dict(made.backbone.state_dict())
    head.load_state_dict(made.head.state_dict())
    backbone.train(), head.train(), backbone.norm.eval()
    torch.manual_seed(seed)
    descriptors, scores = [], []
    for start, end in made._micro_batches(views):
        features = backbone(torch.cat(views[start:end]))
        descriptors.append(head(features))
        scores.append(backbone.classifier(features).mean(dim=(2, 3)))
    extra = {"logits": torch.cat(scores)} if logits == "image" else {}
    loss = triplet_loss(torch.cat(descriptors), labels, TRIPLETS, **extra)
    loss.backward()
    after = torch.rand(3)
    grads = [p.grad for p in (*backbone.parameters(), *head.parameters())]
    return float(loss.detach()), grads, after


def gradients_of(made: Trainer):
    return [p.grad for p in (*made.backbone.parameters(), *made.head.parameters())]


@pytest.mark.parametrize("recompute", [True, False])
@pytest.mark.parametrize("logits", [None, "image"])
def test_micro_batches_accumulate_the_gradient_of_the_whole_batch(recompute, logits):
    views, labels = views_of(5), torch.tensor([0, 0, 1, 1, 0])
    made = metric_trainer(recompute=recompute, dropout=0.5, logits=logits)
    loss, expected, after = expected_gradients(made, views, labels, seed=11, logits=logits)
    torch.manual_seed(11)
    stats = made._metric_step(views, labels, 5)
    assert stats["loss"] == pytest.approx(loss, rel=1e-6)
    assert stats["triplets"] == 3.0
    got = gradients_of(made)
    if logits is None:  # the classifier is not used: no gradient
        assert got[4] is None and got[5] is None
        got, expected = got[:4] + got[6:], expected[:4] + expected[6:]
    for mine, theirs in zip(got, expected, strict=True):
        assert torch.allclose(mine, theirs, atol=1e-6, rtol=1e-5)
    # the random state continues from the first pass, as without recomputation
    assert torch.equal(torch.rand(3), after)


def test_the_triplet_statistics_are_of_the_gathered_descriptors():
    views, labels = views_of(5, seed=2), torch.tensor([0, 0, 1, 1, 0])
    made = metric_trainer(recompute=True)
    with torch.no_grad():
        descriptors = made.head(made.backbone(torch.cat(views)))
    anchors, positives, negatives = TRIPLETS
    hinge = (descriptors[anchors] * (descriptors[negatives] - descriptors[positives])).sum(1)
    stats = made._metric_step(views, labels, 5)
    assert stats["active_triplets"] == float((hinge > 0).sum())


def test_a_loss_without_triplets_gets_none_and_no_triplet_statistics():
    views, labels = views_of(3), torch.tensor([0, 1, 1])
    made = metric_trainer(recompute=True)
    made.needs_triplets = False
    seen = []

    def loss(embeddings, labels, triplets):
        seen.append((embeddings.shape, labels.tolist(), triplets))
        return (embeddings**2).sum()

    made.loss = loss
    stats = made._metric_step(views, labels, 3)
    assert seen == [(torch.Size([3, 3]), [0, 1, 1], None)]
    assert set(stats) == {"loss"}


def test_a_non_finite_loss_returns_before_any_gradient():
    views, labels = views_of(5), torch.tensor([0, 1, 1, 0, 0])
    for recompute in (True, False):
        made = metric_trainer(recompute=recompute)
        made.loss = lambda embeddings, labels, triplets: embeddings.sum() * float("nan")
        stats = made._metric_step(views, labels, 5)
        assert np.isnan(stats["loss"])
        assert all(g is None for g in gradients_of(made))


class RegionHead(Head):
    def forward_regions(self, features):
        pooled = features.mean((2, 3))
        return SimpleNamespace(descriptors=self.fc(pooled), region_logits=pooled[:, :2] * 2.0)


def test_region_losses_get_the_heads_region_scores():
    made = metric_trainer(recompute=True, logits="regions")
    made.head = RegionHead()
    images = torch.cat(views_of(2))
    descriptors, scores = made._forward(images)
    features = made.backbone(images)
    assert torch.allclose(descriptors, made.head.fc(features.mean((2, 3))))
    assert torch.allclose(scores, features.mean((2, 3))[:, :2] * 2.0)
    made.loss_logits = "image"
    made.head = Head()
    descriptors, scores = made._forward(images)
    assert torch.allclose(scores, made.backbone.classifier(features).mean(dim=(2, 3)))
    made.loss_logits = None
    assert made._forward(images)[1] is None


def test_train_mode_freezes_only_the_batchnorm_statistics_when_told():
    made = metric_trainer(recompute=True)
    made.backbone.eval(), made.head.eval()
    made.freeze_batchnorm = True
    made._set_train_mode()
    assert made.backbone.training and made.head.training and made.head.drop.training
    assert not made.backbone.norm.training and made.backbone.conv.training
    made.freeze_batchnorm = False
    made._set_train_mode()
    assert made.backbone.norm.training


# -- the classifier objective ------------------------------------------------------------------


def test_the_classifier_step_weights_each_micro_batch_by_its_share_at_every_scale():
    made = bare(objective="classifier", micro_batch=2, scales=[1.0, 0.5])
    made.backbone, made.head = Backbone(), Head()
    made.freeze_batchnorm = True
    made._set_train_mode()
    seen = []

    def loss(descriptors, labels, triplets, *, logits):
        seen.append((descriptors.detach().clone(), labels.tolist(), triplets, len(logits)))
        return sum((m * (i + 1)).mean() for i, m in enumerate(logits)) + descriptors.mean()

    made.loss = loss
    views, labels = views_of(3, size=(64, 40)), torch.tensor([2, 0, 1])
    stats = made._classifier_step(views, labels, 3)
    # by hand: micro-batches (0, 2), (2, 3), weights 2/3 and 1/3; maps at 64×40 and 32×32
    backbone, head = Backbone(), Head()
    backbone.norm.eval()
    total = 0.0
    for (start, end), share in (((0, 2), 2 / 3), ((2, 3), 1 / 3)):
        images = torch.cat(views[start:end])
        half = torch.nn.functional.interpolate(
            images, size=(32, 32), mode="bilinear", antialias=True, align_corners=False
        )
        full = backbone(images)
        maps = [backbone.classifier(full), backbone.classifier(backbone(half))]
        value = (maps[0].mean() + 2 * maps[1].mean() + head(full).mean()) * share
        value.backward()
        total += float(value.detach())
    assert stats == {"loss": pytest.approx(total, rel=1e-6)}
    assert [s[1:] for s in seen] == [([2, 0], None, 2), ([1], None, 2)]
    assert torch.allclose(seen[0][0], head(backbone(torch.cat(views[:2]))).detach())
    for mine, theirs in zip(
        gradients_of(made), [*backbone.parameters(), *head.parameters()], strict=True
    ):
        assert torch.allclose(mine, theirs.grad, atol=1e-6)


def test_a_non_finite_classifier_loss_stops_the_step():
    made = bare(objective="classifier", micro_batch=1)
    made.backbone, made.head = Backbone(), Head()
    values = iter([2.0, float("inf"), 5.0])

    def loss(descriptors, labels, triplets, *, logits):
        return descriptors.sum() * 0 + next(values)

    made.loss = loss
    assert made._classifier_step(views_of(3), torch.tensor([0, 1, 2]), 3) == {"loss": float("inf")}


# -- train_step ------------------------------------------------------------------------------


class Recording(LocalContext):
    def __init__(self):
        self.calls = []

    def shard(self, items):
        self.calls.append(("shard", list(items)))
        return list(items)[1:]  # this "rank" holds all but the first

    def all_sum(self, values):
        self.calls.append(("all_sum", float(values)))
        return values * 2

    def sum_gradients(self, parameters):
        self.calls.append(("sum_gradients", len(list(parameters))))

    def broadcast_buffers(self, *modules):
        self.calls.append(("broadcast_buffers", modules))


def stepping_trainer(objective="metric", freeze=True) -> Trainer:
    made = bare(objective=objective, lr_backbone=0.5, lr_head=0.5)
    made.config = parse_config(
        {"output": "out", "seed": 7, "data": {"source": "p"}, "train": {"objective": objective}},
        base=Path("/"),
    )
    made.context = Recording()
    made.step, made.epoch, made.batch_in_epoch = 4, 2, 1
    made.data = SimpleNamespace(labels=(3, 1, 4, 1, 5, 9))
    made.backbone, made.head = nn.Linear(2, 2), nn.Linear(2, 1)
    made.freeze_batchnorm = freeze
    made.views = lambda index, rng: torch.full((1, 3, 2, 2), float(index) + rng.random())
    made.optimizer = torch.optim.SGD(
        [{"params": list(made.backbone.parameters())}, {"params": list(made.head.parameters())}],
        lr=1.0,
    )
    made.scheduler = torch.optim.lr_scheduler.LambdaLR(made.optimizer, lambda step: 0.5**step)
    for p in made.backbone.parameters():
        p.grad = torch.ones_like(p)  # a stale gradient the step must clear
    return made


def test_a_step_makes_this_ranks_views_with_their_own_generators_and_labels():
    made = stepping_trainer()
    seen = {}

    def step(views, labels, batch_size):
        seen.update(views=views, labels=labels.tolist(), size=batch_size)
        assert all(p.grad is None for p in made.backbone.parameters())
        made.backbone.weight.grad = torch.ones(2, 2)
        return {"loss": 1.5}

    made._metric_step = step
    assert made.train_step([5, 2, 3]) == {"loss": 1.5}
    assert seen["labels"] == [4, 1] and seen["size"] == 3
    for view, (position, index) in zip(seen["views"], [(1, 2), (2, 3)], strict=True):
        draw = np.random.default_rng([7, 2, 4, position]).random()
        assert torch.equal(view, torch.full((1, 3, 2, 2), float(index) + draw))
    calls = made.context.calls
    assert calls[0] == ("shard", [0, 1, 2])
    assert ("sum_gradients", 4) in calls and "broadcast_buffers" not in [c[0] for c in calls]
    # the optimiser stepped on the gradient, then the scheduler: lr 1 -> 0.5
    assert torch.equal(made.backbone.bias.detach(), made.backbone.bias.detach())
    assert [g["lr"] for g in made.optimizer.param_groups] == [0.5, 0.5]
    assert made.backbone.training and made.head.training


def test_a_step_updates_the_parameters_with_the_gradient():
    made = stepping_trainer()
    before = made.backbone.weight.detach().clone()

    def step(views, labels, batch_size):
        made.backbone.weight.grad = torch.full((2, 2), 0.25)
        return {"loss": 1.0}

    made._metric_step = step
    made.train_step([0, 1])
    assert torch.equal(made.backbone.weight.detach(), before - 0.25)


def test_without_frozen_statistics_the_buffers_are_broadcast():
    made = stepping_trainer(freeze=False)
    made._metric_step = lambda views, labels, batch_size: {"loss": 1.0}
    made.train_step([0, 1])
    assert ("broadcast_buffers", (made.backbone, made.head)) in made.context.calls


def test_the_classifier_loss_is_summed_over_the_ranks():
    made = stepping_trainer("classifier")
    made.loss_logits = "map"
    seen = []
    made._classifier_step = lambda *arguments: seen.append(arguments) or {"loss": 1.25}
    assert made.train_step([0, 1, 2]) == {"loss": 2.5}
    ((views, labels, batch_size),) = seen
    assert len(views) == 2 and labels.tolist() == [1, 4] and batch_size == 3
    assert ("all_sum", 1.25) in made.context.calls


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_diverged_step_names_the_step_the_batch_and_the_checkpoint(value):
    made = stepping_trainer()
    made._metric_step = lambda views, labels, batch_size: {"loss": value}
    before = made.backbone.weight.detach().clone()
    message = (
        rf"^loss is {value} at step 5 \(epoch 3, batch 2, samples \[0, 1, 2, 3, 4, 5, 0, 1\]"
        r"\.\.\.\); hint: .* '/nowhere/checkpoint.pt' is kept"
    )
    with pytest.raises(TrainingDiverged, match=message):
        made.train_step([0, 1, 2, 3, 4, 5, 0, 1, 2])
    assert torch.equal(made.backbone.weight.detach(), before)


# -- offline batches, validation, the model file, the network ---------------------------------


def test_offline_batches_mine_the_descriptors_of_every_photo(monkeypatch):
    import pyinstance.train.trainer as module
    from pyinstance.train.sampler import triplet_batches

    made = bare(mining="offline", instances_per_batch=2)
    made.config = parse_config(
        {
            "output": "out",
            "seed": 9,
            "data": {"source": "p"},
            "model": {"max_side": 77},
            "train": {"mining": "offline", "instances_per_batch": 2},
        },
        base=Path("/"),
    )
    made.backbone, made.head = "B", "H"
    made.data = SimpleNamespace(images=("i0", "i1", "i2", "i3"), labels=(1, 0, 1, 0))
    calls = []

    def extract(images, backbone, head, **options):
        calls.append((images, backbone, head, options))
        rows = torch.tensor([[float(name[1]), 1.0] for name in images])
        return torch.stack([rows, -rows], dim=1)  # scales: only the first is used

    monkeypatch.setattr(module, "extract", extract)
    mined = []
    triplets = (torch.tensor([0, 2]), torch.tensor([2, 0]), torch.tensor([1, 3]))

    def miner(*arguments):
        mined.append(arguments)
        return triplets

    made.miner = miner
    batches = made._batches(3)
    assert calls == [
        (
            ["i0", "i1", "i2", "i3"],
            "B",
            "H",
            {"max_side": 77, "device": made.device, "progress": False},
        )
    ]
    descriptors, labels, references, reference_labels = mined[0]
    assert descriptors.tolist() == [[0.0, 1.0], [1.0, 1.0], [2.0, 1.0], [3.0, 1.0]]
    assert references is descriptors and labels.tolist() == [1, 0, 1, 0]
    assert reference_labels.tolist() == [1, 0, 1, 0]
    assert batches == triplet_batches(triplets, 2, seed=9, epoch=3)
    made.config = parse_config(
        {"output": "out", "data": {"source": "p"}, "train": {}}, base=Path("/")
    )
    made.sampler = SimpleNamespace(epoch=lambda epoch: [[epoch, 1]])
    assert made._batches(4) == [[4, 1]]


def test_validation_is_precision_at_one_over_the_training_photos(monkeypatch):
    import pyinstance.train.trainer as module

    made = bare()
    made.config = parse_config(
        {"output": "out", "data": {"source": "p"}, "model": {"max_side": 66}}, base=Path("/")
    )
    made.backbone, made.head = "B", "H"
    made.data = SimpleNamespace(
        paths=(Path("a.png"), Path("b.png"), Path("c.png")),
        labels=(1, 0, 1),
        instances=("cat", "dog"),
    )
    made.validation = None
    with pytest.raises(ValueError, match="^data.validation: no validation manifest"):
        made.validate()
    made.validation = "V"
    calls = []
    monkeypatch.setattr(
        module, "precision_at_1", lambda *a, **k: calls.append((a, k)) or {"p_at_1": 0.5}
    )
    assert made.validate() == {"p_at_1": 0.5}
    paths = [Path("a.png"), Path("b.png"), Path("c.png")]
    assert calls == [(("B", "H", paths, ("dog", "cat", "dog"), "V"), {"max_side": 66})]


class Main(LocalContext):
    def __init__(self, main):
        self.main, self.calls = main, []

    @property
    def is_main(self):
        return self.main

    def barrier(self):
        self.calls.append("barrier")


@pytest.mark.parametrize("main", [True, False])
def test_an_epochs_row_holds_the_averages_and_the_main_processs_validation(
    main, monkeypatch, tmp_path
):
    import pyinstance.train.trainer as module

    made = bare()
    made.context = Main(main)
    made.output = tmp_path
    made.step, made.epoch = 6, 1
    made.history = [{"epoch": 1}]
    made.epoch_batches, made.batch_in_epoch = [[1]], 3
    made._running = {"loss": 3.0, "triplets": 6.0, "batches": 2.0}
    made.validation = "V"
    made.validate = lambda: {"p_at_1": 0.75}
    saved, written = [], []
    made.save_checkpoint = lambda: saved.append(made.epoch)
    monkeypatch.setattr(module, "write_metrics", lambda *a: written.append(a))
    made._end_epoch(12.34)
    row = {"epoch": 2, "step": 6, "seconds": 12.3, "loss": 1.5, "triplets": 3.0}
    if main:
        row["p_at_1"] = 0.75
    assert made.history == [{"epoch": 1}, row]
    assert (made.epoch, made.epoch_batches, made.batch_in_epoch, made._running) == (2, None, 0, {})
    assert saved == [2]
    assert written == ([(tmp_path, made.history)] if main else [])
    made.validation = None
    made._running = {"loss": 4.0, "batches": 1.0}  # one batch: its own values
    made._end_epoch(2.0)
    assert made.history[-1] == {"epoch": 3, "step": 6, "seconds": 2.0, "loss": 4.0}
    made._running = {}  # no batch: nothing averaged, nothing divided by zero
    made._end_epoch(1.0)
    assert made.history[-1] == {"epoch": 4, "step": 6, "seconds": 1.0}


@pytest.mark.parametrize("main", [True, False])
def test_the_finish_writes_the_model_on_the_main_process_only(main, tmp_path, monkeypatch):
    import pyinstance.train.trainer as module

    monkeypatch.setattr(module.time, "perf_counter", lambda: 130.0)
    made = bare()
    made.context = Main(main)
    made.output = tmp_path
    made.step, made.history = 7, [{"epoch": 1, "loss": 2.0}]
    made.data = SimpleNamespace(skipped=("x", "y"))
    made.save_model = lambda path: path
    result = made._finish(100.0)
    assert result.model_path == (tmp_path / "model.pt" if main else None)
    assert (result.steps, result.epochs, result.skipped) == (7, [{"epoch": 1, "loss": 2.0}], 2)
    assert result.epochs is not made.history and result.seconds == 30.0
    assert made.context.calls == ["barrier"]


def test_the_model_file_holds_the_recipe_the_weights_and_the_history(tmp_path):
    from pyinstance import plugins
    from pyinstance.models.trained import read_model

    made = bare()
    made.config = parse_config(
        {
            "output": "out",
            "data": {"source": "p"},
            "model": {
                "backbone": "tripletnet_small",
                "backbone_params": {"dropout": 0.25},
                "head": "gem",
                "head_params": {"p": 4.0},
                "max_side": 96,
            },
        },
        base=Path("/"),
    )
    made.backbone = plugins.get_backbone("tripletnet_small", dropout=0.25)
    made.head = plugins.get_head("gem", in_channels=made.backbone.out_channels, p=4.0)
    made.step, made.history = 12, [{"epoch": 1, "loss": 0.5}]
    path = made.save_model(tmp_path / "m.pt")
    saved = read_model(path)
    assert (saved.backbone, saved.head, saved.max_side) == ("tripletnet_small", "gem", 96)
    assert saved.backbone_params == {"dropout": 0.25} and saved.head_params == {"p": 4.0}
    assert saved.info["steps"] == 12 and saved.info["epochs"] == [{"epoch": 1, "loss": 0.5}]
    assert saved.info["config"] == made.config.to_dict()
    for name, value in made.backbone.state_dict().items():
        assert torch.equal(saved.backbone_state[name], value)
    assert torch.equal(saved.head_state["p"], made.head.state_dict()["p"])


def network_trainer(tmp_path, **model) -> Trainer:
    made = bare()
    made.config = parse_config(
        {
            "output": "out",
            "data": {"source": "p"},
            "model": {"backbone": "tripletnet_small", "head": "gem", **model},
        },
        base=tmp_path,
    )
    return made


def test_the_network_starts_from_a_model_file_of_the_same_recipe(tmp_path):
    from pyinstance import plugins
    from pyinstance.models.trained import TrainedModel

    torch.manual_seed(1)
    backbone = plugins.get_backbone("tripletnet_small")
    head = plugins.get_head("gem", in_channels=backbone.out_channels)
    with torch.no_grad():
        head.p.fill_(5.5)
    TrainedModel(
        backbone="tripletnet_small",
        head="gem",
        backbone_state=backbone.state_dict(),
        head_state=head.state_dict(),
    ).save(tmp_path / "init.pt")
    made = network_trainer(tmp_path, init="init.pt")
    built, built_head = made._network()
    for name, value in backbone.state_dict().items():
        assert torch.equal(built.state_dict()[name], value)
    assert float(built_head.p.detach()) == 5.5
    assert all(p.requires_grad for p in built.parameters())
    other = network_trainer(tmp_path, init="init.pt", head="gem", head_params={"p": 2.0})
    with pytest.raises(
        ValueError,
        match=r"^model.init: .*init.pt' holds tripletnet_small\{\} \+ gem\{\}, not the configured tripletnet_small\{\} \+ gem\{'p': 2.0\}",
    ):
        other._network()
    fresh = network_trainer(tmp_path)
    assert float(fresh._network()[1].p.detach()) != 5.5  # no file: nothing loaded


def test_blocks_below_trainable_from_are_frozen(tmp_path):
    made = network_trainer(tmp_path, trainable_from="conv3")
    backbone, _ = made._network()
    frozen = {name for name, p in backbone.named_parameters() if not p.requires_grad}
    assert frozen and {name.split(".")[0] for name in frozen} == {"conv1", "conv2"}


def test_a_backbone_that_cannot_freeze_blocks_is_refused(tmp_path, monkeypatch):
    import pyinstance.train.trainer as module

    made = network_trainer(tmp_path, trainable_from="conv3")
    real = module.plugins

    class Plain(nn.Module):
        out_channels = 4

    monkeypatch.setattr(
        module,
        "plugins",
        SimpleNamespace(get_backbone=lambda name, **k: Plain(), get_head=real.get_head),
    )
    with pytest.raises(ValueError, match="^model.trainable_from: backbone 'tripletnet_small'"):
        made._network()


def test_class_maps_are_taken_at_the_views_own_size_and_at_each_other_scale():
    made = bare(objective="classifier", micro_batch=2, scales=[1.0, 2.0])
    made.backbone, made.head = Backbone(), Head()
    shapes = []

    def loss(descriptors, labels, triplets, *, logits):
        shapes.extend(tuple(m.shape[2:]) for m in logits)
        return descriptors.sum() * 0 + 1.0

    made.loss = loss
    made._classifier_step(views_of(2, size=(20, 24)), torch.tensor([0, 1]), 2)
    # scale 1: the 20 × 24 views themselves (not raised to the 32-pixel minimum of a rescale)
    assert shapes == [(20, 24), (40, 48)]


@pytest.mark.parametrize(("recompute", "passes"), [(True, 2), (False, 1)])
def test_recomputation_runs_each_micro_batch_again_and_only_then(recompute, passes):
    made = metric_trainer(recompute=recompute)
    calls = []
    made.backbone.register_forward_hook(lambda module, args, output: calls.append(len(args[0])))
    made._metric_step(views_of(5), torch.tensor([0, 0, 1, 1, 0]), 5)
    assert calls == [2, 2, 1] * passes


def test_the_miner_gets_the_gathered_labels_and_offline_triplets_the_batch_size():
    made = metric_trainer(recompute=True)
    seen = []
    made.miner = lambda embeddings, labels: seen.append(labels.tolist()) or TRIPLETS
    made._metric_step(views_of(5), torch.tensor([0, 0, 1, 1, 0]), 5)
    assert seen == [[0, 0, 1, 1, 0]]
    made = metric_trainer(recompute=True)
    made.config = parse_config(
        {"output": "out", "data": {"source": "p"}, "train": {"mining": "offline"}},
        base=Path("/"),
    )
    stats = made._metric_step(views_of(6), torch.tensor([0, 0, 1, 1, 1, 0]), 6)
    assert stats["triplets"] == 2.0  # anchors 0 and 3 of the 6 views


def test_a_single_triplet_is_counted():
    made = bare()
    made.loss = SimpleNamespace(margin=0.5)
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    triplets = (torch.tensor([0]), torch.tensor([1]), torch.tensor([2]))
    assert made._triplet_stats(embeddings, triplets) == {"triplets": 1.0, "active_triplets": 1.0}


def test_class_scores_the_loss_ignores_get_a_zero_gradient():
    views, labels = views_of(5), torch.tensor([0, 0, 1, 1, 0])
    made = metric_trainer(recompute=True, logits="image")
    made.loss = lambda embeddings, labels, triplets, logits: triplet_loss(
        embeddings, labels, triplets
    )
    loss, expected, _ = expected_gradients(made, views, labels, seed=3)
    torch.manual_seed(3)
    assert made._metric_step(views, labels, 5)["loss"] == pytest.approx(loss, rel=1e-6)
    got = gradients_of(made)
    for mine, theirs in zip(got[:4] + got[6:], expected[:4] + expected[6:], strict=True):
        assert torch.allclose(mine, theirs, atol=1e-6, rtol=1e-5)
    # the classifier ran with gradients; nothing reached it
    assert torch.equal(got[4], torch.zeros(3, 4, 1, 1)) and torch.equal(got[5], torch.zeros(3))


def test_the_local_offset_is_asked_with_this_ranks_row_count():
    class Sizes(LocalContext):
        sent: list = []

        def gather(self, local):
            if local.dtype == torch.int64 and local.numel() == 1:
                self.sent.append(local.tolist())
            return local

    made = metric_trainer(recompute=True)
    made.context = Sizes()
    made._metric_step(views_of(5), torch.tensor([0, 0, 1, 1, 0]), 5)
    assert Sizes.sent == [[5]]  # rows, not the descriptor's 3 dimensions


def test_a_long_run_of_one_size_is_cut_every_micro_batch():
    made = bare(micro_batch=2)
    views = [torch.zeros(1, 3, 4, 4)] * 7
    assert made._micro_batches(views) == [(0, 2), (2, 4), (4, 6), (6, 7)]


def test_a_network_without_any_classifier_attribute_is_refused_by_name():
    made = bare(loss="fcn_multiscale_ce", objective="classifier")
    made.head, made.backbone = SimpleNamespace(), SimpleNamespace()
    with pytest.raises(
        ValueError,
        match="^model: neither head 'gem' nor backbone 'efficientnet_lite0' has an FCN classifier",
    ):
        made._classifier()


def test_the_miners_and_the_network_get_their_configured_parameters(tmp_path):
    made = bare(mining="offline", miner_params={"n_pos": 2, "n_neg": 7})
    made.needs_triplets = True
    assert (made._miner().options["n_pos"], made._miner().options["n_neg"]) == (2, 7)
    made = bare(miner="batch_hard", miner_params={"threads": 3}, hard_from_epoch=1)
    made.needs_triplets = True
    assert made._miner()._stages[0][1].options["threads"] == 3
    made = bare(miner="batch_hard", miner_params={"threads": 3})
    made.needs_triplets = True
    assert made._miner().options["threads"] == 3
    made = network_trainer(tmp_path, backbone_params={"dropout": 0.25}, head_params={"p": 4.5})
    backbone, head = made._network()
    assert backbone.dropout.p == 0.25 and float(head.p.detach()) == 4.5


def test_a_new_trainer_keeps_what_it_is_given_and_reads_the_loss(tiny_config, monkeypatch):
    import pyinstance.train.trainer as module
    from pyinstance.models.backbone import IMAGENET_MEAN, IMAGENET_STD
    from pyinstance.train import load_config
    from pyinstance.train.data import load_training_set

    config = load_config(tiny_config(instances=4))
    given = load_training_set(config.data.source, decode_side=48)
    context = LocalContext()
    made = Trainer(config, context=context, training_set=given)
    assert made.context is context and made.data is given
    assert made.views.images is given.images or list(made.views.images) == list(given.images)
    assert made.validation is None and made.miner is not None
    assert made.loss_logits is None and made.needs_triplets is True
    assert made.scheduler.get_last_lr() == [0.01, 0.01]
    assert isinstance(Trainer(config).context, LocalContext)

    class Loss:
        logits, needs_triplets, margin = "image", False, 0.2

        def __init__(self, **params):
            self.params = params

    monkeypatch.setattr(module.plugins, "get_loss", lambda name, **params: Loss(**params))
    monkeypatch.setattr(Trainer, "_check_objective", lambda self: None)
    made = Trainer(load_config(tiny_config(instances=4, train={"loss_params": {"margin": 0.3}})))
    assert made.loss.params == {"margin": 0.3}
    assert (made.loss_logits, made.needs_triplets, made.miner) == ("image", False, None)
    del Loss.needs_triplets  # a loss that does not say: it needs triplets
    assert Trainer(made.config).needs_triplets is True
    # a backbone without its own input normalisation: ImageNet's
    for klass in type(made.backbone).__mro__:
        for name in ("input_mean", "input_std"):
            if name in vars(klass):
                monkeypatch.delattr(klass, name)
    made = Trainer(made.config)
    assert made.views.mean == IMAGENET_MEAN and made.views.std == IMAGENET_STD


def test_a_new_trainer_reads_the_validation_manifest_the_labels_and_a_loss_without_logits(
    tiny_config, tmp_path, monkeypatch
):
    import pyinstance.train.trainer as module
    from pyinstance.train import load_config
    from pyinstance.train.data import load_training_set

    folder = tmp_path / "validation"
    folder.mkdir()
    for name in ("r.png", "q1.png", "q2.png"):
        (folder / name).touch()
    manifest = folder / "m.csv"
    rows = ["r.png,a,reference,", "q1.png,b,query,night", "q2.png,a,query,"]
    manifest.write_text("path,instance_id,split,query_set\n" + "\n".join(rows) + "\n")
    config = load_config(tiny_config(instances=4, data={"validation": str(manifest)}))
    given = load_training_set(config.data.source, decode_side=48)
    made = Trainer(config, training_set=given)
    assert made.validation.paths == (folder / "q1.png", folder / "q2.png")
    assert made.validation.instances == ("b", "a")
    assert made.validation.query_sets == ("night", "-")
    # the view maker gets the photos' labels (it composites strangers by them)
    assert made.views.labels.tolist() == list(given.labels) == [0, 1, 2, 3]

    class Loss:  # a loss that does not declare ``logits``: no class scores
        needs_triplets = True

        def __init__(self, **params):
            self.params = params

    monkeypatch.setattr(module.plugins, "get_loss", lambda name, **params: Loss(**params))
    monkeypatch.setattr(Trainer, "_check_objective", lambda self: None)
    assert Trainer(config, training_set=given).loss_logits is None
