"""The plugin manager: built-ins first, then entry points of group ``pyinstance``, once.

Components are looked up by kind and name (``get_backbone("resnet50")``); every
component records the plugin and distribution that provided it.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pluggy

from pyinstance import hookspecs

ENTRY_POINT_GROUP = "pyinstance"
DISABLE_AUTOLOAD_ENV = "PYINSTANCE_DISABLE_PLUGIN_AUTOLOAD"

#: Component kind -> the hook that registers it.
HOOKS: dict[str, str] = {
    "backbone": "pyinstance_register_backbones",
    "head": "pyinstance_register_heads",
    "loss": "pyinstance_register_losses",
    "miner": "pyinstance_register_miners",
    "classifier": "pyinstance_register_classifiers",
}

#: Modules of built-in plugins, registered before any entry point.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "pyinstance.builtin.losses",
    "pyinstance.builtin.backbones",
    "pyinstance.builtin.heads",
    "pyinstance.builtin.region_head",
    "pyinstance.builtin.miners",
    "pyinstance.builtin.classifiers",
)


class PluginError(RuntimeError):
    """A plugin is broken (duplicate names, invalid registration)."""


class UnknownComponentError(ValueError, KeyError):
    """No component of that kind has that name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class Component:
    """One registered backbone, head, loss, miner or classifier."""

    kind: str
    name: str
    factory: Callable[..., Any] = field(repr=False)
    plugin: str
    distribution: str | None
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that raised while loading or registering; the others still load."""

    plugin: str
    stage: str
    error: BaseException


class PluginRegistry:
    """Holds the pluggy manager and the components its hooks registered."""

    def __init__(self, *, builtins: Sequence[str] = BUILTIN_PLUGINS, autoload: bool | None = None):
        self._builtins = tuple(builtins)
        self._autoload = autoload
        self._lock = threading.RLock()
        self._manager: pluggy.PluginManager | None = None
        self._components: dict[str, dict[str, Component]] = {kind: {} for kind in HOOKS}
        self._failures: list[PluginFailure] = []

    # -- loading --------------------------------------------------------------
    def _ensure_loaded(self) -> pluggy.PluginManager:
        with self._lock:
            if self._manager is None:
                manager = pluggy.PluginManager("pyinstance")
                manager.add_hookspecs(hookspecs)
                self._manager = manager
                for module_name in self._builtins:
                    self._add(importlib.import_module(module_name), module_name, "pyinstance")
                if self._autoload_enabled():
                    self._load_entry_points()
            return self._manager

    def _autoload_enabled(self) -> bool:
        if self._autoload is not None:
            return self._autoload
        return os.environ.get(DISABLE_AUTOLOAD_ENV, "").strip().lower() not in {"1", "true", "yes"}

    def _load_entry_points(self) -> None:
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            distribution = entry_point.dist.name if entry_point.dist is not None else None
            try:
                plugin = entry_point.load()
            except Exception as error:  # a broken plugin must not take the others down
                self._record_failure(entry_point.name, "import", error)
                continue
            try:
                self._add(plugin, entry_point.name, distribution)
            except pluggy.PluginValidationError as error:
                self._record_failure(entry_point.name, "validation", error)

    def _record_failure(self, plugin: str, stage: str, error: BaseException) -> None:
        self._failures.append(PluginFailure(plugin, stage, error))
        warnings.warn(
            f"pyinstance plugin {plugin!r} failed during {stage}: {type(error).__name__}: {error}",
            RuntimeWarning,
            stacklevel=4,
        )

    def _add(self, plugin: object, name: str, distribution: str | None) -> None:
        manager = self._manager
        assert manager is not None
        if manager.has_plugin(name):
            raise PluginError(f"two plugins are named {name!r}")
        manager.register(plugin, name=name)
        try:
            manager.check_pending()  # a hook pyinstance does not define is a broken plugin
        except pluggy.PluginValidationError:
            manager.unregister(plugin, name=name)
            raise
        for kind, hook_name in HOOKS.items():
            for impl in getattr(manager.hook, hook_name).get_hookimpls():
                if impl.plugin is plugin:
                    self._run_hook(kind, impl.function, name, distribution)

    def _run_hook(
        self, kind: str, hook: Callable[..., None], plugin: str, distribution: str | None
    ) -> None:
        staged: list[Component] = []

        def register(
            name: str, factory: Callable[..., Any], *, aliases: Sequence[str] = ()
        ) -> None:
            if not isinstance(name, str) or not name:
                raise PluginError(
                    f"plugin {plugin!r} registered a {kind} with an invalid name {name!r}"
                )
            if not callable(factory):
                raise PluginError(
                    f"plugin {plugin!r} registered {kind} {name!r} with a non-callable factory"
                )
            staged.append(Component(kind, name, factory, plugin, distribution, tuple(aliases)))

        try:
            hook(register=register)
        except Exception as error:  # reported by name; what it staged is discarded
            self._record_failure(plugin, f"registering {kind}s", error)
            return
        for component in staged:
            self._insert(component)

    def _insert(self, component: Component) -> None:
        table = self._components[component.kind]
        for key in (component.name, *component.aliases):
            if key in table:
                other = table[key]
                raise PluginError(
                    f"duplicate {component.kind} name {key!r}: registered by plugin "
                    f"{other.plugin!r} ({other.distribution or 'unknown distribution'}) and by "
                    f"plugin {component.plugin!r} ({component.distribution or 'unknown distribution'})"
                )
        for key in (component.name, *component.aliases):
            table[key] = component

    # -- public ---------------------------------------------------------------
    def register_plugin(self, plugin: object, name: str, distribution: str | None = None) -> None:
        """Register a plugin object by hand (tests, notebooks, applications)."""
        with self._lock:
            self._ensure_loaded()
            self._add(plugin, name, distribution)

    def component(self, kind: str, name: str) -> Component:
        """The component ``name`` of ``kind``; the error lists the names available."""
        if kind not in HOOKS:
            raise ValueError(f"kind must be one of {', '.join(HOOKS)}, got {kind!r}")
        if not isinstance(name, str):
            raise TypeError(f"{kind} name must be a string, got {type(name).__name__}")
        self._ensure_loaded()
        table = self._components[kind]
        if name in table:
            return table[name]
        available = sorted(table)
        close = difflib.get_close_matches(name, available, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownComponentError(
            f"unknown {kind} {name!r}.{hint} Available: {', '.join(available) or 'none'}"
        )

    def create(self, kind: str, name: str, **kwargs: Any) -> Any:
        """Build the component ``name`` of ``kind`` with ``kwargs``."""
        return self.component(kind, name).factory(**kwargs)

    def components(self, kind: str | None = None) -> list[Component]:
        """Every registered component (aliases folded), sorted by kind then name."""
        self._ensure_loaded()
        kinds = [kind] if kind is not None else list(HOOKS)
        unique = {(c.kind, c.name): c for k in kinds for c in self._components[k].values()}
        return [unique[key] for key in sorted(unique)]

    def failures(self) -> list[PluginFailure]:
        """Plugins that raised while importing or registering."""
        self._ensure_loaded()
        return list(self._failures)


#: The process-wide registry behind ``pyinstance.get_*``.
registry = PluginRegistry()


def get_backbone(name: str, **kwargs: Any) -> Any:
    """Build the backbone ``name`` (a ``torch.nn.Module`` giving B×C×H×W feature maps)."""
    return registry.create("backbone", name, **kwargs)


def get_head(name: str, **kwargs: Any) -> Any:
    """Build the pooling head ``name`` (feature map -> L2-normalised descriptor)."""
    return registry.create("head", name, **kwargs)


def get_loss(name: str, **kwargs: Any) -> Any:
    """Build the metric-learning loss ``name``."""
    return registry.create("loss", name, **kwargs)


def get_miner(name: str, **kwargs: Any) -> Any:
    """Build the triplet miner ``name``."""
    return registry.create("miner", name, **kwargs)


def get_classifier(name: str, **kwargs: Any) -> Any:
    """Build the instance classifier ``name``."""
    return registry.create("classifier", name, **kwargs)


def list_plugins(kind: str | None = None) -> list[Component]:
    """Every registered component with its kind, name, plugin and distribution."""
    return registry.components(kind)
