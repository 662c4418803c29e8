"""The metrics log of a run: one JSON line per epoch and a PNG of the curves."""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pyinstance._files import write_atomic

#: The curves drawn, with their axis labels.
CURVES = (("loss", "loss"), ("active_triplets", "active triplets"), ("p_at_1", "validation P@1"))


def write_metrics(folder: str | os.PathLike[str], epochs: Sequence[dict[str, Any]]) -> None:
    """``metrics.jsonl`` (one line per epoch) and ``metrics.png`` in ``folder``, atomically."""
    folder = Path(folder)
    lines = "".join(json.dumps(_finite(row), sort_keys=True) + "\n" for row in epochs)
    write_atomic(folder / "metrics.jsonl", lines.encode())
    write_atomic(folder / "metrics.png", _plot(epochs))


def _finite(row: dict[str, Any]) -> dict[str, Any]:
    return {
        key: None if isinstance(value, float) and not math.isfinite(value) else value
        for key, value in row.items()
    }


def _plot(epochs: Sequence[dict[str, Any]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3.2))
    for axis, (key, label) in zip(axes, CURVES, strict=True):
        points = [(row["epoch"], row[key]) for row in epochs if row.get(key) is not None]
        if points:
            xs, ys = zip(*points, strict=True)
            axis.plot(xs, ys, marker="o")
        axis.set_xlabel("epoch")
        axis.set_title(label)
        axis.grid(True, alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    plt.close(figure)
    return buffer.getvalue()
