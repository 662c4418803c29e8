"""Export, check and cache (pyinstance.engine.export) and the engine that uses them
(pyinstance.engine.exported), fast: the check runs against fake runtimes built from the
torch network itself, and the cache logic runs with a fake runtime whose "graph" is the
metadata only. One real export of a tiny network checks the ONNX file itself."""

from __future__ import annotations

import hashlib
import json
import logging
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import helper
from torch import nn

import pyinstance
from pyinstance.engine import export as onnx_export
from pyinstance.engine import exported as exported_module
from pyinstance.engine.export import (
    BF16_DESCRIPTOR_TOLERANCE,
    BF16_FEATURE_TOLERANCE,
    DESCRIPTOR_TOLERANCE,
    FEATURE_TOLERANCE,
    ExportError,
    cache_key,
    cache_path,
    check_against_torch,
    default_cache_dir,
    drop_empty_optional_inputs,
    metadata_for,
    output_tolerance,
    probe_batch,
    probe_shapes,
    recipe,
    stored_key,
    weights_sha256,
)
from pyinstance.engine.exported import ExportedEngine, available_cpus, default_threads
from pyinstance.models.pooling import GeM

from .conftest import TinyBackbone


class Settings(nn.Module):
    """Public plain attributes of every kind, and attributes that are not settings."""

    def __init__(self) -> None:
        super().__init__()
        self.size, self.scale, self.name, self.flag, self.nothing = 3, 0.5, "x", True, None
        self.sizes = [1, 2]  # not a plain value
        self._hidden = 7
        self.conv = nn.Conv2d(3, 2, 1)


