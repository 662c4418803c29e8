"""pyinstance.eval.objects without a network: object metrics, their table and the boxed photo,
on hand-made outcomes whose expected values are counted by hand."""

from __future__ import annotations

import base64
import io
import math
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pyinstance.eval import objects as objects_module
from pyinstance.eval.objects import boxed_figure, metrics_table, object_metrics
from pyinstance.objects import DetectedObject

_DRAW = ImageDraw.Draw  # the real one, kept before a test replaces it
GREEN, RED = (0x2E, 0x8B, 0x57), (0xC0, 0x39, 0x2B)


def _found(instance: str, box=(0, 0, 1, 1), confidence: float = 0.5) -> DetectedObject:
    return DetectedObject(instance, confidence, box, None)


def _outcome(truth, objects, ms=1.0, path: Path = Path("q.jpg")) -> SimpleNamespace:
    objects = None if objects is None else tuple(_found(i) for i in objects)
    return SimpleNamespace(
        truth=tuple(truth), objects=objects, ms=ms, spec=SimpleNamespace(path=path)
    )


def test_object_metrics_per_group_counted_by_hand():
    outcomes = [
        _outcome(("a", "b"), ("a", "c"), ms=10.0),  # two objects: a found, c invented
        _outcome(("a", "b", "d"), ("b", "d"), ms=20.0),  # three: b and d found
        _outcome(("a",), ("a",), ms=5.0),  # one object, found
        _outcome(("b",), ("c", "b", "b"), ms=7.0),  # one object: found, c invented, b twice
        _outcome((), (), ms=3.0),  # unknown, nothing named
        _outcome((), ("x",), ms=4.0),  # unknown, x invented
        _outcome(("a",), None, ms=100.0),  # not run with multi: in no group
    ]
    metrics = object_metrics(outcomes)
    assert list(metrics) == ["multi_object", "single_object", "unknown"]
    assert metrics["multi_object"] == {
        "queries": 2, "objects": 5, "named": 4, "found": 3, "recall": 3 / 5,
        "precision": 3 / 4, "inventing": 1 / 2, "ms_per_query": 15.0,
    }  # fmt: skip
    assert metrics["single_object"] == {
        "queries": 2, "objects": 2, "named": 4, "found": 2, "recall": 1.0,
        "precision": 2 / 4, "inventing": 1 / 2, "ms_per_query": 6.0,
    }  # fmt: skip
    unknown = metrics["unknown"]
    assert math.isnan(unknown.pop("recall"))  # no object expected
    assert unknown == {
        "queries": 2, "objects": 0, "named": 1, "found": 0, "precision": 0.0,
        "inventing": 1 / 2, "ms_per_query": 3.5,
    }  # fmt: skip


def test_empty_groups_are_nan_not_errors():
    metrics = object_metrics([_outcome(("a",), ("a",), ms=2.0)])
    for group in ("multi_object", "unknown"):
        values = metrics[group]
        assert [values[k] for k in ("queries", "objects", "named", "found")] == [0, 0, 0, 0]
        for key in ("recall", "precision", "inventing", "ms_per_query"):
            assert math.isnan(values[key]), (group, key)
    nothing_named = object_metrics([_outcome(("a",), (), ms=2.0)])["single_object"]
    assert nothing_named["recall"] == 0.0 and math.isnan(nothing_named["precision"])
    assert nothing_named["inventing"] == 0.0


def test_metrics_table_html():
    first = {
        "queries": 2, "objects": 5, "named": 4, "found": 3, "recall": 0.6,
        "precision": 0.75, "inventing": float("nan"), "ms_per_query": 15.25,
    }  # fmt: skip
    second = {**first, "queries": 1, "recall": 1.0}
    table = metrics_table({"g<1>": first, "other": second})
    keys = ("queries", "objects", "named", "found", "recall", "precision", "inventing")
    header = "".join(f"<th>{k}</th>" for k in (*keys, "ms_per_query"))
    cells = ["2", "5", "4", "3", "0.600", "0.750", "–", "15.250"]
    rows = "<tr><td>g&lt;1&gt;</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
    cells[0], cells[4] = "1", "1.000"
    rows += "<tr><td>other</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
    assert table == (
        "<h2>Every object in the photo</h2>"
        f'<table class="metrics"><tr><th>group</th>{header}</tr>{rows}</table>'
    )


def _decoded(uri: str) -> Image.Image:
    prefix = "data:image/jpeg;base64,"
    assert uri.startswith(prefix)
    return Image.open(io.BytesIO(base64.b64decode(uri[len(prefix) :])))


