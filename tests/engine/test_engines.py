"""Both engines compute the same thing; choosing, fall-back and bad input."""

from __future__ import annotations

import sys
import warnings

import pytest
import torch

import pyinstance
from pyinstance.engine import (
    EngineFallbackWarning,
    EngineUnavailableError,
    OnnxRuntimeEngine,
    TorchEngine,
    available_engines,
    engine_info,
    make_engine,
)
from pyinstance.engine.base import all_finite, torch_threads
from pyinstance.models.pooling import RMAC, GeM
from pyinstance.models.regions import pool_windows

from .conftest import NumpyBackbone, requires_onnxruntime, requires_openvino


def _batch(*shape: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape)))


@pytest.fixture(scope="module")
def lite0(tmp_path_factory) -> tuple[torch.nn.Module, torch.nn.Module, OnnxRuntimeEngine]:  # noqa: ANN001
    backbone = pyinstance.get_backbone("efficientnet_lite0")
    head = pyinstance.get_head("gem", in_channels=backbone.out_channels)
    engine = OnnxRuntimeEngine(backbone, head, cache_dir=tmp_path_factory.mktemp("onnx"))
    return backbone, head, engine


@requires_onnxruntime
@pytest.mark.parametrize("shape", [(1, 3, 448, 336), (3, 3, 97, 131), (2, 3, 449, 333)])
def test_lite0_gem_descriptors_match_torch(lite0, shape) -> None:  # noqa: ANN001
    backbone, head, engine = lite0
    images = _batch(*shape)
    expected = TorchEngine(backbone, head)(images)
    got = engine(images)
    assert got.shape == expected.shape == (shape[0], 1280)
    assert float((got - expected).abs().max()) <= 1e-4


@requires_onnxruntime
def test_lite0_feature_map_and_windows_match_torch(lite0, tmp_path) -> None:  # noqa: ANN001
    backbone, head, _ = lite0
    engine = OnnxRuntimeEngine(backbone, output="features", cache_dir=tmp_path)
    images = _batch(2, 3, 225, 161)
    expected = TorchEngine(backbone, output="features")(images)
    got = engine(images)
    assert got.shape == expected.shape == (2, 1280, 8, 6)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    with torch.inference_mode():
        torch.testing.assert_close(
            pool_windows(got, head), pool_windows(expected, head), atol=1e-4, rtol=0
        )


def test_torch_engine_channels_last_threads_and_modes_restored(tiny) -> None:  # noqa: ANN001
    backbone, head = tiny
    backbone.train()
    threads = torch.get_num_threads()
    images = _batch(2, 3, 64, 48)
    plain = TorchEngine(backbone, head, threads=1)(images)
    assert backbone.training and torch.get_num_threads() == threads
    fast = TorchEngine(backbone, head, channels_last=True)(images)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=0)


@requires_onnxruntime
def test_auto_prefers_onnxruntime_without_openvino_and_info_says_so(tiny, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setitem(sys.modules, "openvino", None)  # import raises ImportError
    assert available_engines() == ["torch", "onnxruntime"]
    assert make_engine(*tiny).name == "onnxruntime"
    assert make_engine(*tiny, "torch").name == "torch"
    info = engine_info()
    assert info["default"] == "onnxruntime" and info["onnxruntime"]
    assert info["openvino"] is None


def test_without_exported_engines_only_torch_runs(tiny, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import raises ImportError
    monkeypatch.setitem(sys.modules, "openvino", None)
    assert available_engines() == ["torch"]
    assert engine_info()["default"] == "torch" and engine_info()["onnxruntime"] is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        engine = make_engine(*tiny)
    assert isinstance(engine, TorchEngine)
    for name in ("onnxruntime", "openvino"):
        with pytest.raises(EngineUnavailableError, match=rf"'{name}' needs.*pyinstance\[fast\]"):
            make_engine(*tiny, name)


@requires_onnxruntime
def test_backbone_that_cannot_export_falls_back_with_one_warning(tmp_path) -> None:  # noqa: ANN001
    backbone, head = NumpyBackbone(), GeM(16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine = make_engine(backbone, head, "onnxruntime", cache_dir=tmp_path)
    assert isinstance(engine, TorchEngine)
    assert [w.category for w in caught] == [EngineFallbackWarning]
    message = str(caught[0].message)
    assert "NumpyBackbone" in message and "forward() leaves torch" in message
    assert not list(tmp_path.iterdir())  # nothing cached
    images = _batch(1, 3, 32, 40)
    torch.testing.assert_close(engine(images), head(backbone(images)))


@requires_onnxruntime
def test_head_with_shapes_frozen_at_export_is_caught_by_the_check(tiny, tmp_path) -> None:  # noqa: ANN001
    # R-MAC computes its region grid in Python from the map size: the traced graph only
    # fits the probe size it was traced at, the check at other sizes rejects it.
    with pytest.warns(EngineFallbackWarning, match="RMAC.*probe batch"):
        engine = make_engine(tiny[0], RMAC(16), "onnxruntime", cache_dir=tmp_path)
    assert isinstance(engine, TorchEngine)


@pytest.mark.parametrize(
    ("images", "error", "match"),
    [
        ([[1.0]], TypeError, "images: expected a torch.Tensor"),
        (torch.zeros(3, 32, 32), ValueError, r"images: expected a B×3×H×W"),
        (torch.zeros(1, 1, 32, 32), ValueError, r"images: expected a B×3×H×W"),
        (torch.zeros(1, 3, 32, 32, dtype=torch.float64), TypeError, "images: expected dtype"),
        (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), TypeError, "images: expected dtype"),
        (torch.zeros(0, 3, 32, 32), ValueError, "images: empty batch"),
        (torch.zeros(1, 3, 4, 32), ValueError, "images: 4×32 is smaller"),
        (torch.full((1, 3, 32, 32), float("nan")), ValueError, "images: contains NaN"),
        (
            torch.zeros(1, 3, 32, 32).index_fill_(3, torch.tensor([5]), float("-inf")),
            ValueError,
            "images: contains NaN or infinite",
        ),
    ],
)
@pytest.mark.parametrize(
    "name",
    [
        "torch",
        pytest.param("onnxruntime", marks=requires_onnxruntime),
        pytest.param("openvino", marks=requires_openvino),
    ],
)
def test_bad_input_names_the_argument(tiny, tmp_path, name, images, error, match) -> None:  # noqa: ANN001
    engine = make_engine(*tiny, name, cache_dir=tmp_path)
    with pytest.raises(error, match=match):
        engine(images)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"engine": "tensorrt"}, "engine: expected"),
        ({"threads": 0}, "threads: expected"),
        ({"output": "logits"}, "output: expected"),
        ({"precision": "fp8"}, "precision: expected"),
        ({"precision": "fp16", "engine": "torch"}, "precision: expected"),
        ({"precision": "bf16", "engine": "torch"}, "precision: 'bf16' needs engine='openvino'"),
        ({"precision": "bf16", "engine": "onnxruntime"}, "precision: 'bf16' needs engine="),
    ],
)
def test_bad_arguments_are_named(tiny, kwargs, match) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=match):
        make_engine(*tiny, **kwargs)


