"""The OpenVINO engine: the cached ONNX export compiled by OpenVINO for the CPU.

It reads the same cached ONNX file as the ONNX Runtime engine (export, key and checks of
:mod:`pyinstance.engine.export`) and compiles it with settings that hold up on a busy
machine: ``INFERENCE_NUM_THREADS`` threads per request (default one), one stream, the
latency hint, threads not pinned to cores. OpenVINO runs a graph with dynamic height and
width slower than one compiled for a fixed input shape, so a shape that recurs gets its
own compiled model (:mod:`pyinstance.engine.sessions`, as for ONNX Runtime, after more
runs: see :attr:`OpenVinoEngine.fix_after`).

``precision="bf16"`` computes in bfloat16 on CPUs that do it natively (AMX or AVX-512
BF16: OpenVINO lists ``BF16`` among the CPU's optimisation capabilities); it is checked
against torch with the bfloat16 tolerances of :mod:`pyinstance.engine.export`.
``precision="int8"`` runs the graph quantised to int8 by NNCF (calibration, cache and
check in :mod:`pyinstance.engine.int8`) on the input shapes that recur, the fp32 graph on
the others: OpenVINO 2026.4 crashes the interpreter (a segmentation fault) running the
int8 graph with dynamic height and width, so the int8 graph is only ever compiled for one
fixed shape, and compiling one takes 0.4–0.6 s, which a stream of same-size photos repays
and an index build of mixed sizes would not. The fixed-shape int8 session of a recurring
shape replaces the dynamic fp32 one only if its output's cosine with fp32's is at least
the int8 check's minimum. The default precision is :data:`DEFAULT_PRECISION` (measured: see its comment), or
``$PYINSTANCE_OPENVINO_PRECISION`` (``fp32``, ``bf16`` or ``int8``) for every command and
the service.
"""

from __future__ import annotations

import functools
import os
import threading
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
from torch import nn

from pyinstance.engine import int8
from pyinstance.engine.base import EngineUnavailableError, Output
from pyinstance.engine.export import stored_key
from pyinstance.engine.exported import ExportedEngine
from pyinstance.engine.sample_photos import calibration_batches, probe_batches
from pyinstance.engine.sessions import Shape, run_session
from pyinstance.models.backbone import IMAGENET_MEAN, IMAGENET_STD

#: Precisions OpenVINO computes in here ("bf16" only where :func:`bf16_supported`,
#: "int8" only with nncf installed).
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8")
#: OpenVINO's name of each precision (``INFERENCE_PRECISION_HINT``); an int8 model computes
#: its quantised layers in int8 and the rest (the pooling head) in f32.
_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
#: The precision when none is asked for. bf16 runs EfficientNet-Lite0 + GeM at 448×336
#: about twice as fast (one thread, AMX: 13–15 against 27–33 ms CPU) but is not the
#: default: museum P@1 through the pipeline (``benchmarks/engine.py --precision``) was
#: unchanged for the default recipe (0.984 crops 1.000 gallery 0.964, fp32 and bf16) and
#: dropped by 0.016 for Lite0 + GeM at 448 px (0.937 -> 0.921: one gallery shot of 63 whose
#: two best instances were 0.008 apart in fp32), more than the 0.01 allowed.
DEFAULT_PRECISION = "fp32"
#: Environment variable that sets the precision of engines made without one.
PRECISION_VARIABLE = "PYINSTANCE_OPENVINO_PRECISION"


def import_openvino() -> ModuleType:
    """``openvino`` (and ``onnx``, which export needs), or a clear install hint."""
    try:
        import onnx  # noqa: F401 - export writes its graph with it
        import openvino
    except ImportError as error:
        raise EngineUnavailableError(
            f"engine: 'openvino' needs the packages openvino and onnx ({error}); install them "
            "with: pip install 'pyinstance[fast]' (or use engine='torch')"
        ) from error
    return openvino


@functools.cache
def bf16_supported() -> bool:
    """Whether OpenVINO computes bfloat16 natively on this CPU (AMX or AVX-512 BF16)."""
    core = import_openvino().Core()
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def default_precision() -> str:
    """``$PYINSTANCE_OPENVINO_PRECISION`` if set, else :data:`DEFAULT_PRECISION`; ``"fp32"``
    for a default of bf16 on a CPU without native bfloat16."""
    wanted = os.environ.get(PRECISION_VARIABLE)
    if wanted is not None:
        if wanted not in PRECISIONS:
            raise ValueError(
                f"{PRECISION_VARIABLE}: expected one of {', '.join(PRECISIONS)}, got {wanted!r}"
            )
        return wanted
    return DEFAULT_PRECISION if DEFAULT_PRECISION == "fp32" or bf16_supported() else "fp32"


