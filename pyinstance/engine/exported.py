"""What the engines that run the exported ONNX graph share: export once, cache, check, run.

An :class:`ExportedEngine` exports the network once (:mod:`pyinstance.engine.export`),
keeps the file in the cache shared by every such engine (the graph does not depend on the
runtime that runs it), checks the graph its runtime loaded against torch on the probe
batches before using it, and runs requests on a pool of sessions
(:mod:`pyinstance.engine.sessions`): one per intra-op thread count, and one per recurring
input shape. An engine asked for several threads runs a request on one thread while other
processes keep the cores it would need busy (:mod:`pyinstance.engine.cpu_load`), unless
its idle worker threads sleep (:attr:`ExportedEngine.budgets_threads`). A subclass says
how its runtime loads a graph into a session.
"""

from __future__ import annotations

import logging
import os
from abc import abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pyinstance._files import write_atomic
from pyinstance.engine import export as onnx_export
from pyinstance.engine.base import Engine, Output, check_threads, inference_network
from pyinstance.engine.cpu_load import CpuMeter, thread_budget
from pyinstance.engine.sessions import FIX_AFTER, SessionPool, Shape, run_session, within

#: The intra-op threads of a session when none are asked for: one thread per request.
#: Measured (benchmarks/engine.py --load, a 2-core machine shared with other work): a
#: second thread gained nothing and lost most when another process was busy, while
#: concurrent requests (sessions are thread-safe and release the GIL) use the other
#: cores without oversubscribing them. Ask for more with ``threads=``.
DEFAULT_THREADS = 1

log = logging.getLogger(__name__)


def default_threads() -> int:
    """:data:`DEFAULT_THREADS`, at most the CPUs this process may run on."""
    return max(1, min(DEFAULT_THREADS, available_cpus()))


def available_cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class ExportedEngine(Engine):
    """Runs the cached ONNX export of ``backbone`` (then ``head``) with a runtime on the CPU.

    The graph is a snapshot of the weights when the engine is made. Raises
    :class:`~pyinstance.engine.export.ExportError` when the network cannot be exported or
    the runtime's results do not match torch (:func:`~pyinstance.engine.make_engine` then
    falls back to torch).

    Attributes:
        path: the cached ONNX file.
        exported: whether this engine exported the graph (False: a cached file was used).
        max_difference: max |runtime − torch| on the probe batches.
        sessions: the sessions over the graph (per thread count and fixed shape).
        precision: the precision the runtime computes in.
        budgets_threads: see :data:`ExportedEngine.budgets_threads`.
    """

    #: Runs of one input shape before it gets its own fixed-shape session.
    fix_after: int = FIX_AFTER

    #: Whether a request drops to one thread while other processes keep the cores it would
    #: need busy (:mod:`pyinstance.engine.cpu_load`): for runtimes whose idle workers keep
    #: their core for a while (spinning; OpenVINO's oneTBB workers do), so that a worker
    #: sharing a core with a busy process holds up every operator. A worker that sleeps when
    #: idle gets its share of the shared core as soon as it wakes, and the request gains
    #: from it. Set per engine to override.
    budgets_threads: bool = True

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module | None,
        *,
        output: Output,
        threads: int | None,
        precision: str,
        cache_dir: str | os.PathLike[str] | None,
    ):
        network = inference_network(backbone, head, output)
        check_threads(threads)
        devices = {parameter.device.type for parameter in network.parameters()}
        if devices - {"cpu"}:
            raise ValueError(
                f"backbone: the {self.name} engine runs on the CPU, the modules are on "
                f"{', '.join(sorted(devices))}; move them to the CPU or use engine='torch'"
            )
        super().__init__(
            backbone,
            output,
            threads if threads is not None else default_threads(),
            torch.device("cpu"),
        )
        self.precision = precision
        recipe = onnx_export.recipe(backbone, head if output == "descriptors" else None, output)
        key = onnx_export.cache_key(recipe, network)
        directory = Path(cache_dir) if cache_dir is not None else onnx_export.default_cache_dir()
        self.path = onnx_export.cache_path(directory, recipe, key)
        self.exported = False
        cached = self._cached_session(network, key)
        if cached is None:
            cached = self._export(network, recipe, key)
            self.exported = True
        session, self.max_difference = cached
        self.sessions = SessionPool(
            self._new_session, self._agrees, (session, self.threads), self.fix_after
        )
        self._meter = CpuMeter()
        self._cpus = available_cpus()

    @abstractmethod
    def _load(self, data: bytes) -> tuple[Any, dict[str, str]]:
        """A dynamic-shape session over the serialised graph ``data`` with :attr:`threads`
        threads, and the graph's metadata; any exception means "cannot load"."""

    @abstractmethod
    def _new_session(self, threads: int, shape: Shape | None) -> Any:
        """Another session over the graph last loaded; ``shape`` None: dynamic B, H, W."""

    def _agrees(self, got: np.ndarray, expected: np.ndarray) -> bool:
        """Whether a fixed-shape session's output may stand for the dynamic one's."""
        return within(self._tolerance)(got, expected)

    def _tolerance(self, expected: np.ndarray) -> float:
        return onnx_export.output_tolerance(self.output, expected, self.precision)

    def _check(self, network: nn.Module, session: Any) -> float:
        return onnx_export.check_against_torch(
            network,
            lambda batch: run_session(session, batch),
            self.output,
            self.min_input_size,
            precision=self.precision,
            runtime=self.name,
        )

    def _loaded(self, data: bytes) -> tuple[Any, dict[str, str]]:
        """:meth:`_load`, refusing a graph with other inputs than the image batch."""
        session, metadata = self._load(data)
        if len(session.get_inputs()) != 1:
            raise onnx_export.ExportError(
                f"the exported graph has {len(session.get_inputs())} inputs instead of the image "
                "batch: forward() leaves torch (numpy, Python numbers), so tracing recorded "
                "constants instead of operations on the input"
            )
        return session, metadata

    def _cached_session(self, network: nn.Module, key: str) -> tuple[Any, float] | None:
        """The session of a cached file that loads, holds ``key`` and passes the check."""
        if not self.path.is_file():
            return None
        try:
            session, metadata = self._loaded(self.path.read_bytes())
            found = onnx_export.stored_key(metadata)
            if found != key:
                raise onnx_export.ExportError(f"it holds cache key {found!r}, expected {key!r}")
            difference = self._check(network, session)
        except Exception as error:  # corrupt, truncated, another recipe: rebuild
            log.warning("rebuilding the cached ONNX graph %s: %s", self.path, error)
            return None
        return session, difference

    def _export(self, network: nn.Module, recipe: dict[str, Any], key: str) -> tuple[Any, float]:
        data = onnx_export.export_onnx(
            network, self.min_input_size, onnx_export.metadata_for(recipe, key)
        )
        try:
            session, _ = self._loaded(data)
        except onnx_export.ExportError:
            raise
        except Exception as error:
            raise onnx_export.ExportError(
                f"{self.name} cannot load the exported graph: {type(error).__name__}: {error}"
            ) from error
        difference = self._check(network, session)
        try:
            write_atomic(self.path, data)
        except OSError as error:  # a read-only cache costs the next export, nothing else
            log.warning("cannot cache the ONNX graph at %s: %s", self.path, error)
        return session, difference

    def run(self, images: torch.Tensor) -> torch.Tensor:
        batch = images.detach().contiguous().numpy()
        threads = self.threads
        if threads > 1 and self.budgets_threads:
            threads = thread_budget(threads, self._cpus, self._meter.busy_elsewhere())
        return torch.from_numpy(self.sessions.run(batch, threads))
