"""The plugin manager: built-ins first, then entry points of group ``pyinstance``, once.

Components are looked up by kind and name (``get_backbone("resnet50")``); every
component records the plugin and distribution that provided it.

Loading is all or nothing per plugin: a plugin whose import, validation or hooks fail, or
that registers a name already taken, is recorded as a failure (:meth:`PluginRegistry.failures`,
shown by ``pyinstance plugins``) and contributes nothing; every other plugin still loads.
The registry counts as loaded only once every plugin has been tried.
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
    "reranker": "pyinstance_register_rerankers",
}

#: Modules of built-in plugins, registered before any entry point.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "pyinstance.builtin.losses",
    "pyinstance.builtin.backbones",
    "pyinstance.builtin.heads",
    "pyinstance.builtin.region_head",
    "pyinstance.builtin.miners",
    "pyinstance.builtin.classifiers",
    "pyinstance.builtin.rerankers",
)


class PluginError(RuntimeError):
    """A plugin is broken (duplicate names, invalid registration)."""


class UnknownComponentError(ValueError, KeyError):
    """No component of that kind has that name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class Component:
    """One registered backbone, head, loss, miner, classifier or re-ranker."""

    kind: str
    name: str
    factory: Callable[..., Any] = field(repr=False)
    plugin: str
    distribution: str | None
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that failed to load; it contributes nothing, the others still load."""

    plugin: str
    stage: str
    error: BaseException


class _LoadFailure(Exception):
    """Raised inside the loader: ``stage`` failed with ``error``."""

    def __init__(self, stage: str, error: BaseException):
        super().__init__(stage, error)
        self.stage = stage
        self.error = error


def check_kind(kind: object) -> str:
    """``kind`` if it is a component kind, else a ``ValueError`` listing the kinds."""
    if not isinstance(kind, str) or kind not in HOOKS:
        raise ValueError(f"kind: expected one of {', '.join(HOOKS)}, got {kind!r}")
    return kind


class PluginRegistry:
    """Holds the pluggy manager and the components its hooks registered."""

    def __init__(self, *, builtins: Sequence[str] = BUILTIN_PLUGINS, autoload: bool | None = None):
        self._builtins = tuple(builtins)
        self._autoload = autoload
        self._lock = threading.RLock()
        self._loading = False
        #: Set only once every plugin has been tried: "loaded" means fully loaded.
        self._manager: pluggy.PluginManager | None = None
        self._components: dict[str, dict[str, Component]] = {kind: {} for kind in HOOKS}
        self._failures: list[PluginFailure] = []

    # -- loading --------------------------------------------------------------
    def _ensure_loaded(self) -> pluggy.PluginManager:
        manager = self._manager
        if manager is not None:
            return manager
        with self._lock:
            if self._manager is not None:
                return self._manager
            if self._loading:
                raise PluginError(
                    "a plugin looked up a component while plugins were loading: hooks may "
                    "only call register()"
                )
            self._loading = True
            try:
                self._components = {kind: {} for kind in HOOKS}
                self._failures = []
                manager = pluggy.PluginManager("pyinstance")
                manager.add_hookspecs(hookspecs)
                for module_name in self._builtins:
                    try:
                        self._add(manager, importlib.import_module(module_name), module_name)
                    except _LoadFailure as failure:  # a bug in pyinstance itself
                        raise PluginError(
                            f"built-in plugin {module_name!r} failed during {failure.stage}: "
                            f"{failure.error}"
                        ) from failure.error
                if self._autoload_enabled():
                    self._load_entry_points(manager)
                self._manager = manager
            finally:
                self._loading = False
                if self._manager is None:  # a failed load leaves nothing half-done
                    self._components = {kind: {} for kind in HOOKS}
                    self._failures = []
            return manager

    def _autoload_enabled(self) -> bool:
        if self._autoload is not None:
            return self._autoload
        return os.environ.get(DISABLE_AUTOLOAD_ENV, "").strip().lower() not in {"1", "true", "yes"}

    def _load_entry_points(self, manager: pluggy.PluginManager) -> None:
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            distribution = entry_point.dist.name if entry_point.dist is not None else None
            try:
                plugin = entry_point.load()
            except Exception as error:  # a broken plugin must not take the others down
                self._record_failure(entry_point.name, "import", error)
                continue
            try:
                self._add(manager, plugin, entry_point.name, distribution)
            except _LoadFailure as failure:
                self._record_failure(entry_point.name, failure.stage, failure.error)

    def _record_failure(self, plugin: str, stage: str, error: BaseException) -> None:
        self._failures.append(PluginFailure(plugin, stage, error))
        warnings.warn(
            f"pyinstance plugin {plugin!r} failed during {stage}: {type(error).__name__}: {error}",
            RuntimeWarning,
            stacklevel=5,
        )

    def _add(
        self,
        manager: pluggy.PluginManager,
        plugin: object,
        name: str,
        distribution: str | None = "pyinstance",
    ) -> None:
        """Register ``plugin`` and all its components, or nothing (raises ``_LoadFailure``)."""
        if manager.has_plugin(name):
            raise _LoadFailure(
                "registration", PluginError(f"another plugin is already named {name!r}")
            )
        try:
            manager.register(plugin, name=name)
        except (ValueError, pluggy.PluginValidationError) as error:  # e.g. registered twice
            raise _LoadFailure("registration", error) from error
        try:
            manager.check_pending()  # a hook pyinstance does not define is a broken plugin
        except pluggy.PluginValidationError as error:
            manager.unregister(plugin, name=name)
            raise _LoadFailure("validation", error) from error
        try:
            staged = [
                component
                for kind, hook_name in HOOKS.items()
                for impl in getattr(manager.hook, hook_name).get_hookimpls()
                if impl.plugin is plugin
                for component in self._run_hook(kind, impl.function, name, distribution)
            ]
        except _LoadFailure:
            manager.unregister(plugin, name=name)
            raise
        for component in staged:
            self._insert(component)

    def _run_hook(
        self, kind: str, hook: Callable[..., None], plugin: str, distribution: str | None
    ) -> list[Component]:
        """The components ``hook`` registers, checked against each other and the registry."""
        staged: list[Component] = []
        taken: dict[str, Component] = {}

        def register(
            name: str, factory: Callable[..., Any], *, aliases: Sequence[str] = ()
        ) -> None:
            if not isinstance(name, str) or not name:
                raise PluginError(
                    f"plugin {plugin!r} registered a {kind} with an invalid name {name!r}"
                )
            if isinstance(aliases, str) or not all(isinstance(a, str) and a for a in aliases):
                raise PluginError(
                    f"plugin {plugin!r} registered {kind} {name!r} with invalid aliases "
                    f"{aliases!r}: expected a sequence of non-empty strings"
                )
            if not callable(factory):
                raise PluginError(
                    f"plugin {plugin!r} registered {kind} {name!r} with a non-callable factory"
                )
            component = Component(kind, name, factory, plugin, distribution, tuple(aliases))
            for key in (name, *component.aliases):
                other = taken.get(key) or self._components[kind].get(key)
                if other is not None:
                    raise PluginError(
                        f"duplicate {kind} name {key!r}: registered by plugin "
                        f"{other.plugin!r} ({other.distribution or 'unknown distribution'}) "
                        f"and by plugin {plugin!r} ({distribution or 'unknown distribution'})"
                    )
                taken[key] = component
            staged.append(component)

        try:
            hook(register=register)
        except Exception as error:  # reported by name; nothing of this plugin is kept
            stage = "registering " + HOOKS[kind].removeprefix("pyinstance_register_")
            raise _LoadFailure(stage, error) from error
        return staged

    def _insert(self, component: Component) -> None:
        table = self._components[component.kind]
        for key in (component.name, *component.aliases):
            table[key] = component

    # -- public ---------------------------------------------------------------
    def register_plugin(self, plugin: object, name: str, distribution: str | None = None) -> None:
        """Register a plugin object by hand (tests, notebooks, applications).

        Raises :class:`PluginError` (and registers nothing of it) if the plugin is invalid
        or one of its names is taken.
        """
        with self._lock:
            manager = self._ensure_loaded()
            try:
                self._add(manager, plugin, name, distribution)
            except _LoadFailure as failure:
                raise PluginError(
                    f"plugin {name!r} failed during {failure.stage}: {failure.error}"
                ) from failure.error

    def component(self, kind: str, name: str) -> Component:
        """The component ``name`` of ``kind``; the error lists the names available."""
        check_kind(kind)
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
        kinds = [check_kind(kind)] if kind is not None else list(HOOKS)
        self._ensure_loaded()
        unique = {(c.kind, c.name): c for k in kinds for c in self._components[k].values()}
        return [unique[key] for key in sorted(unique)]

    def failures(self) -> list[PluginFailure]:
        """Plugins that failed to load (import, validation, registration or a taken name)."""
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


def get_reranker(name: str, **kwargs: Any) -> Any:
    """Build the re-ranker ``name`` (a pair scorer, see :class:`pyinstance.classify.PairScorer`)."""
    return registry.create("reranker", name, **kwargs)


def list_plugins(kind: str | None = None) -> list[Component]:
    """Every registered component with its kind, name, plugin and distribution."""
    return registry.components(kind)
