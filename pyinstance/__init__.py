"""pyinstance: instance-level image search and identification.

The public names below are loaded on first use (PEP 562), so that ``from pyinstance import
hookimpl`` in a plugin imports neither torch, the compiled extension, nor PIL or tqdm, and
queries no CUDA device. To export a name, add one line to ``_EXPORTS``.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from pyinstance.hookspecs import hookimpl as hookimpl  # re-exported, eagerly (light)

__version__ = "0.1.0"

#: Public name -> the module that defines it (imported when the name is first used).
_EXPORTS: dict[str, str] = {
    "CUDA_COMPILED": "pyinstance._backend",
    "HAS_CUDA": "pyinstance._backend",
    "build_info": "pyinstance._backend",
    "aggregate_scales": "pyinstance.extraction",
    "extract": "pyinstance.extraction",
    "get_backbone": "pyinstance.plugins",
    "get_classifier": "pyinstance.plugins",
    "get_head": "pyinstance.plugins",
    "get_loss": "pyinstance.plugins",
    "get_miner": "pyinstance.plugins",
    "get_reranker": "pyinstance.plugins",
    "list_plugins": "pyinstance.plugins",
    "InstanceIndex": "pyinstance.index",
    "Recipe": "pyinstance.index",
    "DEFAULT_RECIPE": "pyinstance.index",
    "Identifier": "pyinstance.identification",
    "Identification": "pyinstance.identification",
    "identify": "pyinstance.identification",
    "calibrate": "pyinstance.calibration",
    "ObjectFinder": "pyinstance.objects",
    "DetectedObject": "pyinstance.objects",
    "calibrate_objects": "pyinstance.objects",
    "sleep_idle_threads": "pyinstance.idle_threads",
}

__all__ = sorted(["__version__", "hookimpl", *_EXPORTS])


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use; submodules load on attribute access too."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    if not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
