"""Choosing an engine (pyinstance.engine.select) with fake runtimes: which engines are
installed, the default, what ``make_engine`` builds with which arguments, and the fall-back."""

from __future__ import annotations

import sys
import types
import warnings

import pytest
import torch
from torch import nn

from pyinstance.engine import EngineFallbackWarning, EngineUnavailableError, TorchEngine
from pyinstance.engine import select as select_module
from pyinstance.engine.export import ExportError
from pyinstance.engine.select import available_engines, default_engine, engine_info, make_engine
from pyinstance.models.pooling import GeM

from .conftest import TinyBackbone


def _importer(installed: bool, module: object = None):  # noqa: ANN202
    def load() -> object:
        if not installed:
            raise EngineUnavailableError("not installed")
        return module

    return load


def _installed(monkeypatch, onnxruntime: bool, openvino: bool) -> None:  # noqa: ANN001
    monkeypatch.setitem(select_module._IMPORTS, "onnxruntime", _importer(onnxruntime))
    monkeypatch.setitem(select_module._IMPORTS, "openvino", _importer(openvino))


@pytest.mark.parametrize(
    ("onnxruntime", "openvino", "engines", "default", "for_several"),
    [
        (True, True, ["torch", "onnxruntime", "openvino"], "openvino", "onnxruntime"),
        (True, False, ["torch", "onnxruntime"], "onnxruntime", "onnxruntime"),
        (False, True, ["torch", "openvino"], "openvino", "openvino"),
        (False, False, ["torch"], "torch", "torch"),
    ],
)
def test_installed_engines_and_the_default(  # noqa: ANN201
    monkeypatch,
    onnxruntime,
    openvino,
    engines,
    default,
    for_several,  # noqa: ANN001
):
    _installed(monkeypatch, onnxruntime, openvino)
    assert available_engines() == engines
    assert default_engine() == default_engine(None) == default_engine(1) == default
    assert default_engine(2) == default_engine(8) == for_several


