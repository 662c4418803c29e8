"""The OpenVINO engine: the shared ONNX cache, fp32 and bf16 against torch, fixed shapes,
thread budget, fall-back and the choice of the default."""

from __future__ import annotations

import json
import shutil
import threading
import warnings

import pytest
import torch

from pyinstance.engine import (
    DESCRIPTOR_TOLERANCE,
    EngineFallbackWarning,
    OpenVinoEngine,
    TorchEngine,
    available_engines,
    default_engine,
    engine_info,
    make_engine,
    openvino_engine,
    sessions,
)
from pyinstance.engine.export import BF16_DESCRIPTOR_TOLERANCE
from pyinstance.models.pooling import RMAC, GeM

from .conftest import NumpyBackbone, TinyBackbone, requires_onnxruntime, requires_openvino

pytestmark = requires_openvino

requires_bf16 = pytest.mark.skipif(
    "openvino" not in available_engines() or not openvino_engine.bf16_supported(),
    reason="the CPU does not compute bfloat16 natively (AMX or AVX-512 BF16)",
)


def _batch(*shape: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape)))


def test_fp32_export_then_cache_hit_matches_torch(tiny, tmp_path) -> None:  # noqa: ANN001
    first = OpenVinoEngine(*tiny, precision="fp32", cache_dir=tmp_path)
    assert first.exported and first.path.is_file() and first.path.parent == tmp_path
    assert first.max_difference <= DESCRIPTOR_TOLERANCE
    stamp = first.path.stat().st_mtime_ns
    second = OpenVinoEngine(*tiny, precision="fp32", cache_dir=tmp_path)
    assert not second.exported and first.path.stat().st_mtime_ns == stamp
    images = _batch(3, 3, 40, 56)
    torch.testing.assert_close(second(images), TorchEngine(*tiny)(images), atol=1e-5, rtol=0)


