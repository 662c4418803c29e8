"""Inference engines: eager torch, or the network exported to ONNX and run by ONNX Runtime
or OpenVINO.

>>> engine = make_engine(backbone, head)            # "auto": the fastest installed
>>> descriptors = engine(normalised_batch)          # B×3×H×W float32 -> B×D

ONNX Runtime and OpenVINO come with the optional extra ``pip install 'pyinstance[fast]'``;
without them the torch engine runs. Training always uses the torch modules.
"""

from pyinstance.engine.base import OUTPUTS, Engine, EngineUnavailableError, Output
from pyinstance.engine.export import DESCRIPTOR_TOLERANCE, ExportError, default_cache_dir
from pyinstance.engine.exported import ExportedEngine, default_threads
from pyinstance.engine.onnxruntime_engine import OnnxRuntimeEngine
from pyinstance.engine.openvino_engine import OpenVinoEngine
from pyinstance.engine.select import (
    ENGINES,
    PRECISIONS,
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
    "PRECISIONS",
    "Engine",
    "EngineFallbackWarning",
    "EngineUnavailableError",
    "ExportError",
    "ExportedEngine",
    "OnnxRuntimeEngine",
    "OpenVinoEngine",
    "Output",
    "TorchEngine",
    "available_engines",
    "default_cache_dir",
    "default_engine",
    "default_threads",
    "engine_info",
    "make_engine",
]
