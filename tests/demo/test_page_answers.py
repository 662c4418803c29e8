"""The demo page's exact markup for a result, its summary line, its thumbnails, and each
refused record (written for mutation testing)."""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path

import pytest
from PIL import Image

from pyinstance.demo import page
from pyinstance.demo.page import QueryResult, write_page


def _photo(path: Path, size=(300, 200), colour="red") -> Path:
    Image.new("RGB", size, colour).save(path)
    return path


def _thumbnail_of(uri: str) -> Image.Image:
    prefix = "data:image/jpeg;base64,"
    assert uri.startswith(prefix)
    return Image.open(io.BytesIO(base64.b64decode(uri[len(prefix) :])))


def test_one_result_s_markup(tmp_path):
    result = QueryResult(
        Path("/q/a&b.jpg"), "x<y", None, 0.12345, [("x<y", 0.5, "/r/1.jpg"), ("z", 2, Path("/r/2.jpg"))], 7.6
    )  # fmt: skip
    seen: list[Path] = []

    def thumbnail(image: Path) -> str:
        seen.append(image)
        return f"T({image.name})"

    markup = page._result_html(result, thumbnail)
    assert seen == [Path("/r/1.jpg"), Path("/r/2.jpg"), Path("/q/a&b.jpg")]
    assert markup == (
        '<div class="result wrong">'
        '<div class="query"><img src="T(a&b.jpg)" alt="a&amp;b.jpg">'
        '<div class="caption">a&amp;b.jpg</div></div>'
        '<div class="answer"><div class="name">unknown</div>'
        "<div>confidence 0.123</div>"
        '<div class="verdict wrong">wrong</div>'
        '<div class="caption">truth: x&lt;y</div>'
        '<div class="caption">8 ms</div></div>'
        '<div class="matches">'
        '<div class="match"><img src="T(1.jpg)" alt="x&lt;y"><div>1. x&lt;y</div>'
        "<div>0.500</div></div>"
        '<div class="match"><img src="T(2.jpg)" alt="z"><div>2. z</div><div>2.000</div></div>'
        "</div></div>"
    )


def test_an_unknown_object_rejected_is_right():
    result = QueryResult(Path("q.jpg"), None, None, 0.0, [], 0.0)
    assert result.right
    markup = page._result_html(result, lambda image: "T")
    assert markup.startswith('<div class="result right">')
    assert '<div class="verdict right">right</div>' in markup
    assert '<div class="caption">truth: not in the collection</div>' in markup
    assert '<div class="name">unknown</div>' in markup
    assert '<div class="matches"></div>' in markup
    named = QueryResult(Path("q.jpg"), "a", "a", 1.0, [], 0.0)
    assert '<div class="name">a</div>' in page._result_html(named, lambda image: "T")
    assert '<div class="caption">truth: a</div>' in page._result_html(named, lambda image: "T")


def test_the_page_s_summary_title_and_shared_thumbnails(tmp_path, monkeypatch):
    q1, q2, ref = (_photo(tmp_path / f"{n}.jpg") for n in ("q1", "q2", "ref"))
    made: list[Path] = []
    monkeypatch.setattr(page, "_thumbnail_uri", lambda image: made.append(image) or "T")
    results = [
        QueryResult(q1, "a", "a", 0.9, [("a", 0.9, ref)], 100.0),
        QueryResult(q2, "b", "a", 0.5, [("a", 0.5, ref)], 51.0),
        QueryResult(ref, "a", "a", 0.9, [("a", 0.9, str(ref))], 0.0),
    ]
    path = write_page(results, str(tmp_path / "deep" / "er" / "page.html"), title="A & B")
    assert path == tmp_path / "deep" / "er" / "page.html"
    assert sorted(made) == sorted([ref, q1, q2])  # each image made once
    text = path.read_text(encoding="utf-8")
    assert text.startswith(
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>A &amp; B</title>'
        f"<style>{page._STYLE}</style></head><body>\n<h1>A &amp; B</h1>\n"
        '<p class="summary">2 of 3 queries right (67 %), 50 ms per query on average.</p>\n'
        '<div class="result right">'
    )
    assert text.endswith("</div></div>\n</body></html>\n")
    assert text.count('<div class="result ') == 3
    assert sorted(p.name for p in path.parent.iterdir()) == ["page.html"]


def test_the_default_title(tmp_path, monkeypatch):
    monkeypatch.setattr(page, "_thumbnail_uri", lambda image: "T")
    text = write_page([QueryResult(**_fields())], tmp_path / "p.html").read_text(encoding="utf-8")
    assert "<title>pyinstance: identification results</title>" in text
    assert "<h1>pyinstance: identification results</h1>" in text


