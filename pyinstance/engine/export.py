"""Export a network to ONNX once, check it against torch, and cache it on disk.

- **Export**: the TorchScript-based exporter of ``torch.onnx`` (it works offline and needs
  no ``onnxscript``), dynamic batch, height and width, opset :data:`OPSET`. Built-in
  layers that compute padding in Python get traceable forwards while tracing
  (:mod:`pyinstance.engine._traceable`).
- **Check**: the exported graph and the torch modules run the same seeded probe batches at
  three sizes (the traced one and two others with odd sides, so a shape frozen at trace
  time shows); the maximum absolute difference must be at most :data:`DESCRIPTOR_TOLERANCE`
  for L2-normalised descriptors, ``FEATURE_TOLERANCE × max(1, max |torch|)`` for feature
  maps. A runtime computing in bfloat16 gets the looser :data:`BF16_DESCRIPTOR_TOLERANCE`
  and :data:`BF16_FEATURE_TOLERANCE`. A cached file is checked the same way before it is
  used.
- **Clean-up**: optional inputs the exporter leaves empty (``Pad(x, pads, "")``) are
  dropped: ONNX Runtime fuses a ``Pad`` with constant pads into the next ``Conv`` only
  without them, and that fusion keeps the whole network in its blocked (NCHWc) layout
  once the input size is fixed (:mod:`pyinstance.engine.sessions`).
- **Cache**: ``<cache dir>/<backbone>-<head>-<output>-<key>.onnx`` where the key is the
  SHA-256 of the recipe (class names and settings of backbone and head, output kind,
  opset, precision, pyinstance/torch/onnx versions) and of the weights. The file does not
  depend on the runtime: ONNX Runtime and OpenVINO engines share it, each checking it
  with its own runtime before use. The key is
  stored in the file's metadata too: a file that does not load, holds another key or fails
  the check is rebuilt, never used. Files are written atomically (temporary file +
  ``os.replace``). Cache dir: ``$PYINSTANCE_CACHE/onnx``, else ``~/.cache/pyinstance/onnx``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pyinstance.engine._traceable import traceable

#: ONNX opset of exported graphs.
OPSET = 17
#: Largest allowed max |ONNX − torch| of L2-normalised descriptors at export.
DESCRIPTOR_TOLERANCE = 1e-4
#: Largest allowed max |ONNX − torch| of feature maps, relative to max(1, max |torch|).
FEATURE_TOLERANCE = 1e-4
#: Largest allowed max |runtime − torch| of L2-normalised descriptors when the runtime
#: computes in bfloat16 (8-bit mantissa). Measured on the probe batches (OpenVINO, AMX):
#: EfficientNet-Lite0 + GeM 0.010, + MAC 0.011; Lite2 + GeM 0.014, + MAC 0.015. About
#: three times that leaves room for other networks while a wrong graph (differences of the
#: order of the values themselves) still fails.
BF16_DESCRIPTOR_TOLERANCE = 0.05
#: The same for feature maps, relative to max(1, max |torch|). Measured: Lite0 0.36 and
#: Lite2 0.54 for maps whose largest value is 6 (ReLU6), i.e. up to 0.09 of it.
BF16_FEATURE_TOLERANCE = 0.15
#: Bump when the layout of the recipe or of the exported graph changes.
_FORMAT = 3
_KEY_FIELD = "pyinstance.cache_key"
_RECIPE_FIELD = "pyinstance.recipe"
_INPUT = "images"
_OUTPUT = "output"
#: Names of the input's dynamic axes (batch, height, width) in exported graphs.
DYNAMIC_AXES: tuple[str, str, str] = ("batch", "height", "width")

log = logging.getLogger(__name__)


class ExportError(RuntimeError):
    """The network could not be exported to ONNX, or the export does not match torch."""


def default_cache_dir() -> Path:
    """``$PYINSTANCE_CACHE/onnx`` if set, else ``~/.cache/pyinstance/onnx``."""
    root = os.environ.get("PYINSTANCE_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "pyinstance"
    return base / "onnx"


def _qualified_name(module: nn.Module) -> str:
    kind = type(module)
    return f"{kind.__module__}.{kind.__qualname__}"


def _settings(module: nn.Module) -> dict[str, Any]:
    """Plain public attributes (hyper-parameters) of ``module`` and its architecture."""
    plain = (bool, int, float, str, type(None))
    settings: dict[str, Any] = {
        name: value
        for name, value in sorted(vars(module).items())
        if not name.startswith("_") and name != "training" and isinstance(value, plain)
    }
    settings["architecture"] = repr(module)
    return settings


def weights_sha256(module: nn.Module) -> str:
    """SHA-256 of every tensor of ``module``'s state dict (names, dtypes, shapes, bytes)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def recipe(
    backbone: nn.Module, head: nn.Module | None, output: str, precision: str = "fp32"
) -> dict[str, Any]:
    """What an exported file depends on, besides the weights (not the runtime that runs it)."""
    import onnx

    import pyinstance

    return {
        "format": _FORMAT,
        "backbone": _qualified_name(backbone),
        "backbone_settings": _settings(backbone),
        "head": _qualified_name(head) if head is not None else None,
        "head_settings": _settings(head) if head is not None else None,
        "output": output,
        "opset": OPSET,
        "precision": precision,
        "versions": {
            "pyinstance": pyinstance.__version__,
            "torch": torch.__version__,
            "onnx": onnx.__version__,
        },
    }


