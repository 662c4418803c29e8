"""A self-contained HTML page of identification results: each query beside its matches.

Every image is embedded as a small base64 JPEG thumbnail and the style sheet is inline,
so the page opens anywhere (offline, from an e-mail attachment) and requests nothing.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pyinstance.data.images import load_image

THUMBNAIL_SIDE = 160
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; }
.summary { color: #555; margin-bottom: 1.2em; }
.result { display: flex; gap: 1em; align-items: flex-start; padding: 0.8em;
  margin-bottom: 0.8em; background: #fff; border-left: 6px solid #bbb; }
.result.right { border-left-color: #2e8b57; }
.result.wrong { border-left-color: #c0392b; }
.query img, .match img { display: block; max-width: 160px; max-height: 160px; }
.query { width: 170px; } .caption { font-size: 0.85em; color: #555; word-break: break-all; }
.answer { width: 14em; } .answer .name { font-size: 1.15em; font-weight: 600; }
.verdict.right { color: #2e8b57; font-weight: 600; } .verdict.wrong { color: #c0392b; font-weight: 600; }
.matches { display: flex; gap: 0.6em; flex-wrap: wrap; }
.match { font-size: 0.85em; text-align: center; }
"""


@dataclass(frozen=True)
class QueryResult:
    """What identification said about one query photo.

    Args:
        query: the query photo.
        truth: the instance it really shows; None when it is not in the collection.
        answer: the instance identified; None for "unknown".
        confidence: the answer's confidence.
        top_k: ranked ``(instance, score, reference photo)`` matches.
        ms: time taken for this query, in milliseconds.
    """

    query: Path
    truth: str | None
    answer: str | None
    confidence: float
    top_k: Sequence[tuple[str, float, Path]]
    ms: float

    @property
    def right(self) -> bool:
        """The answer is the truth (for an object not in the collection: "unknown")."""
        return self.answer == self.truth


def write_page(
    results: Sequence[QueryResult],
    path: str | os.PathLike[str],
    *,
    title: str = "pyinstance: identification results",
) -> Path:
    """Write the page for ``results`` to ``path`` (atomically) and return its path."""
    if isinstance(results, (str, bytes)) or not isinstance(results, Sequence) or not results:
        raise ValueError("results: expected a non-empty sequence of QueryResult")
    for index, result in enumerate(results):
        _check(result, f"results[{index}]")
    thumbnails: dict[Path, str] = {}

    def thumbnail(image: Path) -> str:
        if image not in thumbnails:
            thumbnails[image] = _thumbnail_uri(image)
        return thumbnails[image]

    right = sum(result.right for result in results)
    mean_ms = sum(result.ms for result in results) / len(results)
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="summary">{right} of {len(results)} queries right '
        f"({100 * right / len(results):.0f} %), {mean_ms:.0f} ms per query on average.</p>",
    ]
    body += [_result_html(result, thumbnail) for result in results]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body>\n{chr(10).join(body)}\n</body></html>\n"
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(page, encoding="utf-8")
    os.replace(partial, path)
    return path


def _result_html(result: QueryResult, thumbnail) -> str:  # noqa: ANN001 - a closure
    verdict = "right" if result.right else "wrong"
    answer = result.answer if result.answer is not None else "unknown"
    truth = result.truth if result.truth is not None else "not in the collection"
    matches = "".join(
        f'<div class="match"><img src="{thumbnail(Path(reference))}" '
        f'alt="{html.escape(instance)}"><div>{rank}. {html.escape(instance)}</div>'
        f"<div>{score:.3f}</div></div>"
        for rank, (instance, score, reference) in enumerate(result.top_k, start=1)
    )
    name = html.escape(Path(result.query).name)
    return (
        f'<div class="result {verdict}">'
        f'<div class="query"><img src="{thumbnail(Path(result.query))}" alt="{name}">'
        f'<div class="caption">{name}</div></div>'
        f'<div class="answer"><div class="name">{html.escape(answer)}</div>'
        f"<div>confidence {result.confidence:.3f}</div>"
        f'<div class="verdict {verdict}">{verdict}</div>'
        f'<div class="caption">truth: {html.escape(truth)}</div>'
        f'<div class="caption">{result.ms:.0f} ms</div></div>'
        f'<div class="matches">{matches}</div></div>'
    )


def _thumbnail_uri(image: Path) -> str:
    picture = load_image(image)
    picture.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _check(result: object, name: str) -> None:
    if not isinstance(result, QueryResult):
        raise TypeError(f"{name}: expected a QueryResult, got {type(result).__name__}")
    for field, value in (("truth", result.truth), ("answer", result.answer)):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{name}.{field}: expected a str or None, got {value!r}")
    for field, value in (("confidence", result.confidence), ("ms", result.ms)):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise ValueError(f"{name}.{field}: expected a finite number, got {value!r}")
    if result.ms < 0:
        raise ValueError(f"{name}.ms: expected >= 0, got {result.ms!r}")
    if isinstance(result.top_k, (str, bytes)) or not isinstance(result.top_k, Sequence):
        raise TypeError(f"{name}.top_k: expected a sequence of (instance, score, reference path)")
    for rank, match in enumerate(result.top_k):
        if (
            not isinstance(match, (tuple, list))
            or len(match) != 3
            or not isinstance(match[0], str)
            or isinstance(match[1], bool)
            or not isinstance(match[1], (int, float))
            or not isinstance(match[2], (str, os.PathLike))
        ):
            raise ValueError(
                f"{name}.top_k[{rank}]: expected (instance str, score number, reference path), "
                f"got {match!r}"
            )
