"""A trained model file: the network's recipe (names and parameters) and its state dicts.

``pyinstance train`` writes one; ``pyinstance index build --model FILE`` and
:class:`pyinstance.index.Describer` read it back: the backbone and head are built by name
with the saved parameters, then the trained weights are loaded strictly. The file is a
``torch.save`` of plain containers, read with ``weights_only=True``.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pyinstance._files import read_versioned, write_atomic

#: The ``format`` entry of every model file.
FORMAT = "pyinstance-model"
#: The layout version written; files of other versions are refused.
VERSION = 1


@dataclass(frozen=True)
class TrainedModel:
    """What a model file holds.

    Attributes:
        backbone, head: registered component names.
        backbone_params, head_params: their keyword arguments (JSON values).
        backbone_state, head_state: the trained state dicts.
        max_side: the longest side (pixels) the model was trained and validated at.
        info: JSON-able facts about the training (config, epochs, metrics).
    """

    backbone: str
    head: str
    backbone_state: dict[str, torch.Tensor]
    head_state: dict[str, torch.Tensor]
    backbone_params: dict[str, Any] = field(default_factory=dict)
    head_params: dict[str, Any] = field(default_factory=dict)
    max_side: int = 448
    info: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model atomically to ``path`` and return it."""
        payload = {
            "format": FORMAT,
            "version": VERSION,
            "backbone": self.backbone,
            "head": self.head,
            "backbone_params": json.dumps(self.backbone_params, sort_keys=True),
            "head_params": json.dumps(self.head_params, sort_keys=True),
            "max_side": self.max_side,
            "info": json.dumps(self.info, sort_keys=True, default=str),
            "backbone_state": {k: v.detach().cpu() for k, v in self.backbone_state.items()},
            "head_state": {k: v.detach().cpu() for k, v in self.head_state.items()},
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        write_atomic(path, buffer.getvalue())
        return Path(path)

    def load_into(self, backbone: nn.Module, head: nn.Module) -> None:
        """Load the trained weights into freshly built modules (strictly, naming mismatches)."""
        for name, module, state in (
            ("backbone", backbone, self.backbone_state),
            ("head", head, self.head_state),
        ):
            try:
                module.load_state_dict(state, strict=True)
            except RuntimeError as error:
                raise ValueError(
                    f"model: the {name} weights do not fit {type(module).__name__}: {error}"
                ) from error


def read_model(path: str | os.PathLike[str]) -> TrainedModel:
    """The model file at ``path``; a missing, corrupt or foreign file is a clear error."""
    path = Path(path)
    payload = read_versioned(path, "model", FORMAT, VERSION, "`pyinstance train`")
    try:
        return TrainedModel(
            backbone=str(payload["backbone"]),
            head=str(payload["head"]),
            backbone_params=json.loads(payload["backbone_params"]),
            head_params=json.loads(payload["head_params"]),
            max_side=int(payload["max_side"]),
            info=json.loads(payload["info"]),
            backbone_state=dict(payload["backbone_state"]),
            head_state=dict(payload["head_state"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"model: {str(path)!r} is incomplete or damaged: {error}") from error
