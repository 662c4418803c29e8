"""pyinstance.index.describer with tiny modules put in the plugin registry's place.

The backbone passes the normalised pixels through and the head takes their channel means,
so a plain-coloured picture's descriptor is its normalised colour, worked out here in
float64; sizes, hashes and the calls made are observed directly (milliseconds a test).
"""

from __future__ import annotations

import hashlib
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import pyinstance.engine
import pyinstance.plugins
from pyinstance.data import DecodedImage
from pyinstance.data.images import ImageDecodeError
from pyinstance.index import Recipe, describer
from pyinstance.index.describer import Describer, FileError, decode_reference, weights_sha256
from pyinstance.models.trained import TrainedModel

MEAN = (0.25, 0.5, 0.75)
STD = (0.5, 0.25, 0.125)


class Pixels(nn.Module):
    """A backbone: the normalised pixels times one parameter (``scale``)."""

    out_channels = 3
    min_input_size = 2
    input_mean = MEAN
    input_std = STD

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class Means(nn.Module):
    """A head: the channel means, repeated ``repeat`` times (``out_dim = 3 * repeat``)."""

    def __init__(self, in_channels: int, repeat: int = 1) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.repeat = repeat
        self.out_dim = in_channels * repeat
        self.one = nn.Parameter(torch.ones(()))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features.mean(dim=(2, 3)).repeat(1, self.repeat) * self.one

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        return self(features)


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Registry lookups replaced by the tiny modules; each call recorded."""
    calls: list[tuple] = []

    def get_backbone(name: str, **params):
        calls.append(("backbone", name, params))
        return Pixels(**params)

    def get_head(name: str, **params):
        calls.append(("head", name, params))
        return Means(**params)

    monkeypatch.setattr(pyinstance.plugins, "get_backbone", get_backbone)
    monkeypatch.setattr(pyinstance.plugins, "get_head", get_head)
    return calls


def recipe(**fields) -> Recipe:
    return Recipe(**{"backbone": "pix", "head": "means", "dim": 3, "max_side": 10, **fields})


def colour_image(colour: tuple[int, int, int], height: int = 6, width: int = 10) -> Image.Image:
    return Image.new("RGB", (width, height), colour)


def normalised(colour: tuple[int, int, int]) -> np.ndarray:
    return np.array([(c / 255 - m) / s for c, m, s in zip(colour, MEAN, STD, strict=True)])


def unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


RED, GREEN, GREY = (255, 0, 0), (0, 255, 0), (51, 102, 204)


# weights_sha256 -------------------------------------------------------------------------


def test_weights_sha256_is_the_documented_digest() -> None:
    first = nn.Linear(2, 3)
    second = nn.Module()
    second.register_buffer("table", torch.arange(6, dtype=torch.int16).reshape(2, 3).t())
    digest = hashlib.sha256()
    for module in (first, second):
        for name, tensor in module.state_dict().items():
            digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
            digest.update(np.ascontiguousarray(tensor.detach().numpy()).tobytes())
    assert weights_sha256(first, second) == digest.hexdigest()
    assert weights_sha256(second, first) != digest.hexdigest()
    assert weights_sha256() == hashlib.sha256().hexdigest()


# decode_reference ------------------------------------------------------------------------


def test_decode_reference_keeps_the_full_size(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    colour_image(RED, 20, 40).save(path)
    decoded = decode_reference(path, 10)
    assert decoded.full_size == (20, 40)
    assert decoded.image.getpixel((0, 0)) == RED


@pytest.mark.parametrize("pixels", [130, 90])  # over twice the limit: error; over it: warning
def test_decode_reference_refuses_decompression_bombs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pixels: int
) -> None:
    path = tmp_path / "bomb.png"
    colour_image(RED, 20, 10).save(path)  # 200 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pixels)
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        decode_reference(path, 10)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)
    assert decode_reference(path, 10).full_size == (20, 10)


def test_decode_reference_reads_jpeg_in_draft_mode(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    colour_image(GREY, 160, 320).save(path)
    decoded = decode_reference(path, 40)  # draft: a power-of-two reduction, at least 40 wide
    assert decoded.full_size == (160, 320)
    width, height = decoded.image.size  # reduced by a power of two, still >= 40 wide
    assert 40 <= width < 320 and 320 % width == 0 and height * 2 == width
    assert decode_reference(path, 320).image.size == (320, 160)


def test_decode_reference_lets_other_warnings_pass(monkeypatch, tmp_path: Path) -> None:
    def warning_decode(path, target):
        warnings.warn("a harmless warning", UserWarning, stacklevel=1)
        return "decoded"

    monkeypatch.setattr(describer, "decode_image", warning_decode)
    with pytest.warns(UserWarning, match="a harmless warning"):
        assert decode_reference(tmp_path / "a.png", 10) == "decoded"


# construction ----------------------------------------------------------------------------


def test_describer_builds_the_recipes_modules(built: list[tuple]) -> None:
    made = Describer(recipe(backbone_params={"scale": 2.0}, head_params={"repeat": 1}))
    assert built == [
        ("backbone", "pix", {"scale": 2.0}),
        ("head", "means", {"in_channels": 3, "repeat": 1}),
    ]
    assert made.backbone.scale.item() == 2.0
    assert made.recipe.weights_sha256 == weights_sha256(made.backbone, made.head)
    assert made.recipe.with_(weights_sha256=None) == recipe(
        backbone_params={"scale": 2.0}, head_params={"repeat": 1}
    )
    assert made.device == torch.device("cpu") and made.engine == "torch"
    assert not made.backbone.training and not made.head.training


def test_describer_refuses_bad_recipes(built: list[tuple]) -> None:
    with pytest.raises(TypeError, match="recipe: expected a Recipe, got dict"):
        Describer({"backbone": "pix"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="recipe.dim: 4, but pix \\+ means give 3-dim"):
        Describer(recipe(dim=4))
    with pytest.raises(ValueError, match="recipe.weights_sha256: the index was made with"):
        Describer(recipe(weights_sha256="0" * 64))
    pinned = weights_sha256(Pixels(), Means(3))
    assert Describer(recipe(weights_sha256=pinned)).recipe.weights_sha256 == pinned


def test_describer_takes_a_device(built: list[tuple]) -> None:
    assert Describer(recipe(), device="cpu").device == torch.device("cpu")
    elsewhere = Describer(recipe(), device=torch.device("meta"))
    assert elsewhere.backbone.scale.device.type == "meta"
    assert elsewhere.head.one.device.type == "meta"  # the head too, not only the backbone


def test_for_components_takes_dim_from_the_head(built: list[tuple]) -> None:
    made = Describer.for_components("pix", "means", head_params={"repeat": 2}, max_side=12)
    assert made.recipe.dim == 6 and made.recipe.max_side == 12
    assert made.recipe.weights_sha256 == weights_sha256(made.backbone, made.head)
    assert made.device == torch.device("cpu")
    assert isinstance(made, Describer)
    elsewhere = Describer.for_components("pix", "means", device="meta")
    assert elsewhere.device == torch.device("meta")
    assert elsewhere.backbone.scale.device.type == "meta"


def test_for_model_loads_the_trained_weights(built: list[tuple], tmp_path: Path) -> None:
    trained_backbone, trained_head = Pixels(3.0), Means(3, 2)
    path = TrainedModel(
        backbone="pix",
        head="means",
        backbone_state=trained_backbone.state_dict(),
        head_state=trained_head.state_dict(),
        backbone_params={"scale": 5.0},
        head_params={"repeat": 2},
    ).save(tmp_path / "model.pt")
    made = Describer.for_model(path, max_side=14)
    assert made.backbone.scale.item() == 3.0  # the trained weights, not the built ones
    assert dict(made.recipe.backbone_params) == {"scale": 5.0}
    assert made.device == torch.device("cpu")
    assert Describer.for_model(path, device="meta").device == torch.device("meta")
    assert made.recipe.model == str(path.resolve())
    assert (made.recipe.dim, made.recipe.max_side, dict(made.recipe.head_params)) == (
        6,
        14,
        {"repeat": 2},
    )
    assert made.recipe.weights_sha256 == weights_sha256(trained_backbone, trained_head)
    again = Describer(made.recipe)  # the recipe alone rebuilds the same weights
    assert again.recipe == made.recipe
    with pytest.raises(ValueError, match="recipe.model: .* holds pix"):
        Describer(made.recipe.with_(head_params={"repeat": 1}, dim=3, weights_sha256=None))


# set_engine ------------------------------------------------------------------------------


class FakeEngine:
    def __init__(self, name: str) -> None:
        self.name = name


@pytest.mark.parametrize(
    ("windows", "names", "expected", "kept"),
    [
        (None, ["onnxruntime"], "onnxruntime", (True, False)),
        (None, ["torch"], "torch", (False, False)),
        (((1.0, 1),), ["openvino", "openvino"], "openvino", (True, True)),
        (((1.0, 1),), ["openvino", "torch"], "torch", (False, False)),
    ],
)
def test_set_engine(built, monkeypatch, windows, names, expected, kept) -> None:
    made = Describer(recipe(query_windows=windows))
    calls: list[tuple] = []
    engines = iter(names)

    def make_engine(backbone, head, engine, **kwargs):
        calls.append((backbone, head, engine, kwargs))
        return FakeEngine(next(engines))

    monkeypatch.setattr(pyinstance.engine, "make_engine", make_engine)
    assert made.set_engine("x", threads=2) == expected
    assert made.engine == expected
    assert calls[0] == (made.backbone, made.head, "x", {"threads": 2})
    if len(calls) > 1:
        assert calls[1] == (made.backbone, None, "x", {"output": "features", "threads": 2})
    assert len(calls) == len(names)
    assert (made._descriptor_engine is not None, made._feature_engine is not None) == kept
    calls.clear()
    assert made.set_engine("torch") == "torch" and made.engine == "torch"
    assert calls == [] and made._descriptor_engine is None and made._feature_engine is None


def test_set_engine_defaults_to_auto(built, monkeypatch) -> None:
    made = Describer(recipe())
    seen = []
    monkeypatch.setattr(
        pyinstance.engine,
        "make_engine",
        lambda b, h, engine, **kw: seen.append((engine, kw)) or FakeEngine("torch"),
    )
    assert made.set_engine() == "torch"
    assert seen == [("auto", {"threads": None})]


# references ------------------------------------------------------------------------------


def test_references_describe_files_in_order_with_errors(
    built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(describer, "_CHUNK", 2)
    paths = []
    for index, colour in enumerate([RED, GREEN, GREY]):
        paths.append(tmp_path / f"{index}.png")
        colour_image(colour).save(paths[-1])
    (tmp_path / "bad.png").write_bytes(b"not an image")
    colour_image(GREEN, 1, 30).save(tmp_path / "thin.png")  # 1 pixel high: too small
    order = [paths[0], tmp_path / "bad.png", paths[1], tmp_path / "missing.png"]
    order += [tmp_path / "thin.png", paths[2]]
    rows, errors = Describer(recipe(scales=(1.0, 0.5), max_side=20)).references(order)
    assert rows.dtype == np.float32 and rows.shape == (3, 3)
    for row, colour in zip(rows, [RED, GREEN, GREY], strict=True):
        np.testing.assert_allclose(row, unit(normalised(colour)), atol=1e-6)
    assert [error.path for error in errors] == [
        str(tmp_path / "bad.png"),
        str(tmp_path / "missing.png"),
        str(tmp_path / "thin.png"),
    ]
    assert "cannot decode" in errors[0].reason
    assert "minimum" in errors[2].reason or "small" in errors[2].reason
    assert all(isinstance(error, FileError) for error in errors)


def test_references_with_a_small_file_named_twice(built, tmp_path: Path, monkeypatch) -> None:
    """The second time the too-small file is in another chunk (it crashed with zip's
    "argument 2 is longer than argument 1": the fallback matched images to paths by name)."""
    monkeypatch.setattr(describer, "_CHUNK", 2)
    colour_image(GREEN, 1, 30).save(tmp_path / "thin.png")
    colour_image(RED).save(tmp_path / "a.png")
    colour_image(GREY).save(tmp_path / "b.png")
    paths = [tmp_path / name for name in ("thin.png", "a.png", "thin.png", "b.png")]
    rows, errors = Describer(recipe()).references(paths)
    assert [error.path for error in errors] == [str(tmp_path / "thin.png")] * 2
    assert rows.shape == (2, 3)
    np.testing.assert_allclose(rows[0], unit(normalised(RED)), atol=1e-6)
    np.testing.assert_allclose(rows[1], unit(normalised(GREY)), atol=1e-6)


def test_references_decode_at_the_largest_scale(built, monkeypatch, tmp_path: Path) -> None:
    seen = []
    real = describer.decode_reference

    def recording(path, longest):
        seen.append(longest)
        return real(path, longest)

    monkeypatch.setattr(describer, "decode_reference", recording)
    colour_image(RED).save(tmp_path / "a.png")
    Describer(recipe(scales=(0.5, 1.25), max_side=9)).references([tmp_path / "a.png"])
    assert seen == [11]  # round(1.25 * 9) = round(11.25)


def test_references_of_nothing_and_of_kept_scales(built, tmp_path: Path) -> None:
    kept = recipe(scales=(1.0, 0.5), postprocess={"scale_weights": [0.5, 0.5]})
    rows, errors = Describer(kept).references([])
    assert (rows.shape, rows.dtype, errors) == ((0, 2, 3), np.float32, [])
    rows, _ = Describer(recipe()).references([tmp_path / "missing.png"])
    assert rows.shape == (0, 3)
    colour_image(GREY).save(tmp_path / "a.png")
    rows, _ = Describer(kept).references([tmp_path / "a.png"])
    assert rows.shape == (1, 2, 3) and rows.dtype == np.float32
    for scale in range(2):
        np.testing.assert_allclose(
            rows[0, scale] / np.linalg.norm(rows[0, scale]), unit(normalised(GREY)), atol=1e-6
        )


def test_references_show_progress(built, tmp_path: Path, capsys) -> None:
    colour_image(RED).save(tmp_path / "a.png")
    Describer(recipe()).references([tmp_path / "a.png"], progress=True)
    shown = capsys.readouterr().err
    assert "describe: 100%" in shown and "| 1/1 [" in shown
    assert re.search(r"\d(img/s|s/img)\]", shown)  # the unit, per second or per image
    assert "extract" not in shown  # one bar, not extraction's too
    Describer(recipe()).references([tmp_path / "a.png"])
    assert capsys.readouterr().err == ""
    Describer(recipe()).queries([colour_image(RED)])
    assert capsys.readouterr().err == ""


def test_the_descriptor_engine_describes(built) -> None:
    made = Describer(recipe())
    handed = []

    def engine(pixels: torch.Tensor) -> torch.Tensor:
        handed.append(pixels.shape)
        return torch.tensor([[0.0, 2.0, 0.0]]).expand(pixels.shape[0], 3)

    made._descriptor_engine = engine
    out = made.queries([colour_image(RED, 6, 10)])
    np.testing.assert_allclose(out, [[[0.0, 1.0, 0.0]]], atol=1e-6)
    assert handed == [(1, 3, 6, 10)]


# queries ---------------------------------------------------------------------------------


def test_queries_refuse_bad_input(built) -> None:
    made = Describer(recipe())
    for bad in ("a.png", Path("a.png"), 3):
        with pytest.raises(TypeError, match="images: expected a sequence of images"):
            made.queries(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="images: empty"):
        made.queries([])


def test_queries_without_windows(built, monkeypatch) -> None:
    sizes = []
    real = describer.extract

    def recording(images, backbone, head, **kwargs):
        sizes.append((kwargs["scales"], kwargs["max_side"], kwargs["engine"], kwargs["device"]))
        return real(images, backbone, head, **kwargs)

    monkeypatch.setattr(describer, "extract", recording)
    images = [colour_image(RED), colour_image(GREY)]
    out = Describer(recipe(scales=(1.0, 0.5))).queries(images)
    assert out.shape == (2, 1, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[1, 0], unit(normalised(GREY)), atol=1e-6)
    out = Describer(recipe(scales=(1.0, 0.5), query_max_side=8)).queries(images)
    assert out.shape == (2, 1, 3)
    np.testing.assert_allclose(out[0, 0], unit(normalised(RED)), atol=1e-6)
    kept = recipe(scales=(1.0, 0.5), postprocess={"scale_weights": [0.5, 0.5]}, query_max_side=8)
    out = Describer(kept).queries(images)
    assert out.shape == (2, 2, 3) and out.dtype == np.float32
    cpu = torch.device("cpu")
    assert sizes == [
        ((1.0, 0.5), 10, None, cpu),
        ((1.0,), 8, None, cpu),
        ((1.0, 0.5), 8, None, cpu),
    ]


def test_queries_with_windows_pool_each_window(built) -> None:
    left = np.zeros((4, 8, 3), np.uint8)
    left[:, :4] = RED
    left[:, 4:] = GREEN
    windows = ((1.0, 1), (0.5, 2))  # the whole map; then halves
    out = Describer(recipe(query_windows=windows, max_side=8)).queries([Image.fromarray(left)])
    assert out.dtype == np.float32 and out.shape == (1, 5, 3)
    whole = (normalised(RED) + normalised(GREEN)) / 2
    np.testing.assert_allclose(out[0, 0], whole, atol=1e-6)
    found = {tuple(np.round(row, 5)) for row in out[0, 1:]}
    assert tuple(np.round(normalised(RED), 5)) in found
    assert tuple(np.round(normalised(GREEN), 5)) in found


def test_query_features_size_and_values(built, tmp_path: Path) -> None:
    made = Describer(recipe(max_side=20, query_max_side=5))
    features, full = made.query_features(colour_image(GREY, 6, 10))
    assert features.shape == (1, 3, 3, 5) and full == (6, 10)
    expected = torch.tensor(normalised(GREY), dtype=torch.float32)[None, :, None, None]
    torch.testing.assert_close(features, expected.expand(1, 3, 3, 5), atol=1e-6, rtol=0)
    decoded = DecodedImage(colour_image(GREY, 3, 5), (60, 100))  # decoded at a reduced size
    features, full = made.query_features(decoded)
    assert features.shape == (1, 3, 3, 5) and full == (60, 100)
    torch.testing.assert_close(features, expected.expand(1, 3, 3, 5), atol=1e-6, rtol=0)


def test_query_features_refuse_small_photos_by_name(built, tmp_path: Path) -> None:
    made = Describer(recipe(query_max_side=10))
    colour_image(RED, 1, 30).save(tmp_path / "thin.png")
    with pytest.raises(ValueError, match=r"query \(.*thin.png\): resized to 1×10, below .* 2$"):
        made.query_features(str(tmp_path / "thin.png"), "query")
    with pytest.raises(ValueError, match=r"^image: resized to 1×10"):
        made.query_features(colour_image(RED, 1, 30))
    windowed = Describer(recipe(query_max_side=10, query_windows=((1.0, 1),)))
    with pytest.raises(ValueError, match=r"^images\[1\]: resized"):
        windowed.queries([colour_image(RED), colour_image(RED, 1, 30)])


def test_describes_tells_which_sizes_query_features_takes(built) -> None:
    # query side 10, minimum 2: 1×30 -> 0.33×10 -> 1 (below); 3×30 -> 1×10 (below);
    # 5×30 -> 1.67×10 -> 2 (at the minimum); 2×10 -> 2×10; 10×2 -> 10×2; 1×1 -> 10×10
    made = Describer(recipe(query_max_side=10))
    for height, width, taken in [
        (1, 30, False), (3, 30, False), (5, 30, True), (2, 10, True), (10, 2, True),
        (10, 1, False), (1, 1, True),
    ]:  # fmt: skip
        assert made.describes(height, width) is taken, (height, width)
        image = colour_image(GREY, height, width)
        if taken:
            made.query_features(image)
        else:
            with pytest.raises(ValueError, match=r"below the backbone's minimum input size 2$"):
                made.query_features(image)


def test_query_features_default_normalisation(built, monkeypatch) -> None:
    """A backbone without input_mean/input_std/min_input_size gets ImageNet's and 1."""
    from pyinstance.models.backbone import IMAGENET_MEAN, IMAGENET_STD

    class Bare(nn.Module):
        out_channels = 3

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    monkeypatch.setattr(pyinstance.plugins, "get_backbone", lambda name, **params: Bare())
    made = Describer(recipe(query_max_side=10))
    features, _ = made.query_features(colour_image(GREY, 1, 10))
    expected = [
        (c / 255 - m) / s for c, m, s in zip(GREY, IMAGENET_MEAN, IMAGENET_STD, strict=True)
    ]
    torch.testing.assert_close(
        features[0, :, 0, 0], torch.tensor(expected, dtype=torch.float32), atol=1e-5, rtol=0
    )


def test_query_features_use_the_feature_engine(built) -> None:
    made = Describer(recipe(query_max_side=10))
    made._feature_engine = lambda pixels: pixels * 2
    features, _ = made.query_features(colour_image(GREY, 6, 10))
    expected = 2 * torch.tensor(normalised(GREY), dtype=torch.float32)
    torch.testing.assert_close(features[0, :, 0, 0], expected, atol=1e-6, rtol=0)


def test_query_features_run_on_the_describers_device(built) -> None:
    made = Describer(recipe(query_max_side=5), device="meta")  # sizes only, no values
    for item in (colour_image(GREY, 6, 10), DecodedImage(colour_image(GREY, 3, 5), (6, 10))):
        features, full = made.query_features(item)
        assert (features.device.type, features.shape, full) == ("meta", (1, 3, 3, 5), (6, 10))


def test_query_features_name_a_bad_image(built) -> None:
    made = Describer(recipe(query_max_side=5))
    with pytest.raises((TypeError, ValueError), match=r"^query\b"):
        made.query_features(np.zeros((2, 2, 7), np.uint8), "query")
