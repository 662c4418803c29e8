"""Helpers shared by the post-processing tests."""

from __future__ import annotations

import numpy as np


def unit_sets(n: int, p: int = 1, d: int = 12, seed: int = 0) -> np.ndarray:
    """``(n, p, d)`` random float32 descriptor sets, each row of unit length."""
    x = np.random.default_rng(seed).normal(size=(n, p, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=2, keepdims=True)
