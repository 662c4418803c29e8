"""Plugin discovery: built-ins, entry points, duplicates, failures, look-up errors."""

from __future__ import annotations

import importlib.metadata
import re
import types

import pytest
import torch

import pyinstance
from pyinstance import plugins
from pyinstance.plugins import PluginError, PluginRegistry, UnknownComponentError


def _plugin(**hooks) -> types.SimpleNamespace:
    """A plugin object whose hooks are the given functions."""
    return types.SimpleNamespace(**{name: pyinstance.hookimpl(fn) for name, fn in hooks.items()})


class _FakeDistribution:
    def __init__(self, name: str):
        self.name = name


class _FakeEntryPoint:
    def __init__(self, name: str, plugin: object, distribution: str, *, broken: bool = False):
        self.name = name
        self.dist = _FakeDistribution(distribution)
        self._plugin = plugin
        self._broken = broken

    def load(self):
        if self._broken:
            raise ImportError(f"cannot import {self.name}")
        return self._plugin


def _fake_entry_points(monkeypatch, *fakes):
    """Serve ``fakes`` as the installed entry points; return the groups asked for."""
    calls = []

    def entry_points(group):
        calls.append(group)
        return list(fakes) if group == plugins.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    return calls


def _miner_plugin(name: str):
    def pyinstance_register_miners(register):
        register(name, lambda: lambda embeddings, labels, **kw: None)

    return _plugin(pyinstance_register_miners=pyinstance_register_miners)


def test_builtins_are_registered_through_the_same_hooks():
    registry = PluginRegistry(autoload=False)
    losses = {c.name: c for c in registry.components("loss")}
    assert losses["triplet_margin"].plugin == "pyinstance.builtin.losses"
    assert losses["triplet_margin"].distribution == "pyinstance"
    assert losses["triplet_margin"].aliases == ("triplet",)


def test_entry_points_are_loaded_lazily_once_with_their_distribution(monkeypatch):
    calls = _fake_entry_points(
        monkeypatch, _FakeEntryPoint("third", _miner_plugin("third_miner"), "pyinstance-third")
    )
    registry = PluginRegistry()
    assert calls == []  # nothing loads before the first look-up
    component = registry.component("miner", "third_miner")
    assert (component.plugin, component.distribution) == ("third", "pyinstance-third")
    registry.components()
    registry.component("loss", "triplet")
    assert calls == [plugins.ENTRY_POINT_GROUP]


def test_autoload_can_be_disabled_by_environment(monkeypatch):
    calls = _fake_entry_points(
        monkeypatch, _FakeEntryPoint("third", _miner_plugin("third_miner"), "x")
    )
    monkeypatch.setenv(plugins.DISABLE_AUTOLOAD_ENV, "1")
    registry = PluginRegistry()
    assert "third_miner" not in {c.name for c in registry.components("miner")}
    assert calls == []


def _two_kind_plugin(miner: str, loss: str):
    def pyinstance_register_miners(register):
        register(miner, lambda: lambda embeddings, labels, **kw: None)

    def pyinstance_register_losses(register):
        register(loss, torch.nn.Module)

    return _plugin(
        pyinstance_register_miners=pyinstance_register_miners,
        pyinstance_register_losses=pyinstance_register_losses,
    )


def test_a_duplicate_name_is_a_failure_of_the_later_plugin_and_the_rest_loads(monkeypatch):
    _fake_entry_points(
        monkeypatch,
        _FakeEntryPoint("first", _miner_plugin("same"), "dist-one"),
        _FakeEntryPoint("second", _two_kind_plugin("same", "second_loss"), "dist-two"),
        _FakeEntryPoint("third", _miner_plugin("third_miner"), "dist-three"),
    )
    registry = PluginRegistry()
    with pytest.warns(RuntimeWarning, match="'second' failed during registering miners"):
        miners = {c.name: c for c in registry.components("miner")}
    assert miners["same"].plugin == "first"
    assert miners["third_miner"].plugin == "third"  # plugins after the clash still load
    assert "batch_hard" in miners
    # nothing of the failing plugin is kept, not even its losses
    assert "second_loss" not in {c.name for c in registry.components("loss")}
    (failure,) = registry.failures()
    assert (failure.plugin, failure.stage) == ("second", "registering miners")
    assert re.search(
        r"duplicate miner name 'same'.*'first' \(dist-one\).*'second' \(dist-two\)",
        str(failure.error),
    )
    # the registry is fully loaded: asking again neither reloads nor raises
    assert registry.component("miner", "third_miner").plugin == "third"
    assert len(registry.failures()) == 1


