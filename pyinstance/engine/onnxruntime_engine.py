"""The ONNX Runtime engine: the network exported once (cached), run by an inference session.

Session options are chosen to hold up when the machine is busy: a fixed number of
intra-op threads (default one per request), one inter-op thread, sequential execution,
and worker threads that sleep instead of spinning while they wait
(``session.intra_op.allow_spinning = 0``), so threads that lose their core to another
process do not burn the cores that are left.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn

from pyinstance.engine import export as onnx_export
from pyinstance.engine import quantize
from pyinstance.engine.base import (
    Engine,
    EngineUnavailableError,
    Output,
    check_threads,
    inference_network,
)

#: Precisions of the exported graph.
PRECISIONS: tuple[str, ...] = ("fp32", "int8")
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
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(DEFAULT_THREADS, cpus))


def check_calibration(
    calibration: Sequence[torch.Tensor] | None, output: str, engine: str
) -> list[torch.Tensor]:
    """The calibration batches of an int8 graph, checked like engine inputs."""
    if output != "descriptors":
        raise ValueError(f"precision: 'int8' is for output='descriptors', got output={output!r}")
    if isinstance(calibration, torch.Tensor) or not isinstance(calibration, Sequence):
        raise ValueError(
            "calibration: precision='int8' needs a sequence of normalised float32 B×3×H×W "
            f"batches (a few dozen typical images), got {type(calibration).__name__}"
        )
    if not calibration:
        raise ValueError("calibration: empty; pass a few dozen normalised image batches")
    for index, batch in enumerate(calibration):
        if (
            not isinstance(batch, torch.Tensor)
            or batch.dim() != 4
            or batch.shape[1] != 3
            or batch.dtype != torch.float32
            or batch.device.type != "cpu"
            or batch.shape[0] == 0
            or not bool(torch.isfinite(batch).all())
        ):
            raise ValueError(
                f"calibration[{index}]: expected a finite float32 B×3×H×W CPU batch, got "
                f"{getattr(batch, 'shape', type(batch).__name__)}"
            )
    return list(calibration)


def session_options(ort: ModuleType, threads: int, spinning: bool) -> Any:
    """Session options: ``threads`` intra-op threads, one inter-op thread, sequential."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "1" if spinning else "0")
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
        precision: ``"fp32"``, or ``"int8"`` (static quantisation, see
            :mod:`pyinstance.engine.quantize`; descriptors only, needs ``calibration``).
        cache_dir: where exported graphs are kept (default
            :func:`~pyinstance.engine.export.default_cache_dir`).
        calibration: for int8, normalised float32 batches B×3×H×W of typical images
            (a few dozen of the collection's references); part of the cache key.

    Attributes:
        path: the cached ONNX file.
        exported: whether this engine exported the graph (False: a cached file was used).
        max_difference: fp32: max |ONNX − torch| on the probe batches; int8: the min
            cosine of int8 to torch descriptors of the calibration images.
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
        calibration: Sequence[torch.Tensor] | None = None,
    ):
        ort = import_onnxruntime()
        network = inference_network(backbone, head, output)
        check_threads(threads)
        if precision not in PRECISIONS:
            raise ValueError(
                f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}"
            )
        if precision == "int8":
            calibration = check_calibration(calibration, output, self.name)
        elif calibration is not None:
            raise ValueError("calibration: only used with precision='int8'")
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
        self._network = network
        directory = Path(cache_dir) if cache_dir is not None else onnx_export.default_cache_dir()
        head = head if output == "descriptors" else None
        fp32 = self._graph(backbone, head, "fp32", directory, None)
        if precision == "int8":
            fp32 = self._graph(backbone, head, "int8", directory, (calibration, fp32[2]))
        self.session, self.max_difference, _, self.path, self.exported = fp32

    def _graph(
        self,
        backbone: nn.Module,
        head: nn.Module | None,
        precision: str,
        directory: Path,
        int8: tuple[Sequence[torch.Tensor], bytes] | None,
    ) -> tuple[Any, float, bytes, Path, bool]:
        """``(session, check result, graph, path, exported)``: cached if valid, else built."""
        recipe = onnx_export.recipe(backbone, head, self.output, precision)
        if int8 is not None:
            recipe["calibration"] = quantize.calibration_sha256(int8[0])
        key = onnx_export.cache_key(recipe, self._network)
        path = onnx_export.cache_path(directory, recipe, key)
        check = self._check(int8[0] if int8 is not None else None)
        cached = self._cached_session(path, key, check)
        if cached is not None:
            return (*cached, path, False)
        metadata = onnx_export.metadata_for(recipe, key)
        if int8 is None:
            data = onnx_export.export_onnx(self._network, self.min_input_size, metadata)
        else:
            data = onnx_export.with_metadata(quantize.quantize_int8(int8[1], int8[0]), metadata)
        try:
            session = self._session(data)
        except onnx_export.ExportError:
            raise
        except Exception as error:
            raise onnx_export.ExportError(
                f"onnxruntime cannot load the exported graph: {type(error).__name__}: {error}"
            ) from error
        result = check(self._run_numpy(session))
        try:
            onnx_export.write_atomic(path, data)
        except OSError as error:  # a read-only cache costs the next export, nothing else
            log.warning("cannot cache the ONNX graph at %s: %s", path, error)
        return session, result, data, path, True

    def _check(self, calibration: Sequence[torch.Tensor] | None) -> Callable[[Any], float]:
        if calibration is None:
            return lambda run: onnx_export.check_against_torch(
                self._network, run, self.output, self.min_input_size
            )
        return lambda run: quantize.check_int8(self._network, run, self.min_input_size, calibration)

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
        return session

    def _run_numpy(self, session: Any) -> Callable[[np.ndarray], np.ndarray]:
        def run(batch: np.ndarray) -> np.ndarray:
            return session.run(None, {session.get_inputs()[0].name: batch})[0]

        return run

    def _cached_session(
        self, path: Path, key: str, check: Callable[[Any], float]
    ) -> tuple[Any, float, bytes] | None:
        """The session of a cached file that loads, holds ``key`` and passes ``check``."""
        if not path.is_file():
            return None
        try:
            data = path.read_bytes()
            session = self._session(data)
            found = onnx_export.stored_key(session.get_modelmeta().custom_metadata_map)
            if found != key:
                raise onnx_export.ExportError(f"it holds cache key {found!r}, expected {key!r}")
            result = check(self._run_numpy(session))
        except Exception as error:  # corrupt, truncated, another recipe: rebuild
            log.warning("rebuilding the cached ONNX graph %s: %s", path, error)
            return None
        return session, result, data

    def run(self, images: torch.Tensor) -> torch.Tensor:
        batch = images.detach().contiguous().numpy()
        out = self.session.run(None, {self.session.get_inputs()[0].name: batch})[0]
        return torch.from_numpy(out)

    def __repr__(self) -> str:
        return (
            f"OnnxRuntimeEngine(output={self.output!r}, threads={self.threads}, "
            f"spinning={self.spinning}, precision={self.precision!r}, path={str(self.path)!r})"
        )
