"""Compiled kernels, one Python entry per op; ``_reference`` holds their pure-torch oracles."""

from pyinstance.ops.knn_dot import knn_dot

__all__ = ["knn_dot"]
