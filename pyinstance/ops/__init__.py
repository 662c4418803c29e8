"""Compiled kernels, one Python entry per op; ``_reference`` holds their pure-torch oracles."""

from pyinstance.ops.knn_dot import knn_dot
from pyinstance.ops.topk_region_pool import topk_region_pool

__all__ = ["knn_dot", "topk_region_pool"]
