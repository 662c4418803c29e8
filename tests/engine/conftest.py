"""Small networks for engine tests, and a private ONNX cache per test."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pyinstance.engine import available_engines
from pyinstance.models.pooling import GeM

#: Tests that need the ``fast`` extra (onnxruntime + onnx).
requires_onnxruntime = pytest.mark.skipif(
    "onnxruntime" not in available_engines(),
    reason="needs pip install 'pyinstance[fast]' (onnxruntime, onnx)",
)
#: Tests that need OpenVINO (in the ``fast`` extra).
requires_openvino = pytest.mark.skipif(
    "openvino" not in available_engines(),
    reason="needs pip install 'pyinstance[fast]' (openvino, onnx)",
)


class TinyBackbone(nn.Module):
    """Two strided convolutions: B×3×H×W -> B×16×H/4×W/4."""

    out_channels = 16
    min_input_size = 8

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.layers = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.ReLU(),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)


class NumpyBackbone(TinyBackbone):
    """Leaves torch for numpy inside forward: tracing records a constant, so export fails."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        squashed = torch.from_numpy(np.tanh(images.detach().cpu().numpy()))
        return self.layers(squashed)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """Never touch the user's cache: ``$PYINSTANCE_CACHE`` points into the test's folder."""
    monkeypatch.setenv("PYINSTANCE_CACHE", str(tmp_path / "pyinstance-cache"))


@pytest.fixture
def tiny() -> tuple[TinyBackbone, GeM]:
    return TinyBackbone(), GeM(16)