class CompiledSession:
    """A model compiled by OpenVINO behind ONNX Runtime's session interface (``run``,
    ``get_inputs``), so that the session pool serves both runtimes. Each calling thread
    gets its own infer request: requests run concurrently, and release the GIL."""

    def __init__(self, compiled: Any):
        self._compiled = compiled
        self._local = threading.local()
        self._inputs = [SimpleNamespace(name=port.any_name) for port in compiled.inputs]

    def get_inputs(self) -> list[SimpleNamespace]:
        return self._inputs

    def run(self, outputs: None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        (batch,) = feeds.values()
        # share_inputs: OpenVINO reads the caller's array instead of copying it first.
        result = request.infer({0: np.ascontiguousarray(batch)}, share_inputs=True)
        return [np.array(result[0], dtype=np.float32, copy=True)]


class OpenVinoEngine(ExportedEngine):
    """Runs the ONNX export of ``backbone`` (then ``head``) with OpenVINO on the CPU.

    Raises :class:`~pyinstance.engine.export.ExportError` when the network cannot be
    exported or OpenVINO's results do not match torch (:func:`~pyinstance.engine.make_engine`
    then falls back to torch), :class:`EngineUnavailableError` without openvino.

    Args:
        backbone, head, output: the network, as for :class:`~pyinstance.engine.TorchEngine`.
        threads: threads per request (default
            :func:`~pyinstance.engine.exported.default_threads`).
        precision: ``"fp32"``, ``"bf16"`` (a ValueError on a CPU without native
            bfloat16) or ``"int8"`` (an :class:`EngineUnavailableError` without nncf);
            None: :func:`default_precision`.
        cache_dir: where exported graphs are kept (default
            :func:`~pyinstance.engine.export.default_cache_dir`).

    Attributes: those of :class:`~pyinstance.engine.exported.ExportedEngine`, and
        int8_cosine: for ``precision="int8"``, the smallest cosine between the int8 model's
            output and torch's on the probe photos (None for the other precisions).
    """

    name = "openvino"
    #: Compiling a fixed-shape model takes OpenVINO 0.3–0.5 s, and it runs Lite0 + GeM at
    #: 448×336 in bf16 in 14 ms against 21 ms for the dynamic one (CPU, one thread): fixing
    #: pays off for a shape that recurs (a stream of phone photos), not for the shapes an
    #: index build of mixed sizes sees two or three times.
    fix_after = 8

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module | None = None,
        *,
        output: Output = "descriptors",
        threads: int | None = None,
        precision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ):
        self._ov = import_openvino()
        precision = default_precision() if precision is None else precision
        if precision not in PRECISIONS:
            raise ValueError(
                f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}"
            )
        if precision == "bf16" and not bf16_supported():
            raise ValueError(
                "precision: 'bf16' needs a CPU that computes bfloat16 natively (AMX or "
                "AVX-512 BF16); this one does not, use 'fp32'"
            )
        if precision == "int8":
            int8.import_nncf()
        self.int8_cosine: float | None = None
        self._core = self._ov.Core()
        self._input_mean = tuple(getattr(backbone, "input_mean", IMAGENET_MEAN))
        self._input_std = tuple(getattr(backbone, "input_std", IMAGENET_STD))
        self._unsaved_int8: bytes | None = None
        super().__init__(
            backbone,
            head,
            output=output,
            threads=threads,
            precision=precision,
            cache_dir=cache_dir,
        )

    def _config(self, threads: int) -> dict[str, Any]:
        return {
            "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": _HINTS[self.precision],
            "ENABLE_CPU_PINNING": False,
        }

    def _load(self, data: bytes) -> tuple[Any, dict[str, str]]:
        import onnx

        metadata = {entry.key: entry.value for entry in onnx.load_from_string(data).metadata_props}
        self._model = self._core.read_model(data)
        if self.precision == "int8":
            key = int8.cache_key(str(stored_key(metadata)), self._ov.get_version())
            self._int8_model, self._unsaved_int8 = int8.cached_or_quantized(
                self._ov,
                self._core,
                self._model,
                int8.cache_path(self.path),
                key,
                lambda: calibration_batches(self._input_mean, self._input_std),
            )
        return self._new_session(self.threads, None), metadata

    def _new_session(self, threads: int, shape: Shape | None) -> Any:
        """The graph compiled with ``threads`` threads: dynamic (shape None) in fp32 for an
        int8 engine, else in the engine's precision for ``shape``."""
        model = self._int8_model if self.precision == "int8" and shape is not None else self._model
        if shape is not None:
            model = model.clone()
            model.reshape({model.inputs[0].any_name: list(shape)})
        return CompiledSession(self._core.compile_model(model, "CPU", self._config(threads)))

    def _agrees(self, got: np.ndarray, expected: np.ndarray) -> bool:
        if self.precision != "int8":
            return super()._agrees(got, expected)
        return int8.min_cosine(got, expected) >= int8.min_cosine_for(self.output)

    def _check(self, network: nn.Module, session: Any) -> float:
        """The fp32 graph's check; for an int8 engine, then the int8 model's on photos
        (:attr:`int8_cosine`), compiled for each probe shape."""
        difference = super()._check(network, session)
        if self.precision == "int8":
            self.int8_cosine = int8.check_against_torch(
                network,
                lambda batch: run_session(self._new_session(self.threads, batch.shape), batch),
                self.output,
                probe_batches(self._input_mean, self._input_std),
            )
            if self._unsaved_int8 is not None:  # only a model that passed its check is cached
                int8.save(int8.cache_path(self.path), self._unsaved_int8)
                self._unsaved_int8 = None
        return difference

    def __repr__(self) -> str:
        return (
            f"OpenVinoEngine(output={self.output!r}, threads={self.threads}, "
            f"precision={self.precision!r}, path={str(self.path)!r})"
        )