def test_two_plugins_with_one_name_and_a_name_taken_twice_by_one_plugin(monkeypatch):
    def pyinstance_register_heads(register):
        register("twice", torch.nn.Identity)
        register("other", torch.nn.Identity, aliases=("twice",))

    _fake_entry_points(
        monkeypatch,
        _FakeEntryPoint("dup", _miner_plugin("dup_one"), "a"),
        _FakeEntryPoint("dup", _miner_plugin("dup_two"), "b"),
        _FakeEntryPoint(
            "self-clash", _plugin(pyinstance_register_heads=pyinstance_register_heads), "c"
        ),
    )
    registry = PluginRegistry()
    with pytest.warns(RuntimeWarning):
        names = {c.name for c in registry.components()}
    assert "dup_one" in names and "dup_two" not in names and "twice" not in names
    stages = {(f.plugin, f.stage) for f in registry.failures()}
    assert stages == {("dup", "registration"), ("self-clash", "registering heads")}


def test_a_hook_looking_up_components_while_loading_is_a_failure(monkeypatch):
    registry = PluginRegistry()

    def pyinstance_register_miners(register):
        registry.component("miner", "batch_hard")

    _fake_entry_points(
        monkeypatch,
        _FakeEntryPoint(
            "eager", _plugin(pyinstance_register_miners=pyinstance_register_miners), "e"
        ),
        _FakeEntryPoint("fine", _miner_plugin("fine_miner"), "f"),
    )
    with pytest.warns(RuntimeWarning, match="while plugins were loading"):
        assert registry.component("miner", "fine_miner").plugin == "fine"
    assert [f.plugin for f in registry.failures()] == ["eager"]


def test_a_broken_builtin_leaves_the_registry_unloaded():
    registry = PluginRegistry(
        builtins=("pyinstance.builtin.losses", "pyinstance.no_such_module"), autoload=False
    )
    with pytest.raises(ModuleNotFoundError):
        registry.components()
    with pytest.raises(ModuleNotFoundError):  # tried again, not "loaded" with half the built-ins
        registry.component("loss", "contrastive")


def test_alias_clashing_with_a_builtin_is_a_duplicate():
    registry = PluginRegistry(autoload=False)

    def pyinstance_register_losses(register):
        register("my_loss", torch.nn.Module, aliases=("contrastive",))

    with pytest.raises(PluginError, match="'pyinstance.builtin.losses'.*'mine'"):
        registry.register_plugin(
            _plugin(pyinstance_register_losses=pyinstance_register_losses), "mine"
        )
    assert "my_loss" not in {c.name for c in registry.components("loss")}
    # the rejected plugin is gone from pluggy too: its name can be used again
    registry.register_plugin(_miner_plugin("mine_miner"), "mine")
    assert registry.component("miner", "mine_miner").plugin == "mine"


def test_a_failing_plugin_is_reported_by_name_and_others_still_load(monkeypatch):
    def pyinstance_register_miners(register):
        register("half_done", object)
        raise RuntimeError("boom")

    _fake_entry_points(
        monkeypatch,
        _FakeEntryPoint(
            "crashes", _plugin(pyinstance_register_miners=pyinstance_register_miners), "bad"
        ),
        _FakeEntryPoint("unimportable", None, "worse", broken=True),
        _FakeEntryPoint("fine", _miner_plugin("good_miner"), "good"),
    )
    registry = PluginRegistry()
    with pytest.warns(RuntimeWarning) as warned:
        names = {c.name for c in registry.components("miner")}
    messages = sorted(str(w.message) for w in warned)
    assert messages == [
        "pyinstance plugin 'crashes' failed during registering miners: RuntimeError: boom",
        "pyinstance plugin 'unimportable' failed during import: ImportError: cannot import unimportable",
    ]
    assert "good_miner" in names
    assert "half_done" not in names  # what a failing hook staged is discarded
    failures = {(f.plugin, f.stage) for f in registry.failures()}
    assert failures == {("crashes", "registering miners"), ("unimportable", "import")}


