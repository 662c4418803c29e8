"""Inference engines: eager torch, or the network exported to ONNX and run by ONNX Runtime.

>>> engine = make_engine(backbone, head)            # "auto": onnxruntime when installed
>>> descriptors = engine(normalised_batch)          # B×3×H×W float32 -> B×D

ONNX Runtime is the optional extra ``pip install 'pyinstance[fast]'``; without it the
torch engine runs. Training always uses the torch modules.
"""

from pyinstance.engine.base import OUTPUTS, Engine, EngineUnavailableError, Output
from pyinstance.engine.export import DESCRIPTOR_TOLERANCE, ExportError, default_cache_dir
from pyinstance.engine.onnxruntime_engine import OnnxRuntimeEngine, default_threads
from pyinstance.engine.select import (
    ENGINES,
    EngineFallbackWarning,
    available_engines,
    default_engine,
    engine_info,
    make_engine,
)
from pyinstance.engine.torch_engine import TorchEngine

__all__ = [
    "DESCRIPTOR_TOLERANCE",
    "ENGINES",
    "OUTPUTS",
    "Engine",
    "EngineFallbackWarning",
    "EngineUnavailableError",
    "ExportError",
    "OnnxRuntimeEngine",
    "Output",
    "TorchEngine",
    "available_engines",
    "default_cache_dir",
    "default_engine",
    "default_threads",
    "engine_info",
    "make_engine",
]