@requires_onnxruntime
def test_onnxruntime_and_openvino_share_the_cached_graph(tiny, tmp_path) -> None:  # noqa: ANN001
    from pyinstance.engine import OnnxRuntimeEngine

    exported = OnnxRuntimeEngine(*tiny, cache_dir=tmp_path)
    reused = OpenVinoEngine(*tiny, precision="fp32", cache_dir=tmp_path)
    assert exported.exported and not reused.exported and reused.path == exported.path


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_cache_file_is_rebuilt(tiny, tmp_path, damage) -> None:  # noqa: ANN001
    path = OpenVinoEngine(*tiny, precision="fp32", cache_dir=tmp_path).path
    data = path.read_bytes()
    broken = {"truncate": data[: len(data) // 2], "garbage": b"not an onnx file" * 64, "empty": b""}
    path.write_bytes(broken[damage])
    engine = OpenVinoEngine(*tiny, precision="fp32", cache_dir=tmp_path)
    assert engine.exported and path.read_bytes() == data  # rewritten whole
    images = _batch(2, 3, 33, 47)
    torch.testing.assert_close(engine(images), TorchEngine(*tiny)(images), atol=1e-5, rtol=0)


def test_file_of_another_network_is_not_used(tmp_path) -> None:  # noqa: ANN001
    other = OpenVinoEngine(TinyBackbone(seed=1), GeM(16), precision="fp32", cache_dir=tmp_path)
    backbone, head = TinyBackbone(seed=2), GeM(16)
    wanted = OpenVinoEngine(backbone, head, precision="fp32", cache_dir=tmp_path).path
    shutil.copyfile(other.path, wanted)  # the right name, another network's graph
    engine = OpenVinoEngine(backbone, head, precision="fp32", cache_dir=tmp_path)
    assert engine.exported
    images = _batch(2, 3, 32, 32)
    torch.testing.assert_close(
        engine(images), TorchEngine(backbone, head)(images), atol=1e-5, rtol=0
    )


@requires_bf16
def test_bf16_is_within_its_tolerance_and_far_from_fp32_exactness(tmp_path) -> None:  # noqa: ANN001
    import pyinstance

    backbone = pyinstance.get_backbone("efficientnet_lite0")
    head = pyinstance.get_head("gem", in_channels=backbone.out_channels)
    engine = OpenVinoEngine(backbone, head, precision="bf16", cache_dir=tmp_path)
    assert engine.precision == "bf16"
    assert DESCRIPTOR_TOLERANCE < engine.max_difference <= BF16_DESCRIPTOR_TOLERANCE
    images = torch.rand(1, 3, 336, 448) * 4 - 2
    got, expected = engine(images), TorchEngine(backbone, head)(images)
    assert float((got * expected).sum()) >= 0.995  # cosine of L2-normalised descriptors
    fp32 = OpenVinoEngine(backbone, head, precision="fp32", cache_dir=tmp_path)
    assert not fp32.exported  # the same cached graph, compiled in another precision
    torch.testing.assert_close(fp32(images), expected, atol=1e-4, rtol=0)


def test_bf16_is_refused_where_the_cpu_lacks_it(tiny, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(openvino_engine, "bf16_supported", lambda: False)
    with pytest.raises(ValueError, match="precision: 'bf16' needs a CPU"):
        OpenVinoEngine(*tiny, precision="bf16", cache_dir=tmp_path)
    assert OpenVinoEngine(*tiny, cache_dir=tmp_path).precision == "fp32"  # the default drops
    with pytest.raises(ValueError, match="precision: expected one of fp32, bf16, int8, got 'fp16'"):
        OpenVinoEngine(*tiny, precision="fp16", cache_dir=tmp_path)


def test_openvino_is_the_default_engine_and_computes_in_fp32_unless_told(
    tiny, tmp_path, monkeypatch
) -> None:  # noqa: ANN001
    assert default_engine() == "openvino" and engine_info()["default"] == "openvino"
    monkeypatch.delenv(openvino_engine.PRECISION_VARIABLE, raising=False)
    assert make_engine(*tiny, cache_dir=tmp_path).precision == openvino_engine.DEFAULT_PRECISION
    monkeypatch.setenv(openvino_engine.PRECISION_VARIABLE, "fp16")
    with pytest.raises(ValueError, match="PYINSTANCE_OPENVINO_PRECISION: expected one of"):
        make_engine(*tiny, cache_dir=tmp_path)
    monkeypatch.setenv(openvino_engine.PRECISION_VARIABLE, "fp32")
    assert make_engine(*tiny, cache_dir=tmp_path).precision == "fp32"
    assert make_engine(*tiny, precision="fp32", cache_dir=tmp_path).precision == "fp32"


@requires_bf16
def test_the_precision_variable_reaches_engines_made_without_one(
    tiny, tmp_path, monkeypatch
) -> None:  # noqa: ANN001
    monkeypatch.setenv(openvino_engine.PRECISION_VARIABLE, "bf16")
    assert make_engine(*tiny, cache_dir=tmp_path).precision == "bf16"
    assert engine_info()["openvino_precision"] == "bf16"


def test_a_recurring_shape_gets_its_own_compiled_model(tiny, tmp_path) -> None:  # noqa: ANN001
    engine = OpenVinoEngine(*tiny, precision="fp32", cache_dir=tmp_path)
    images = _batch(1, 3, 45, 38)
    assert engine.sessions.fix_after > sessions.FIX_AFTER  # compiling costs more than for ORT
    outputs = [engine(images) for _ in range(engine.sessions.fix_after)]
    assert engine.sessions.fixed_shapes == [(1, (1, 3, 45, 38))]
    outputs.append(engine(images))
    expected = TorchEngine(*tiny)(images)
    for output in outputs:
        torch.testing.assert_close(output, expected, atol=1e-5, rtol=0)


def test_concurrent_requests_get_their_own_answers(tiny, tmp_path) -> None:  # noqa: ANN001
    engine = OpenVinoEngine(*tiny, precision="fp32", cache_dir=tmp_path)
    batches = [_batch(1, 3, 32 + i, 40) for i in range(4)]
    expected = [TorchEngine(*tiny)(b) for b in batches]
    results: dict[int, torch.Tensor] = {}

    def work(number: int) -> None:
        for _ in range(5):
            results[number] = engine(batches[number])

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for number, want in enumerate(expected):
        torch.testing.assert_close(results[number], want, atol=1e-5, rtol=0)


def test_backbone_that_cannot_export_falls_back_with_one_warning(tmp_path) -> None:  # noqa: ANN001
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine = make_engine(NumpyBackbone(), GeM(16), "openvino", cache_dir=tmp_path)
    assert isinstance(engine, TorchEngine)
    assert [w.category for w in caught] == [EngineFallbackWarning]
    message = str(caught[0].message)
    assert "with openvino" in message and "forward() leaves torch" in message
    assert not list(tmp_path.iterdir())


def test_head_with_shapes_frozen_at_export_is_caught(tiny, tmp_path) -> None:  # noqa: ANN001
    with pytest.warns(EngineFallbackWarning, match="RMAC.*openvino.*probe batch"):
        engine = make_engine(tiny[0], RMAC(16), "openvino", precision="fp32", cache_dir=tmp_path)
    assert isinstance(engine, TorchEngine)


def test_feature_maps_match_torch(tiny, tmp_path) -> None:  # noqa: ANN001
    engine = OpenVinoEngine(tiny[0], output="features", precision="fp32", cache_dir=tmp_path)
    images = _batch(2, 3, 37, 29)
    torch.testing.assert_close(
        engine(images), TorchEngine(tiny[0], output="features")(images), atol=1e-5, rtol=1e-5
    )


def test_info_names_openvino_and_its_precision() -> None:
    info = engine_info()
    assert info["openvino"] and "openvino" in info["engines"]
    assert info["openvino_precision"] in ("fp32", "bf16")
    assert info["bf16"] == openvino_engine.bf16_supported()


def test_pyinstance_info_says_which_engine_is_active(capsys) -> None:  # noqa: ANN001
    from pyinstance import cli

    assert cli.main(["info", "--json"]) == 0
    inference = json.loads(capsys.readouterr().out)["inference"]
    assert inference["default"] == default_engine() and "openvino" in inference["engines"]
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"(active: {default_engine()})" in out and "OpenVINO" in out
