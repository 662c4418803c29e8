"""The package's lazy exports: what ``__getattr__`` and ``__dir__`` answer.

An exported name, once used, is stored in the package's namespace and never reaches
``__getattr__`` again, so each test here first removes every exported name that earlier
tests (or the test run's start) have stored: the look-up runs for real.
"""

from __future__ import annotations

import sys

import pytest

import pyinstance
from pyinstance import (
    _backend,
    calibration,
    extraction,
    identification,
    idle_threads,
    index,
    objects,
    plugins,
)

_DEFINING = (
    _backend,
    calibration,
    extraction,
    identification,
    idle_threads,
    index,
    objects,
    plugins,
)
_MISSING = object()
EXPORTED = [name for name in pyinstance.__all__ if name not in ("__version__", "hookimpl")]


@pytest.fixture(autouse=True)
def _uncached(monkeypatch):
    for name in EXPORTED:
        monkeypatch.delitem(vars(pyinstance), name, raising=False)


def test_names_come_from_their_modules():
    assert pyinstance.build_info is _backend.build_info
    assert pyinstance.HAS_CUDA is _backend.HAS_CUDA
    assert pyinstance.extract is extraction.extract
    assert pyinstance.get_backbone is plugins.get_backbone
    assert pyinstance.InstanceIndex is index.InstanceIndex
    assert pyinstance.identify is identification.identify
    assert pyinstance.ObjectFinder is objects.ObjectFinder


@pytest.mark.parametrize("name", EXPORTED)
def test_a_name_is_looked_up_once_then_stored(name):
    assert name not in vars(pyinstance)
    first = getattr(pyinstance, name)
    assert any(getattr(module, name, _MISSING) is first for module in _DEFINING)
    assert vars(pyinstance)[name] is first
    assert getattr(pyinstance, name) is first


def test_dir_lists_exported_names_before_their_first_use():
    listed = dir(pyinstance)
    assert listed == sorted(listed)
    assert {"extract", "Identifier", "HAS_CUDA", "__version__", "hookimpl"} <= set(listed)
    assert "extract" not in vars(pyinstance)


def test_a_submodule_loads_on_attribute_access(monkeypatch):
    monkeypatch.delattr(pyinstance, "plugins")
    assert "plugins" not in vars(pyinstance)
    assert pyinstance.plugins is plugins


def test_a_dunder_name_is_never_imported_as_a_submodule(monkeypatch):
    # pyinstance/__main__.py runs the command line when imported: `pyinstance.__main__`
    # (a probe such as copy's or inspect's) must not import it.
    monkeypatch.setattr(sys, "argv", ["pyinstance", "--help"])
    monkeypatch.delitem(sys.modules, "pyinstance.__main__", raising=False)
    monkeypatch.delattr(pyinstance, "__main__", raising=False)
    with pytest.raises(AttributeError, match="has no attribute '__main__'"):
        pyinstance.__main__  # noqa: B018
    assert "pyinstance.__main__" not in sys.modules
