"""The plugin registry's answers: which names resolve to which factories, from which
plugin, when entry points load, and what each refusal says (written for mutation testing)."""

from __future__ import annotations

import importlib.metadata
import types

import pytest

import pyinstance
from pyinstance import plugins
from pyinstance.plugins import (
    HOOKS,
    PluginError,
    PluginRegistry,
    UnknownComponentError,
    check_kind,
)


def _plugin(**hooks) -> types.SimpleNamespace:
    return types.SimpleNamespace(**{name: pyinstance.hookimpl(fn) for name, fn in hooks.items()})


def _probe_plugin(name: str = "probe", aliases: tuple[str, ...] = ()) -> types.SimpleNamespace:
    """Registers ``name`` for every kind; each factory returns (kind, its keyword arguments)."""

    def hook_for(kind: str):
        def hook(register):
            register(name, lambda **kwargs: (kind, kwargs), aliases=aliases)

        return hook

    return _plugin(**{hook_name: hook_for(kind) for kind, hook_name in HOOKS.items()})


class _EntryPoint:
    def __init__(self, name: str, plugin: object, distribution: str | None):
        self.name = name
        self.dist = None if distribution is None else types.SimpleNamespace(name=distribution)
        self._plugin = plugin

    def load(self):
        return self._plugin


def _serve_entry_points(monkeypatch, *entry_points) -> list[str]:
    calls: list[str] = []

    def entry_points_of(group):
        calls.append(group)
        return list(entry_points) if group == plugins.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points_of)
    return calls


def _miner_plugin(name: str) -> types.SimpleNamespace:
    def pyinstance_register_miners(register):
        register(name, lambda: "mined")

    return _plugin(pyinstance_register_miners=pyinstance_register_miners)


@pytest.mark.parametrize("value", ["1", "true", "yes", " TRUE ", "Yes\n"])
def test_the_environment_switches_autoload_off(monkeypatch, value):
    calls = _serve_entry_points(monkeypatch, _EntryPoint("third", _miner_plugin("third_m"), "d"))
    monkeypatch.setenv(plugins.DISABLE_AUTOLOAD_ENV, value)
    registry = PluginRegistry()
    assert "third_m" not in {c.name for c in registry.components("miner")}
    assert calls == []


@pytest.mark.parametrize("value", ["", "0", "no", "false", "2"])
def test_other_environment_values_keep_autoload_on(monkeypatch, value):
    calls = _serve_entry_points(monkeypatch, _EntryPoint("third", _miner_plugin("third_m"), "d"))
    monkeypatch.setenv(plugins.DISABLE_AUTOLOAD_ENV, value)
    registry = PluginRegistry()
    assert registry.component("miner", "third_m").plugin == "third"
    assert calls == [plugins.ENTRY_POINT_GROUP]


def test_the_constructor_argument_overrides_the_environment(monkeypatch):
    _serve_entry_points(monkeypatch, _EntryPoint("third", _miner_plugin("third_m"), "d"))
    monkeypatch.setenv(plugins.DISABLE_AUTOLOAD_ENV, "1")
    assert PluginRegistry(autoload=True).component("miner", "third_m").distribution == "d"
    monkeypatch.delenv(plugins.DISABLE_AUTOLOAD_ENV)
    names = {c.name for c in PluginRegistry(autoload=False).components("miner")}
    assert "third_m" not in names and "batch_hard" in names


def test_an_entry_point_without_a_distribution_is_named_unknown(monkeypatch):
    _serve_entry_points(
        monkeypatch,
        _EntryPoint("first", _miner_plugin("shared_name"), None),
        _EntryPoint("second", _miner_plugin("shared_name"), None),
    )
    registry = PluginRegistry()
    with pytest.warns(RuntimeWarning):
        component = registry.component("miner", "shared_name")
    assert (component.plugin, component.distribution) == ("first", None)
    (failure,) = registry.failures()
    assert str(failure.error) == (
        "duplicate miner name 'shared_name': registered by plugin 'first' (unknown "
        "distribution) and by plugin 'second' (unknown distribution)"
    )


