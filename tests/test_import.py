"""The package imports light: a plugin's ``from pyinstance import hookimpl`` loads no heavy module."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import pyinstance

_HEAVY = ("torch", "numpy", "PIL", "tqdm", "rich", "pyinstance._C", "pyinstance._backend")


def _modules_after(statement: str) -> set[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return set(json.loads(result.stdout))


def test_hookimpl_import_loads_no_extension_torch_pil_or_tqdm():
    loaded = _modules_after("from pyinstance import hookimpl")
    assert "pyinstance.hookspecs" in loaded
    assert not loaded & set(_HEAVY), sorted(loaded & set(_HEAVY))


def test_public_names_load_on_first_use():
    loaded = _modules_after("import pyinstance\nassert pyinstance.HAS_CUDA in (True, False)")
    assert "pyinstance._backend" in loaded and "PIL" not in loaded


@pytest.mark.parametrize("name", pyinstance.__all__)
def test_every_public_name_resolves(name):
    assert getattr(pyinstance, name) is not None
    assert name in dir(pyinstance)


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        pyinstance.no_such_name  # noqa: B018
    assert pyinstance.plugins.registry is not None  # submodules load on attribute access
