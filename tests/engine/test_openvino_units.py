"""The OpenVINO engine's small parts, one at a time: the import and its install hint,
``bf16_supported`` and ``default_precision`` over a fake OpenVINO, ``CompiledSession`` over a
fake compiled model, the compile settings (read back from the compiled model) and ``repr``."""

from __future__ import annotations

import sys
import threading
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from pyinstance.engine import EngineUnavailableError, openvino_engine
from pyinstance.engine.openvino_engine import CompiledSession, OpenVinoEngine

from .conftest import requires_openvino

# --- import_openvino -------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["openvino", "onnx"])
def test_without_openvino_or_onnx_the_hint_names_both_and_the_extra(monkeypatch, missing) -> None:  # noqa: ANN001
    monkeypatch.setitem(sys.modules, missing, None)  # "import <missing>" raises ImportError
    with pytest.raises(EngineUnavailableError) as caught:
        openvino_engine.import_openvino()
    cause = caught.value.__cause__
    assert isinstance(cause, ImportError)
    assert str(caught.value) == (
        f"engine: 'openvino' needs the packages openvino and onnx ({cause}); install them "
        "with: pip install 'pyinstance[fast]' (or use engine='torch')"
    )


@requires_openvino
def test_import_openvino_gives_the_openvino_module() -> None:
    import openvino

    assert openvino_engine.import_openvino() is openvino


# --- bf16_supported and default_precision ------------------------------------------------


def _fake_openvino(capabilities: list[str], asked: list[tuple[str, str]]) -> SimpleNamespace:
    class Core:
        def get_property(self, device: str, name: str) -> list[str]:
            asked.append((device, name))
            return capabilities

    return SimpleNamespace(Core=Core)


@pytest.mark.parametrize(
    ("capabilities", "supported"),
    [(["FP32", "BF16", "INT8"], True), (["FP32", "FP16", "INT8"], False), ([], False)],
)
def test_bf16_is_supported_where_the_cpu_lists_it(monkeypatch, capabilities, supported) -> None:  # noqa: ANN001
    asked: list[tuple[str, str]] = []
    monkeypatch.setattr(
        openvino_engine, "import_openvino", lambda: _fake_openvino(capabilities, asked)
    )
    openvino_engine.bf16_supported.cache_clear()
    try:
        assert openvino_engine.bf16_supported() is supported
        assert openvino_engine.bf16_supported() is supported
    finally:
        openvino_engine.bf16_supported.cache_clear()
    assert asked == [("CPU", "OPTIMIZATION_CAPABILITIES")]  # asked once, then cached


@pytest.mark.parametrize("wanted", ["fp32", "bf16", "int8"])
def test_the_variable_chooses_the_default_precision(monkeypatch, wanted) -> None:  # noqa: ANN001
    monkeypatch.setenv("PYINSTANCE_OPENVINO_PRECISION", wanted)
    monkeypatch.setattr(openvino_engine, "bf16_supported", lambda: False)  # the variable wins
    assert openvino_engine.default_precision() == wanted


@pytest.mark.parametrize("wanted", ["fp16", "FP32", ""])
def test_a_precision_variable_of_another_value_is_refused_by_name(monkeypatch, wanted) -> None:  # noqa: ANN001
    monkeypatch.setenv("PYINSTANCE_OPENVINO_PRECISION", wanted)
    with pytest.raises(ValueError) as caught:
        openvino_engine.default_precision()
    assert str(caught.value) == (
        f"PYINSTANCE_OPENVINO_PRECISION: expected one of fp32, bf16, int8, got {wanted!r}"
    )


@pytest.mark.parametrize(
    ("default", "supported", "expected"),
    [
        ("fp32", True, "fp32"),
        ("fp32", False, "fp32"),
        ("bf16", True, "bf16"),
        ("bf16", False, "fp32"),  # a default of bf16 drops to fp32 without native bfloat16
    ],
)
def test_without_the_variable_the_default_applies_where_the_cpu_allows(
    monkeypatch, default, supported, expected
) -> None:  # noqa: ANN001
    monkeypatch.delenv("PYINSTANCE_OPENVINO_PRECISION", raising=False)
    monkeypatch.setattr(openvino_engine, "DEFAULT_PRECISION", default)
    monkeypatch.setattr(openvino_engine, "bf16_supported", lambda: supported)
    assert openvino_engine.default_precision() == expected


# --- CompiledSession over a fake compiled model ----------------------------------------