def test_a_failure_warning_names_the_plugin_the_stage_and_the_error(monkeypatch):
    def pyinstance_register_losses(register):
        raise KeyError("lost")

    _serve_entry_points(
        monkeypatch,
        _EntryPoint("lossy", _plugin(pyinstance_register_losses=pyinstance_register_losses), "x"),
    )
    registry = PluginRegistry()
    with pytest.warns(RuntimeWarning) as warned:
        registry.components()
    assert [str(w.message) for w in warned] == [
        "pyinstance plugin 'lossy' failed during registering losses: KeyError: 'lost'"
    ]
    assert [w.category for w in warned] == [RuntimeWarning]
    (failure,) = registry.failures()
    assert (failure.plugin, failure.stage, type(failure.error)) == (
        "lossy",
        "registering losses",
        KeyError,
    )


def test_every_getter_builds_its_own_kind_with_the_arguments(monkeypatch):
    registry = PluginRegistry(builtins=(), autoload=False)
    registry.register_plugin(_probe_plugin(), "probe-plugin")
    monkeypatch.setattr(plugins, "registry", registry)
    getters = {
        "backbone": pyinstance.get_backbone,
        "head": pyinstance.get_head,
        "loss": pyinstance.get_loss,
        "miner": pyinstance.get_miner,
        "classifier": pyinstance.get_classifier,
        "reranker": pyinstance.get_reranker,
    }
    for kind, getter in getters.items():
        assert getter("probe", size=3, label=kind) == (kind, {"size": 3, "label": kind})
    assert [(c.kind, c.name) for c in pyinstance.list_plugins()] == sorted(
        (kind, "probe") for kind in HOOKS
    )
    assert [(c.kind, c.plugin) for c in pyinstance.list_plugins("head")] == [
        ("head", "probe-plugin")
    ]


def test_create_passes_the_keyword_arguments_to_the_factory():
    registry = PluginRegistry(builtins=(), autoload=False)
    registry.register_plugin(_probe_plugin(), "p")
    assert registry.create("loss", "probe", margin=0.25) == ("loss", {"margin": 0.25})
    assert registry.create("head", "probe") == ("head", {})


def test_a_component_is_found_by_every_alias_and_listed_once():
    registry = PluginRegistry(builtins=(), autoload=False)
    registry.register_plugin(_probe_plugin("main", aliases=("second", "third")), "p", "dist")
    component = registry.component("miner", "third")
    assert component is registry.component("miner", "main") is registry.component("miner", "second")
    assert (component.kind, component.name, component.aliases) == (
        "miner",
        "main",
        ("second", "third"),
    )
    assert (component.plugin, component.distribution) == ("p", "dist")
    listed = registry.components("miner")
    assert [(c.name, c.aliases) for c in listed] == [("main", ("second", "third"))]
    assert registry.create("miner", "second") == ("miner", {})


def test_components_are_sorted_by_kind_then_name():
    registry = PluginRegistry(builtins=(), autoload=False)
    registry.register_plugin(_probe_plugin("zeta"), "z")
    registry.register_plugin(_probe_plugin("alpha"), "a")
    assert [(c.kind, c.name) for c in registry.components()] == sorted(
        (kind, name) for kind in HOOKS for name in ("alpha", "zeta")
    )
    assert [c.name for c in registry.components("loss")] == ["alpha", "zeta"]


def test_the_same_name_may_serve_several_kinds_but_not_twice_in_one():
    registry = PluginRegistry(builtins=(), autoload=False)
    registry.register_plugin(_probe_plugin("same"), "first")  # every kind at once: no clash
    assert {c.kind for c in registry.components()} == set(HOOKS)
    with pytest.raises(
        PluginError,
        match=r"^plugin 'second' failed during registering miners: duplicate miner name "
        r"'same': registered by plugin 'first' \(unknown distribution\) and by plugin "
        r"'second' \(unknown distribution\)$",
    ):
        registry.register_plugin(_miner_plugin("same"), "second")
    assert registry.component("miner", "same").plugin == "first"