def test_default_cache_dir(monkeypatch, tmp_path) -> None:  # noqa: ANN001
    monkeypatch.setenv("PYINSTANCE_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c" / "onnx"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for unset in (monkeypatch.delenv, lambda name: monkeypatch.setenv(name, "")):
        unset("PYINSTANCE_CACHE")
        assert default_cache_dir() == tmp_path / "home" / ".cache" / "pyinstance" / "onnx"


def test_recipe_names_the_modules_their_settings_output_and_versions() -> None:
    module = Settings()
    got = recipe(module, GeM(16, p=3.0), "descriptors")
    assert got == {
        "format": onnx_export._FORMAT,
        "backbone": f"{__name__}.Settings",
        "backbone_settings": {
            "flag": True,
            "name": "x",
            "nothing": None,
            "scale": 0.5,
            "size": 3,
            "architecture": repr(module),
        },
        "head": "pyinstance.models.pooling.GeM",
        "head_settings": got["head_settings"],
        "output": "descriptors",
        "opset": 17,
        "precision": "fp32",
        "versions": {
            "pyinstance": pyinstance.__version__,
            "torch": torch.__version__,
            "onnx": onnx.__version__,
        },
    }
    assert got["head_settings"]["architecture"] == repr(GeM(16, p=3.0))
    assert list(got["backbone_settings"]) == ["flag", "name", "nothing", "scale", "size"] + [
        "architecture"
    ]
    features = recipe(module, None, "features", "bf16")
    assert features["head"] is None and features["head_settings"] is None
    assert features["output"] == "features" and features["precision"] == "bf16"


def test_weights_hash_covers_names_dtypes_shapes_and_values() -> None:
    def net(**tensors: torch.Tensor) -> nn.Module:
        module = nn.Module()
        for name, tensor in tensors.items():
            module.register_buffer(name, tensor)
        return module

    base = weights_sha256(net(a=torch.zeros(2, 3)))
    assert base == weights_sha256(net(a=torch.zeros(2, 3)))
    assert len(base) == 64 and int(base, 16) >= 0
    others = [
        net(b=torch.zeros(2, 3)),  # another name
        net(a=torch.zeros(3, 2)),  # another shape, the same bytes
        net(a=torch.zeros(2, 3, dtype=torch.int32)),  # another dtype, the same bytes
        net(a=torch.zeros(2, 3).index_fill_(1, torch.tensor([2]), 1.0)),  # one value
        net(a=torch.zeros(2, 3), b=torch.zeros(0)),  # one more (empty) tensor
    ]
    assert len({base, *map(weights_sha256, others)}) == 6
    strided = net(a=torch.arange(6.0).reshape(3, 2).t())  # not contiguous: hashed by value
    assert weights_sha256(strided) == weights_sha256(
        net(a=torch.arange(6.0).reshape(3, 2).t().contiguous())
    )


def test_cache_key_follows_the_recipe_and_the_weights() -> None:
    backbone, head = TinyBackbone(seed=0), GeM(16)
    network = nn.Sequential(backbone, head)
    key = cache_key(recipe(backbone, head, "descriptors"), network)
    assert key == cache_key(recipe(backbone, head, "descriptors"), network)
    assert len(key) == 64
    assert key != cache_key(recipe(backbone, head, "descriptors", "bf16"), network)
    other = nn.Sequential(TinyBackbone(seed=1), head)
    assert key != cache_key(recipe(backbone, head, "descriptors"), other)
    reordered = dict(reversed(list(recipe(backbone, head, "descriptors").items())))
    assert key == cache_key(reordered, network)  # the same recipe in another order
    text = json.dumps(reordered, sort_keys=True) + "|" + weights_sha256(network)
    assert key == hashlib.sha256(text.encode()).hexdigest()  # keys of cached files stay valid
    sharper = GeM(16, p=4.0)  # p is a weight, not a setting: the weights' hash tells
    assert key != cache_key(
        recipe(backbone, sharper, "descriptors"), nn.Sequential(backbone, sharper)
    )


def test_cache_path_is_readable_and_ends_with_the_key(tmp_path) -> None:  # noqa: ANN001
    backbone = TinyBackbone()
    with_head = recipe(backbone, GeM(16), "descriptors")
    assert cache_path(tmp_path, with_head, "k1") == (
        tmp_path / "TinyBackbone-GeM-descriptors-fp32-k1.onnx"
    )
    alone = recipe(backbone, None, "features", "bf16")
    assert cache_path(tmp_path, alone, "k2") == tmp_path / "TinyBackbone-none-features-bf16-k2.onnx"
    plain = {"backbone": "Net", "head": "Head", "output": "descriptors", "precision": "fp32"}
    assert cache_path(tmp_path, plain, "k3") == tmp_path / "Net-Head-descriptors-fp32-k3.onnx"


def test_probe_shapes_trace_square_then_odd_sides() -> None:
    assert probe_shapes(1) == [(2, 3, 128, 128), (1, 3, 129, 99), (2, 3, 155, 199)]
    assert probe_shapes(32) == probe_shapes(8)
    assert probe_shapes(40.0) == [(2, 3, 160, 160), (1, 3, 161, 123), (2, 3, 195, 247)]


def test_probe_batches_are_seeded_standard_normal() -> None:
    shape = (2, 3, 64, 64)
    batch = probe_batch(shape)
    assert batch.shape == shape and batch.dtype == torch.float32
    torch.testing.assert_close(batch, probe_batch(shape), rtol=0, atol=0)
    expected = torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape)))
    torch.testing.assert_close(batch, expected, rtol=0, atol=0)
    assert abs(float(batch.mean())) < 0.05 and abs(float(batch.std()) - 1.0) < 0.05


def test_output_tolerance() -> None:
    small, large = np.array([0.5, -0.25]), np.array([[3.0, -8.0]])
    assert output_tolerance("descriptors", large) == DESCRIPTOR_TOLERANCE == 1e-4
    assert output_tolerance("descriptors", large, "bf16") == BF16_DESCRIPTOR_TOLERANCE == 0.05
    assert output_tolerance("features", small) == FEATURE_TOLERANCE == 1e-4
    assert output_tolerance("features", large) == pytest.approx(8 * FEATURE_TOLERANCE)
    assert output_tolerance("features", large, "bf16") == pytest.approx(8 * BF16_FEATURE_TOLERANCE)
    assert output_tolerance("features", small, "bf16") == BF16_FEATURE_TOLERANCE == 0.15
    assert output_tolerance("features", np.zeros((0, 4))) == FEATURE_TOLERANCE


