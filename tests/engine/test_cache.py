"""Export once, check against torch, cache on disk; corrupt or foreign files are rebuilt."""

from __future__ import annotations

import shutil

import pytest
import torch

from pyinstance._files import write_atomic
from pyinstance.engine import DESCRIPTOR_TOLERANCE, OnnxRuntimeEngine, TorchEngine, make_engine
from pyinstance.engine.export import cache_key, default_cache_dir, recipe
from pyinstance.models.pooling import MAC, RMAC, GeM

from .conftest import TinyBackbone, requires_onnxruntime

pytestmark = requires_onnxruntime


def _batch(*shape: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(1))


def test_export_then_cache_hit_without_reexport(tiny, tmp_path) -> None:  # noqa: ANN001
    first = OnnxRuntimeEngine(*tiny, cache_dir=tmp_path)
    assert first.exported is True and first.path.is_file() and first.path.parent == tmp_path
    assert first.max_difference <= DESCRIPTOR_TOLERANCE
    stamp = first.path.stat().st_mtime_ns
    second = OnnxRuntimeEngine(*tiny, cache_dir=tmp_path)
    assert second.exported is False
    assert second.path == first.path and first.path.stat().st_mtime_ns == stamp
    images = _batch(3, 3, 40, 56)
    torch.testing.assert_close(second(images), TorchEngine(*tiny)(images), atol=1e-5, rtol=0)


def test_default_cache_dir_follows_environment(tiny, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("PYINSTANCE_CACHE", str(tmp_path / "here"))
    assert default_cache_dir() == tmp_path / "here" / "onnx"
    engine = OnnxRuntimeEngine(*tiny)
    assert engine.path.parent == tmp_path / "here" / "onnx"
    assert list((tmp_path / "here" / "onnx").iterdir()) == [engine.path]  # no temporary left


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_cache_file_is_rebuilt(tiny, tmp_path, damage) -> None:  # noqa: ANN001
    path = OnnxRuntimeEngine(*tiny, cache_dir=tmp_path).path
    data = path.read_bytes()
    broken = {"truncate": data[: len(data) // 2], "garbage": b"not an onnx file" * 64, "empty": b""}
    path.write_bytes(broken[damage])
    engine = OnnxRuntimeEngine(*tiny, cache_dir=tmp_path)
    assert engine.exported
    assert path.read_bytes() == data  # rewritten whole
    images = _batch(2, 3, 33, 47)
    torch.testing.assert_close(engine(images), TorchEngine(*tiny)(images), atol=1e-5, rtol=0)


def test_file_of_another_recipe_is_not_used(tmp_path) -> None:  # noqa: ANN001
    other = OnnxRuntimeEngine(TinyBackbone(seed=1), GeM(16), cache_dir=tmp_path)
    backbone, head = TinyBackbone(seed=2), GeM(16)
    wanted = OnnxRuntimeEngine(backbone, head, cache_dir=tmp_path).path
    assert wanted != other.path  # other weights, other key
    shutil.copyfile(other.path, wanted)  # a file under the right name, from another network
    engine = OnnxRuntimeEngine(backbone, head, cache_dir=tmp_path)
    assert engine.exported
    images = _batch(2, 3, 32, 32)
    torch.testing.assert_close(
        engine(images), TorchEngine(backbone, head)(images), atol=1e-5, rtol=0
    )


def test_key_covers_head_settings_output_and_weights(tmp_path) -> None:  # noqa: ANN001
    backbone = TinyBackbone()
    paths = {
        OnnxRuntimeEngine(backbone, MAC(16), cache_dir=tmp_path).path,
        OnnxRuntimeEngine(backbone, GeM(16, p=3.0), cache_dir=tmp_path).path,
        OnnxRuntimeEngine(backbone, GeM(16, p=4.0), cache_dir=tmp_path).path,
        OnnxRuntimeEngine(backbone, output="features", cache_dir=tmp_path).path,
    }
    assert len(paths) == 4
    keys = {
        cache_key(recipe(backbone, RMAC(16, levels=levels), "descriptors", "fp32"), backbone)
        for levels in (2, 3)
    }
    assert len(keys) == 2  # settings outside the state dict count too


def test_unwritable_cache_still_gives_an_engine(tiny, tmp_path) -> None:  # noqa: ANN001
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    engine = make_engine(*tiny, "onnxruntime", cache_dir=blocker / "onnx")
    assert isinstance(engine, OnnxRuntimeEngine) and not engine.path.exists()


def test_write_atomic_replaces_whole_file(tmp_path) -> None:  # noqa: ANN001
    target = tmp_path / "sub" / "file.bin"
    write_atomic(target, b"first")
    write_atomic(target, b"second")
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]


def test_the_cached_file_records_its_key_and_recipe(tiny, tmp_path) -> None:  # noqa: ANN001
    import json

    import onnx

    engine = OnnxRuntimeEngine(*tiny, cache_dir=tmp_path)
    metadata = {e.key: e.value for e in onnx.load(str(engine.path)).metadata_props}
    expected = recipe(tiny[0], tiny[1], "descriptors")
    assert json.loads(metadata["pyinstance.recipe"]) == json.loads(json.dumps(expected))
    assert metadata["pyinstance.cache_key"] == cache_key(expected, torch.nn.Sequential(*tiny))
    assert engine.path.name.endswith(f"-{metadata['pyinstance.cache_key']}.onnx")
