"""Compiled kernels, one Python entry per op; ``_reference`` holds their pure-torch oracles."""

from pyinstance.ops.knn_dot import knn_dot
from pyinstance.ops.triplet_mine import MiningWarning, triplet_mine

__all__ = ["MiningWarning", "knn_dot", "triplet_mine"]
