"""Every object in the photo, evaluated: recall and precision of the instances named, and
the report's photos with their boxes drawn and the missed objects marked.

A query's objects are all of its truth ids (a ``multiple_paintings`` row lists each
painting in the photo); a single-painting query expects exactly its one painting, and a
photo of something not in the collection expects none. Groups:

- ``multi_object``: queries with two or more objects: *every painting named?*
- ``single_object``: queries with one: *no second painting invented?*
- ``unknown``: queries with none: *nothing invented?*

Per group: ``queries``, ``objects`` (expected), ``named``, ``found`` (named and expected),
``recall`` (found / objects), ``precision`` (found / named; NaN when nothing is named),
``inventing`` (share of queries naming an instance that is not in the photo) and
``ms_per_query`` (the whole identification with ``multi``).
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from typing import Any

from PIL import ImageDraw

from pyinstance.data.images import load_image

#: The groups, in table order, and which queries each holds.
GROUPS = {
    "multi_object": lambda n: n >= 2,
    "single_object": lambda n: n == 1,
    "unknown": lambda n: n == 0,
}
_FOUND, _WRONG = "#2e8b57", "#c0392b"
_SIDE = 480


def object_metrics(outcomes: Sequence[Any]) -> dict[str, dict[str, float]]:
    """The metrics of each group (see the module's docstring) of ``outcomes``
    (:class:`~pyinstance.eval.evaluate.QueryOutcome` with ``objects``)."""
    metrics = {}
    for group, member in GROUPS.items():
        chosen = [o for o in outcomes if o.objects is not None and member(len(o.truth))]
        expected = sum(len(o.truth) for o in chosen)
        named = sum(len(o.objects) for o in chosen)
        found = sum(len({f.instance for f in o.objects} & set(o.truth)) for o in chosen)
        inventing = sum(any(f.instance not in o.truth for f in o.objects) for o in chosen)
        metrics[group] = {
            "queries": len(chosen),
            "objects": expected,
            "named": named,
            "found": found,
            "recall": found / expected if expected else math.nan,
            "precision": found / named if named else math.nan,
            "inventing": inventing / len(chosen) if chosen else math.nan,
            "ms_per_query": (sum(o.ms for o in chosen) / len(chosen) if chosen else math.nan),
        }
    return metrics


def metrics_table(metrics: dict[str, dict[str, float]]) -> str:
    """The object metrics as an HTML table."""
    keys = ("queries", "objects", "named", "found", "recall", "precision", "inventing")
    header = "".join(f"<th>{k}</th>" for k in (*keys, "ms_per_query"))
    body = "".join(
        f"<tr><td>{html.escape(group)}</td>"
        + "".join(f"<td>{_number(values[k])}</td>" for k in (*keys, "ms_per_query"))
        + "</tr>"
        for group, values in metrics.items()
    )
    return (
        "<h2>Every object in the photo</h2>"
        f'<table class="metrics"><tr><th>group</th>{header}</tr>{body}</table>'
    )


def _number(value: float) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def boxed_figure(outcome: Any) -> str:
    """The query photo with each named object's box (green: in the photo, red: not) and
    its caption naming the objects that were missed."""
    picture = load_image(outcome.spec.path).convert("RGB")
    scale = min(1.0, _SIDE / max(picture.size))
    picture = picture.resize(
        (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    )
    draw = ImageDraw.Draw(picture)
    for found in outcome.objects:
        colour = _FOUND if found.instance in outcome.truth else _WRONG
        left, top, right, bottom = (round(v * scale) for v in found.box)
        draw.rectangle((left, top, right, bottom), outline=colour, width=3)
        label = f"{found.instance} {found.confidence:.2f}"
        draw.rectangle((left, top, left + 7 * len(label) + 6, top + 14), fill=colour)
        draw.text((left + 3, top + 1), label, fill="white")
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=80)
    uri = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    named = {found.instance for found in outcome.objects}
    missed = [i for i in outcome.truth if i not in named]
    caption = html.escape(f"objects in {outcome.spec.path.name}")
    if missed:
        caption += f'<br><span class="missed">missed: {html.escape(", ".join(missed))}</span>'
    return (
        f'<figure class="objects"><img alt="objects found in {html.escape(outcome.spec.path.name)}" '
        f'src="{uri}"><figcaption>{caption}</figcaption></figure>'
    )
