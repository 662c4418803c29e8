"""Optional int8: static quantisation of an exported fp32 graph, calibrated on real images.

Convolutions get int8 weights (per output channel) and uint8 activations, in QDQ format,
with activation ranges (min/max) measured on calibration batches, a few dozen normalised
images of the collection (its references, say); the pooling head stays in float. Measured
on the museum dev set (``benchmarks/engine.py --int8``, EfficientNet-Lite0 + GeM, 448 px,
one thread): about 1.4× faster than the fp32 graph and the same P@1, but descriptors move
(cosine to fp32 about 0.8 at worst), so it is opt-in: ``precision="int8"``.

The check of an int8 graph cannot be the fp32 tolerance: it must give the shapes of
torch at every probe size, and descriptors of the calibration images within cosine
:data:`INT8_MIN_COSINE` of torch's.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pyinstance.engine.export import ExportError, check_against_torch, eval_mode

#: Smallest cosine between int8 and torch descriptors of a calibration image at export.
INT8_MIN_COSINE = 0.7


def calibration_sha256(calibration: Sequence[torch.Tensor]) -> str:
    """SHA-256 of the calibration batches (shapes and values)."""
    digest = hashlib.sha256()
    for batch in calibration:
        digest.update(f"{tuple(batch.shape)}|".encode())
        digest.update(batch.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


@contextlib.contextmanager
def _quiet_logging() -> Iterator[None]:
    """The quantiser logs a warning per tensor it leaves in float; silence them meanwhile."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def quantize_int8(fp32: bytes, calibration: Sequence[torch.Tensor]) -> bytes:
    """The int8 (static, QDQ, convolutions only) version of the serialised graph ``fp32``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {"images": batch.contiguous().numpy()}

    with tempfile.TemporaryDirectory() as folder, _quiet_logging():
        source, prepared, target = (Path(folder) / name for name in ("a.onnx", "b.onnx", "c.onnx"))
        source.write_bytes(fp32)
        try:
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            quantize_static(
                str(prepared),
                str(target),
                Reader(),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["Conv"],
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
        except Exception as error:
            raise ExportError(
                f"int8 quantisation failed: {type(error).__name__}: {error}"
            ) from error
        return target.read_bytes()


def check_int8(
    network: nn.Module,
    run_onnx: Callable[[np.ndarray], np.ndarray],
    min_input_size: int,
    calibration: Sequence[torch.Tensor],
) -> float:
    """Min cosine to torch over the calibration batches; :class:`ExportError` when too low.

    Probe batches check the output shapes at several sizes (values are not compared).
    """
    check_against_torch(network, run_onnx, "descriptors", min_input_size, compare_values=False)
    worst = 1.0
    with eval_mode(network), torch.inference_mode():
        for batch in calibration:
            expected = network(batch).float().numpy()
            got = run_onnx(batch.contiguous().numpy())
            worst = min(worst, float(np.min(np.sum(got * expected, axis=1))))
    if not worst >= INT8_MIN_COSINE:
        raise ExportError(
            f"the int8 graph's descriptors of a calibration image have cosine {worst:.3f} to "
            f"torch's, below {INT8_MIN_COSINE}"
        )
    return worst