def test_an_unknown_name_in_an_empty_kind_says_none_and_suggests_nothing():
    registry = PluginRegistry(builtins=(), autoload=False)
    with pytest.raises(UnknownComponentError) as raised:
        registry.component("head", "gem")
    assert str(raised.value) == "unknown head 'gem'. Available: none"


def test_an_unknown_name_with_no_close_match_lists_the_names_without_a_hint():
    registry = PluginRegistry(builtins=(), autoload=False)
    registry.register_plugin(_probe_plugin("alpha"), "a")
    registry.register_plugin(_probe_plugin("beta"), "b")
    with pytest.raises(UnknownComponentError) as raised:
        registry.component("loss", "zzzzzz")
    assert str(raised.value) == "unknown loss 'zzzzzz'. Available: alpha, beta"
    with pytest.raises(KeyError):  # also a KeyError, for dict-like callers
        registry.component("loss", "alphx")
    with pytest.raises(UnknownComponentError) as raised:
        registry.component("loss", "alphx")
    assert str(raised.value) == "unknown loss 'alphx'. Did you mean 'alpha'? Available: alpha, beta"


@pytest.mark.parametrize("kind", [None, 3, ["loss"], "Loss", "losses", ""])
def test_check_kind_refuses_anything_but_a_kind(kind):
    with pytest.raises(ValueError) as raised:
        check_kind(kind)
    assert str(raised.value) == (
        f"kind: expected one of backbone, head, loss, miner, classifier, reranker, got {kind!r}"
    )


def test_check_kind_returns_the_kind():
    assert [check_kind(kind) for kind in HOOKS] == list(HOOKS)


def test_a_non_string_name_is_a_type_error_naming_the_kind():
    registry = PluginRegistry(builtins=(), autoload=False)
    with pytest.raises(TypeError) as raised:
        registry.component("miner", None)
    assert str(raised.value) == "miner name must be a string, got NoneType"


def test_a_plugin_name_already_taken_is_refused_and_nothing_of_it_kept():
    registry = PluginRegistry(builtins=(), autoload=False)
    registry.register_plugin(_miner_plugin("one"), "taken")
    with pytest.raises(PluginError) as raised:
        registry.register_plugin(_miner_plugin("two"), "taken")
    assert str(raised.value) == (
        "plugin 'taken' failed during registration: another plugin is already named 'taken'"
    )
    assert [c.name for c in registry.components("miner")] == ["one"]


def test_the_same_plugin_object_twice_is_a_registration_failure():
    registry = PluginRegistry(builtins=(), autoload=False)
    plugin = _miner_plugin("one")
    registry.register_plugin(plugin, "first")
    with pytest.raises(PluginError, match=r"^plugin 'again' failed during registration: "):
        registry.register_plugin(plugin, "again")
    assert [c.plugin for c in registry.components("miner")] == ["first"]


def test_a_plugin_with_an_unknown_hook_is_refused_and_unregistered():
    def pyinstance_register_widgets(register):
        register("widget", object)

    registry = PluginRegistry(builtins=(), autoload=False)
    odd = _plugin(pyinstance_register_widgets=pyinstance_register_widgets)
    with pytest.raises(PluginError, match=r"^plugin 'odd' failed during validation: "):
        registry.register_plugin(odd, "odd")
    # unregistered from pluggy: the name is free again, and the next check passes
    registry.register_plugin(_miner_plugin("fine"), "odd")
    assert registry.component("miner", "fine").plugin == "odd"
    assert registry.failures() == []


def test_a_failing_hook_unregisters_its_plugin():
    def pyinstance_register_heads(register):
        register("first_head", object)
        raise RuntimeError("half way")

    registry = PluginRegistry(builtins=(), autoload=False)
    with pytest.raises(PluginError) as raised:
        registry.register_plugin(_plugin(pyinstance_register_heads=pyinstance_register_heads), "h")
    assert str(raised.value) == "plugin 'h' failed during registering heads: half way"
    assert isinstance(raised.value.__cause__, RuntimeError)
    assert registry.components() == []
    registry.register_plugin(_miner_plugin("m"), "h")  # the name is free again
    assert registry.component("miner", "m").plugin == "h"


