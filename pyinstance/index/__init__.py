"""The persistent instance index: references, their descriptors and the recipe that made them."""

from __future__ import annotations

from pyinstance.index.neighbours import Neighbours

__all__ = ["Neighbours"]
