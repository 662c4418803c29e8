"""Every built-in component passes the same contract checks offered to plugin authors."""

from __future__ import annotations

import importlib

import pytest

import pyinstance
from pyinstance import testing
from pyinstance.plugins import BUILTIN_PLUGINS, HOOKS, PluginRegistry

_BUILTINS = PluginRegistry(autoload=False).components()
# Keyword arguments a built-in needs to be built small enough for a quick check.
_BUILD_ARGS: dict[tuple[str, str], dict] = {
    ("miner", "random"): {"seed": 0},  # seeded: the same batch gives the same triplets
}
_HEAD_CHANNELS = 16


def _verifier_file(path):
    from pyinstance.index import DEFAULT_RECIPE
    from pyinstance.rerank import VerificationNet, VerifierFile

    net = VerificationNet(24, projection=4, hidden=4)
    recipe = DEFAULT_RECIPE.with_(dim=24).to_dict()
    return VerifierFile(net.options(), net.state_dict(), 5, recipe).save(path)


def _ids(component) -> str:
    return f"{component.kind}:{component.name}"


@pytest.mark.parametrize("component", _BUILTINS, ids=_ids)
def test_builtin_component_honours_its_contract(component, tmp_path):
    kwargs = _BUILD_ARGS.get((component.kind, component.name), {})
    if component.kind == "reranker":  # built from a verifier file: an untrained one
        kwargs = {"model": _verifier_file(tmp_path / "verifier.pt"), **kwargs}
    if component.kind == "backbone":
        testing.check_backbone(pyinstance.get_backbone(component.name, **kwargs))
    elif component.kind == "head":
        head = pyinstance.get_head(component.name, in_channels=_HEAD_CHANNELS, **kwargs)
        testing.check_head(head, _HEAD_CHANNELS)
    elif component.kind == "loss":
        testing.check_loss(pyinstance.get_loss(component.name, **kwargs))
    elif component.kind == "miner":
        testing.check_miner(pyinstance.get_miner(component.name, **kwargs))
    elif component.kind == "reranker":
        testing.check_reranker(pyinstance.get_reranker(component.name, **kwargs))
    else:
        testing.check_classifier(pyinstance.get_classifier(component.name, **kwargs))


def test_every_kind_has_builtins_registered_through_hooks():
    assert {c.kind for c in _BUILTINS} == set(HOOKS)
    for component in _BUILTINS:
        assert component.distribution == "pyinstance", component
        assert component.plugin in BUILTIN_PLUGINS, component
        # registered by the plugin module's hook for that kind, not added by hand
        hook = getattr(importlib.import_module(component.plugin), HOOKS[component.kind], None)
        assert callable(hook), component