def test_metadata_holds_the_key_and_the_recipe() -> None:
    made = recipe(TinyBackbone(), GeM(16), "descriptors")
    metadata = metadata_for(made, "abc")
    assert metadata == {
        "pyinstance.cache_key": "abc",
        "pyinstance.recipe": json.dumps(made, sort_keys=True),
    }
    assert stored_key(metadata) == "abc" and stored_key({}) is None


def test_only_trailing_empty_inputs_are_dropped() -> None:
    graph = helper.make_graph(
        [
            helper.make_node("Pad", ["x", "p", ""], ["y"]),
            helper.make_node("Pad", ["x", "p", "", ""], ["z"]),
            helper.make_node("Clip", ["x", "", "hi"], ["w"]),
            helper.make_node("Relu", ["x"], ["v"]),
        ],
        "g",
        [],
        [],
    )
    drop_empty_optional_inputs(graph)
    assert [list(node.input) for node in graph.node] == [
        ["x", "p"],
        ["x", "p"],
        ["x", "", "hi"],
        ["x"],
    ]


def _torch_runtime(network: nn.Module, offset: float = 0.0, calls: list | None = None):  # noqa: ANN202
    """A "runtime" that computes ``network`` itself (plus ``offset``)."""

    def run(batch: np.ndarray) -> np.ndarray:
        if calls is not None:
            calls.append((batch.shape, network.training))
        with torch.no_grad():
            return network(torch.from_numpy(batch)).numpy() + offset

    return run


def test_check_runs_every_probe_in_eval_mode_and_gives_the_worst_difference() -> None:
    network = nn.Sequential(TinyBackbone(), nn.Dropout(0.5), GeM(16)).train()
    calls: list = []
    assert check_against_torch(network, _torch_runtime(network, 0.0, calls), "descriptors", 8) == 0
    assert [shape for shape, _ in calls] == probe_shapes(8)
    assert not any(training for _, training in calls)  # dropout off for both
    assert all(module.training for module in network.modules())  # modes restored
    worst = check_against_torch(network, _torch_runtime(network, 5e-5), "descriptors", 8)
    assert worst == pytest.approx(5e-5, rel=1e-2)


def test_check_reports_the_largest_difference_over_the_probes() -> None:
    network = nn.Sequential(TinyBackbone(), GeM(16))
    sizes = iter([0.0, 3e-5, 1e-5])

    def run(batch: np.ndarray) -> np.ndarray:
        return _torch_runtime(network, next(sizes))(batch)

    assert check_against_torch(network, run, "descriptors", 8) == pytest.approx(3e-5, rel=1e-2)


@pytest.mark.parametrize(
    ("offset", "precision", "fails"),
    [(2e-4, "fp32", True), (2e-4, "bf16", False), (0.06, "bf16", True)],
)
def test_check_refuses_a_graph_beyond_its_precisions_tolerance(offset, precision, fails) -> None:  # noqa: ANN001
    network = nn.Sequential(TinyBackbone(), GeM(16))
    run = _torch_runtime(network, offset)
    if not fails:
        got = check_against_torch(network, run, "descriptors", 8, precision=precision)
        assert got == pytest.approx(offset, rel=1e-2)
        return
    with pytest.raises(ExportError, match=rf"run by openvino \({precision}\) differs from torch "):
        check_against_torch(network, run, "descriptors", 8, precision=precision, runtime="openvino")


