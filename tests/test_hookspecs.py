"""Meta-tests: every hook is documented, has a getter, a contract check and a CLI kind."""

import inspect

import pytest

import pyinstance
from pyinstance import hookspecs, plugins, testing

HOOK_NAMES = [name for name in dir(hookspecs) if name.startswith("pyinstance_register_")]


def test_hooks_match_the_registry_kinds():
    assert sorted(HOOK_NAMES) == sorted(plugins.HOOKS.values())


@pytest.mark.parametrize("hook_name", HOOK_NAMES)
def test_hook_is_documented_with_its_contract(hook_name):
    doc = inspect.getdoc(getattr(hookspecs, hook_name))
    assert doc and "factory" in doc and "pyinstance.testing.check_" in doc


@pytest.mark.parametrize("kind", list(plugins.HOOKS))
def test_kind_has_public_getter_and_contract_check(kind):
    assert callable(getattr(pyinstance, f"get_{kind}"))
    assert callable(getattr(testing, f"check_{kind}"))