def test_thumbnails_are_jpegs_at_most_160_pixels_keeping_the_aspect(tmp_path):
    wide = _photo(tmp_path / "wide.png", (400, 100), (10, 200, 30))
    thumb = _thumbnail_of(page._thumbnail_uri(wide))
    assert thumb.format == "JPEG" and thumb.size == (160, 40)
    pixel = thumb.convert("RGB").getpixel((80, 20))
    assert max(abs(a - b) for a, b in zip(pixel, (10, 200, 30), strict=True)) <= 6
    reference = io.BytesIO()
    Image.new("RGB", (16, 16)).save(reference, "JPEG", quality=80)
    assert thumb.quantization == Image.open(reference).quantization  # JPEG quality 80
    small = _photo(tmp_path / "small.png", (50, 90))
    assert _thumbnail_of(page._thumbnail_uri(small)).size == (50, 90)  # never enlarged
    assert page.THUMBNAIL_SIDE == 160


def _fields(**change):
    return {
        "query": Path("q.jpg"),
        "truth": "a",
        "answer": "a",
        "confidence": 0.5,
        "top_k": [],
        "ms": 1.0,
    } | change


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"truth": 1}, TypeError, "results[0].truth: expected a str or None, got 1"),
        ({"answer": b"a"}, TypeError, "results[0].answer: expected a str or None, got b'a'"),
        ({"confidence": True}, ValueError, "results[0].confidence: expected a finite number, got True"),
        ({"confidence": "1"}, ValueError, "results[0].confidence: expected a finite number, got '1'"),
        ({"ms": math.inf}, ValueError, "results[0].ms: expected a finite number, got inf"),
        ({"ms": -0.5}, ValueError, "results[0].ms: expected >= 0, got -0.5"),
        ({"top_k": None}, TypeError, "results[0].top_k: expected a sequence of (instance, score, reference path)"),
        ({"top_k": b"ab"}, TypeError, "results[0].top_k: expected a sequence of (instance, score, reference path)"),
        ({"top_k": [("a", 1.0, "r.jpg"), ("a", 1.0, "r.jpg", 4)]}, ValueError,
         "results[0].top_k[1]: expected (instance str, score number, reference path), got ('a', 1.0, 'r.jpg', 4)"),
        ({"top_k": [(1, 1.0, "r.jpg")]}, ValueError, "results[0].top_k[0]: expected"),
        ({"top_k": [("a", True, "r.jpg")]}, ValueError, "results[0].top_k[0]: expected"),
        ({"top_k": [("a", "1", "r.jpg")]}, ValueError, "results[0].top_k[0]: expected"),
        ({"top_k": [("a", 1.0, 3)]}, ValueError, "results[0].top_k[0]: expected"),
        ({"top_k": ["abc"]}, ValueError, "results[0].top_k[0]: expected"),
    ],
)  # fmt: skip
def test_each_bad_field_is_refused_by_name(tmp_path, change, error, message):
    good = QueryResult(**_fields())
    with pytest.raises(error) as raised:
        write_page([good, QueryResult(**_fields(**change))], tmp_path / "page.html")
    assert str(raised.value).replace("results[1]", "results[0]").startswith(message)
    assert "results[1]" in str(raised.value)
    assert not (tmp_path / "page.html").exists()


@pytest.mark.parametrize(
    "top_k",
    [[["a", 1, "r.jpg"]], (("a", 0.5, Path("r.jpg")),), [("a", 0, "r.jpg")]],
)
def test_good_matches_of_any_sequence_are_accepted(tmp_path, monkeypatch, top_k):
    monkeypatch.setattr(page, "_thumbnail_uri", lambda image: "T")
    ok = QueryResult(**_fields(top_k=top_k, ms=0, confidence=1))
    assert write_page([ok], tmp_path / "page.html").is_file()


@pytest.mark.parametrize("results", ["abc", b"abc", (), None, {"a": 1}])
def test_results_must_be_a_non_empty_sequence(tmp_path, results):
    with pytest.raises(ValueError) as raised:
        write_page(results, tmp_path / "page.html")
    assert str(raised.value) == "results: expected a non-empty sequence of QueryResult"


def test_a_tuple_of_results_is_accepted(tmp_path, monkeypatch):
    monkeypatch.setattr(page, "_thumbnail_uri", lambda image: "T")
    path = write_page((QueryResult(**_fields()),), tmp_path / "page.html")
    assert "1 of 1 queries right (100 %), 1 ms per query" in path.read_text(encoding="utf-8")
