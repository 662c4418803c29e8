"""The demo's HTML page: every query shown, self-contained, escaped, bad records refused."""

from __future__ import annotations

import math
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from pyinstance.demo.page import QueryResult, write_page


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.urls: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.urls += [v or "" for k, v in attrs if k in ("src", "href", "srcset", "action")]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.fixture
def photos(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for name, colour in (
        ("q1", "red"),
        ("q2", "green"),
        ("q3", "blue"),
        ("ra", "white"),
        ("rb", "black"),
    ):
        out[name] = tmp_path / f"{name}.jpg"
        Image.new("RGB", (300, 200), colour).save(out[name])
    return out


def _results(photos: dict[str, Path]) -> list[QueryResult]:
    return [
        QueryResult(
            photos["q1"],
            "a",
            "a",
            0.91,
            [("a", 0.91, photos["ra"]), ("b", 0.4, photos["rb"])],
            120.0,
        ),
        QueryResult(photos["q2"], "b", "a", 0.55, [("a", 0.55, photos["ra"])], 95.5),
        QueryResult(photos["q3"], None, None, 0.2, [("b", 0.2, photos["rb"])], 80.0),
    ]


def _parse(path: Path) -> _Collect:
    parser = _Collect()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def test_every_query_with_its_verdict_and_no_external_request(
    tmp_path: Path, photos: dict[str, Path]
) -> None:
    path = write_page(_results(photos), tmp_path / "out" / "page.html")
    page = path.read_text(encoding="utf-8")
    parsed = _parse(path)
    text = " ".join(parsed.text)
    for name in ("q1.jpg", "q2.jpg", "q3.jpg"):
        assert name in text
    assert page.count('class="result right"') == 2 and page.count('class="result wrong"') == 1
    assert "unknown" in text and "not in the collection" in text
    assert "2 of 3 queries right" in text
    # 3 queries + 4 matches shown, every image inline; nothing loaded from elsewhere
    assert parsed.tags.count("img") == 7
    assert parsed.urls and all(url.startswith("data:image/jpeg;base64,") for url in parsed.urls)
    assert not {"script", "link", "iframe", "object", "embed"} & set(parsed.tags)
    assert "http://" not in page and "https://" not in page and "url(" not in page
    assert not list(path.parent.glob("*.partial"))


def test_text_is_escaped(tmp_path: Path, photos: dict[str, Path]) -> None:
    evil = "<script>alert(1)</script>"
    result = QueryResult(photos["q1"], evil, evil, 0.5, [(evil, 0.5, photos["ra"])], 1.0)
    page = write_page([result], tmp_path / "page.html", title=evil).read_text(encoding="utf-8")
    assert "<script>" not in page and "&lt;script&gt;" in page


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (
            {"confidence": math.nan},
            ValueError,
            r"results\[0\].confidence: expected a finite number",
        ),
        ({"ms": -1.0}, ValueError, r"results\[0\].ms: expected >= 0"),
        ({"answer": 3}, TypeError, r"results\[0\].answer: expected a str or None"),
        ({"top_k": [("a", 0.5)]}, ValueError, r"results\[0\].top_k\[0\]: expected \(instance"),
        ({"top_k": "a"}, TypeError, r"results\[0\].top_k: expected a sequence"),
    ],
)
def test_bad_records_are_refused(
    tmp_path: Path, photos: dict[str, Path], change: dict, error: type, message: str
) -> None:
    fields = {
        "query": photos["q1"],
        "truth": "a",
        "answer": "a",
        "confidence": 0.5,
        "top_k": [],
        "ms": 1.0,
    }
    with pytest.raises(error, match=message):
        write_page([QueryResult(**{**fields, **change})], tmp_path / "page.html")
    assert not (tmp_path / "page.html").exists()


def test_empty_or_wrong_results_and_missing_images(tmp_path: Path, photos: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="results: expected a non-empty sequence"):
        write_page([], tmp_path / "page.html")
    with pytest.raises(TypeError, match=r"results\[0\]: expected a QueryResult, got dict"):
        write_page([{"query": photos["q1"]}], tmp_path / "page.html")  # type: ignore[list-item]
    missing = QueryResult(tmp_path / "gone.jpg", None, None, 0.1, [], 1.0)
    with pytest.raises(FileNotFoundError, match="gone.jpg"):
        write_page([missing], tmp_path / "page.html")
    assert not (tmp_path / "page.html").exists()