class FakeRequest:
    def __init__(self, result: np.ndarray):
        self.result = result
        self.calls: list[tuple[dict[int, np.ndarray], dict[str, Any]]] = []

    def infer(self, inputs: dict[int, np.ndarray], **options: Any) -> dict[int, np.ndarray]:
        self.calls.append((inputs, options))
        return {0: self.result}


class FakeCompiled:
    """A compiled model with two input ports whose infer requests answer ``result``."""

    def __init__(self, result: np.ndarray):
        self.inputs = [SimpleNamespace(any_name="images"), SimpleNamespace(any_name="other")]
        self.result = result
        self.requests: list[FakeRequest] = []

    def create_infer_request(self) -> FakeRequest:
        self.requests.append(FakeRequest(self.result))
        return self.requests[-1]


def test_a_compiled_session_names_its_inputs_and_runs_contiguous_shared_batches() -> None:
    result = np.array([[1.5, -2.25]], np.float64)
    compiled = FakeCompiled(result)
    session = CompiledSession(compiled)
    assert [port.name for port in session.get_inputs()] == ["images", "other"]
    batch = np.arange(24, dtype=np.float32).reshape(2, 3, 4).transpose(0, 2, 1)  # strided
    (got,) = session.run(None, {"images": batch})
    (request,) = compiled.requests
    ((inputs, options),) = request.calls
    assert list(inputs) == [0] and options == {"share_inputs": True}
    assert inputs[0].flags.c_contiguous and np.array_equal(inputs[0], batch)
    assert got.dtype == np.float32 and np.array_equal(got, result.astype(np.float32))
    contiguous = np.ones((1, 3), np.float32)
    session.run(None, {"images": contiguous})
    assert request.calls[1][0][0] is contiguous  # no copy of an array already contiguous


def test_a_compiled_session_copies_the_requests_output() -> None:
    result = np.array([[1.0, 2.0]], np.float32)
    session = CompiledSession(FakeCompiled(result))
    (got,) = session.run(None, {"images": np.zeros((1, 3), np.float32)})
    result[0, 0] = 7.0  # OpenVINO reuses its output tensor for the next request
    assert got[0, 0] == 1.0


def test_each_thread_gets_its_own_infer_request_and_keeps_it() -> None:
    compiled = FakeCompiled(np.zeros((1, 2), np.float32))
    session = CompiledSession(compiled)
    batch = np.zeros((1, 3), np.float32)
    session.run(None, {"images": batch})
    session.run(None, {"images": batch})
    assert len(compiled.requests) == 1 and len(compiled.requests[0].calls) == 2
    worker = threading.Thread(target=session.run, args=(None, {"images": batch}))
    worker.start()
    worker.join()
    assert len(compiled.requests) == 2 and len(compiled.requests[1].calls) == 1
    session.run(None, {"images": batch})
    assert len(compiled.requests[0].calls) == 3


# --- the compile settings and repr, on the real runtime ----------------------------------


@requires_openvino
@pytest.mark.parametrize(
    ("precision", "hint", "element_type"),
    [("fp32", "f32", "float32"), ("bf16", "bf16", "bfloat16")],
)
def test_models_are_compiled_with_the_engines_settings(
    tiny, tmp_path, precision, hint, element_type
) -> None:  # noqa: ANN001
    if precision == "bf16" and not openvino_engine.bf16_supported():
        pytest.skip("the CPU does not compute bfloat16 natively")
    engine = OpenVinoEngine(*tiny, threads=2, precision=precision, cache_dir=tmp_path)
    assert engine._config(3) == {
        "INFERENCE_NUM_THREADS": 3,
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": hint,
        "ENABLE_CPU_PINNING": False,
    }
    compiled = engine.sessions.dynamic(2)._compiled
    assert compiled.get_property("INFERENCE_NUM_THREADS") == 2
    assert compiled.get_property("NUM_STREAMS") == 1
    assert str(compiled.get_property("PERFORMANCE_HINT")) == "LATENCY"
    assert str(compiled.get_property("INFERENCE_PRECISION_HINT")) == f"<Type: '{element_type}'>"
    assert compiled.get_property("ENABLE_CPU_PINNING") is False


@requires_openvino
def test_repr_names_output_threads_precision_and_file(tiny, tmp_path) -> None:  # noqa: ANN001
    engine = OpenVinoEngine(
        tiny[0], output="features", threads=2, precision="fp32", cache_dir=tmp_path
    )
    assert repr(engine) == (
        f"OpenVinoEngine(output='features', threads=2, precision='fp32', path='{engine.path}')"
    )
