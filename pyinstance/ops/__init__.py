"""Compiled kernels, one Python entry per op; ``_reference`` holds their pure-torch oracles."""

from pyinstance.ops.topk_region_pool import topk_region_pool as topk_region_pool
