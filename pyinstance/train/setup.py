"""The set-up every training run starts with: seed, device, training photos, output folder.

:class:`~pyinstance.train.Trainer` and :class:`~pyinstance.train.VerificationTrainer` both
call :func:`set_up_run`, so the two read ``seed``, ``train.device``, ``data`` and
``output`` the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from pyinstance.train.config import Config
from pyinstance.train.data import TrainingSet, load_training_set


@dataclass(frozen=True)
class RunSetup:
    """What a training run starts from.

    Attributes:
        device: where the network trains (``train.device`` resolved).
        data: the training photos.
        output: the folder of checkpoints, metrics and the written model.
    """

    device: torch.device
    data: TrainingSet
    output: Path


def set_up_run(config: Config, training_set: TrainingSet | None = None) -> RunSetup:
    """Seed torch with ``config.seed``, resolve ``train.device`` and load the photos of
    ``data.source`` (unless ``training_set`` holds them already)."""
    torch.manual_seed(config.seed)
    device = resolve_device(config.train.device)
    data = (
        training_set
        if training_set is not None
        else load_training_set(config.data.source, decode_side=config.data.decode_side)
    )
    return RunSetup(device=device, data=data, output=Path(config.output))


def resolve_device(name: str) -> torch.device:
    """``train.device`` as a torch device: ``"auto"`` is CUDA when torch sees a GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device: 'cuda' asked for, but torch sees no CUDA device")
    return torch.device(name)
