"""int8 post-training quantisation of an OpenVINO model (NNCF), cached on disk, and its check.

- **Quantise**: ``nncf.quantize`` with the mixed preset (symmetric weights, asymmetric
  activations), calibrated on the bundled sample photos at the recipes' sizes and mirrored
  (:func:`pyinstance.engine.sample_photos.calibration_batches`); the pooling head's
  operations (:data:`HEAD_OPERATIONS`: GeM's power and mean, L2 normalisation) stay in
  float32. Measured on EfficientNet-Lite0 + GeM at 448 px (``benchmarks/engine.py
  --int8``): 11.8 ms per image against 28.6 ms in fp32 (one thread), museum P@1 0.952
  against 0.937.
- **Cache**: quantising takes seconds, so the model is kept in one zip file (OpenVINO's
  IR ``model.xml`` + ``model.bin``, and a ``meta.json`` with the cache key and the
  SHA-256 of both) beside the ONNX graph it came from, written atomically. The key covers
  the ONNX graph's own key, the NNCF and OpenVINO versions, the settings and the calibration
  photos: a file that does not load, holds another key or whose contents do not match
  their checksum is rebuilt, never used.
- **Check**: int8 outputs differ from torch's by far more than rounding (maximum absolute
  differences of the order of the values themselves for some elements), so the check is
  the cosine between each probe image's output and torch's, on photos
  (:func:`pyinstance.engine.sample_photos.probe_batches`), at least
  :data:`DESCRIPTOR_MIN_COSINE` for descriptors and :data:`FEATURE_MIN_COSINE` for
  feature maps (flattened per image).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn

from pyinstance._files import write_atomic
from pyinstance.engine.base import EngineUnavailableError
from pyinstance.engine.export import ExportError, probe_outputs
from pyinstance.engine.sample_photos import CALIBRATION_SIDES, sample_photos

#: OpenVINO operation types of the pooling heads, kept in float32 (GeM's clamp, power and
#: mean, MAC's max, the L2 normalisation).
HEAD_OPERATIONS: tuple[str, ...] = (
    "Clamp", "Power", "ReduceMean", "ReduceMax", "ReduceL2", "NormalizeL2", "Divide", "Sqrt",
)  # fmt: skip
#: NNCF's preset: symmetric weights, asymmetric activations (ReLU6 outputs are one-sided).
PRESET = "mixed"
#: Smallest allowed cosine between an int8 descriptor and torch's on a probe photo.
#: Measured (EfficientNet-Lite0, photos 119–800 px): GeM 0.970–0.994, MAC 0.967–0.992;
#: on noise 0.79–0.90, which is why the probes are photos.
DESCRIPTOR_MIN_COSINE = 0.93
#: The same for feature maps, flattened per image. Measured (Lite0, ReLU6 maps): 0.92–0.98
#: at 214–640 px, 0.88 at 800 px.
FEATURE_MIN_COSINE = 0.85
_FORMAT = 1

log = logging.getLogger(__name__)


def import_nncf() -> ModuleType:
    """``nncf``, or a clear install hint."""
    try:
        import nncf
    except ImportError as error:
        raise EngineUnavailableError(
            f"precision: 'int8' needs the package nncf ({error}); install it with: "
            "pip install 'pyinstance[fast]' (or use precision='fp32')"
        ) from error
    return nncf


def cache_key(graph_key: str, openvino_version: str) -> str:
    """SHA-256 of what a quantised model depends on besides the graph (whose key is
    ``graph_key``): versions, settings and the calibration photos' bytes."""
    digest = hashlib.sha256()
    settings = [
        _FORMAT,
        graph_key,
        import_nncf().__version__,
        openvino_version,
        PRESET,
        HEAD_OPERATIONS,
        CALIBRATION_SIDES,
    ]
    digest.update(json.dumps(settings).encode())
    for path in sample_photos():
        digest.update(f"|{path.parent.name}/{path.name}|".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def cache_path(graph_path: Path) -> Path:
    """Where the int8 model of the ONNX graph at ``graph_path`` is cached."""
    return graph_path.with_name(f"{graph_path.stem}-openvino-int8.zip")


def quantize(model: Any, calibration: Sequence[np.ndarray]) -> Any:
    """The int8 version of the OpenVINO ``model``, calibrated on ``calibration`` (normalised
    1×3×H×W float32 arrays); :class:`ExportError` when NNCF fails."""
    nncf = import_nncf()
    if not calibration:
        raise ValueError("calibration: expected at least one image batch, got none")
    # validate=False: a head without some of these operations is no error
    ignored = nncf.IgnoredScope(types=list(HEAD_OPERATIONS), validate=False)
    nncf_log = logging.getLogger("nncf")
    level = nncf_log.level
    nncf_log.setLevel(logging.WARNING)  # it logs every operation it leaves alone
    try:
        # its progress bar goes to stderr: stdout may carry a command's JSON
        with contextlib.redirect_stdout(sys.stderr):
            return nncf.quantize(
                model,
                nncf.Dataset(list(calibration)),
                preset=nncf.QuantizationPreset(PRESET),
                ignored_scope=ignored,
                subset_size=len(calibration),
            )
    except Exception as error:  # NNCF raises many kinds; all mean "cannot quantise"
        raise ExportError(
            f"nncf cannot quantise the graph: {type(error).__name__}: {error}"
        ) from error
    finally:
        nncf_log.setLevel(level)


def serialize(openvino: ModuleType, model: Any, key: str) -> bytes:
    """``model`` as the bytes of a cache file holding ``key``."""
    with tempfile.TemporaryDirectory() as folder:
        xml = Path(folder) / "model.xml"
        openvino.save_model(model, xml, compress_to_fp16=False)
        parts = {"model.xml": xml.read_bytes(), "model.bin": xml.with_suffix(".bin").read_bytes()}
    meta = {"key": key, **{name: hashlib.sha256(data).hexdigest() for name, data in parts.items()}}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("meta.json", json.dumps(meta))
        for name, data in parts.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def deserialize(openvino: ModuleType, core: Any, data: bytes, key: str) -> Any:
    """The model in the cache file ``data``; a ValueError unless it holds ``key`` and its
    parts match their checksums."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        meta = json.loads(archive.read("meta.json"))
        if meta.get("key") != key:
            raise ValueError(f"it holds cache key {meta.get('key')!r}, expected {key!r}")
        parts = {name: archive.read(name) for name in ("model.xml", "model.bin")}
    for name, part in parts.items():
        if hashlib.sha256(part).hexdigest() != meta.get(name):
            raise ValueError(f"{name} does not match its checksum")
    weights = np.frombuffer(parts["model.bin"], dtype=np.uint8)
    return core.read_model(parts["model.xml"].decode(), openvino.Tensor(weights))


def cached_or_quantized(
    openvino: ModuleType,
    core: Any,
    model: Any,
    path: Path,
    key: str,
    calibration: Callable[[], Sequence[np.ndarray]],
) -> tuple[Any, bytes | None]:
    """The int8 model cached at ``path`` with ``key``, else ``model`` quantised on
    ``calibration()`` and the bytes to cache once it passes its check (None when cached)."""
    if path.is_file():
        try:
            return deserialize(openvino, core, path.read_bytes(), key), None
        except Exception as error:  # corrupt, truncated, another graph: rebuild
            log.warning("rebuilding the cached int8 model %s: %s", path, error)
    quantized = quantize(model, calibration())
    return quantized, serialize(openvino, quantized, key)


def save(path: Path, data: bytes) -> None:
    """Cache ``data`` at ``path`` atomically; a read-only cache costs the next run only."""
    try:
        write_atomic(path, data)
    except OSError as error:
        log.warning("cannot cache the int8 model at %s: %s", path, error)


def min_cosine_for(output: str) -> float:
    """The smallest cosine with torch allowed for an int8 output of kind ``output``."""
    return DESCRIPTOR_MIN_COSINE if output == "descriptors" else FEATURE_MIN_COSINE


def check_against_torch(
    network: nn.Module,
    run: Callable[[np.ndarray], np.ndarray],
    output: str,
    probes: Sequence[torch.Tensor],
) -> float:
    """The smallest cosine between an image's int8 output and torch's over ``probes``;
    :class:`ExportError` below :func:`min_cosine_for` ``output``."""
    least = min_cosine_for(output)
    cosines = []
    for shape, got, expected in probe_outputs(network, run, list(probes), "openvino int8"):
        cosines.append(min_cosine(got, expected))
        if not cosines[-1] >= least:
            raise ExportError(
                f"the int8 model differs from torch on a probe photo batch of shape {shape}: "
                f"cosine {cosines[-1]:.3f} < {least}"
            )
    return min(cosines)


def min_cosine(got: np.ndarray, expected: np.ndarray) -> float:
    """The smallest cosine between ``got[i]`` and ``expected[i]``, each flattened (1 for a
    pair of all-zero outputs, 0 when only one of them is zero)."""
    a = got.reshape(len(got), -1).astype(np.float64)
    b = expected.reshape(len(expected), -1).astype(np.float64)
    norm_a, norm_b = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    cosines = np.where((norm_a == 0) & (norm_b == 0), 1.0, 0.0)
    both = (norm_a > 0) & (norm_b > 0)
    cosines[both] = (a[both] * b[both]).sum(axis=1) / (norm_a[both] * norm_b[both])
    return float(cosines.min())