def cache_key(recipe: dict[str, Any], network: nn.Module) -> str:
    """SHA-256 of the recipe and of the network's weights."""
    text = json.dumps(recipe, sort_keys=True) + "|" + weights_sha256(network)
    return hashlib.sha256(text.encode()).hexdigest()


def cache_path(directory: Path, recipe: dict[str, Any], key: str) -> Path:
    """Where the graph of ``recipe`` with key ``key`` is cached (readable prefix + key)."""
    head = recipe["head"].rsplit(".", 1)[-1] if recipe["head"] else "none"
    backbone = recipe["backbone"].rsplit(".", 1)[-1]
    return directory / f"{backbone}-{head}-{recipe['output']}-{recipe['precision']}-{key}.onnx"


def probe_shapes(min_input_size: int) -> list[tuple[int, int, int, int]]:
    """Probe batch shapes: the traced one first, then two with odd and uneven sides."""
    side = max(int(min_input_size), 32)
    return [
        (2, 3, 4 * side, 4 * side),
        (1, 3, 4 * side + 1, 3 * side + 3),
        (2, 3, 5 * side - 5, 6 * side + 7),
    ]


def probe_batch(shape: tuple[int, int, int, int]) -> torch.Tensor:
    """A deterministic standard-normal batch (about the statistics of normalised images)."""
    generator = torch.Generator().manual_seed(sum(shape))
    return torch.randn(shape, generator=generator)


@contextlib.contextmanager
def eval_mode(network: nn.Module):
    """``network`` in eval mode inside the block, every module's mode restored after it."""
    modes = [module.training for module in network.modules()]
    network.eval()
    try:
        yield network
    finally:
        for module, mode in zip(network.modules(), modes, strict=True):
            module.training = mode


def export_onnx(network: nn.Module, min_input_size: int, metadata: dict[str, str]) -> bytes:
    """The ONNX graph of ``network`` (dynamic B, H, W) with ``metadata``, serialised.

    Raises :class:`ExportError` with the exporter's reason when tracing or export fails.
    """
    import onnx

    sample = probe_batch(probe_shapes(min_input_size)[0])
    buffer = io.BytesIO()
    try:
        with (
            warnings.catch_warnings(),
            eval_mode(network),
            traceable(network),
            torch.no_grad(),
        ):
            warnings.simplefilter("ignore")  # tracer and deprecation notices; the check decides
            torch.onnx.export(
                network,
                (sample,),
                buffer,
                dynamo=False,
                input_names=[_INPUT],
                output_names=[_OUTPUT],
                dynamic_axes={
                    _INPUT: dict(zip((0, 2, 3), DYNAMIC_AXES, strict=True)),
                    _OUTPUT: {0: DYNAMIC_AXES[0]},
                },
                opset_version=OPSET,
                do_constant_folding=True,
            )
    except Exception as error:  # the exporter raises many kinds; all mean "cannot export"
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ExportError(f"torch.onnx.export failed: {type(error).__name__}: {reason}") from error
    model = onnx.load_from_string(buffer.getvalue())
    drop_empty_optional_inputs(model.graph)
    for name, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = name, value
    return model.SerializeToString()


