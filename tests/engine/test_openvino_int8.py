"""OpenVINO int8: quantised on the sample photos, checked on photos, cached atomically in
one zip, run on recurring input shapes only and never compiled with dynamic ones (the fp32
graph runs the others), and refused clearly without nncf."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from pyinstance.engine import (
    EngineFallbackWarning,
    EngineUnavailableError,
    OpenVinoEngine,
    TorchEngine,
    int8,
    make_engine,
    openvino_engine,
)
from pyinstance.engine.sample_photos import calibration_batches, probe_batches
from pyinstance.models.pooling import GeM

from .conftest import TinyBackbone, requires_openvino

try:
    import nncf  # noqa: F401

    HAVE_NNCF = True
except ImportError:
    HAVE_NNCF = False

requires_int8 = pytest.mark.skipif(
    not HAVE_NNCF, reason="needs pip install 'pyinstance[fast]' (nncf)"
)
pytestmark = [requires_openvino, requires_int8]


@pytest.fixture
def engine(tiny, tmp_path) -> OpenVinoEngine:  # noqa: ANN001
    """An int8 engine whose every shape gets its int8 session on its first run."""
    made = OpenVinoEngine(*tiny, precision="int8", cache_dir=tmp_path)
    made.sessions.fix_after = 1
    return made


def _int8(engine: OpenVinoEngine, batch: torch.Tensor) -> torch.Tensor:
    """The int8 output on ``batch`` (``fix_after`` 1: the first run builds the session)."""
    got = engine(batch)
    assert (engine.threads, tuple(batch.shape)) in engine.sessions.fixed_shapes
    return got


def _cosines(got: torch.Tensor, expected: torch.Tensor) -> np.ndarray:
    a = got.reshape(len(got), -1).double().numpy()
    b = expected.reshape(len(expected), -1).double().numpy()
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


PHOTOS = probe_batches((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_int8_descriptors_are_close_to_torch_on_photos(engine, tiny) -> None:  # noqa: ANN001
    assert engine.precision == "int8" and engine.exported
    assert int8.DESCRIPTOR_MIN_COSINE <= engine.int8_cosine < 1 - 1e-7  # checked, quantised
    for batch in PHOTOS:
        got, expected = _int8(engine, batch), TorchEngine(*tiny)(batch)
        assert got.shape == expected.shape
        assert _cosines(got, expected).min() >= int8.DESCRIPTOR_MIN_COSINE


def test_a_shape_runs_in_fp32_until_it_recurs(tiny, tmp_path) -> None:  # noqa: ANN001
    engine = OpenVinoEngine(*tiny, precision="int8", cache_dir=tmp_path)
    fp32 = OpenVinoEngine(*tiny, precision="fp32", cache_dir=tmp_path)
    batch = PHOTOS[0]
    expected = fp32.sessions.dynamic(1).run(None, {"images": batch.numpy()})[0]
    for _ in range(engine.fix_after - 1):
        np.testing.assert_array_equal(engine(batch).numpy(), expected)
    assert engine.sessions.fixed_shapes == []
    quantised = engine(batch)  # the run that builds the int8 session answers with it
    assert engine.sessions.fixed_shapes == [(1, tuple(batch.shape))]
    torch.testing.assert_close(engine(batch), quantised, atol=0, rtol=0)
    assert float((quantised - torch.from_numpy(expected)).abs().max()) > 1e-4
    assert _cosines(quantised, torch.from_numpy(expected)).min() >= int8.DESCRIPTOR_MIN_COSINE


def test_features_output_is_quantised_and_checked(tiny, tmp_path) -> None:  # noqa: ANN001
    backbone, _ = tiny
    engine = OpenVinoEngine(backbone, output="features", precision="int8", cache_dir=tmp_path)
    engine.sessions.fix_after = 1
    assert int8.FEATURE_MIN_COSINE <= engine.int8_cosine < 1 - 1e-7
    got = _int8(engine, PHOTOS[0])
    assert got.shape == (2, 16, 112, 84)
    expected = TorchEngine(backbone, output="features")(PHOTOS[0])
    assert _cosines(got, expected).min() >= int8.FEATURE_MIN_COSINE


def test_the_quantised_model_is_cached_and_reused(engine, tiny, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    path = int8.cache_path(engine.path)
    assert path.is_file() and path.parent == tmp_path and path.name.endswith("-openvino-int8.zip")
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == ["meta.json", "model.bin", "model.xml"]
    stamp = path.stat().st_mtime_ns

    def refuse(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("quantised again although the cache holds the model")

    monkeypatch.setattr(int8, "quantize", refuse)
    again = OpenVinoEngine(*tiny, precision="int8", cache_dir=tmp_path)
    again.sessions.fix_after = 1
    assert not again.exported and path.stat().st_mtime_ns == stamp
    assert again.int8_cosine == engine.int8_cosine
    batch = PHOTOS[1]
    torch.testing.assert_close(_int8(again, batch), _int8(engine, batch), atol=0, rtol=0)


def _rewrite(path, change) -> None:  # noqa: ANN001
    with zipfile.ZipFile(path) as archive:
        parts = {name: archive.read(name) for name in archive.namelist()}
    change(parts)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in parts.items():
            archive.writestr(name, data)
    path.write_bytes(buffer.getvalue())


def _other_key(parts: dict) -> None:
    meta = json.loads(parts["meta.json"])
    parts["meta.json"] = json.dumps({**meta, "key": "0" * 64}).encode()


def _flipped_weight(parts: dict) -> None:
    weights = bytearray(parts["model.bin"])
    weights[len(weights) // 2] ^= 0xFF
    parts["model.bin"] = bytes(weights)


@pytest.mark.parametrize(
    "damage",
    [
        lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]),
        lambda path: path.write_bytes(b"not a zip file" * 64),
        lambda path: path.write_bytes(b""),
        lambda path: _rewrite(path, _other_key),
        lambda path: _rewrite(path, _flipped_weight),
    ],
    ids=["truncated", "garbage", "empty", "another key", "weights changed"],
)
def test_a_damaged_or_foreign_cache_file_is_rebuilt(engine, tiny, tmp_path, caplog, damage) -> None:  # noqa: ANN001
    path = int8.cache_path(engine.path)
    good = path.read_bytes()
    damage(path)
    calls = []
    quantize = int8.quantize
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(int8, "quantize", lambda *a: calls.append(1) or quantize(*a))
        rebuilt = OpenVinoEngine(*tiny, precision="int8", cache_dir=tmp_path)
    assert calls == [1]
    assert "rebuilding the cached int8 model" in caplog.text
    with zipfile.ZipFile(path) as fresh, zipfile.ZipFile(io.BytesIO(good)) as before:
        key = json.loads(before.read("meta.json"))["key"]
        assert json.loads(fresh.read("meta.json"))["key"] == key
    assert int8.DESCRIPTOR_MIN_COSINE <= rebuilt.int8_cosine < 1 - 1e-7


def test_calibration_uses_the_sample_photos(tiny, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    seen = []
    quantize = int8.quantize

    def spy(model, calibration):  # noqa: ANN001, ANN202
        seen.append(calibration)
        return quantize(model, calibration)

    monkeypatch.setattr(int8, "quantize", spy)
    OpenVinoEngine(*tiny, precision="int8", cache_dir=tmp_path)
    (calibration,) = seen
    expected = calibration_batches((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert len(calibration) == len(expected) == 32
    for got, want in zip(calibration, expected, strict=True):
        np.testing.assert_array_equal(got, want)


def _quantised(model) -> bool:  # noqa: ANN001
    return any(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops())


def test_the_int8_model_is_never_compiled_with_dynamic_shapes(tiny, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    compiled = []
    core_type = type(openvino_engine.import_openvino().Core())
    compile_model = core_type.compile_model

    devices = set()

    def spy(core, model, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        shape = model.inputs[0].get_partial_shape()  # nncf compiles too (statistics)
        compiled.append((_quantised(model), shape.is_static))
        devices.add(args[0] if args else kwargs.get("device_name"))
        return compile_model(core, model, *args, **kwargs)

    monkeypatch.setattr(core_type, "compile_model", spy)
    engine = OpenVinoEngine(*tiny, precision="int8", cache_dir=tmp_path)
    engine.sessions.fix_after = 2
    for shape in [(1, 3, 40, 56), (2, 3, 40, 56), (1, 3, 40, 56), (1, 3, 33, 47)]:
        engine(torch.rand(shape))
    assert (True, False) not in compiled  # never int8 with dynamic dimensions
    assert (False, False) in compiled  # the dynamic fp32 graph
    # the three probe shapes of the check, then the recurring (1, 3, 40, 56)
    assert compiled.count((True, True)) == 3 + 1
    assert engine.sessions.fixed_shapes == [(1, (1, 3, 40, 56))]
    assert devices == {"CPU"}  # OpenVINO's CPU plugin, never whatever "AUTO" would pick


def test_an_int8_session_that_strays_from_fp32_is_not_used(engine, caplog) -> None:  # noqa: ANN001
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(int8, "DESCRIPTOR_MIN_COSINE", 1.5)  # no cosine reaches it
        batch = PHOTOS[2]
        first = engine(batch)
        assert engine.sessions.fixed_shapes == []
        assert "not fixing input shape (2, 3, 385, 512)" in caplog.text
        torch.testing.assert_close(engine(batch), first, atol=0, rtol=0)  # fp32 still


def test_a_model_that_fails_its_check_falls_back_to_torch_and_is_not_cached(
    tiny, tmp_path, monkeypatch
) -> None:  # noqa: ANN001
    monkeypatch.setattr(int8, "DESCRIPTOR_MIN_COSINE", 1.5)  # no cosine reaches it
    with pytest.warns(EngineFallbackWarning, match=r"int8 model differs from torch.*cosine"):
        engine = make_engine(*tiny, engine="openvino", precision="int8", cache_dir=tmp_path)
    assert isinstance(engine, TorchEngine)
    assert not list(tmp_path.glob("*-openvino-int8.zip"))


def test_without_nncf_int8_is_refused_by_name(tiny, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setitem(sys.modules, "nncf", None)  # import nncf raises ImportError
    with pytest.raises(EngineUnavailableError, match=r"precision: 'int8' needs the package nncf"):
        OpenVinoEngine(*tiny, precision="int8", cache_dir=tmp_path)
    with pytest.raises(EngineUnavailableError, match="nncf"):
        make_engine(*tiny, engine="openvino", precision="int8", cache_dir=tmp_path)


def test_int8_needs_the_openvino_engine(tiny) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=r"precision: 'int8' needs engine='openvino'"):
        make_engine(*tiny, engine="onnxruntime", precision="int8")


def test_the_environment_variable_selects_int8(tiny, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv(openvino_engine.PRECISION_VARIABLE, "int8")
    with warnings.catch_warnings():
        warnings.simplefilter("error", EngineFallbackWarning)
        engine = make_engine(*tiny, engine="openvino", cache_dir=tmp_path)
    assert engine.precision == "int8"


def test_a_read_only_cache_costs_only_the_next_run(tiny, tmp_path, monkeypatch, caplog) -> None:  # noqa: ANN001
    def refuse(path, data):  # noqa: ANN001, ANN202
        raise PermissionError(13, "read-only", str(path))

    monkeypatch.setattr(int8, "write_atomic", refuse)
    engine = OpenVinoEngine(TinyBackbone(seed=4), tiny[1], precision="int8", cache_dir=tmp_path)
    assert "cannot cache the int8 model" in caplog.text
    assert engine(torch.rand(1, 3, 32, 32)).shape == (1, 16)


def test_quantising_writes_nothing_to_stdout(tiny, tmp_path, capfd) -> None:  # noqa: ANN001
    OpenVinoEngine(*tiny, precision="int8", cache_dir=tmp_path)
    captured = capfd.readouterr()
    assert captured.out == ""  # a command's stdout may be JSON
    assert "INFO:nncf" not in captured.err  # nor its per-operation notices


CHILD = """
import os, sys, time
import torch
from torch import nn
from pyinstance.engine import OpenVinoEngine, int8
from pyinstance.models.pooling import GeM

