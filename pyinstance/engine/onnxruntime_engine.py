"""The ONNX Runtime engine: the network exported once (cached), run by inference sessions.

Session options are chosen to hold up when the machine is busy: a fixed number of
intra-op threads (default one per request), one inter-op thread, sequential execution,
and worker threads that sleep instead of spinning while they wait
(``session.intra_op.allow_spinning = 0``), so threads that lose their core to another
process do not burn the cores that are left. An engine asked for several threads runs a
request on one thread while other processes keep the cores it would need busy, judged at
each request from current readings (:mod:`pyinstance.engine.cpu_load`): intra-op threads
that wait for each other at every operator fall far behind a single thread when one of
them loses its core. A recurring input shape runs on a session with that shape fixed
(:mod:`pyinstance.engine.sessions`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn

from pyinstance._files import write_atomic
from pyinstance.engine import export as onnx_export
from pyinstance.engine.base import (
    Engine,
    EngineUnavailableError,
    Output,
    check_threads,
    inference_network,
)
from pyinstance.engine.cpu_load import CpuMeter, thread_budget
from pyinstance.engine.sessions import SessionPool, Shape, run_session

#: Precisions of the exported graph. int8 (static and dynamic quantisation of the graph)
#: was measured with ``benchmarks/engine.py --int8`` and not kept: on fixed-shape sessions
#: at 448 px, one thread, static per-channel int8 ran slower than fp32 (156 vs 116 ms;
#: 1×1 convolutions only: 130 ms) at an unchanged museum P@1 (0.937); dynamic int8 was 4×
#: slower (482 ms; P@1 0.952, descriptors down to cosine 0.79 of torch's).
PRECISIONS: tuple[str, ...] = ("fp32",)
#: The intra-op threads of a session when none are asked for: one thread per request.
#: Measured (benchmarks/engine.py --load, a 2-core machine shared with other work): a
#: second thread gained nothing and lost most when another process was busy, while
#: concurrent requests (``session.run`` is thread-safe and releases the GIL) use the other
#: cores without oversubscribing them. Ask for more with ``threads=``.
DEFAULT_THREADS = 1

log = logging.getLogger(__name__)


def import_onnxruntime() -> ModuleType:
    """``onnxruntime`` (and ``onnx``, which export needs), or a clear install hint."""
    try:
        import onnx  # noqa: F401 - export writes its graph with it
        import onnxruntime
    except ImportError as error:
        raise EngineUnavailableError(
            f"engine: 'onnxruntime' needs the packages onnxruntime and onnx ({error}); install "
            "them with: pip install 'pyinstance[fast]' (or use engine='torch')"
        ) from error
    return onnxruntime


def default_threads() -> int:
    """:data:`DEFAULT_THREADS`, at most the CPUs this process may run on."""
    return max(1, min(DEFAULT_THREADS, available_cpus()))


def available_cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def session_options(
    ort: ModuleType, threads: int, spinning: bool, shape: Shape | None = None
) -> Any:
    """Session options: ``threads`` intra-op threads, one inter-op thread, sequential;
    the input's batch, height and width fixed to ``shape`` (B×3×H×W) when given."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "1" if spinning else "0")
    if shape is not None:
        for name, size in zip(onnx_export.DYNAMIC_AXES, (shape[0], *shape[2:]), strict=True):
            options.add_free_dimension_override_by_name(name, int(size))
    options.log_severity_level = 3  # errors only
    return options