def _figure_parts(html_text: str) -> tuple[str, str, str]:
    match = re.fullmatch(
        r'<figure class="objects"><img alt="([^"]*)" src="([^"]*)">'
        r"<figcaption>(.*)</figcaption></figure>",
        html_text,
    )
    assert match, html_text
    return match.group(1), match.group(2), match.group(3)


class _RecordingDraw:
    """ImageDraw.Draw that records its calls (and still draws)."""

    calls: list[tuple] = []

    def __init__(self, picture: Image.Image) -> None:
        self._draw = _DRAW(picture)

    def rectangle(self, xy, **kwargs) -> None:
        self.calls.append(("rectangle", tuple(xy), kwargs))
        self._draw.rectangle(xy, **kwargs)

    def text(self, xy, text, **kwargs) -> None:
        self.calls.append(("text", tuple(xy), text, kwargs))
        self._draw.text(xy, text, **kwargs)


def test_boxed_figure_scales_the_photo_and_draws_each_box(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    path = tmp_path / "a&b.png"
    Image.new("RGB", (960, 480), (0, 0, 255)).save(path)  # twice _SIDE: scale 1/2
    outcome = SimpleNamespace(
        truth=("a", "b", "d"),
        objects=(
            DetectedObject("a", 0.9, (100, 60, 301, 201), None),
            DetectedObject("c", 0.25, (500, 200, 800, 400), None),
        ),
        spec=SimpleNamespace(path=path),
    )
    _RecordingDraw.calls = []
    monkeypatch.setattr(objects_module.ImageDraw, "Draw", _RecordingDraw)
    alt, uri, caption = _figure_parts(boxed_figure(outcome))
    assert alt == "objects found in a&amp;b.png"
    assert caption == 'objects in a&amp;b.png<br><span class="missed">missed: b, d</span>'
    # boxes at half size (round(150.5) = 150, round(100.5) = 100: Python rounds to even)
    assert _RecordingDraw.calls == [
        ("rectangle", (50, 30, 150, 100), {"outline": "#2e8b57", "width": 3}),
        ("rectangle", (50, 30, 50 + 7 * 6 + 6, 44), {"fill": "#2e8b57"}),
        ("text", (53, 31), "a 0.90", {"fill": "white"}),
        ("rectangle", (250, 100, 400, 200), {"outline": "#c0392b", "width": 3}),
        ("rectangle", (250, 100, 250 + 7 * 6 + 6, 114), {"fill": "#c0392b"}),
        ("text", (253, 101), "c 0.25", {"fill": "white"}),
    ]
    picture = _decoded(uri)
    assert picture.size == (480, 240) and picture.format == "JPEG"
    pixels = np.asarray(picture.convert("RGB"), dtype=float)
    assert np.abs(pixels[70, 51] - GREEN).max() < 40  # left edge of a's box, below its label
    assert np.abs(pixels[150, 251] - RED).max() < 40  # left edge of c's box
    assert np.abs(pixels[60, 100] - (0, 0, 255)).max() < 40  # inside a's box: the photo
    # quality 80: the same quantisation tables as any picture saved at quality 80
    reference = io.BytesIO()
    Image.new("RGB", (8, 8)).save(reference, "JPEG", quality=80)
    assert picture.quantization == Image.open(reference).quantization


def test_boxed_figure_keeps_small_photos_and_one_pixel_sides(tmp_path: Path):
    small = tmp_path / "small.png"
    Image.new("L", (200, 100), 255).save(small)  # grey: the boxes are still in colour
    found = SimpleNamespace(
        truth=("a",), objects=(DetectedObject("a", 0.5, (10, 10, 60, 60), None),),
        spec=SimpleNamespace(path=small),
    )  # fmt: skip
    _, uri, caption = _figure_parts(boxed_figure(found))
    picture = _decoded(uri)
    assert picture.size == (200, 100) and picture.mode == "RGB"  # never enlarged
    assert np.abs(np.asarray(picture, dtype=float)[35, 11] - GREEN).max() < 40
    assert caption == "objects in small.png"  # nothing missed
    for size, scaled in (((1920, 2), (480, 1)), ((2, 1920), (1, 480))):
        thin = tmp_path / "thin.png"
        Image.new("RGB", size, (255, 255, 255)).save(thin)
        nothing = SimpleNamespace(truth=(), objects=(), spec=SimpleNamespace(path=thin))
        assert _decoded(_figure_parts(boxed_figure(nothing))[1]).size == scaled