class FakeExported:
    """Stands in for an exported-graph engine class: records how it was made."""

    made: list[tuple[str, tuple, dict]] = []

    def __init__(self, name: str, fail: str | None = None):
        self.name, self.fail = name, fail

    def __call__(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN204
        FakeExported.made.append((self.name, args, kwargs))
        if self.fail is not None:
            raise ExportError(self.fail)
        return (self.name, args, kwargs)


@pytest.fixture
def fakes(monkeypatch):  # noqa: ANN001, ANN201
    """Both runtimes "installed", their engine classes replaced by recorders."""
    _installed(monkeypatch, True, True)
    FakeExported.made = []
    monkeypatch.setattr(select_module, "OnnxRuntimeEngine", FakeExported("onnxruntime"))
    monkeypatch.setattr(select_module, "OpenVinoEngine", FakeExported("openvino"))
    return FakeExported.made


def test_make_engine_passes_its_arguments_to_onnxruntime(fakes) -> None:  # noqa: ANN001
    backbone, head = TinyBackbone(), GeM(16)
    assert make_engine(backbone, head, "onnxruntime") == (
        "onnxruntime",
        (backbone, head),
        {"output": "descriptors", "threads": None, "precision": "fp32", "cache_dir": None},
    )
    got = make_engine(
        backbone, None, "onnxruntime", output="features", threads=3, precision="fp32",
        cache_dir="/some/where",
    )  # fmt: skip
    assert got == (
        "onnxruntime",
        (backbone, None),
        {"output": "features", "threads": 3, "precision": "fp32", "cache_dir": "/some/where"},
    )


def test_make_engine_passes_its_arguments_to_openvino(fakes) -> None:  # noqa: ANN001
    backbone, head = TinyBackbone(), GeM(16)
    assert make_engine(backbone, head, "openvino") == (
        "openvino",
        (backbone, head),
        {"output": "descriptors", "threads": None, "precision": None, "cache_dir": None},
    )
    assert make_engine(
        backbone, head, "openvino", precision="bf16", threads=2, cache_dir="/graphs"
    )[2] == {
        "output": "descriptors",
        "threads": 2,
        "precision": "bf16",
        "cache_dir": "/graphs",
    }


def test_auto_is_the_default_engine_on_the_cpu_and_torch_elsewhere(fakes, monkeypatch) -> None:  # noqa: ANN001
    backbone, head = TinyBackbone(), GeM(16)
    assert make_engine(backbone, head)[0] == "openvino"
    assert make_engine(backbone, head, threads=1)[0] == "openvino"
    assert make_engine(backbone, head, threads=2)[0] == "onnxruntime"  # several threads
    monkeypatch.setattr(select_module, "default_engine", lambda threads=None: "onnxruntime")
    assert make_engine(backbone, head, "auto")[0] == "onnxruntime"
    meta = make_engine(TinyBackbone().to("meta"), GeM(16).to("meta"))
    assert isinstance(meta, TorchEngine) and meta.device == torch.device("meta")
    half_meta = make_engine(backbone, GeM(16).to("meta"))  # one parameter off the CPU is enough
    assert isinstance(half_meta, TorchEngine)
    assert len(fakes) == 4


def test_torch_gets_its_arguments_and_no_runtime_is_touched(fakes) -> None:  # noqa: ANN001
    backbone, head = TinyBackbone(), GeM(16)
    engine = make_engine(backbone, head, "torch", threads=2, output="features")
    assert isinstance(engine, TorchEngine) and engine.network is backbone
    assert engine.threads == 2 and engine.output == "features"
    assert fakes == []


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_bf16_and_int8_are_for_openvino_only(fakes, monkeypatch, precision) -> None:  # noqa: ANN001
    tiny = TinyBackbone(), GeM(16)
    for engine in ("torch", "onnxruntime"):
        with pytest.raises(
            ValueError, match=f"'{precision}' needs engine='openvino', got engine='{engine}'"
        ):
            make_engine(*tiny, engine, precision=precision)
    monkeypatch.setattr(select_module, "default_engine", lambda threads=None: "onnxruntime")
    with pytest.raises(ValueError, match="got engine='onnxruntime'"):
        make_engine(*tiny, precision=precision)  # "auto" resolved first
    assert make_engine(*tiny, "openvino", precision=precision)[0] == "openvino"
    with pytest.raises(ValueError, match="precision: expected one of fp32, bf16, int8, got 'int4'"):
        make_engine(*tiny, "openvino", precision="int4")
    assert make_engine(*tiny, "onnxruntime", precision="fp32")[0] == "onnxruntime"


def test_an_explicit_engine_that_is_not_installed_is_an_error(fakes, monkeypatch) -> None:  # noqa: ANN001
    for name in ("onnxruntime", "openvino"):
        monkeypatch.setitem(select_module._IMPORTS, name, _importer(False))
        with pytest.raises(EngineUnavailableError, match="not installed"):
            make_engine(TinyBackbone(), GeM(16), name)
    assert fakes == []


@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
def test_an_export_error_falls_back_to_torch_with_one_warning(monkeypatch, name) -> None:  # noqa: ANN001
    _installed(monkeypatch, True, True)
    for cls in ("OnnxRuntimeEngine", "OpenVinoEngine"):
        monkeypatch.setattr(select_module, cls, FakeExported(name, fail="the graph differs"))
    backbone, head = TinyBackbone(), GeM(16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine = make_engine(backbone, head, name, threads=2)
    assert isinstance(engine, TorchEngine) and engine.threads == 2
    assert engine.output == "descriptors" and list(engine.network) == [backbone, head]
    assert [w.category for w in caught] == [EngineFallbackWarning]
    assert caught[0].filename != select_module.__file__  # stacklevel: a caller's line
    assert str(caught[0].message) == (
        f"engine: cannot run TinyBackbone + GeM with {name} (the graph differs); "
        "falling back to the torch engine"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        features = make_engine(backbone, head, name, output="features")
    assert str(caught[0].message) == (
        f"engine: cannot run TinyBackbone with {name} (the graph differs); "
        "falling back to the torch engine"
    )
    assert features.output == "features" and features.network is backbone


def test_engine_info_reports_versions_precision_threads_and_cache(fakes, monkeypatch) -> None:  # noqa: ANN001
    class Runtime:
        __version__ = "1.2.3"

        @staticmethod
        def get_version() -> str:
            return "2026.1"

    monkeypatch.setitem(select_module._IMPORTS, "onnxruntime", _importer(True))
    monkeypatch.setattr(select_module, "import_onnxruntime", lambda: Runtime)
    monkeypatch.setattr(select_module, "import_openvino", lambda: Runtime)
    monkeypatch.setattr(select_module, "default_precision", lambda: "bf16")
    monkeypatch.setattr(select_module, "bf16_supported", lambda: True)
    monkeypatch.setattr(select_module, "int8_available", lambda: True)
    monkeypatch.setattr(select_module, "default_threads", lambda: 5)
    monkeypatch.setenv("PYINSTANCE_CACHE", "/cache/here")
    assert engine_info() == {
        "engines": ["torch", "onnxruntime", "openvino"],
        "default": "openvino",
        "onnxruntime": "1.2.3",
        "openvino": "2026.1",
        "openvino_precision": "bf16",
        "bf16": True,
        "int8": True,
        "threads": 5,
        "onnx_cache": "/cache/here/onnx",
    }
    _installed(monkeypatch, False, False)
    assert engine_info() == {
        "engines": ["torch"],
        "default": "torch",
        "onnxruntime": None,
        "openvino": None,
        "openvino_precision": None,
        "bf16": None,
        "int8": None,
        "threads": 5,
        "onnx_cache": "/cache/here/onnx",
    }


def test_bad_arguments_are_named_before_anything_is_built(fakes) -> None:  # noqa: ANN001
    tiny = TinyBackbone(), GeM(16)
    with pytest.raises(ValueError, match="engine: expected 'auto', 'torch', 'onnxruntime', "):
        make_engine(*tiny, "tensorrt")
    with pytest.raises(ValueError, match="threads: expected a positive int or None, got 0"):
        make_engine(*tiny, "onnxruntime", threads=0)
    with pytest.raises(ValueError, match="output: expected"):
        make_engine(*tiny, "onnxruntime", output="logits")
    with pytest.raises(TypeError, match="head: output='descriptors' needs a head"):
        make_engine(tiny[0], nn.Identity, "onnxruntime")
    assert fakes == []


def test_int8_is_available_exactly_when_nncf_imports(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setitem(sys.modules, "nncf", None)  # import nncf raises ImportError
    assert select_module.int8_available() is False
    monkeypatch.setitem(sys.modules, "nncf", types.SimpleNamespace(__version__="9"))
    assert select_module.int8_available() is True
