"""The ONNX Runtime engine: the network exported once (cached), run by inference sessions.

Session options are chosen to hold up when the machine is busy: a fixed number of
intra-op threads (default one per request), one inter-op thread, sequential execution,
and worker threads that sleep instead of spinning while they wait
(``session.intra_op.allow_spinning = 0``), so threads that lose their core to another
process do not burn the cores that are left. Sleeping workers also keep an engine asked
for several threads on all of them when other processes are busy: a worker woken on the
busy process's core gets its share there, so the request is faster than on one thread.
The kernel, finding no idle core, would rather wake it on the caller's own core, where the
two take turns: a run of several threads therefore keeps its workers off the caller's core
(:mod:`pyinstance.engine.placement`). With ``spinning=True`` a worker holds its core while
it waits, and a worker that shares one holds up every operator: such an engine runs a
request on one thread while other processes keep the cores it would need busy, judged at
each request from current readings (:mod:`pyinstance.engine.cpu_load`). A recurring input
shape runs on a session with that shape fixed (:mod:`pyinstance.engine.sessions`).
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

from torch import nn

from pyinstance.engine import export as onnx_export
from pyinstance.engine.base import EngineUnavailableError, Output
from pyinstance.engine.exported import ExportedEngine
from pyinstance.engine.placement import PlacedSession, with_workers
from pyinstance.engine.sessions import Shape

#: Precisions of the exported graph. int8 (static and dynamic quantisation of the graph)
#: was measured with ``benchmarks/engine.py --int8`` and not kept: on fixed-shape sessions
#: at 448 px, one thread, static per-channel int8 ran slower than fp32 (156 vs 116 ms;
#: 1×1 convolutions only: 130 ms) at an unchanged museum P@1 (0.937); dynamic int8 was 4×
#: slower (482 ms; P@1 0.952, descriptors down to cosine 0.79 of torch's).
PRECISIONS: tuple[str, ...] = ("fp32",)


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


class OnnxRuntimeEngine(ExportedEngine):
    """Runs the ONNX export of ``backbone`` (then ``head``) with ONNX Runtime on the CPU.

    Raises :class:`~pyinstance.engine.export.ExportError` when the network cannot be
    exported or its export does not match torch (:func:`~pyinstance.engine.make_engine`
    then falls back to torch), :class:`EngineUnavailableError` without onnxruntime.

    Args:
        backbone, head, output: the network, as for :class:`~pyinstance.engine.TorchEngine`.
        threads: intra-op threads (default
            :func:`~pyinstance.engine.exported.default_threads`).
        spinning: let idle worker threads spin (lower latency on an idle machine, much
            worse when another process competes for the cores).
        places_workers: with several threads, keep the workers off the caller's core
            during a run (:mod:`pyinstance.engine.placement`); the attribute of that name
            is read at every run.
        precision: ``"fp32"``.
        cache_dir: where exported graphs are kept (default
            :func:`~pyinstance.engine.export.default_cache_dir`).

    Attributes: those of :class:`~pyinstance.engine.exported.ExportedEngine`.
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
        places_workers: bool = True,
        precision: str = "fp32",
        cache_dir: str | os.PathLike[str] | None = None,
    ):
        self._ort = import_onnxruntime()
        if precision not in PRECISIONS:
            raise ValueError(
                f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}"
            )
        self.spinning = bool(spinning)
        self.places_workers = bool(places_workers)
        super().__init__(
            backbone,
            head,
            output=output,
            threads=threads,
            precision=precision,
            cache_dir=cache_dir,
        )
        # Only spinning workers need the thread budget. Measured (benchmarks/latency.py
        # --busy --budget-twins, 2 CPUs, Lite0 + GeM at 448 px, median per-query ratio to
        # one thread on the quiet machine): two sleeping threads beside one busy loop
        # 0.96–1.02× when kept, 1.02–1.03× when dropped to one; beside two busy loops 1.66×
        # against 1.94× (benchmarks/results/latency.md, 2026-12-01).
        self.budgets_threads = self.spinning

    def _load(self, data: bytes) -> tuple[Any, dict[str, str]]:
        session = self._session(data, self.threads, None)
        self._source = data  # the graph of the last session made (for the pool's others)
        return session, session.get_modelmeta().custom_metadata_map

    def _new_session(self, threads: int, shape: Shape | None) -> Any:
        return self._session(self._source, threads, shape)

    def _session(self, data: bytes, threads: int, shape: Shape | None) -> Any:
        """A session over ``data``; one of several threads can place its workers
        (:class:`PlacedSession`, while :attr:`places_workers`)."""
        options = session_options(self._ort, threads, self.spinning, shape)

        def build() -> Any:
            return self._ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])

        if threads == 1:
            return build()
        return PlacedSession(*with_workers(build, threads - 1), lambda: self.places_workers)

    def __repr__(self) -> str:
        return (
            f"OnnxRuntimeEngine(output={self.output!r}, threads={self.threads}, "
            f"spinning={self.spinning}, places_workers={self.places_workers}, "
            f"precision={self.precision!r}, path={str(self.path)!r})"
        )
