"""Registers the top-k region head (implemented in :mod:`pyinstance.models.region_head`)."""

from __future__ import annotations

from pyinstance.hookspecs import Register, hookimpl
from pyinstance.models.region_head import TopKRegionHead


@hookimpl
def pyinstance_register_heads(register: Register) -> None:
    register("topk_region", TopKRegionHead, aliases=("kohl",))
