"""pyinstance: instance-level image search and identification."""

from __future__ import annotations

__version__ = "0.1.0"

from pyinstance._backend import CUDA_COMPILED, HAS_CUDA, build_info
from pyinstance.extraction import aggregate_scales, extract
from pyinstance.hookspecs import hookimpl
from pyinstance.plugins import (
    get_backbone,
    get_classifier,
    get_head,
    get_loss,
    get_miner,
    list_plugins,
)

__all__ = [
    "CUDA_COMPILED",
    "HAS_CUDA",
    "__version__",
    "aggregate_scales",
    "build_info",
    "extract",
    "get_backbone",
    "get_classifier",
    "get_head",
    "get_loss",
    "get_miner",
    "hookimpl",
    "list_plugins",
]
