"""Choosing an engine: what is installed, the default, and the fall-back to torch."""

from __future__ import annotations

import os
import warnings
from typing import Any

from torch import nn

from pyinstance.engine.base import (
    Engine,
    EngineUnavailableError,
    Output,
    check_threads,
    inference_network,
)
from pyinstance.engine.export import ExportError, default_cache_dir
from pyinstance.engine.exported import default_threads
from pyinstance.engine.int8 import import_nncf
from pyinstance.engine.onnxruntime_engine import OnnxRuntimeEngine, import_onnxruntime
from pyinstance.engine.openvino_engine import (
    PRECISIONS,
    OpenVinoEngine,
    bf16_supported,
    default_precision,
    import_openvino,
)
from pyinstance.engine.torch_engine import TorchEngine

#: Engine names ``make_engine`` accepts (besides ``"auto"``).
ENGINES: tuple[str, ...] = ("torch", "onnxruntime", "openvino")
_IMPORTS = {"onnxruntime": import_onnxruntime, "openvino": import_openvino}


class EngineFallbackWarning(UserWarning):
    """An exported-graph engine could not be used for a network; the torch engine runs it."""


def available_engines() -> list[str]:
    """The engines installed here: ``"torch"``, then ``"onnxruntime"`` and ``"openvino"``
    when their packages import."""
    engines = ["torch"]
    for name, importer in _IMPORTS.items():
        try:
            importer()
        except EngineUnavailableError:
            continue
        engines.append(name)
    return engines


def default_engine(threads: int | None = None) -> str:
    """The fastest installed engine for requests of ``threads`` intra-op threads (None: the
    engines' default, one): ``"openvino"``, else ``"onnxruntime"``, else ``"torch"``; for
    several threads ``"onnxruntime"`` first.

    Measured at one thread on EfficientNet-Lite0 + GeM at 448×336 (fixed-shape sessions,
    interleaved, CPU time on a loaded machine): OpenVINO fp32 32.1 ms (median; min 26.6)
    against ONNX Runtime 34.2 ms (min 30.2); on the dynamic graph 47 against 54 ms.
    OpenVINO in bf16 (AMX) took 14.5 ms, but is not the default precision
    (:data:`~pyinstance.engine.openvino_engine.DEFAULT_PRECISION`). At two threads, end to
    end from a 12-megapixel JPEG (``benchmarks/latency.py --busy``, 2026-12-01 08:02), the
    two ran alike on a quiet machine (36.0 against 35.3 ms), but beside a busy process ONNX
    Runtime, whose sleeping workers keep both threads placed off the caller's core
    (:mod:`pyinstance.engine.placement`), took 0.89× the one-thread quiet time per query
    against OpenVINO's 1.02× (its spinning workers drop to one thread), and answered 21 %
    more queries/s with 4 in flight.
    """
    engines = available_engines()
    several = threads is not None and threads > 1
    for name in ("onnxruntime", "openvino") if several else ("openvino", "onnxruntime"):
        if name in engines:
            return name
    return "torch"


def engine_info() -> dict[str, Any]:
    """What ``pyinstance info`` shows: installed engines, the default, versions, threads,
    OpenVINO's precision, the cache."""
    engines = available_engines()
    info: dict[str, Any] = {
        "engines": engines,
        "default": default_engine(),
        "onnxruntime": None,
        "openvino": None,
        "openvino_precision": None,
        "bf16": None,
        "int8": None,
        "threads": default_threads(),
        "onnx_cache": str(default_cache_dir()),
    }
    if "onnxruntime" in engines:
        info["onnxruntime"] = import_onnxruntime().__version__
    if "openvino" in engines:
        info["openvino"] = import_openvino().get_version()
        info["openvino_precision"] = default_precision()
        info["bf16"] = bf16_supported()
        info["int8"] = int8_available()
    return info


def int8_available() -> bool:
    """Whether the OpenVINO engine can quantise to int8 here (nncf installed)."""
    try:
        import_nncf()
    except EngineUnavailableError:
        return False
    return True


def make_engine(
    backbone: nn.Module,
    head: nn.Module | None = None,
    engine: str = "auto",
    *,
    output: Output = "descriptors",
    threads: int | None = None,
    precision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Engine:
    """An engine that runs ``backbone`` (then ``head``) for inference.

    Args:
        backbone, head: the modules (resolve plugin names before calling).
        engine: ``"auto"`` (:func:`default_engine` for ``threads`` when the modules are on
            the CPU, else torch), ``"torch"``, ``"onnxruntime"`` or ``"openvino"`` (an error
            when not installed).
        output: ``"descriptors"`` (B×D) or ``"features"`` (the backbone's B×C×h×w).
        threads: intra-op threads (None: torch's setting; one for the others).
        precision: ``"fp32"``, ``"bf16"`` or ``"int8"`` (the last two openvino only);
            None: the engine's default
            (openvino: :func:`~pyinstance.engine.openvino_engine.default_precision`).
        cache_dir: where ONNX exports are cached.

    A network whose export fails or does not match torch runs on the torch engine, with
    one :class:`EngineFallbackWarning` saying why.
    """
    if engine not in ("auto", *ENGINES):
        raise ValueError(
            f"engine: expected 'auto', {', '.join(repr(e) for e in ENGINES)}, got {engine!r}"
        )
    network = inference_network(backbone, head, output)
    check_threads(threads)
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    on_cpu = all(parameter.device.type == "cpu" for parameter in network.parameters())
    if engine == "auto":
        engine = default_engine(threads) if on_cpu else "torch"
    if precision in ("bf16", "int8") and engine != "openvino":
        raise ValueError(f"precision: {precision!r} needs engine='openvino', got engine={engine!r}")
    if engine == "torch":
        return TorchEngine(backbone, head, output=output, threads=threads)
    _IMPORTS[engine]()  # an explicit request without the package is an error, not a fallback
    try:
        if engine == "openvino":
            return OpenVinoEngine(
                backbone, head, output=output, threads=threads, precision=precision,
                cache_dir=cache_dir,
            )  # fmt: skip
        return OnnxRuntimeEngine(
            backbone, head, output=output, threads=threads, precision=precision or "fp32",
            cache_dir=cache_dir,
        )  # fmt: skip
    except ExportError as error:
        reason = str(error)
    warnings.warn(
        f"engine: cannot run {type(backbone).__name__}"
        f"{' + ' + type(head).__name__ if output == 'descriptors' and head is not None else ''} "
        f"with {engine} ({reason}); falling back to the torch engine",
        EngineFallbackWarning,
        stacklevel=2,
    )
    return TorchEngine(backbone, head, output=output, threads=threads)