def test_a_plugin_with_an_unknown_hook_is_reported(monkeypatch):
    def pyinstance_register_widgets(register):
        pass

    _fake_entry_points(
        monkeypatch,
        _FakeEntryPoint(
            "odd", _plugin(pyinstance_register_widgets=pyinstance_register_widgets), "odd"
        ),
    )
    registry = PluginRegistry()
    with pytest.warns(RuntimeWarning, match="'odd' failed during validation"):
        registry.components()


def test_unknown_name_lists_available_names_and_suggests_a_close_match():
    registry = PluginRegistry(autoload=False)
    losses = registry.components("loss")
    names = sorted({c.name for c in losses} | {a for c in losses for a in c.aliases})
    assert {"contrastive", "triplet", "triplet_margin"} <= set(names)
    with pytest.raises(
        UnknownComponentError,
        match=r"unknown loss 'triplet_margn'\. Did you mean 'triplet_margin'\? Available: "
        + re.escape(", ".join(names))
        + "$",
    ):
        registry.create("loss", "triplet_margn")
    with pytest.raises(
        ValueError, match="kind: expected one of backbone, head, loss, miner, classifier, reranker"
    ):
        registry.component("optimizer", "sgd")
    with pytest.raises(TypeError, match="loss name must be a string"):
        registry.component("loss", 3)


@pytest.mark.parametrize(
    ("register_args", "match"),
    [
        (("", object), "invalid name ''"),
        (("not_callable", 42), "non-callable factory"),
        (("aliased", object, "abc"), "invalid aliases 'abc'"),
        (("aliased", object, ("",)), "invalid aliases"),
    ],
)
def test_invalid_registrations_are_refused(register_args, match):
    registry = PluginRegistry(autoload=False)

    def pyinstance_register_heads(register):
        name, factory, *aliases = register_args
        register(name, factory, **({"aliases": aliases[0]} if aliases else {}))

    with pytest.raises(PluginError, match=f"'bad' failed during registering heads: .*{match}"):
        registry.register_plugin(
            _plugin(pyinstance_register_heads=pyinstance_register_heads), "bad"
        )
    assert registry.failures() == []  # a hand registration raises instead of recording


def test_list_plugins_rejects_an_unknown_kind():
    with pytest.raises(
        ValueError,
        match="kind: expected one of backbone, head, loss, miner, classifier, reranker, got 'bogus'",
    ):
        pyinstance.list_plugins("bogus")
    assert {c.kind for c in pyinstance.list_plugins("head")} == {"head"}


def test_public_getters_build_components():
    loss = pyinstance.get_loss("triplet_margin", margin=0.3)
    assert loss.margin == 0.3
    assert isinstance(pyinstance.get_loss("triplet"), type(loss))
    kinds = {c.kind for c in pyinstance.list_plugins()}
    assert "loss" in kinds


@pytest.mark.parametrize(
    ("getter", "kind"),
    [
        (pyinstance.get_backbone, "backbone"),
        (pyinstance.get_head, "head"),
        (pyinstance.get_loss, "loss"),
        (pyinstance.get_miner, "miner"),
        (pyinstance.get_classifier, "classifier"),
        (pyinstance.get_reranker, "reranker"),
    ],
)
def test_every_getter_rejects_unknown_names(getter, kind):
    with pytest.raises(UnknownComponentError, match=f"unknown {kind} 'no_such_thing'"):
        getter("no_such_thing")
