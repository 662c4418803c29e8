"""What each built-in plugin module registers, read from a fresh registry (so the hooks run
in the test itself): every name, alias and factory, and the small factories they define."""

from __future__ import annotations

import pytest

from pyinstance import classify
from pyinstance.builtin import backbones as builtin_backbones
from pyinstance.builtin.miners import curriculum
from pyinstance.models import (
    VGG16,
    AlexNet,
    EfficientNetLite0,
    TripletNetSmall,
    losses,
    miners,
    pooling,
    region_head,
)
from pyinstance.models.efficientnet import EfficientNetLite1, EfficientNetLite2
from pyinstance.plugins import PluginRegistry
from pyinstance.rerank.verifier import VerificationReranker

#: (kind, name) -> (factory, aliases) of every built-in component but the ResNet factories.
EXPECTED = {
    ("backbone", "efficientnet_lite0"): (EfficientNetLite0, ()),
    ("backbone", "efficientnet_lite1"): (EfficientNetLite1, ()),
    ("backbone", "efficientnet_lite2"): (EfficientNetLite2, ()),
    ("backbone", "alexnet"): (AlexNet, ()),
    ("backbone", "vgg16"): (VGG16, ()),
    ("backbone", "tripletnet_small"): (TripletNetSmall, ()),
    ("classifier", "nn"): (classify.NearestNeighbour, ("1nn",)),
    ("classifier", "knn_vote"): (classify.KnnVote, ()),
    ("classifier", "knn_weighted"): (classify.KnnWeighted, ()),
    ("classifier", "mean_knn"): (classify.MeanKnn, ()),
    ("classifier", "alpha_mean_knn"): (classify.AlphaMeanKnn, ()),
    ("classifier", "instance_mean"): (classify.InstanceMean, ()),
    ("head", "mac"): (pooling.MAC, ()),
    ("head", "spoc"): (pooling.SPoC, ("avg",)),
    ("head", "gem"): (pooling.GeM, ()),
    ("head", "rmac"): (pooling.RMAC, ()),
    ("head", "topk_region"): (region_head.TopKRegionHead, ("kohl",)),
    ("loss", "triplet_margin"): (losses.TripletMarginLoss, ("triplet",)),
    ("loss", "triplet_squared"): (losses.TripletSquaredLoss, ()),
    ("loss", "softmax_ratio"): (losses.SoftmaxRatioLoss, ()),
    ("loss", "contrastive"): (losses.ContrastiveLoss, ()),
    ("loss", "generalized_logistic"): (losses.GeneralizedLogisticLoss, ()),
    ("loss", "cross_entropy"): (losses.CrossEntropyLoss, ()),
    ("loss", "fcn_multiscale_ce"): (losses.FCNMultiscaleCrossEntropyLoss, ()),
    ("loss", "triplet_region_ce"): (losses.TripletRegionCrossEntropyLoss, ()),
    ("loss", "joint_identification_verification"): (
        losses.JointIdentificationVerificationLoss,
        (),
    ),
    ("miner", "batch_hard"): (miners.BatchHardMiner, ()),
    ("miner", "hard_negative"): (miners.HardNegativeMiner, ()),
    ("miner", "semihard"): (miners.SemiHardMiner, ("semi_hard",)),
    ("miner", "batch_all"): (miners.BatchAllMiner, ("all",)),
    ("miner", "offline"): (miners.OfflineMiner, ()),
    ("miner", "random"): (miners.RandomMiner, ()),
    ("miner", "curriculum"): (curriculum, ()),
    ("reranker", "verification"): (VerificationReranker, ()),
}
DEPTHS = (18, 34, 50, 101, 152)


@pytest.fixture
def registered() -> dict:
    fresh = PluginRegistry(autoload=False)
    assert fresh.failures() == []
    return {(c.kind, c.name): c for c in fresh.components()}


def test_every_builtin_name_alias_and_factory(registered) -> None:
    resnets = {("backbone", f"resnet{d}") for d in DEPTHS}
    assert set(registered) == set(EXPECTED) | resnets
    for key, (factory, aliases) in EXPECTED.items():
        component = registered[key]
        assert (component.factory, tuple(component.aliases)) == (factory, aliases), key
        assert component.plugin.startswith("pyinstance.builtin."), key


@pytest.mark.parametrize("depth", DEPTHS)
def test_each_resnet_name_builds_its_depth(registered, monkeypatch, depth) -> None:
    built = []
    monkeypatch.setattr(
        builtin_backbones, "ResNet", lambda d, **kwargs: built.append((d, kwargs)) or d
    )
    component = registered["backbone", f"resnet{depth}"]
    assert component.aliases == ()
    assert component.factory(weights="w.pt", num_classes=3) == depth
    assert built == [(depth, {"weights": "w.pt", "num_classes": 3})]
    assert component.factory.__name__ == f"resnet{depth}"
    assert component.factory.__doc__ == (
        f"ResNet-{depth}; ``weights=`` a local torchvision state dict, else random init."
    )


def test_the_default_backbone_is_registered_under_its_name(registered) -> None:
    assert builtin_backbones.DEFAULT_BACKBONE == "efficientnet_lite0"
    assert registered["backbone", builtin_backbones.DEFAULT_BACKBONE].factory is EfficientNetLite0


def stages(miner: miners.CurriculumMiner) -> list:
    return [(until, type(stage).__name__) for until, stage in miner._stages]


def test_the_default_curriculum_is_semihard_then_hard_negatives() -> None:
    assert stages(curriculum()) == [(2, "SemiHardMiner"), (None, "HardNegativeMiner")]


def test_curriculum_stages_name_miners_with_options_or_give_them() -> None:
    given = miners.RandomMiner()
    miner = curriculum([(1, ("batch_all", {"margin": 0.3})), [3, "semihard"], (None, given)])
    assert stages(miner) == [(1, "BatchAllMiner"), (3, "SemiHardMiner"), (None, "RandomMiner")]
    assert miner._stages[0][1].options["margin"] == 0.3
    assert miner._stages[2][1] is given
    listed = curriculum([[1, ["batch_all", {"margin": 0.2}]], (None, "hard_negative")])
    assert listed._stages[0][1].options["margin"] == 0.2
    assert stages(listed) == [(1, "BatchAllMiner"), (None, "HardNegativeMiner")]


@pytest.mark.parametrize(
    ("schedule", "error", "message"),
    [
        ([("semihard",)], ValueError, r"schedule\[0\]: expected \(until_epoch, miner\)"),
        ([(None, "semihard", 1)], ValueError, r"schedule\[0\]: expected \(until_epoch, miner\)"),
        ([(None, ("semihard", {}, 1))], TypeError, r"schedule\[0\]: expected a miner object"),
        ([(None, (1, {}))], TypeError, r"schedule\[0\]: expected a miner object"),
        ([(None, ("semihard",))], TypeError, r"schedule\[0\]: expected a miner object"),
        ([(None, "no_such_miner")], ValueError, "no_such_miner"),
    ],
)
def test_curriculum_stages_it_cannot_resolve_are_reported(schedule, error, message) -> None:
    with pytest.raises(error, match=message):
        curriculum(schedule)
