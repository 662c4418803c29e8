"""Compiled kernels, one Python entry per op; ``_reference`` holds their pure-torch oracles."""

from pyinstance.ops.knn_dot import knn_dot
from pyinstance.ops.knn_screen import KnnScreen
from pyinstance.ops.topk_region_pool import topk_region_pool
from pyinstance.ops.triplet_mine import MiningWarning, triplet_mine

__all__ = ["KnnScreen", "MiningWarning", "knn_dot", "topk_region_pool", "triplet_mine"]
