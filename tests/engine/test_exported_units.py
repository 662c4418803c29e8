"""ExportedEngine (pyinstance.engine.exported) with a fake runtime, where
test_export_units.py does not look: the precision its check and fixed-shape sessions use,
the thread budget of an engine asked for several threads, its own ``fix_after``, the order
of its argument checks and the exact text of its errors and warnings.

The fake runtime's "graph" is the metadata as JSON and its sessions run the torch network
itself plus ``offset``, so every difference from torch is known exactly."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from pyinstance.engine import export as onnx_export
from pyinstance.engine import exported as exported_module
from pyinstance.engine.cpu_load import CpuMeter
from pyinstance.engine.export import (
    BF16_DESCRIPTOR_TOLERANCE,
    BF16_FEATURE_TOLERANCE,
    DESCRIPTOR_TOLERANCE,
    ExportError,
)
from pyinstance.engine.exported import ExportedEngine, available_cpus
from pyinstance.models.pooling import GeM

from .conftest import TinyBackbone


class OffsetSession:
    """Runs ``network`` and adds ``offset``; records the batch shapes it ran."""

    def __init__(self, network: nn.Module, offset: float):
        self.network, self.offset = network, offset
        self.shapes: list[tuple[int, ...]] = []

    def get_inputs(self) -> list[SimpleNamespace]:
        return [SimpleNamespace(name="images")]

    def run(self, outputs: None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        (batch,) = feeds.values()
        self.shapes.append(batch.shape)
        with torch.no_grad():
            return [self.network(torch.from_numpy(batch)).numpy() + np.float32(self.offset)]


class OffsetEngine(ExportedEngine):
    """An exported engine whose runtime is torch plus ``offset`` (``fixed_offset`` for the
    fixed-shape sessions); records the thread counts its sessions were made with."""

    name = "fake"
    offset = 0.0
    fixed_offset = 0.0
    network: nn.Module

    def _load(self, data: bytes) -> tuple[Any, dict[str, str]]:
        self.made = [(self.threads, None)]
        return OffsetSession(self.network, self.offset), json.loads(data.decode())

    def _new_session(self, threads: int, shape: Any) -> Any:
        self.made.append((threads, shape))
        return OffsetSession(self.network, self.fixed_offset if shape else self.offset)


@pytest.fixture(autouse=True)
def fake_export(monkeypatch) -> None:  # noqa: ANN001
    """export_onnx gives the metadata as JSON: no ONNX file is made."""
    monkeypatch.setattr(
        onnx_export, "export_onnx", lambda network, size, metadata: json.dumps(metadata).encode()
    )


def _engine(tmp_path, output="descriptors", precision="fp32", threads=None, **attributes):  # noqa: ANN001, ANN003, ANN202
    backbone, head = TinyBackbone(), GeM(16)
    network = backbone if output == "features" else nn.Sequential(backbone, head)
    cls = type("Engine", (OffsetEngine,), {"network": network.eval(), **attributes})
    return cls(
        backbone, head, output=output, threads=threads, precision=precision, cache_dir=tmp_path
    )


# --- the precision: the check and the fixed-shape sessions' agreement ---------------------


def test_a_bf16_engine_is_checked_and_compared_with_the_bf16_tolerances(tmp_path) -> None:  # noqa: ANN001
    # 0.01 is beyond fp32's tolerance (1e-4) and within bf16's (0.05) for descriptors.
    engine = _engine(tmp_path, precision="bf16", offset=0.01, fixed_offset=0.01)
    assert engine.precision == "bf16"
    assert engine.max_difference == pytest.approx(0.01, rel=1e-3)
    expected = np.full((1, 16), 0.25, np.float32)
    assert engine._tolerance(expected) == BF16_DESCRIPTOR_TOLERANCE
    assert engine._agrees(expected + np.float32(0.04), expected)
    assert not engine._agrees(expected + np.float32(0.06), expected)
    with pytest.raises(ExportError, match="differs from torch"):
        _engine(tmp_path / "fp32", precision="fp32", offset=0.01)


def test_a_bf16_feature_engine_is_checked_relative_to_the_largest_value(tmp_path) -> None:  # noqa: ANN001
    engine = _engine(tmp_path, output="features", precision="bf16", offset=0.1)
    assert engine.max_difference == pytest.approx(0.1, rel=1e-3)
    expected = np.array([[0.5, -4.0]], np.float32)
    assert engine._tolerance(expected) == pytest.approx(4 * BF16_FEATURE_TOLERANCE)


def test_a_bf16_descriptor_engine_beyond_its_tolerance_is_refused_by_name(tmp_path) -> None:  # noqa: ANN001
    # 0.1 is within bf16's tolerance for feature maps (0.15) but not for descriptors (0.05).
    with pytest.raises(
        ExportError,
        match=r"^the ONNX graph run by fake \(bf16\) differs from torch on a probe batch of "
        r"shape \(\d+, 3, \d+, \d+\): max \|difference\| 0\.1 > tolerance 0\.05$",
    ):
        _engine(tmp_path, precision="bf16", offset=0.1)


def test_an_fp32_engine_uses_the_fp32_tolerance(tmp_path) -> None:  # noqa: ANN001
    engine = _engine(tmp_path, offset=5e-5)
    assert engine._tolerance(np.zeros((1, 16), np.float32)) == DESCRIPTOR_TOLERANCE
    assert not engine._agrees(np.full((1, 2), 2e-4, np.float32), np.zeros((1, 2), np.float32))


# --- threads ---------------------------------------------------------------------------


def test_an_engine_of_two_threads_reads_the_load_and_the_cpus(tmp_path) -> None:  # noqa: ANN001
    engine = _engine(tmp_path, threads=2)
    assert isinstance(engine._meter, CpuMeter) and engine._cpus == available_cpus()
    images = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        expected = engine.network(images)
    # the real meter and CPU count: either session, the same answer
    torch.testing.assert_close(engine(images), expected, rtol=0, atol=0)
    engine.sessions.runs.clear()
    engine._cpus = 2
    engine._meter = SimpleNamespace(busy_elsewhere=lambda: 1.0)  # one CPU left: one thread
    torch.testing.assert_close(engine(images), expected, rtol=0, atol=0)
    engine._meter = SimpleNamespace(busy_elsewhere=lambda: 0.0)
    engine(images)
    assert engine.sessions.runs == {1: 1, 2: 1}
    assert (1, None) in engine.made  # the one-thread session was made for the busy machine


def test_threads_are_checked_before_the_modules_device(tmp_path) -> None:  # noqa: ANN001
    backbone, head = TinyBackbone(), GeM(16).to("meta")
    cls = type("Engine", (OffsetEngine,), {"network": nn.Sequential(backbone, head)})
    with pytest.raises(ValueError, match="^threads: expected a positive int or None, got 0$"):
        cls(backbone, head, output="descriptors", threads=0, precision="fp32", cache_dir=tmp_path)


# --- fix_after ---------------------------------------------------------------------------


def test_a_subclass_fix_after_reaches_its_sessions(tmp_path) -> None:  # noqa: ANN001
    engine = _engine(tmp_path, fix_after=5)
    assert engine.sessions.fix_after == 5
    images = torch.randn(1, 3, 16, 16)
    for _ in range(4):
        engine(images)
    assert engine.sessions.fixed_shapes == []
    engine(images)
    assert engine.sessions.fixed_shapes == [(1, (1, 3, 16, 16))]


# --- the text of errors and warnings ---------------------------------------------------


def test_a_graph_with_extra_inputs_is_refused_with_the_whole_reason(tmp_path) -> None:  # noqa: ANN001
    class TwoInputs(OffsetSession):
        def get_inputs(self) -> list[SimpleNamespace]:
            return [SimpleNamespace(name="images"), SimpleNamespace(name="constant")]

    def load(self, data: bytes) -> tuple[Any, dict[str, str]]:  # noqa: ANN001
        return TwoInputs(self.network, 0.0), json.loads(data.decode())

    with pytest.raises(ExportError) as caught:
        _engine(tmp_path, _load=load)
    assert str(caught.value) == (
        "the exported graph has 2 inputs instead of the image batch: forward() leaves torch "
        "(numpy, Python numbers), so tracing recorded constants instead of operations on the "
        "input"
    )


def test_a_cached_file_of_another_key_is_rebuilt_with_a_warning_naming_both(
    tmp_path, caplog
) -> None:  # noqa: ANN001
    path = _engine(tmp_path).path
    path.write_text(json.dumps({"pyinstance.cache_key": "other"}))
    with caplog.at_level(logging.WARNING, logger=exported_module.__name__):
        engine = _engine(tmp_path)
    assert engine.exported
    key = json.loads(path.read_text())["pyinstance.cache_key"]
    assert caplog.messages == [
        f"rebuilding the cached ONNX graph {path}: it holds cache key 'other', expected {key!r}"
    ]


def test_an_unwritable_cache_warns_with_the_path_and_the_reason(tmp_path, caplog) -> None:  # noqa: ANN001
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger=exported_module.__name__):
        engine = _engine(blocker)
    assert len(caplog.messages) == 1
    assert caplog.messages[0].startswith(f"cannot cache the ONNX graph at {engine.path}: ")
    assert "[Errno " in caplog.messages[0]


def test_a_graph_the_runtime_cannot_load_names_the_runtime_and_the_error(
    monkeypatch, tmp_path
) -> None:  # noqa: ANN001
    monkeypatch.setattr(onnx_export, "export_onnx", lambda network, size, metadata: b"{oops")
    with pytest.raises(ExportError) as caught:
        _engine(tmp_path)
    assert str(caught.value).startswith(
        "fake cannot load the exported graph: JSONDecodeError: Expecting property name"
    )
    assert isinstance(caught.value.__cause__, json.JSONDecodeError)
