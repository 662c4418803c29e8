"""The compiled extensions load, report their build, and fail clearly without CUDA."""

import os
import subprocess
import sys

import pytest
import torch

import pyinstance
from pyinstance import _backend
from pyinstance.ops import _arrays


def test_build_info_reports_compiler_isa_openmp_and_cuda():
    info = pyinstance.build_info()
    assert info["version"] == pyinstance.__version__
    assert info["compiler"]
    assert {"generic"} <= set(info["cpu"]["isa_compiled"])
    assert info["cpu"]["isa_detected"] in info["cpu"]["isa_compiled"]
    assert info["openmp_threads"] >= 1
    assert info["cuda_compiled"] is pyinstance.CUDA_COMPILED
    if pyinstance.CUDA_COMPILED:
        assert info["cuda"]["architectures"]
        assert len(info["cuda"]["devices"]) == _backend.cuda_device_count()
    else:
        assert info["cuda"] is None


@pytest.mark.parametrize("cap", ["generic", "avx2", "avx512"])
def test_isa_cap_never_raises_the_level(monkeypatch, cap):
    order = ["generic", "avx2", "avx512"]
    detected = pyinstance.build_info()["cpu"]["isa_detected"]
    monkeypatch.setenv("PYINSTANCE_ISA", cap)
    active = _backend._C.active_isa()
    assert order.index(active) == min(order.index(cap), order.index(detected))


@pytest.mark.parametrize("cap", ["generic", "avx2", "avx512"])
def test_bf16_screening_only_with_avx512_and_the_cpu_extension(monkeypatch, cap):
    monkeypatch.setenv("PYINSTANCE_ISA", cap)
    cpu = pyinstance.build_info()["cpu"]
    expected = cpu["isa_active"] == "avx512" and "avx512bf16" in cpu["cpu_features"]
    assert cpu["bf16_dot"] is expected


def test_unknown_isa_cap_warns_and_caps_nothing(monkeypatch):
    monkeypatch.setenv("PYINSTANCE_ISA", "sse9")
    monkeypatch.setattr(_backend, "_warned_isa_values", set())
    with pytest.warns(RuntimeWarning, match="PYINSTANCE_ISA='sse9' is not one of generic"):
        info = pyinstance.build_info()
    assert "isa_cap" not in info
    assert _backend._C.active_isa() == info["cpu"]["isa_detected"]


def test_unknown_isa_cap_gives_a_message_not_a_traceback(tmp_path):
    code = "import pyinstance; print(pyinstance.build_info()['cpu']['isa_active'])"
    env = {**os.environ, "PYINSTANCE_ISA": "bogus"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "PYINSTANCE_ISA='bogus' is not one of generic, avx2, avx512" in result.stderr
    assert result.stdout.strip() == _backend._C.build_info()["isa_detected"]


def test_has_cuda_is_false_without_a_device():
    if _backend.cuda_device_count() == 0:
        assert pyinstance.HAS_CUDA is False


def test_cuda_arrays_without_cuda_build_raise_a_clear_error(monkeypatch):
    monkeypatch.setattr(_backend, "_C_cuda", None)
    with pytest.raises(RuntimeError, match="built without CUDA"):
        _arrays.kernel_module(torch.device("cuda"))


def test_import_works_when_the_cuda_module_cannot_load(tmp_path):
    # A _C_cuda that fails to import (no libcudart, broken install) leaves CPU use intact.
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'pyinstance._C_cuda':\n"
        "            raise ImportError('libcudart.so.13: cannot open shared object file')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import pyinstance\n"
        "assert not pyinstance.CUDA_COMPILED and not pyinstance.HAS_CUDA\n"
        "info = pyinstance.build_info()\n"
        "assert info['cuda'] is None and 'libcudart' in info['cuda_error']\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
