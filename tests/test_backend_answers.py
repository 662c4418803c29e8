"""_backend's answers worked out by hand: the ISA cap, the CUDA module and the build facts.

The compiled extensions are replaced by fakes whose facts are written here, so that every
branch of the reshaping (a CUDA module present or not, why it failed to load) is reached on
a machine without CUDA.
"""

from __future__ import annotations

import linecache
import warnings
from types import SimpleNamespace

import pytest

import pyinstance
from pyinstance import _backend

_CPU_FACTS = {
    "compiler": "GCC 13.2.0",
    "omp_max_threads": 6,
    "isa_compiled": ["generic", "avx2"],
    "isa_detected": "avx2",
    "isa_active": "avx2",
}
_CUDA_FACTS = {"architectures": ["sm_80", "sm_90"], "devices": ["H100", "H100"]}


def _fake_cpu(facts: dict) -> SimpleNamespace:
    return SimpleNamespace(build_info=lambda: dict(facts))


@pytest.fixture
def no_cap(monkeypatch):
    monkeypatch.delenv("PYINSTANCE_ISA", raising=False)
    monkeypatch.setattr(_backend, "_warned_isa_values", set())


def _warnings_of(call):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, caught


@pytest.mark.parametrize("value", [None, ""])
def test_no_cap_is_none_and_silent(monkeypatch, no_cap, value):
    if value is not None:
        monkeypatch.setenv("PYINSTANCE_ISA", value)
    cap, caught = _warnings_of(_backend.isa_cap)
    assert cap is None
    assert caught == []


@pytest.mark.parametrize("level", ["generic", "avx2", "avx512"])
def test_a_known_level_is_the_cap(monkeypatch, no_cap, level):
    monkeypatch.setenv("PYINSTANCE_ISA", level)
    cap, caught = _warnings_of(_backend.isa_cap)
    assert cap == level
    assert caught == []


def test_an_unknown_value_warns_once_per_value_with_the_whole_message(monkeypatch, no_cap):
    monkeypatch.setattr(_backend, "_C", _fake_cpu(_CPU_FACTS))
    monkeypatch.setenv("PYINSTANCE_ISA", "sse9")
    cap, caught = _warnings_of(_backend.isa_cap)
    assert cap is None
    assert [w.category for w in caught] == [RuntimeWarning]
    assert str(caught[0].message) == (
        "PYINSTANCE_ISA='sse9' is not one of generic, avx2, avx512: ignored, the kernels use "
        "the detected ISA (avx2)"
    )
    # The same value again: no second warning; another unknown value warns in its turn.
    # The warning names a caller of isa_cap (stacklevel), not the line that warns.
    assert "warnings.warn(" not in linecache.getline(caught[0].filename, caught[0].lineno)
    assert _warnings_of(_backend.isa_cap) == (None, [])
    monkeypatch.setenv("PYINSTANCE_ISA", "AVX2")
    cap, caught = _warnings_of(_backend.isa_cap)
    assert cap is None
    assert len(caught) == 1 and "PYINSTANCE_ISA='AVX2'" in str(caught[0].message)
    assert _warnings_of(_backend.isa_cap) == (None, [])


def test_cuda_device_count_asks_the_cuda_module(monkeypatch):
    monkeypatch.setattr(_backend, "_C_cuda", SimpleNamespace(device_count=lambda: 3))
    assert _backend.cuda_device_count() == 3
    monkeypatch.setattr(_backend, "_C_cuda", None)
    assert _backend.cuda_device_count() == 0


def test_cuda_module_is_the_loaded_module(monkeypatch):
    module = SimpleNamespace(device_count=lambda: 1)
    monkeypatch.setattr(_backend, "_C_cuda", module)
    assert _backend.cuda_module() is module


def test_cuda_module_names_why_it_did_not_load(monkeypatch):
    monkeypatch.setattr(_backend, "_C_cuda", None)
    monkeypatch.setattr(_backend, "_cuda_import_error", "libcudart.so.13: cannot open")
    with pytest.raises(RuntimeError, match=r"built without CUDA.*\(libcudart.so.13: cannot open\)"):
        _backend.cuda_module()


def test_build_info_without_cuda_module(monkeypatch, no_cap):
    monkeypatch.setattr(_backend, "_C", _fake_cpu(_CPU_FACTS))
    monkeypatch.setattr(_backend, "_C_cuda", None)
    monkeypatch.setattr(_backend, "CUDA_COMPILED", False)
    monkeypatch.setattr(_backend, "_cuda_import_error", "No module named 'pyinstance._C_cuda'")
    cpu = {"isa_compiled": ["generic", "avx2"], "isa_detected": "avx2", "isa_active": "avx2"}
    expected = {
        "version": pyinstance.__version__,
        "compiler": "GCC 13.2.0",
        "cpu": cpu,
        "openmp_threads": 6,
        "cuda_compiled": False,
        "cuda": None,
    }
    assert _backend.build_info() == expected
    # Never built with CUDA (no error at all): the same answer.
    monkeypatch.setattr(_backend, "_cuda_import_error", None)
    assert _backend.build_info() == expected


def test_build_info_reports_why_the_cuda_module_failed_to_load(monkeypatch, no_cap):
    monkeypatch.setattr(_backend, "_C", _fake_cpu(_CPU_FACTS))
    monkeypatch.setattr(_backend, "_C_cuda", None)
    monkeypatch.setattr(_backend, "_cuda_import_error", "libcudart.so.13: cannot open")
    info = _backend.build_info()
    assert info["cuda"] is None
    assert info["cuda_error"] == "libcudart.so.13: cannot open"
    assert "isa_cap" not in info


def test_build_info_with_a_cuda_module(monkeypatch, no_cap):
    monkeypatch.setattr(_backend, "_C", _fake_cpu(_CPU_FACTS))
    monkeypatch.setattr(_backend, "_C_cuda", _fake_cpu(_CUDA_FACTS))
    monkeypatch.setattr(_backend, "CUDA_COMPILED", True)
    monkeypatch.setattr(_backend, "_cuda_import_error", None)
    info = _backend.build_info()
    assert info["cuda_compiled"] is True
    assert info["cuda"] == {"architectures": ["sm_80", "sm_90"], "devices": ["H100", "H100"]}
    assert "cuda_error" not in info


@pytest.mark.parametrize("level", ["generic", "avx512"])
def test_build_info_names_the_cap(monkeypatch, no_cap, level):
    monkeypatch.setattr(_backend, "_C", _fake_cpu(_CPU_FACTS))
    monkeypatch.setenv("PYINSTANCE_ISA", level)
    assert _backend.build_info()["isa_cap"] == level
