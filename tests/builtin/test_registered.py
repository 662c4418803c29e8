"""Every built-in name (and alias) resolves to its implementation in pyinstance.models."""

from __future__ import annotations

import pytest

import pyinstance
from pyinstance.models import losses, miners, pooling, region_head
from pyinstance.plugins import PluginRegistry

BUILTIN_NAMES = {
    ("loss", "triplet_margin"): losses.TripletMarginLoss,
    ("loss", "triplet"): losses.TripletMarginLoss,
    ("loss", "triplet_squared"): losses.TripletSquaredLoss,
    ("loss", "softmax_ratio"): losses.SoftmaxRatioLoss,
    ("loss", "contrastive"): losses.ContrastiveLoss,
    ("loss", "generalized_logistic"): losses.GeneralizedLogisticLoss,
    ("loss", "cross_entropy"): losses.CrossEntropyLoss,
    ("loss", "fcn_multiscale_ce"): losses.FCNMultiscaleCrossEntropyLoss,
    ("loss", "triplet_region_ce"): losses.TripletRegionCrossEntropyLoss,
    ("loss", "joint_identification_verification"): losses.JointIdentificationVerificationLoss,
    ("head", "mac"): pooling.MAC,
    ("head", "spoc"): pooling.SPoC,
    ("head", "avg"): pooling.SPoC,
    ("head", "gem"): pooling.GeM,
    ("head", "rmac"): pooling.RMAC,
    ("head", "topk_region"): region_head.TopKRegionHead,
    ("head", "kohl"): region_head.TopKRegionHead,
    ("miner", "batch_hard"): miners.BatchHardMiner,
    ("miner", "hard_negative"): miners.HardNegativeMiner,
    ("miner", "semihard"): miners.SemiHardMiner,
    ("miner", "semi_hard"): miners.SemiHardMiner,
    ("miner", "batch_all"): miners.BatchAllMiner,
    ("miner", "all"): miners.BatchAllMiner,
    ("miner", "offline"): miners.OfflineMiner,
    ("miner", "random"): miners.RandomMiner,
}


@pytest.mark.parametrize(("kind", "name"), sorted(BUILTIN_NAMES))
def test_builtin_name_builds_its_model(kind, name):
    kwargs = {"in_channels": 8} if kind == "head" else {}
    component = pyinstance.plugins.registry.create(kind, name, **kwargs)
    assert type(component) is BUILTIN_NAMES[kind, name]


def test_builtin_modules_only_register():
    """The plugin modules hold hooks only: every class they register lives in models/ (or,
    for classifiers, in classify/; for re-rankers, in rerank/)."""
    for component in PluginRegistry(autoload=False).components():
        if component.plugin.startswith("pyinstance.builtin."):
            factory_module = getattr(component.factory, "__module__", "")
            implementations = ("pyinstance.models.", "pyinstance.classify.", "pyinstance.rerank.")
            assert factory_module.startswith(implementations) or (
                factory_module == component.plugin  # small factories (resnet depth, names)
                and not isinstance(component.factory, type)
            ), (component.name, factory_module)
