"""The ONNX Runtime engine (pyinstance.engine.onnxruntime_engine), fast: session options
recorded by a fake ``onnxruntime`` module and read back from real sessions, and one real
export of a tiny network shared by the module's tests (later engines read the cache)."""

from __future__ import annotations

import os
import sys
import threading
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from pyinstance.engine import export as onnx_export
from pyinstance.engine import onnxruntime_engine
from pyinstance.engine.base import EngineUnavailableError
from pyinstance.engine.onnxruntime_engine import (
    PRECISIONS,
    OnnxRuntimeEngine,
    import_onnxruntime,
    session_options,
)
from pyinstance.engine.placement import PlacedSession, thread_ids
from pyinstance.models.pooling import GeM

from .conftest import TinyBackbone, requires_onnxruntime

pytestmark = requires_onnxruntime


class RecordedOptions:
    """A stand-in for ``onnxruntime.SessionOptions`` that records what is set on it."""

    def __init__(self) -> None:
        self.entries: dict[str, str] = {}
        self.overrides: list[tuple[str, int]] = []

    def add_session_config_entry(self, name: str, value: str) -> None:
        self.entries[name] = value

    def add_free_dimension_override_by_name(self, name: str, size: int) -> None:
        self.overrides.append((name, size))


FAKE_ORT = SimpleNamespace(
    SessionOptions=RecordedOptions,
    ExecutionMode=SimpleNamespace(ORT_SEQUENTIAL="sequential"),
    GraphOptimizationLevel=SimpleNamespace(ORT_ENABLE_ALL="all"),
)


@pytest.mark.parametrize(("spinning", "flag"), [(False, "0"), (True, "1")])
def test_session_options_without_a_shape(spinning: bool, flag: str) -> None:
    options = session_options(FAKE_ORT, 3, spinning)
    assert options.intra_op_num_threads == 3 and options.inter_op_num_threads == 1
    assert options.execution_mode == "sequential" and options.graph_optimization_level == "all"
    assert options.entries == {
        "session.intra_op.allow_spinning": flag,
        "session.inter_op.allow_spinning": flag,
    }
    assert options.overrides == [] and options.log_severity_level == 3


def test_session_options_fix_batch_height_and_width_of_a_shape() -> None:
    options = session_options(FAKE_ORT, 1, False, (2, 3, 40, 56))
    assert options.overrides == [("batch", 2), ("height", 40), ("width", 56)]
    assert all(type(size) is int for _, size in options.overrides)
    options = session_options(FAKE_ORT, 1, False, (np.int64(5), 3, np.int64(7), np.int64(9)))
    assert options.overrides == [("batch", 5), ("height", 7), ("width", 9)]
    assert all(type(size) is int for _, size in options.overrides)


def test_real_session_options_hold_the_settings() -> None:
    import onnxruntime

    options = session_options(onnxruntime, 2, False)
    assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 1
    assert options.execution_mode == onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    assert options.graph_optimization_level == onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    assert options.log_severity_level == 3


def test_import_gives_onnxruntime_or_an_install_hint(monkeypatch) -> None:  # noqa: ANN001
    import onnxruntime

    assert import_onnxruntime() is onnxruntime
    for missing in ("onnxruntime", "onnx"):
        with monkeypatch.context() as patch:
            patch.setitem(sys.modules, missing, None)  # "import x" raises ImportError
            with pytest.raises(EngineUnavailableError, match=r"pip install 'pyinstance\[fast\]'"):
                import_onnxruntime()
            with pytest.raises(ImportError):  # the hint is chained to the import's error
                try:
                    import_onnxruntime()
                except EngineUnavailableError as error:
                    raise error.__cause__ from None


# --- the engine, on one real export -------------------------------------------------------


@pytest.fixture(scope="module")
def graph_dir(tmp_path_factory) -> Any:  # noqa: ANN001
    """One cache folder for the module: the first engine exports, the others read it."""
    return tmp_path_factory.mktemp("ort-units")


@pytest.fixture
def tiny() -> tuple[TinyBackbone, GeM]:
    return TinyBackbone(), GeM(16)