def test_check_names_onnxruntime_in_fp32_by_default() -> None:
    network = nn.Sequential(TinyBackbone(), GeM(16))
    with pytest.raises(ExportError, match=r"run by onnxruntime \(fp32\) differs from torch "):
        check_against_torch(network, _torch_runtime(network, 2e-4), "descriptors", 8)


def test_an_empty_output_differs_by_nothing() -> None:
    class Empty(nn.Module):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return images.flatten(1)[:, :0]

    assert check_against_torch(Empty(), _torch_runtime(Empty()), "features", 8) == 0.0


def test_a_difference_of_exactly_the_tolerance_passes() -> None:
    class Peak(nn.Module):
        """A feature map that is 0 but for one value of 10000: the tolerance is exactly 1."""

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(images.shape[0], 1, 2, 2)
            out[:, 0, 0, 0] = 10000.0
            return out

    def run(batch: np.ndarray) -> np.ndarray:
        out = np.zeros((batch.shape[0], 1, 2, 2), np.float32)
        out[:, 0, 0, 0], out[:, 0, 1, 1] = 10000.0, 1.0
        return out

    assert FEATURE_TOLERANCE * 10000.0 == 1.0
    assert check_against_torch(Peak(), run, "features", 8) == 1.0


def test_check_of_feature_maps_is_relative_to_their_largest_value() -> None:
    backbone = TinyBackbone()
    with torch.no_grad():
        backbone.layers[2].weight.mul_(400.0)  # feature values far above 1
    with torch.no_grad():
        largest = float(backbone(probe_batch(probe_shapes(8)[0])).abs().max())
    assert largest > 20
    offset = 5 * FEATURE_TOLERANCE  # above the absolute tolerance, within the relative one
    assert check_against_torch(backbone, _torch_runtime(backbone, offset), "features", 8) > 0
    with pytest.raises(ExportError, match="differs from torch"):
        check_against_torch(backbone, _torch_runtime(backbone, offset), "descriptors", 8)


def test_check_refuses_a_wrong_shape_and_names_a_failing_runtime() -> None:
    network = nn.Sequential(TinyBackbone(), GeM(16))
    with pytest.raises(ExportError, match=r"gives shape \(1, 16\) for a probe batch of shape "):
        check_against_torch(network, lambda batch: np.zeros((1, 16), np.float32), "descriptors", 8)

    def broken(batch: np.ndarray) -> np.ndarray:
        raise RuntimeError("no kernel")

    with pytest.raises(
        ExportError, match=r"myruntime failed on a probe batch of shape \(2, 3, 128"
    ):
        check_against_torch(network, broken, "descriptors", 8, runtime="myruntime")
    nan = _torch_runtime(network, float("nan"))
    with pytest.raises(ExportError, match="differs from torch"):
        check_against_torch(network, nan, "descriptors", 8)


