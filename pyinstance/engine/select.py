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
from pyinstance.engine.onnxruntime_engine import (
    PRECISIONS,
    OnnxRuntimeEngine,
    default_threads,
    import_onnxruntime,
)
from pyinstance.engine.torch_engine import TorchEngine

#: Engine names ``make_engine`` accepts (besides ``"auto"``).
ENGINES: tuple[str, ...] = ("torch", "onnxruntime")


class EngineFallbackWarning(UserWarning):
    """The onnxruntime engine could not be used for a network; the torch engine runs it."""


def available_engines() -> list[str]:
    """The engines installed here, fastest last: ``["torch"]`` or ``["torch", "onnxruntime"]``."""
    try:
        import_onnxruntime()
    except EngineUnavailableError:
        return ["torch"]
    return ["torch", "onnxruntime"]


def default_engine() -> str:
    """The fastest installed engine: ``"onnxruntime"`` when importable, else ``"torch"``."""
    return available_engines()[-1]


def engine_info() -> dict[str, Any]:
    """What ``pyinstance info`` shows: installed engines, the default, versions, threads, cache."""
    engines = available_engines()
    info: dict[str, Any] = {
        "engines": engines,
        "default": engines[-1],
        "onnxruntime": None,
        "onnxruntime_threads": default_threads(),
        "onnx_cache": str(default_cache_dir()),
    }
    if "onnxruntime" in engines:
        info["onnxruntime"] = import_onnxruntime().__version__
    return info


def make_engine(
    backbone: nn.Module,
    head: nn.Module | None = None,
    engine: str = "auto",
    *,
    output: Output = "descriptors",
    threads: int | None = None,
    precision: str = "fp32",
    cache_dir: str | os.PathLike[str] | None = None,
) -> Engine:
    """An engine that runs ``backbone`` (then ``head``) for inference.

    Args:
        backbone, head: the modules (resolve plugin names before calling).
        engine: ``"auto"`` (onnxruntime when installed and the modules are on the CPU,
            else torch), ``"torch"`` or ``"onnxruntime"`` (an error when not installed).
        output: ``"descriptors"`` (B×D) or ``"features"`` (the backbone's B×C×h×w).
        threads: intra-op threads (None: torch's setting; onnxruntime's default).
        precision: ``"fp32"``.
        cache_dir: where ONNX exports are cached.

    A network whose export fails or does not match torch runs on the torch engine, with
    one :class:`EngineFallbackWarning` saying why.
    """
    if engine not in ("auto", *ENGINES):
        raise ValueError(f"engine: expected 'auto', 'torch' or 'onnxruntime', got {engine!r}")
    network = inference_network(backbone, head, output)
    check_threads(threads)
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    on_cpu = all(parameter.device.type == "cpu" for parameter in network.parameters())
    if engine == "auto":
        engine = "onnxruntime" if on_cpu and "onnxruntime" in available_engines() else "torch"
    if engine == "torch":
        if precision != "fp32":
            raise ValueError(f"precision: {precision!r} needs engine='onnxruntime'")
        return TorchEngine(backbone, head, output=output, threads=threads)
    import_onnxruntime()  # an explicit request without the package is an error, not a fallback
    try:
        return OnnxRuntimeEngine(
            backbone,
            head,
            output=output,
            threads=threads,
            precision=precision,
            cache_dir=cache_dir,
        )
    except ExportError as error:
        reason = str(error)
    warnings.warn(
        f"engine: cannot run {type(backbone).__name__}"
        f"{' + ' + type(head).__name__ if output == 'descriptors' and head is not None else ''} "
        f"with onnxruntime ({reason}); falling back to the torch engine",
        EngineFallbackWarning,
        stacklevel=2,
    )
    return TorchEngine(backbone, head, output=output, threads=threads)
