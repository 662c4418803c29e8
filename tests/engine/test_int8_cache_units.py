"""The int8 cache on a tiny hand-built OpenVINO model (no export, no quantisation): the
file's format, its key and checksums, rebuilding, and what the key depends on."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile

import numpy as np
import pytest

from pyinstance.engine import int8, sample_photos
from pyinstance.engine.export import ExportError

openvino = pytest.importorskip("openvino")
KEY = "k" * 64


def _model(scale: float = 1.0):  # noqa: ANN202
    """images 1×3×4×4 -> a 1×1 convolution with weights ``scale`` × (0..5), plus 0.5: seven
    float32 constants, 28 bytes of weights (not a multiple of 8)."""
    from openvino import opset13 as ops

    images = ops.parameter([1, 3, 4, 4], np.float32, name="images")
    weights = ops.constant(scale * np.arange(6, dtype=np.float32).reshape(2, 3, 1, 1))
    convolved = ops.convolution(images, weights, [1, 1], [0, 0], [0, 0], [1, 1])
    output = ops.add(convolved, ops.constant(np.float32(0.5)))
    return openvino.Model([output], [images], "tiny")


def _run(model) -> np.ndarray:  # noqa: ANN001
    compiled = openvino.Core().compile_model(model, "CPU")
    return compiled.create_infer_request().infer({0: np.ones((1, 3, 4, 4), np.float32)})[0]


def _parts(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _zipped(parts: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in parts.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_serialize_writes_the_ir_its_key_and_checksums() -> None:
    parts = _parts(int8.serialize(openvino, _model(), KEY))
    assert sorted(parts) == ["meta.json", "model.bin", "model.xml"]
    meta = json.loads(parts["meta.json"])
    assert meta == {
        "key": KEY,
        "model.xml": hashlib.sha256(parts["model.xml"]).hexdigest(),
        "model.bin": hashlib.sha256(parts["model.bin"]).hexdigest(),
    }
    assert parts["model.xml"].startswith(b"<?xml")
    # the weights are kept in float32 (no fp16 compression): 7 values, 28 bytes
    weights = np.sort(np.frombuffer(parts["model.bin"], np.float32))
    np.testing.assert_array_equal(weights, [0, 0.5, 1, 2, 3, 4, 5])
    with zipfile.ZipFile(io.BytesIO(int8.serialize(openvino, _model(), KEY))) as archive:
        assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_DEFLATED}


def test_deserialize_gives_back_the_same_model() -> None:
    data = int8.serialize(openvino, _model(2.0), KEY)
    model = int8.deserialize(openvino, openvino.Core(), data, KEY)
    got = _run(model)
    assert got.shape == (1, 2, 4, 4)
    np.testing.assert_array_equal(
        got[0, :, 0, 0], [2.0 * (0 + 1 + 2) + 0.5, 2.0 * (3 + 4 + 5) + 0.5]
    )


def test_deserialize_refuses_another_key_or_changed_parts() -> None:
    data = int8.serialize(openvino, _model(), KEY)
    core = openvino.Core()
    with pytest.raises(ValueError, match=f"it holds cache key '{KEY}', expected 'other'"):
        int8.deserialize(openvino, core, data, "other")
    for name in ("model.xml", "model.bin"):
        parts = _parts(data)
        parts[name] = parts[name] + b" "
        with pytest.raises(ValueError, match=f"^{name} does not match its checksum$"):
            int8.deserialize(openvino, core, _zipped(parts), KEY)
    parts = _parts(data)
    del parts["model.bin"]
    with pytest.raises(KeyError):
        int8.deserialize(openvino, core, _zipped(parts), KEY)


def test_a_cached_model_is_used_without_quantising(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    path = tmp_path / "graph-openvino-int8.zip"
    path.write_bytes(int8.serialize(openvino, _model(3.0), KEY))
    monkeypatch.setattr(int8, "quantize", lambda *a: pytest.fail("quantised again"))

    def no_calibration():  # noqa: ANN202
        raise AssertionError("calibration photos read although the model is cached")

    model, unsaved = int8.cached_or_quantized(
        openvino, openvino.Core(), _model(), path, KEY, no_calibration
    )
    assert unsaved is None
    assert _run(model)[0, 0, 0, 0] == 3.0 * 3 + 0.5


@pytest.mark.parametrize("content", [None, b"", b"garbage", "other key"])
def test_a_missing_or_bad_cache_file_is_quantised_again(
    tmp_path, monkeypatch, caplog, content
) -> None:  # noqa: ANN001
    path = tmp_path / "graph-openvino-int8.zip"
    if content == "other key":
        path.write_bytes(int8.serialize(openvino, _model(5.0), "other"))
    elif content is not None:
        path.write_bytes(content)
    seen = []

    original = _model()

    def fake_quantize(model, calibration):  # noqa: ANN001, ANN202
        seen.append((model, calibration))
        return _model(7.0)

    monkeypatch.setattr(int8, "quantize", fake_quantize)
    with caplog.at_level(logging.WARNING, logger=int8.__name__):
        model, unsaved = int8.cached_or_quantized(
            openvino, openvino.Core(), original, path, KEY, lambda: ["calibration"]
        )
    assert seen == [(original, ["calibration"])]
    assert _run(model)[0, 0, 0, 0] == 7.0 * 3 + 0.5
    assert unsaved is not None and json.loads(_parts(unsaved)["meta.json"])["key"] == KEY
    messages = [record.getMessage() for record in caplog.records]
    if content is None:
        assert messages == []
    else:
        (message,) = messages
        assert message.startswith(f"rebuilding the cached int8 model {path}: ")
        reason = "holds cache key 'other'" if content == "other key" else "not a zip file"
        assert reason in message
    assert path.exists() == (content is not None)  # nothing written until the check passes


def test_save_writes_atomically_and_survives_a_read_only_cache(
    tmp_path, monkeypatch, caplog
) -> None:  # noqa: ANN001
    path = tmp_path / "sub" / "graph-openvino-int8.zip"
    int8.save(path, b"data")
    assert path.read_bytes() == b"data"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left

    def refuse(target, data):  # noqa: ANN001, ANN202
        raise PermissionError(13, "read-only file system", str(target))

    monkeypatch.setattr(int8, "write_atomic", refuse)
    with caplog.at_level(logging.WARNING, logger=int8.__name__):
        int8.save(path, b"new")
    assert path.read_bytes() == b"data"
    (message,) = [record.getMessage() for record in caplog.records]
    assert message.startswith(f"cannot cache the int8 model at {path}: ")
    assert "read-only file system" in message


def test_the_key_depends_on_the_graph_versions_settings_and_photos(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    pytest.importorskip("nncf")
    base = int8.cache_key("graph", "2026.4")
    assert len(base) == 64 and int(base, 16) >= 0
    assert int8.cache_key("graph", "2026.4") == base
    assert int8.cache_key("graph2", "2026.4") != base
    assert int8.cache_key("graph", "2026.5") != base
    for name, value in [
        ("PRESET", "performance"),
        ("HEAD_OPERATIONS", ("Clamp",)),
        ("CALIBRATION_SIDES", (448,)),
        ("_FORMAT", 2),
    ]:
        with monkeypatch.context() as patch:
            patch.setattr(int8, name, value)
            assert int8.cache_key("graph", "2026.4") != base, name
    import nncf

    with monkeypatch.context() as patch:
        patch.setattr(nncf, "__version__", "0.0")
        assert int8.cache_key("graph", "2026.4") != base
    # a photo's bytes, or its name, change the key
    folder = tmp_path / "collection"
    for photo in sample_photos.sample_photos():
        (folder / photo.parent.name).mkdir(parents=True)
        (folder / photo.parent.name / photo.name).write_bytes(photo.read_bytes())
    monkeypatch.setattr(sample_photos, "SAMPLE_FOLDER", folder)
    assert int8.cache_key("graph", "2026.4") == base
    first = sorted(folder.glob("*/*.jpg"))[0]
    first.write_bytes(first.read_bytes() + b"\0")
    assert int8.cache_key("graph", "2026.4") != base
    first.write_bytes(first.read_bytes()[:-1])
    first.rename(first.with_name("renamed.jpg"))
    assert int8.cache_key("graph", "2026.4") != base


def _head_model():  # noqa: ANN202
    """A convolution, ReLU, then GeM-like head operations (power, mean, power)."""
    from openvino import opset13 as ops

    images = ops.parameter([1, 3, 8, 8], np.float32, name="images")
    weights = ops.constant(np.random.default_rng(0).normal(size=(4, 3, 1, 1)).astype(np.float32))
    features = ops.relu(ops.convolution(images, weights, [1, 1], [0, 0], [0, 0], [1, 1]))
    cubed = ops.power(features, ops.constant(np.float32(3.0)))
    pooled = ops.reduce_mean(cubed, ops.constant(np.array([2, 3], np.int64)), keep_dims=False)
    output = ops.power(pooled, ops.constant(np.float32(1 / 3)))
    return openvino.Model([output], [images], "head")


def _calibration() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.normal(size=(1, 3, 8, 8)).astype(np.float32) for _ in range(5)]


def test_quantize_calls_nncf_with_the_preset_head_scope_and_every_image(monkeypatch) -> None:  # noqa: ANN001
    nncf = pytest.importorskip("nncf")
    calls = []
    monkeypatch.setattr(nncf, "quantize", lambda *a, **k: calls.append((a, k)) or "quantised")
    model, calibration = _head_model(), _calibration()
    assert int8.quantize(model, calibration) == "quantised"
    ((args, kwargs),) = calls
    assert args[0] is model
    assert list(args[1].get_inference_data()) == calibration
    assert kwargs["preset"] == nncf.QuantizationPreset.MIXED
    assert kwargs["subset_size"] == 5
    scope = kwargs["ignored_scope"]
    assert list(scope.types) == list(int8.HEAD_OPERATIONS) and scope.validate is False


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=0)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_quantize_a_small_network_quietly_leaving_the_head_in_float(monkeypatch, capfd) -> None:  # noqa: ANN001
    pytest.importorskip("nncf")
    nncf_log = logging.getLogger("nncf")
    monkeypatch.setattr(nncf_log, "level", 7)
    records = Records()
    nncf_log.addHandler(records)
    try:
        quantised = int8.quantize(_head_model(), _calibration())
    finally:
        nncf_log.removeHandler(records)
    assert nncf_log.level == 7  # restored
    assert [r.getMessage() for r in records.records if r.levelno < logging.WARNING] == []
    captured = capfd.readouterr()
    assert captured.out == ""  # a command's stdout may be JSON
    assert "Statistics collection" in captured.err  # the progress bar, on stderr
    quantizers = [op for op in quantised.get_ordered_ops() if op.get_type_name() == "FakeQuantize"]
    assert quantizers  # the convolution's input and weights
    consumers = {
        target.get_node().get_type_name()
        for op in quantizers
        for target in op.output(0).get_target_inputs()
    }
    assert "Convolution" in consumers
    assert not consumers & set(int8.HEAD_OPERATIONS)


def test_quantize_reports_nncf_failures_as_export_errors(monkeypatch) -> None:  # noqa: ANN001
    nncf = pytest.importorskip("nncf")

    def fail(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("unsupported operation")

    monkeypatch.setattr(nncf, "quantize", fail)
    nncf_log = logging.getLogger("nncf")
    level = nncf_log.level
    with pytest.raises(
        ExportError, match="^nncf cannot quantise the graph: RuntimeError: unsupported operation$"
    ):
        int8.quantize(_head_model(), _calibration())
    assert nncf_log.level == level