def test_a_real_export_is_a_dynamic_graph_with_its_metadata() -> None:
    import onnxruntime

    class Recording(nn.Identity):
        """Records the shapes of the batches it sees (the traced sample's)."""

        def __init__(self) -> None:
            super().__init__()
            self.shapes: list[tuple[int, ...]] = []

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            self.shapes.append(tuple(int(size) for size in images.shape))
            return images

    torch.manual_seed(0)
    recording = Recording()
    network = nn.Sequential(
        recording, nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), GeM(4)
    ).train()
    data = onnx_export.export_onnx(network, 8, {"pyinstance.cache_key": "k", "other": "v"})
    assert network.training  # mode restored
    assert recording.shapes and set(recording.shapes) == {onnx_export.probe_shapes(8)[0]}
    model = onnx.load_from_string(data)
    assert {p.key: p.value for p in model.metadata_props} == {
        "pyinstance.cache_key": "k",
        "other": "v",
    }
    assert model.opset_import[0].version == onnx_export.OPSET
    (graph_input,) = model.graph.input
    dims = [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    assert graph_input.name == "images" and dims == ["batch", 3, "height", "width"]
    assert [o.name for o in model.graph.output] == ["output"]
    (graph_output,) = model.graph.output
    dims = [d.dim_param or d.dim_value for d in graph_output.type.tensor_type.shape.dim]
    assert dims[0] == "batch" and "batch" not in dims[1:]  # the input's batch axis, only
    assert all(name for node in model.graph.node for name in node.input[-1:])
    constants = {init.name for init in model.graph.initializer} | {
        name for node in model.graph.node if node.op_type == "Constant" for name in node.output
    }
    casts_of_constants = [  # what constant folding computes at export (torch leaves them else)
        node.name
        for node in model.graph.node
        if node.op_type == "Cast" and all(name in constants for name in node.input)
    ]
    assert casts_of_constants == []
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    images = torch.randn(3, 3, 21, 34)
    with torch.no_grad():
        expected = network.eval()(images).numpy()
    np.testing.assert_allclose(
        session.run(None, {"images": images.numpy()})[0], expected, atol=1e-5
    )


def test_an_export_failure_is_an_export_error_with_the_first_line_of_the_reason() -> None:
    class Failing(nn.Module):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            raise ValueError("cannot trace this\nsecond line")

    with pytest.raises(
        ExportError, match=r"^torch.onnx.export failed: ValueError: cannot trace this$"
    ):
        onnx_export.export_onnx(Failing(), 8, {})


def test_an_export_failure_without_a_message_is_named_by_its_type() -> None:
    class Silent(nn.Module):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            raise ValueError("  ")

    with pytest.raises(ExportError, match=r"^torch.onnx.export failed: ValueError: $"):
        onnx_export.export_onnx(Silent(), 8, {})


def test_default_threads_is_one_within_the_cpus(monkeypatch) -> None:  # noqa: ANN001
    assert available_cpus() >= 1 and default_threads() == 1
    monkeypatch.setattr(exported_module, "DEFAULT_THREADS", 4)
    monkeypatch.setattr(exported_module, "available_cpus", lambda: 3)
    assert default_threads() == 3
    monkeypatch.setattr(exported_module, "available_cpus", lambda: 8)
    assert default_threads() == 4


def test_available_cpus_without_affinity(monkeypatch) -> None:  # noqa: ANN001
    import os

    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert available_cpus() == 6
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert available_cpus() == 1


# --- ExportedEngine with a fake runtime --------------------------------------------------


class TorchSession:
    """A "session" computing the network itself (plus ``offset``); ``inputs`` names."""

    def __init__(self, network: nn.Module, offset: float = 0.0, inputs: int = 1):
        self.network, self.offset = network, offset
        self.inputs = [SimpleNamespace(name=f"in{i}") for i in range(inputs)]
        self.runs = 0

    def get_inputs(self) -> list[SimpleNamespace]:
        return self.inputs

    def run(self, outputs: None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.runs += 1
        with torch.no_grad():
            return [self.network(torch.from_numpy(feeds["in0"])).numpy() + self.offset]


class FakeRuntimeEngine(ExportedEngine):
    """An exported engine whose "graph" is its metadata as JSON, run by torch."""

    name = "fake"
    offset = 0.0
    inputs = 1
    loads: list[dict[str, str]]

    def _load(self, data: bytes) -> tuple[Any, dict[str, str]]:
        metadata = json.loads(data.decode())  # garbage raises: "cannot load"
        self.loads.append(metadata)
        self._network = self._fake_network
        return TorchSession(self._network, self.offset, self.inputs), metadata

    def _new_session(self, threads: int, shape: Any) -> Any:
        return TorchSession(self._network, self.offset)


@pytest.fixture
def fake_export(monkeypatch):  # noqa: ANN001, ANN201
    """export_onnx writes the metadata only; records the networks it was given."""
    exported: list = []

    def export(network: nn.Module, min_input_size: int, metadata: dict[str, str]) -> bytes:
        exported.append((network, min_input_size))
        return json.dumps(metadata).encode()

    monkeypatch.setattr(onnx_export, "export_onnx", export)
    return exported


def _engine(backbone, head, tmp_path, output="descriptors", threads=None, **attributes):  # noqa: ANN001, ANN003, ANN202
    cls = type("Engine", (FakeRuntimeEngine,), {"loads": [], **attributes})
    network = backbone if output == "features" else nn.Sequential(backbone, head)
    cls._fake_network = network.eval()
    return cls(backbone, head, output=output, threads=threads, precision="fp32", cache_dir=tmp_path)


def test_first_engine_exports_and_caches_the_next_one_reads_the_file(fake_export, tmp_path) -> None:  # noqa: ANN001
    backbone, head = TinyBackbone(), GeM(16)
    first = _engine(backbone, head, tmp_path)
    key = cache_key(recipe(backbone, head, "descriptors"), nn.Sequential(backbone, head))
    assert first.exported and first.path == cache_path(
        tmp_path, recipe(backbone, head, "descriptors"), key
    )
    assert json.loads(first.path.read_text())["pyinstance.cache_key"] == key
    assert len(fake_export) == 1 and fake_export[0][1] == 8  # the backbone's minimum size
    assert first.max_difference == 0.0 and first.precision == "fp32"
    second = _engine(backbone, head, tmp_path)
    assert not second.exported and len(fake_export) == 1 and second.path == first.path
    images = torch.randn(2, 3, 24, 20)
    with torch.no_grad():
        expected = head(backbone(images))
    torch.testing.assert_close(second(images), expected, rtol=0, atol=0)


def test_the_engine_runs_on_the_default_threads_or_those_asked(fake_export, tmp_path) -> None:  # noqa: ANN001
    tiny = TinyBackbone(), GeM(16)
    assert _engine(*tiny, tmp_path).threads == default_threads()
    engine = _engine(*tiny, tmp_path, threads=3)
    assert engine.threads == 3 and engine.sessions.runs == {}
    engine._cpus = 4
    engine._meter = SimpleNamespace(busy_elsewhere=lambda: 0.0)
    engine(torch.randn(1, 3, 16, 16))
    engine._meter = SimpleNamespace(busy_elsewhere=lambda: 2.0)  # 2 of 4 CPUs left: not 3
    engine(torch.randn(1, 3, 16, 16))
    engine._meter = SimpleNamespace(busy_elsewhere=lambda: None)
    engine(torch.randn(1, 3, 16, 16))
    assert engine.sessions.runs == {3: 2, 1: 1}
    one = _engine(*tiny, tmp_path, threads=1)
    one._meter = SimpleNamespace(busy_elsewhere=lambda: pytest.fail("one thread needs no reading"))
    one(torch.randn(1, 3, 16, 16))
    assert one.sessions.runs == {1: 1}


def test_feature_maps_get_their_own_file_and_key(fake_export, tmp_path) -> None:  # noqa: ANN001
    backbone, head = TinyBackbone(), GeM(16)
    engine = _engine(backbone, head, tmp_path, output="features")
    assert engine.output == "features"
    assert engine.path.name.startswith("TinyBackbone-none-features-fp32-")
    images = torch.randn(1, 3, 16, 24)
    with torch.no_grad():
        torch.testing.assert_close(engine(images), backbone(images), rtol=0, atol=0)
    assert fake_export[0][0] is backbone


def test_the_cache_dir_defaults_to_the_users(fake_export, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("PYINSTANCE_CACHE", str(tmp_path / "env"))
    backbone, head = TinyBackbone(), GeM(16)
    cls = type("Engine", (FakeRuntimeEngine,), {"loads": []})
    cls._fake_network = nn.Sequential(backbone, head).eval()
    engine = cls(
        backbone, head, output="descriptors", threads=None, precision="fp32", cache_dir=None
    )
    assert engine.path.parent == tmp_path / "env" / "onnx" and engine.path.is_file()


@pytest.mark.parametrize("content", [b"", b"{not json", b'{"pyinstance.cache_key": "other"}'])
def test_a_file_that_does_not_load_or_holds_another_key_is_rebuilt(
    fake_export, tmp_path, caplog, content
) -> None:  # noqa: ANN001
    tiny = TinyBackbone(), GeM(16)
    path = _engine(*tiny, tmp_path).path
    good = path.read_bytes()
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger=exported_module.__name__):
        engine = _engine(*tiny, tmp_path)
    assert engine.exported and path.read_bytes() == good
    assert f"rebuilding the cached ONNX graph {path}" in caplog.text


def test_a_cached_file_that_fails_the_check_is_rebuilt(fake_export, tmp_path, caplog) -> None:  # noqa: ANN001
    tiny = TinyBackbone(), GeM(16)
    _engine(*tiny, tmp_path)
    with (
        caplog.at_level(logging.WARNING, logger=exported_module.__name__),
        pytest.raises(ExportError, match="differs from torch"),
    ):
        _engine(*tiny, tmp_path, offset=1.0)  # the rebuilt graph fails too: an error
    assert "rebuilding" in caplog.text and "differs from torch" in caplog.text


def test_a_graph_with_more_inputs_than_the_images_is_refused(fake_export, tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(ExportError, match="the exported graph has 2 inputs instead of the image"):
        _engine(TinyBackbone(), GeM(16), tmp_path, inputs=2)
    assert not list(tmp_path.iterdir())  # nothing cached


def test_a_graph_the_runtime_cannot_load_is_an_export_error(
    fake_export, monkeypatch, tmp_path
) -> None:  # noqa: ANN001
    monkeypatch.setattr(onnx_export, "export_onnx", lambda network, size, metadata: b"\xff")
    with pytest.raises(
        ExportError, match="fake cannot load the exported graph: UnicodeDecodeError"
    ):
        _engine(TinyBackbone(), GeM(16), tmp_path)


def test_an_unwritable_cache_is_a_warning(fake_export, tmp_path, caplog) -> None:  # noqa: ANN001
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cls = type("Engine", (FakeRuntimeEngine,), {"loads": []})
    backbone, head = TinyBackbone(), GeM(16)
    cls._fake_network = nn.Sequential(backbone, head).eval()
    with caplog.at_level(logging.WARNING, logger=exported_module.__name__):
        engine = cls(
            backbone, head, output="descriptors", threads=None, precision="fp32", cache_dir=blocker
        )
    assert engine.exported and not engine.path.exists()
    assert f"cannot cache the ONNX graph at {engine.path}" in caplog.text


def test_modules_off_the_cpu_are_refused(fake_export, tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(
        ValueError, match="backbone: the fake engine runs on the CPU, the modules are on cpu, meta"
    ):
        _engine(TinyBackbone(), GeM(16).to("meta"), tmp_path)
    with pytest.raises(ValueError, match="threads: expected a positive int or None"):
        _engine(TinyBackbone(), GeM(16), tmp_path, threads=0)
    assert fake_export == []


def test_fixed_shape_sessions_are_checked_with_the_output_tolerance(fake_export, tmp_path) -> None:  # noqa: ANN001
    engine = _engine(TinyBackbone(), GeM(16), tmp_path)
    assert engine.sessions.fix_after == exported_module.FIX_AFTER
    images = torch.randn(1, 3, 16, 16)
    for _ in range(engine.fix_after + 1):
        engine(images)
    assert engine.sessions.fixed_shapes == [(1, (1, 3, 16, 16))]
    expected = np.ones((1, 16), np.float32) * 4
    assert engine._tolerance(expected) == DESCRIPTOR_TOLERANCE
    features = _engine(TinyBackbone(), GeM(16), tmp_path, output="features")
    assert features._tolerance(expected) == pytest.approx(4 * FEATURE_TOLERANCE)