class OnnxRuntimeEngine(Engine):
    """Runs the ONNX export of ``backbone`` (then ``head``) with ONNX Runtime on the CPU.

    The graph is a snapshot of the weights when the engine is made. Raises
    :class:`~pyinstance.engine.export.ExportError` when the network cannot be exported or
    its export does not match torch (:func:`~pyinstance.engine.make_engine` then falls back
    to torch), :class:`EngineUnavailableError` without onnxruntime.

    Args:
        backbone, head, output: the network, as for :class:`~pyinstance.engine.TorchEngine`.
        threads: intra-op threads (default :func:`default_threads`).
        spinning: let idle worker threads spin (lower latency on an idle machine, much
            worse when another process competes for the cores).
        precision: ``"fp32"``.
        cache_dir: where exported graphs are kept (default
            :func:`~pyinstance.engine.export.default_cache_dir`).

    Attributes:
        path: the cached ONNX file.
        exported: whether this engine exported the graph (False: a cached file was used).
        max_difference: max |ONNX − torch| on the probe batches.
        sessions: the inference sessions over the graph (per thread count and fixed shape).
    """

    name = "onnxruntime"

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module | None = None,
        *,
        output: Output = "descriptors",
        threads: int | None = None,
        spinning: bool = False,
        precision: str = "fp32",
        cache_dir: str | os.PathLike[str] | None = None,
    ):
        ort = import_onnxruntime()
        network = inference_network(backbone, head, output)
        check_threads(threads)
        if precision not in PRECISIONS:
            raise ValueError(
                f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}"
            )
        devices = {parameter.device.type for parameter in network.parameters()}
        if devices - {"cpu"}:
            raise ValueError(
                f"backbone: the onnxruntime engine runs on the CPU, the modules are on "
                f"{', '.join(sorted(devices))}; move them to the CPU or use engine='torch'"
            )
        super().__init__(
            backbone,
            output,
            threads if threads is not None else default_threads(),
            torch.device("cpu"),
        )
        self.spinning = bool(spinning)
        self.precision = precision
        self._options = session_options(ort, self.threads, self.spinning)
        self._ort = ort
        recipe = onnx_export.recipe(
            backbone, head if output == "descriptors" else None, output, precision
        )
        key = onnx_export.cache_key(recipe, network)
        directory = Path(cache_dir) if cache_dir is not None else onnx_export.default_cache_dir()
        self.path = onnx_export.cache_path(directory, recipe, key)
        self.exported = False
        cached = self._cached_session(network, key)
        if cached is None:
            cached = self._export(network, recipe, key)
            self.exported = True
        session, self.max_difference = cached
        self.sessions = SessionPool(self._new_session, self._tolerance, (session, self.threads))
        self._meter = CpuMeter()
        self._cpus = available_cpus()

    def _session(self, source: str | bytes) -> Any:
        session = self._ort.InferenceSession(
            source, self._options, providers=["CPUExecutionProvider"]
        )
        if len(session.get_inputs()) != 1:
            raise onnx_export.ExportError(
                f"the exported graph has {len(session.get_inputs())} inputs instead of the image "
                "batch: forward() leaves torch (numpy, Python numbers), so tracing recorded "
                "constants instead of operations on the input"
            )
        self._source = source  # the graph of the last session made (for the pool's others)
        return session

    def _new_session(self, threads: int, shape: Shape | None) -> Any:
        """Another session over the graph checked at construction."""
        options = session_options(self._ort, threads, self.spinning, shape)
        return self._ort.InferenceSession(self._source, options, providers=["CPUExecutionProvider"])

    def _tolerance(self, expected: np.ndarray) -> float:
        return onnx_export.output_tolerance(self.output, expected)

    def _run_numpy(self, session: Any) -> Any:
        return lambda batch: run_session(session, batch)

    def _cached_session(self, network: nn.Module, key: str) -> tuple[Any, float] | None:
        """The session of a cached file that loads, holds ``key`` and passes the check."""
        if not self.path.is_file():
            return None
        try:
            session = self._session(str(self.path))
            found = onnx_export.stored_key(session.get_modelmeta().custom_metadata_map)
            if found != key:
                raise onnx_export.ExportError(f"it holds cache key {found!r}, expected {key!r}")
            difference = onnx_export.check_against_torch(
                network, self._run_numpy(session), self.output, self.min_input_size
            )
        except Exception as error:  # corrupt, truncated, another recipe: rebuild
            log.warning("rebuilding the cached ONNX graph %s: %s", self.path, error)
            return None
        return session, difference

    def _export(self, network: nn.Module, recipe: dict[str, Any], key: str) -> tuple[Any, float]:
        data = onnx_export.export_onnx(
            network, self.min_input_size, onnx_export.metadata_for(recipe, key)
        )
        try:
            session = self._session(data)
        except onnx_export.ExportError:
            raise
        except Exception as error:
            raise onnx_export.ExportError(
                f"onnxruntime cannot load the exported graph: {type(error).__name__}: {error}"
            ) from error
        difference = onnx_export.check_against_torch(
            network, self._run_numpy(session), self.output, self.min_input_size
        )
        try:
            write_atomic(self.path, data)
        except OSError as error:  # a read-only cache costs the next export, nothing else
            log.warning("cannot cache the ONNX graph at %s: %s", self.path, error)
        return session, difference

    def run(self, images: torch.Tensor) -> torch.Tensor:
        batch = images.detach().contiguous().numpy()
        threads = self.threads
        if threads > 1:
            threads = thread_budget(threads, self._cpus, self._meter.busy_elsewhere())
        return torch.from_numpy(self.sessions.run(batch, threads))

    def __repr__(self) -> str:
        return (
            f"OnnxRuntimeEngine(output={self.output!r}, threads={self.threads}, "
            f"spinning={self.spinning}, precision={self.precision!r}, path={str(self.path)!r})"
        )