def _expected(backbone: nn.Module, head: nn.Module | None, images: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        features = backbone.eval()(images)
        return features if head is None else head.eval()(features)


def test_precisions() -> None:
    assert PRECISIONS == ("fp32",)


def test_the_engine_runs_the_export_with_its_threads_and_spinning(tiny, graph_dir) -> None:  # noqa: ANN001
    engine = OnnxRuntimeEngine(*tiny, cache_dir=graph_dir, threads=2, spinning=1)
    assert engine.name == "onnxruntime" and engine.precision == "fp32"
    assert engine.threads == 2 and engine.spinning is True
    assert engine.output == "descriptors" and engine.path.parent == graph_dir
    dynamic = engine.sessions.dynamic(2)
    options = dynamic.get_session_options()
    assert options.intra_op_num_threads == 2
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert dynamic.get_providers() == ["CPUExecutionProvider"]
    metadata = dynamic.get_modelmeta().custom_metadata_map
    key = onnx_export.cache_key(onnx_export.recipe(*tiny, "descriptors"), nn.Sequential(*tiny))
    assert onnx_export.stored_key(metadata) == key
    images = torch.randn(2, 3, 24, 40)
    torch.testing.assert_close(engine(images), _expected(*tiny, images), atol=1e-5, rtol=0)
    assert repr(engine) == (
        f"OnnxRuntimeEngine(output='descriptors', threads=2, spinning=True, "
        f"places_workers=True, precision='fp32', path={str(engine.path)!r})"
    )


def test_sessions_of_several_threads_place_their_one_worker(tiny, graph_dir) -> None:  # noqa: ANN001
    engine = OnnxRuntimeEngine(*tiny, cache_dir=graph_dir, threads=2)
    session = engine.sessions.dynamic(2)
    assert isinstance(session, PlacedSession)
    (worker,) = session.workers  # the one thread the session started
    assert worker in thread_ids() and worker != threading.get_native_id()
    images = torch.randn(1, 3, 16, 24)
    before = session.placed_runs  # the check against torch ran on it too
    torch.testing.assert_close(engine(images), _expected(*tiny, images), atol=1e-5, rtol=0)
    assert session.placed_runs == before + (len(os.sched_getaffinity(0)) > 1)
    assert not isinstance(engine._new_session(1, None), PlacedSession)  # no worker to place
    unplaced = OnnxRuntimeEngine(*tiny, cache_dir=graph_dir, threads=2, places_workers=False)
    session = unplaced.sessions.dynamic(2)
    before = session.placed_runs
    torch.testing.assert_close(unplaced(images), _expected(*tiny, images), atol=1e-5, rtol=0)
    assert session.placed_runs == before == 0
    unplaced.places_workers = True  # read at every run
    unplaced(images)
    assert session.placed_runs == (len(os.sched_getaffinity(0)) > 1)


def test_the_defaults_are_one_quiet_thread_of_descriptors(tiny, graph_dir, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("PYINSTANCE_CACHE", str(graph_dir / "env"))
    engine = OnnxRuntimeEngine(*tiny)
    assert engine.path.parent == graph_dir / "env" / "onnx"
    assert engine.threads == 1 and engine.spinning is False and engine.precision == "fp32"
    assert engine.output == "descriptors"
    options = engine.sessions.dynamic(1).get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    images = torch.randn(1, 3, 16, 16)
    torch.testing.assert_close(engine(images), _expected(*tiny, images), atol=1e-5, rtol=0)


def test_a_feature_map_engine_runs_the_backbone_alone(tiny, graph_dir) -> None:  # noqa: ANN001
    backbone, head = tiny
    engine = OnnxRuntimeEngine(backbone, head, output="features", cache_dir=graph_dir)
    assert engine.output == "features" and "-none-features-" in engine.path.name
    images = torch.randn(1, 3, 20, 28)
    torch.testing.assert_close(engine(images), _expected(backbone, None, images), atol=1e-5, rtol=0)


def test_new_sessions_run_the_same_graph_with_their_threads_and_shape(tiny, graph_dir) -> None:  # noqa: ANN001
    engine = OnnxRuntimeEngine(*tiny, cache_dir=graph_dir, threads=2)
    images = torch.randn(1, 3, 16, 24)
    expected = _expected(*tiny, images).numpy()
    fixed = engine._new_session(3, (1, 3, 16, 24))
    options = fixed.get_session_options()
    assert options.intra_op_num_threads == 3
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert fixed.get_providers() == ["CPUExecutionProvider"]
    (got,) = fixed.run(None, {"images": images.numpy()})
    np.testing.assert_allclose(got, expected, atol=1e-5)
    with pytest.raises(Exception, match="(?i)dimension|shape"):  # the shape is fixed
        fixed.run(None, {"images": torch.randn(2, 3, 16, 24).numpy()})
    dynamic = engine._new_session(1, None)
    assert dynamic.get_session_options().intra_op_num_threads == 1
    (got,) = dynamic.run(None, {"images": images.numpy()})
    np.testing.assert_allclose(got, expected, atol=1e-5)
    dynamic.run(None, {"images": torch.randn(2, 3, 16, 24).numpy()})  # any shape


def test_only_fp32_is_accepted(tiny, graph_dir) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match="precision: expected one of fp32, got 'bf16'"):
        OnnxRuntimeEngine(*tiny, cache_dir=graph_dir, precision="bf16")


def test_without_onnxruntime_the_engine_is_unavailable(tiny, graph_dir, monkeypatch) -> None:  # noqa: ANN001
    def missing() -> None:
        raise EngineUnavailableError("engine: 'onnxruntime' needs the packages")

    monkeypatch.setattr(onnxruntime_engine, "import_onnxruntime", missing)
    with pytest.raises(EngineUnavailableError, match="needs the packages"):
        OnnxRuntimeEngine(*tiny, cache_dir=graph_dir)


def test_every_session_is_asked_for_the_cpu_provider_with_the_engines_spinning() -> None:
    made: list[tuple[Any, Any]] = []

    class Session:
        def __init__(self, data: bytes, options: Any, providers: Any = None) -> None:
            made.append((options, providers))

        def get_modelmeta(self) -> SimpleNamespace:
            return SimpleNamespace(custom_metadata_map={"k": "v"})

    engine = OnnxRuntimeEngine.__new__(OnnxRuntimeEngine)
    engine._ort = SimpleNamespace(**vars(FAKE_ORT), InferenceSession=Session)
    engine.threads, engine.spinning, engine.places_workers = 1, True, True
    assert engine._load(b"graph")[1] == {"k": "v"}
    placed = engine._new_session(2, (1, 3, 8, 8))
    assert isinstance(placed, PlacedSession) and placed.workers == frozenset()  # none started
    assert [providers for _, providers in made] == [["CPUExecutionProvider"]] * 2
    for options, _ in made:
        assert options.entries["session.intra_op.allow_spinning"] == "1"
    assert made[1][0].intra_op_num_threads == 2 and made[1][0].overrides[0] == ("batch", 1)
