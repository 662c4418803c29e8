"""Loads the compiled extensions and reports what this build can do."""

from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType
from typing import Any

from pyinstance import _C  # the CPU extension is always built

#: Values of the PYINSTANCE_ISA environment variable that cap the CPU kernels' ISA.
ISA_LEVELS = ("generic", "avx2", "avx512")
_warned_isa_values: set[str] = set()


def isa_cap() -> str | None:
    """The valid PYINSTANCE_ISA cap, or None; an unknown value warns and caps nothing.

    The kernels read the variable at every call and ignore a value they do not know, so a
    typo runs the detected ISA instead of failing every op (or ``pyinstance info``).
    """
    value = os.environ.get("PYINSTANCE_ISA", "")
    if not value:
        return None
    if value not in ISA_LEVELS:
        if value in _warned_isa_values:
            return None
        _warned_isa_values.add(value)
        warnings.warn(
            f"PYINSTANCE_ISA={value!r} is not one of {', '.join(ISA_LEVELS)}: ignored, the "
            f"kernels use the detected ISA ({_C.build_info()['isa_detected']})",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    return value


isa_cap()  # warn once at import about a bad value

_cuda_import_error: str | None = None
_C_cuda: ModuleType | None
try:
    _C_cuda = importlib.import_module("pyinstance._C_cuda")
except ImportError as error:  # built without CUDA, or its module cannot load here
    _C_cuda = None
    _cuda_import_error = str(error)

#: True when the CUDA extension was compiled into this installation.
CUDA_COMPILED: bool = _C_cuda is not None


def cuda_device_count() -> int:
    """Number of CUDA devices the CUDA extension can see (0 if none or not built)."""
    return _C_cuda.device_count() if _C_cuda is not None else 0


#: True when CUDA kernels can run: compiled in and at least one device visible.
HAS_CUDA: bool = CUDA_COMPILED and cuda_device_count() > 0


def cuda_module() -> ModuleType:
    """The CUDA extension, or a clear error saying why it is unavailable."""
    if _C_cuda is None:
        raise RuntimeError(
            "pyinstance was built without CUDA: reinstall with a CUDA compiler on PATH "
            "(PYINSTANCE_CUDA=ON pip install pyinstance) to use GPU arrays"
            + (f" ({_cuda_import_error})" if _cuda_import_error else "")
        )
    return _C_cuda


def build_info() -> dict[str, Any]:
    """Version, compiler, CPU ISA levels, OpenMP threads and CUDA support of this build."""
    from pyinstance import __version__

    cpu = dict(_C.build_info())
    info: dict[str, Any] = {
        "version": __version__,
        "compiler": cpu.pop("compiler"),
        "cpu": cpu,
        "openmp_threads": cpu.pop("omp_max_threads"),
        "cuda_compiled": CUDA_COMPILED,
        "cuda": None,
    }
    if _C_cuda is not None:
        info["cuda"] = dict(_C_cuda.build_info())
    elif _cuda_import_error and "No module named" not in _cuda_import_error:
        info["cuda_error"] = _cuda_import_error
    cap = isa_cap()
    if cap is not None:
        info["isa_cap"] = cap
    return info
