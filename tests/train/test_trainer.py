import copy

import pytest
import torch

from pyinstance.train import CheckpointMismatchError, Trainer, TrainingDiverged, load_config
from pyinstance.train.checkpoint import load_checkpoint


def _params(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


#: Views without random changes but the flip: the loss then follows the weights alone.
STILL = {
    "rotation": 0.0,
    "axis_scale": [1.0, 1.0],
    "brightness": 0.0,
    "contrast": 0.0,
    "saturation": 0.0,
    "hue": 0.0,
    "sizes": [48],
}


def test_the_loss_goes_down_on_a_tiny_set(tiny_config):
    config = load_config(
        tiny_config(
            instances=6,
            augment=STILL,
            train={
                "epochs": 6,
                "instances_per_batch": 3,
                "loss": "contrastive",
                "scheduler": "constant",
            },
        )
    )
    result = Trainer(config).fit()
    losses = [row["loss"] for row in result.epochs]
    assert sum(losses[-2:]) < 0.9 * sum(losses[:2])
    assert result.model_path is not None and result.model_path.is_file()
    assert (config.output / "metrics.jsonl").is_file()
    assert (config.output / "metrics.png").read_bytes()[:4] == b"\x89PNG"


def _lite0_trainer(tiny_config, **train):
    config = load_config(
        tiny_config(
            instances=4,
            model={
                "backbone": "efficientnet_lite0",
                "backbone_params": {"pretrained": False, "num_classes": 4},
                "head": "gem",
                "trainable_from": "stage6",
                "max_side": 64,
            },
            augment={"sizes": [64]},
            train={"epochs": 1, "instances_per_batch": 4, "freeze_batchnorm": True, **train},
        )
    )
    return Trainer(config)


@pytest.mark.parametrize("recompute", [True, False])
def test_micro_batches_give_the_gradient_of_one_big_batch(tiny_config, recompute):
    gradients = []
    for micro_batch in (8, 1, 3):
        trainer = _lite0_trainer(tiny_config, micro_batch=micro_batch, recompute=recompute)
        batch = trainer.sampler.epoch(0)[0]
        before = _params(trainer.backbone)
        for group in trainer.optimizer.param_groups:
            group["lr"] = 0.0  # keep the weights: compare the gradients
        trainer.train_step(batch)
        gradients.append(
            {
                n: p.grad.clone()
                for n, p in trainer.backbone.named_parameters()
                if p.grad is not None
            }
        )
        after = _params(trainer.backbone)
        bn = [k for k in before if "running_mean" in k]
        assert all(torch.equal(before[k], after[k]) for k in bn)  # statistics frozen
    assert gradients[0].keys() == gradients[1].keys() == gradients[2].keys()
    assert gradients[0]  # something was trained
    for name, value in gradients[0].items():
        for other in gradients[1:]:
            torch.testing.assert_close(other[name], value, rtol=1e-4, atol=1e-6)


def test_layers_below_trainable_from_do_not_change(tiny_config):
    trainer = _lite0_trainer(tiny_config, micro_batch=1)
    before = _params(trainer.backbone)
    trainer.train_step(trainer.sampler.epoch(0)[0])
    after = _params(trainer.backbone)
    frozen = [k for k in before if k.startswith(("_conv_stem", "_bn0", "_blocks.0."))]
    trained = [k for k in before if k.startswith("_conv_head")]
    assert frozen and trained
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert not all(torch.equal(before[k], after[k]) for k in trained)
    groups = {g["name"]: g["lr"] for g in trainer.optimizer.param_groups}
    assert set(groups) == {"backbone", "head"}


def test_resuming_gives_the_same_result_as_running_straight(tiny_config, tmp_path):
    straight = Trainer(load_config(tiny_config(train={"epochs": 3}), output=str(tmp_path / "a")))
    straight.fit()
    total = straight.step
    assert total >= 3
    first = Trainer(
        load_config(tiny_config(train={"epochs": 3, "max_steps": 2}), output=str(tmp_path / "b"))
    )
    first.fit()
    resumed = Trainer(load_config(tiny_config(train={"epochs": 3}), output=str(tmp_path / "b")))
    assert resumed.resume()
    assert resumed.step == 2
    resumed.fit()
    assert resumed.step == total
    for module in ("backbone", "head"):
        a = getattr(straight, module).state_dict()
        b = getattr(resumed, module).state_dict()
        for key in a:
            torch.testing.assert_close(b[key], a[key], rtol=0, atol=0)
    assert [r["loss"] for r in resumed.history] == pytest.approx(
        [r["loss"] for r in straight.history]
    )


def test_a_checkpoint_from_another_recipe_is_refused(tiny_config):
    trainer = Trainer(load_config(tiny_config(train={"max_steps": 1})))
    trainer.fit()
    other = Trainer(load_config(tiny_config(model={"head": "mac"})))
    with pytest.raises(CheckpointMismatchError, match="head: checkpoint 'gem', config 'mac'"):
        other.resume()
    same = Trainer(load_config(tiny_config(train={"lr_head": 0.5})))
    assert same.resume()  # learning rates are not part of the recipe


def test_a_nan_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(tiny_config):
    config = load_config(tiny_config(train={"epochs": 3, "checkpoint_steps": 1}))
    trainer = Trainer(config)
    real_loss = trainer.loss
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        value = real_loss(*args, **kwargs)
        return value * float("nan") if calls["n"] == 3 else value

    trainer.loss = failing
    good = None
    with pytest.raises(TrainingDiverged, match=r"at step 3 \(epoch 3, batch 1.*lr") as error:
        original = trainer.save_checkpoint

        def remember():
            nonlocal good
            path = original()
            good = copy.deepcopy(load_checkpoint(path, config.recipe_dict())["step"])
            return path

        trainer.save_checkpoint = remember
        trainer.fit()
    assert "checkpoint" in str(error.value)
    kept = load_checkpoint(config.output / "checkpoint.pt", config.recipe_dict())
    assert kept["step"] == good == 2
    assert all(torch.isfinite(v).all() for v in kept["backbone"].values())


def test_unknown_names_and_mismatched_classes_are_clear_errors(tiny_config):
    with pytest.raises(ValueError, match="no_such_loss"):
        Trainer(load_config(tiny_config(train={"loss": "no_such_loss"})))
    with pytest.raises(ValueError, match="num_classes"):
        Trainer(
            load_config(
                tiny_config(
                    model={"head": "topk_region", "head_params": {"num_classes": 7}},
                    train={"loss": "triplet_region_ce"},
                )
            )
        )
    with pytest.raises(ValueError, match="classifier objective"):
        Trainer(load_config(tiny_config(train={"objective": "classifier"})))
    with pytest.raises(ValueError, match="trainable_from"):
        Trainer(load_config(tiny_config(model={"trainable_from": "stage9"})))


def test_the_two_stage_region_recipe_runs_and_hands_its_classifier_on(tiny_config, tmp_path):
    head = {"head": "topk_region", "head_params": {"num_classes": 4, "k": 2}}
    stage1 = load_config(
        tiny_config(
            model=head,
            augment=STILL,
            train={
                "objective": "classifier",
                "loss": "fcn_multiscale_ce",
                "scales": [1.0, 0.8],
                "views_per_instance": 1,
                "instances_per_batch": 2,
                "epochs": 6,
                "scheduler": "constant",
            },
        ),
        output=str(tmp_path / "stage1"),
    )
    first = Trainer(stage1).fit()
    losses = [row["loss"] for row in first.epochs]
    assert losses[-1] < 0.8 * max(losses[:2])
    stage2 = load_config(
        tiny_config(
            model={**head, "init": str(first.model_path)},
            train={"loss": "triplet_region_ce", "epochs": 1},
        ),
        output=str(tmp_path / "stage2"),
    )
    trainer = Trainer(stage2)
    started = {k: v.clone() for k, v in trainer.head.classifier.state_dict().items()}
    trained = torch.load(first.model_path, weights_only=True)["head_state"]
    assert all(torch.equal(started[k], trained[f"classifier.{k}"]) for k in started)
    result = trainer.fit()
    assert result.epochs[0]["triplets"] > 0


@pytest.mark.parametrize(
    ("model", "train"),
    [
        ({}, {"mining": "offline", "miner_params": {"n_pos": 1, "n_neg": 2}}),
        ({"backbone_params": {"dropout": 0.0, "num_classes": 4}}, {"loss": "cross_entropy"}),
        ({}, {"loss": "contrastive"}),
    ],
    ids=["offline-triplets", "image-logits", "pairs"],
)
def test_other_minings_and_losses_take_a_step(tiny_config, model, train):
    config = load_config(tiny_config(model=model, train={"max_steps": 1, **train}))
    trainer = Trainer(config)
    before = _params(trainer.head)
    result = trainer.fit()
    assert result.steps == 1
    if train.get("mining") == "offline":
        batch = trainer.epoch_batches[0]
        labels = [trainer.data.labels[i] for i in batch]
        for start in range(0, len(batch), 3):
            anchor, positive, negative = labels[start : start + 3]
            assert anchor == positive != negative
    assert any(not torch.equal(before[k], v) for k, v in trainer.head.state_dict().items())