def test_engines_reject_bad_threads(tiny) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match="threads: expected a positive int"):
        TorchEngine(*tiny, threads=-1)


def test_descriptors_need_a_head(tiny) -> None:  # noqa: ANN001
    with pytest.raises(TypeError, match="head: output='descriptors' needs a head"):
        make_engine(tiny[0], None)
    with pytest.raises(TypeError, match="backbone: expected a torch.nn.Module"):
        make_engine("efficientnet_lite0", tiny[1])


@requires_onnxruntime
def test_extract_with_an_engine_matches_torch_and_leaves_the_modules_alone(tiny) -> None:  # noqa: ANN001
    backbone, head = tiny
    engine = make_engine(backbone, head, "onnxruntime")
    images = [torch.rand(3, 40, 56), torch.rand(3, 33, 29)]
    expected = pyinstance.extract(images, backbone, head, max_side=48, progress=False)
    backbone.train()
    got = pyinstance.extract(images, backbone, head, max_side=48, progress=False, engine=engine)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert backbone.training  # not switched to eval: the engine runs its own copy


def test_all_finite_is_exact_even_when_the_sum_overflows() -> None:
    huge = torch.full((1, 3, 8, 8), 3e38)  # finite values whose float32 sum is infinite
    assert all_finite(huge) and all_finite(torch.zeros(1, 3, 2, 2))
    for bad in (float("nan"), float("inf"), float("-inf")):
        images = huge.clone()
        images[0, 1, 2, 3] = bad
        assert not all_finite(images)
    cancelling = torch.tensor([float("inf"), float("-inf")])  # sums to NaN, caught either way
    assert not all_finite(cancelling)


def test_torch_threads_sets_and_restores() -> None:
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    with torch_threads(None):
        assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError, match="inside"), torch_threads(1):
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before


class _RecordingEngine:
    """Zero descriptors; stands in for an engine to observe extract's preprocessing."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return torch.zeros(images.shape[0], 16)


def test_extract_with_an_engine_preprocesses_on_one_torch_thread(tiny, monkeypatch) -> None:  # noqa: ANN001
    from pyinstance import extraction

    seen = []
    real_resize = extraction.resize

    def resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        seen.append(torch.get_num_threads())
        return real_resize(image, size)

    monkeypatch.setattr(extraction, "resize", resize)
    before = torch.get_num_threads()
    with torch_threads(2):
        pyinstance.extract([torch.rand(3, 40, 56)], *tiny, max_side=48, engine=_RecordingEngine())
        pyinstance.extract([torch.rand(3, 40, 56)], *tiny, max_side=48)
        assert seen == [1, 2] and torch.get_num_threads() == 2
    assert torch.get_num_threads() == before


def test_extract_with_an_engine_takes_only_sizes_from_the_modules(tiny) -> None:  # noqa: ANN001
    import copy

    backbone = copy.deepcopy(tiny[0]).to("meta")  # no values: the engine holds the weights
    images = [torch.rand(3, 40, 56)]
    got = pyinstance.extract(images, backbone, tiny[1], max_side=48, engine=_RecordingEngine())
    assert got.shape == (1, 1, 16)
    with pytest.raises(ValueError, match="backbone: its parameters are on the 'meta' device"):
        pyinstance.extract(images, backbone, tiny[1], max_side=48)