torch.manual_seed(0)
backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
backbone.min_input_size = 8
replace = os.replace

def stalled_replace(source, target):
    if str(target).endswith("-openvino-int8.zip"):
        print("writing", flush=True)
        time.sleep(600)  # killed here: the whole file is written, not yet in place
    return replace(source, target)

os.replace = stalled_replace
OpenVinoEngine(backbone, GeM(16), precision="int8", cache_dir=sys.argv[1])
"""


def test_a_process_killed_while_caching_leaves_no_partial_model(tmp_path) -> None:  # noqa: ANN001
    import pyinstance

    here = str(Path(pyinstance.__file__).resolve().parent.parent)  # the pyinstance under test
    child = subprocess.Popen(
        [sys.executable, "-P", "-c", CHILD, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])},
    )
    try:
        assert child.stdout.readline().strip() == "writing"
    finally:
        child.kill()
        child.wait(timeout=60)
    # the int8 model is cached before the ONNX graph: neither is in place, not even in part
    assert not list(tmp_path.glob("*.zip")) and not list(tmp_path.glob("*.onnx"))
    torch.manual_seed(0)
    backbone = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, stride=2, padding=1),
        torch.nn.ReLU(),
    )
    backbone.min_input_size = 8
    engine = OpenVinoEngine(backbone, GeM(16), precision="int8", cache_dir=tmp_path)
    assert engine.exported and int8.cache_path(engine.path).is_file()
    assert engine.int8_cosine >= int8.DESCRIPTOR_MIN_COSINE


def test_a_model_cached_under_another_openvino_version_is_rebuilt(
    tiny, tmp_path, monkeypatch, caplog
) -> None:  # noqa: ANN001
    OpenVinoEngine(*tiny, precision="int8", cache_dir=tmp_path)
    openvino = openvino_engine.import_openvino()
    monkeypatch.setattr(openvino, "get_version", lambda: "1999.0-other")
    OpenVinoEngine(*tiny, precision="int8", cache_dir=tmp_path)
    assert "rebuilding the cached int8 model" in caplog.text
    assert "holds cache key" in caplog.text


def test_another_networks_int8_model_is_not_used(tmp_path, caplog) -> None:  # noqa: ANN001
    other = OpenVinoEngine(TinyBackbone(seed=1), GeM(16), precision="int8", cache_dir=tmp_path)
    backbone, head = TinyBackbone(seed=2), GeM(16)
    wanted = OpenVinoEngine(backbone, head, precision="int8", cache_dir=tmp_path)
    path = int8.cache_path(wanted.path)
    path.write_bytes(int8.cache_path(other.path).read_bytes())  # the right name, another model
    engine = OpenVinoEngine(backbone, head, precision="int8", cache_dir=tmp_path)
    assert "rebuilding the cached int8 model" in caplog.text
    assert engine.int8_cosine >= int8.DESCRIPTOR_MIN_COSINE


def test_every_model_is_compiled_with_the_engines_threads(tiny, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    seen = []
    config = OpenVinoEngine._config
    monkeypatch.setattr(
        OpenVinoEngine,
        "_config",
        lambda self, threads: seen.append(threads) or config(self, threads),
    )
    engine = OpenVinoEngine(*tiny, precision="int8", threads=2, cache_dir=tmp_path)
    engine.sessions.fix_after = 1
    engine.sessions.run(PHOTOS[0].numpy(), 2)
    # the dynamic fp32 session, the three probe sizes of the int8 check, then the fixed
    # session at 2 threads and its one-thread twin
    assert seen == [2, 2, 2, 2, 2, 1]


def test_int8_sessions_agree_at_exactly_the_minimum_cosine(engine, monkeypatch) -> None:  # noqa: ANN001
    expected = np.array([[3.0, 4.0]], np.float32)
    got = np.array([[4.0, 3.0]], np.float32)  # cosine 0.96
    monkeypatch.setattr(int8, "DESCRIPTOR_MIN_COSINE", 0.96)
    assert engine._agrees(got, expected)
    monkeypatch.setattr(int8, "DESCRIPTOR_MIN_COSINE", 0.9600001)
    assert not engine._agrees(got, expected)


class ShiftedBackbone(TinyBackbone):
    """Expects inputs normalised with its own mean and std, not ImageNet's."""

    input_mean = (0.5, 0.25, 0.125)
    input_std = (0.2, 0.3, 0.4)


def test_calibration_and_probes_use_the_backbones_normalisation(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    seen = []
    for name in ("calibration_batches", "probe_batches"):
        original = getattr(openvino_engine, name)

        def spy(mean, std, _name=name, _original=original):  # noqa: ANN001, ANN202
            seen.append((_name, mean, std))
            return _original(mean, std)

        monkeypatch.setattr(openvino_engine, name, spy)
    OpenVinoEngine(ShiftedBackbone(), GeM(16), precision="int8", cache_dir=tmp_path)
    assert sorted(seen) == [
        ("calibration_batches", (0.5, 0.25, 0.125), (0.2, 0.3, 0.4)),
        ("probe_batches", (0.5, 0.25, 0.125), (0.2, 0.3, 0.4)),
    ]


def test_other_precisions_have_no_int8_cosine(tiny, tmp_path) -> None:  # noqa: ANN001
    engine = OpenVinoEngine(*tiny, precision="fp32", cache_dir=tmp_path)
    assert engine.int8_cosine is None
    assert not list(tmp_path.glob("*.zip"))