def drop_empty_optional_inputs(graph: Any) -> None:
    """Remove the trailing empty-named (omitted) optional inputs of every node of ``graph``.

    An empty name means "not given" in ONNX, so the graph computes the same; ONNX Runtime's
    Pad-into-Conv fusion refuses a ``Pad`` that lists an omitted ``constant_value``.
    """
    for node in graph.node:
        while node.input and node.input[-1] == "":
            node.input.pop()


def probe_outputs(
    network: nn.Module,
    run: Callable[[np.ndarray], np.ndarray],
    batches: list[torch.Tensor],
    runtime: str,
) -> list[tuple[tuple[int, ...], np.ndarray, np.ndarray]]:
    """Per probe batch (in eval mode): its shape, the output ``runtime`` gives through
    ``run`` and torch's; :class:`ExportError` when the runtime fails or gives another shape."""
    outputs = []
    with eval_mode(network), torch.inference_mode():
        for batch in batches:
            shape = tuple(batch.shape)
            expected = network(batch).float().numpy()
            try:
                got = run(batch.numpy())
            except Exception as error:
                raise ExportError(
                    f"{runtime} failed on a probe batch of shape {shape}: "
                    f"{type(error).__name__}: {error}"
                ) from error
            if got.shape != expected.shape:
                raise ExportError(
                    f"the ONNX graph gives shape {got.shape} for a probe batch of shape {shape}, "
                    f"torch gives {expected.shape} (a shape frozen at export?)"
                )
            outputs.append((shape, got, expected))
    return outputs


def check_against_torch(
    network: nn.Module,
    run_onnx: Callable[[np.ndarray], np.ndarray],
    output: str,
    min_input_size: int,
    *,
    precision: str = "fp32",
    runtime: str = "onnxruntime",
) -> float:
    """Max |ONNX − torch| over the probe batches, the graph run by ``runtime`` computing
    in ``precision``; :class:`ExportError` above the tolerance."""
    batches = [probe_batch(shape) for shape in probe_shapes(min_input_size)]
    worst = 0.0
    for shape, got, expected in probe_outputs(network, run_onnx, batches, runtime):
        difference = float(np.max(np.abs(got - expected))) if got.size else 0.0
        tolerance = output_tolerance(output, expected, precision)
        if not difference <= tolerance:
            raise ExportError(
                f"the ONNX graph run by {runtime} ({precision}) differs from torch on a "
                f"probe batch of shape {shape}: "
                f"max |difference| {difference:.3g} > tolerance {tolerance:.3g}"
            )
        worst = max(worst, difference)
    return worst


def output_tolerance(output: str, expected: np.ndarray, precision: str = "fp32") -> float:
    """Largest allowed max |difference| from ``expected``, an output of kind ``output``
    computed in ``precision`` (``"fp32"`` or ``"bf16"``)."""
    bf16 = precision == "bf16"
    if output == "descriptors":
        return BF16_DESCRIPTOR_TOLERANCE if bf16 else DESCRIPTOR_TOLERANCE
    largest = float(np.max(np.abs(expected))) if expected.size else 0.0
    return (BF16_FEATURE_TOLERANCE if bf16 else FEATURE_TOLERANCE) * max(1.0, largest)


def stored_key(metadata: dict[str, str]) -> str | None:
    """The cache key recorded in an exported file's metadata."""
    return metadata.get(_KEY_FIELD)


def metadata_for(recipe: dict[str, Any], key: str) -> dict[str, str]:
    """The metadata written into an exported file."""
    return {_KEY_FIELD: key, _RECIPE_FIELD: json.dumps(recipe, sort_keys=True)}