@pytest.mark.parametrize(
    ("name", "factory", "aliases", "message"),
    [
        (3, object, (), "plugin 'bad' registered a head with an invalid name 3"),
        ("x", object, ("ok", 4), "plugin 'bad' registered head 'x' with invalid aliases "
         "('ok', 4): expected a sequence of non-empty strings"),
        ("x", object, ("ok", ""), "plugin 'bad' registered head 'x' with invalid aliases "
         "('ok', ''): expected a sequence of non-empty strings"),
        ("x", "not callable", (), "plugin 'bad' registered head 'x' with a non-callable factory"),
    ],
)  # fmt: skip
def test_invalid_registrations_are_refused_whole(name, factory, aliases, message):
    def pyinstance_register_heads(register):
        register("valid_first", object)
        register(name, factory, aliases=aliases)

    registry = PluginRegistry(builtins=(), autoload=False)
    with pytest.raises(PluginError) as raised:
        registry.register_plugin(
            _plugin(pyinstance_register_heads=pyinstance_register_heads), "bad"
        )
    assert str(raised.value) == f"plugin 'bad' failed during registering heads: {message}"
    assert registry.components() == []


def test_valid_aliases_of_any_sequence_type_are_accepted():
    def pyinstance_register_heads(register):
        register("listed", object, aliases=["l1", "l2"])
        register("plain", object)

    registry = PluginRegistry(builtins=(), autoload=False)
    registry.register_plugin(_plugin(pyinstance_register_heads=pyinstance_register_heads), "ok")
    assert registry.component("head", "l2").name == "listed"
    assert registry.component("head", "l2").aliases == ("l1", "l2")
    assert registry.component("head", "plain").aliases == ()


def test_failures_is_a_copy():
    registry = PluginRegistry(builtins=(), autoload=False)
    registry.failures().append("not a failure")
    assert registry.failures() == []


def test_a_failed_load_keeps_no_components_and_is_retried(monkeypatch):
    registry = PluginRegistry(
        builtins=("pyinstance.builtin.losses", "pyinstance.no_such_module"), autoload=False
    )
    with pytest.raises(ModuleNotFoundError):
        registry.components()
    assert registry._components == {kind: {} for kind in HOOKS}
    assert registry._manager is None and registry._loading is False
    registry._builtins = ("pyinstance.builtin.losses",)
    assert "contrastive" in {c.name for c in registry.components("loss")}


def test_a_builtin_that_fails_validation_is_a_plugin_error_naming_it(monkeypatch):
    module = types.ModuleType("pyinstance_test_broken_builtin")

    @pyinstance.hookimpl
    def pyinstance_register_widgets(register):
        pass

    module.pyinstance_register_widgets = pyinstance_register_widgets
    monkeypatch.setitem(__import__("sys").modules, module.__name__, module)
    registry = PluginRegistry(builtins=(module.__name__,), autoload=False)
    with pytest.raises(PluginError, match=r"^built-in plugin 'pyinstance_test_broken_builtin' "
                       r"failed during validation: "):  # fmt: skip
        registry.components()
    assert registry._manager is None


def test_builtins_load_in_order_and_record_their_module_as_plugin():
    registry = PluginRegistry(autoload=False)
    component = registry.component("miner", "batch_hard")
    assert (component.plugin, component.distribution) == ("pyinstance.builtin.miners", "pyinstance")
    assert registry.failures() == []


def test_loading_happens_once(monkeypatch):
    calls = _serve_entry_points(monkeypatch, _EntryPoint("one", _miner_plugin("once"), "d"))
    registry = PluginRegistry(builtins=(), autoload=True)
    registry.component("miner", "once")
    registry.register_plugin(_miner_plugin("later"), "later")
    registry.components()
    registry.failures()
    assert calls == [plugins.ENTRY_POINT_GROUP]
    assert [c.name for c in registry.components("miner")] == ["later", "once"]
