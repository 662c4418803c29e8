"""Training checkpoints: model, optimiser, scheduler, RNG and loop state, written atomically.

A checkpoint records the recipe of its run (:meth:`pyinstance.train.config.Config.recipe_dict`);
resuming with another recipe is refused, naming what differs.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import torch

from pyinstance._files import read_torch, write_atomic

FORMAT = "pyinstance-checkpoint"
VERSION = 1


class CheckpointMismatchError(ValueError):
    """A checkpoint made by a run with another recipe."""


def save_checkpoint(
    path: str | os.PathLike[str], recipe: dict[str, Any], state: dict[str, Any]
) -> None:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) with ``recipe`` atomically."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "recipe": json.dumps(recipe, sort_keys=True),
        "state": state,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_atomic(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike[str], recipe: dict[str, Any]) -> dict[str, Any]:
    """The state saved at ``path``; refused unless it was made with ``recipe``."""
    path = Path(path)
    payload = read_torch(path, "checkpoint")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"checkpoint: {str(path)!r} is not a pyinstance training checkpoint")
    if payload.get("version") != VERSION:
        raise ValueError(
            f"checkpoint: {str(path)!r} has layout version {payload.get('version')!r}, "
            f"expected {VERSION}"
        )
    saved = json.loads(payload["recipe"])
    wanted = json.loads(json.dumps(recipe, sort_keys=True))
    if saved != wanted:
        differs = sorted(
            key for key in saved.keys() | wanted.keys() if saved.get(key) != wanted.get(key)
        )
        details = "; ".join(
            f"{key}: checkpoint {saved.get(key)!r}, config {wanted.get(key)!r}" for key in differs
        )
        raise CheckpointMismatchError(
            f"checkpoint: {str(path)!r} comes from another recipe ({details}); use another "
            "output folder or remove the checkpoint"
        )
    return payload["state"]
