"""The HTML report of an evaluation: one self-contained page, nothing requested from outside.

Every image (query and reference thumbnails, heat maps, plots) is embedded as a base64
``data:`` URI and the style sheet is inline. Wrong answers come first, then rejections,
then the right ones; each query stands beside its top-5 references with their scores.
Heat maps show where the descriptor looks: the regions a top-k region head selects, or
the channel-mean activation of the feature map for global heads (GeM, MAC, ...).
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from pyinstance.data.images import image_tensor, normalize, resize, scaled_size
from pyinstance.demo.page import _thumbnail_uri
from pyinstance.eval.evaluate import SUMMARY_KEYS, EvaluationResult, QueryOutcome, summary_rows
from pyinstance.eval.objects import boxed_figure, metrics_table
from pyinstance.index import Describer
from pyinstance.models.backbone import IMAGENET_MEAN, IMAGENET_STD
from pyinstance.models.region_head import TopKRegionHead
from pyinstance.viz.heatmap import render_region_heatmap

REPORT_FILE = "index.html"
_THUMB = 160
_ORDER = {"wrong": 0, "rejected": 1, "right": 2}
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; } h2 { font-size: 1.15em; margin-top: 1.4em; }
.setup { color: #555; } table.metrics { border-collapse: collapse; margin: 0.6em 0; }
table.metrics td, table.metrics th { padding: 0.2em 0.6em; border-bottom: 1px solid #ddd;
  text-align: right; } table.metrics td:first-child { text-align: left; }
.plots img { max-width: 48%; margin-right: 1%; background: #fff; }
.problems { color: #a04000; font-size: 0.9em; }
.result { display: flex; gap: 1em; align-items: flex-start; padding: 0.6em;
  margin-bottom: 0.6em; background: #fff; border-left: 6px solid #bbb; }
.result.right { border-left-color: #2e8b57; } .result.wrong { border-left-color: #c0392b; }
.result.rejected { border-left-color: #d68910; }
figure { margin: 0; font-size: 0.8em; text-align: center; width: 150px; word-break: break-all; }
figure img { display: block; margin: 0 auto; max-width: 146px; max-height: 146px; }
.answer { width: 11em; font-size: 0.9em; word-break: break-all; } .verdict { font-weight: 600; text-transform: uppercase; }
.right .verdict { color: #2e8b57; } .wrong .verdict { color: #c0392b; }
.rejected .verdict { color: #d68910; } figure.true { outline: 3px solid #2e8b57; }
.matches { display: flex; gap: 0.4em; flex-wrap: wrap; }
figure.objects { width: auto; } figure.objects img { max-width: 480px; max-height: 480px; }
.missed { color: #c0392b; font-weight: 600; }
.matches figure { width: 112px; } .matches figure img { max-width: 108px; max-height: 108px; }
"""


def write_report(
    result: EvaluationResult,
    directory: str | os.PathLike[str],
    *,
    describer: Describer | None = None,
    force: bool = False,
) -> Path:
    """Write ``directory/index.html`` for ``result``; returns its path.

    Args:
        result: what :func:`~pyinstance.eval.evaluate.evaluate` returned.
        directory: the report's folder; one that exists and is not empty is refused
            unless ``force``.
        describer: the index's describer, for the heat maps of the wrong and rejected
            queries (none without it).
        force: replace the report in a folder that is not empty.
    """
    if not isinstance(result, EvaluationResult):
        raise TypeError(f"result: expected an EvaluationResult, got {type(result).__name__}")
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"report: {str(directory)!r} exists and is not a folder")
    if directory.is_dir() and any(directory.iterdir()) and not force:
        raise FileExistsError(
            f"report: folder {str(directory)!r} exists and is not empty; pass --force "
            "(force=True) to overwrite it"
        )
    page = render_html(result, describer=describer)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / REPORT_FILE
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".report-", suffix=".html")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(page)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def render_html(result: EvaluationResult, *, describer: Describer | None = None) -> str:
    """The report page as a string (see :func:`write_report`)."""
    outcomes = sorted(result.outcomes, key=lambda o: (_ORDER[o.verdict], -o.confidence))
    thumbnails: dict[str, str] = {}
    cards = "\n".join(_card(o, thumbnails, describer) for o in outcomes)
    counts = {v: sum(o.verdict == v for o in outcomes) for v in _ORDER}
    threshold = "none (no rejection)" if result.threshold is None else f"{result.threshold:.3f}"
    recipe = result.recipe
    problems = "".join(f"<li>{html.escape(str(p))}</li>" for p in result.problems)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>pyinstance evaluation</title>
<style>{_STYLE}</style></head><body>
<h1>pyinstance evaluation</h1>
<p class="setup">index {html.escape(result.index)} · {html.escape(str(recipe.get("backbone")))}
+ {html.escape(str(recipe.get("head")))}, {recipe.get("dim")}-D, max side {recipe.get("max_side")}
· classifier {html.escape(result.classifier)} · threshold {threshold}<br>
{len(outcomes)} queries evaluated: {counts["right"]} right, {counts["wrong"]} wrong,
{counts["rejected"]} rejected; {result.failed_queries} failed to decode</p>
{_metrics_table(result.metrics)}
{metrics_table(result.metrics["objects"]) if "objects" in result.metrics else ""}
<div class="plots"><img alt="precision-recall curve" src="{_pr_curve(outcomes)}">
<img alt="confidence histogram" src="{_histogram(outcomes, result.threshold)}"></div>
{f'<h2>Problems</h2><ul class="problems">{problems}</ul>' if problems else ""}
<h2>Queries (wrong, then rejected, then right)</h2>
{cards}
</body></html>
"""


def _number(value: object) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.3f}"
    return html.escape(str(value))


def _metrics_table(metrics: dict) -> str:
    header = "".join(f"<th>{k}</th>" for k in SUMMARY_KEYS)
    rows = summary_rows(metrics)
    body = "".join(
        f"<tr><td>{html.escape(name)}</td>"
        + "".join(f"<td>{_number(values.get(k, float('nan')))}</td>" for k in SUMMARY_KEYS)
        + "</tr>"
        for name, values in rows
    )
    return f'<table class="metrics"><tr><th>group</th>{header}</tr>{body}</table>'


def _card(outcome: QueryOutcome, thumbnails: dict[str, str], describer: Describer | None) -> str:
    path = outcome.spec.path
    query = _figure(_uri(path, thumbnails), "query: " + path.name)
    if outcome.objects is not None:
        query = boxed_figure(outcome)
    heat = ""
    if describer is not None and outcome.verdict != "right":
        heat = _figure(_picture_uri(attention_map(describer, path)), "where it looks")
    matches = "".join(
        _figure(
            _uri(Path(m.image_path), thumbnails) if m.image_path else "",
            f"{m.instance} · {m.score:.3f}",
            true=m.instance in outcome.truth,
        )
        for m in outcome.top_k[:5]
    )
    truth = " or ".join(outcome.truth) or "unknown (not in the collection)"
    group = outcome.spec.query_set or "-"
    return f"""<div class="result {outcome.verdict}">{query}{heat}
<div class="answer"><div class="verdict">{outcome.verdict}</div>
answer: <b>{html.escape(outcome.answer or "unknown")}</b><br>confidence {outcome.confidence:.3f}<br>
truth: {html.escape(truth)}<br>group: {html.escape(group)}<br>{outcome.ms:.0f} ms</div>
<div class="matches">{matches}</div></div>"""


def _figure(uri: str, caption: str, *, true: bool = False) -> str:
    image = f'<img alt="{html.escape(caption)}" src="{uri}">' if uri else "<div>(no image)</div>"
    marked = ' class="true"' if true else ""
    return f"<figure{marked}>{image}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _uri(path: Path, cache: dict[str, str]) -> str:
    key = str(path)
    if key not in cache:
        cache[key] = _thumbnail_uri(path)
    return cache[key]


def _picture_uri(picture: Image.Image) -> str:
    picture = picture.copy()
    picture.thumbnail((_THUMB, _THUMB))
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def attention_map(describer: Describer, image: str | os.PathLike[str]) -> Image.Image:
    """Where the descriptor of ``image`` looks, drawn over it.

    The channel-mean activation of the backbone's feature map as a heat map; with a top-k
    region head, also the outlines of the cells it pools.
    """
    if not isinstance(describer, Describer):
        raise TypeError(f"describer: expected a Describer, got {type(describer).__name__}")
    pixels = image_tensor(image, "image")
    size = scaled_size(*pixels.shape[1:], describer.recipe.max_side)
    backbone, head = describer.backbone, describer.head
    mean = getattr(backbone, "input_mean", IMAGENET_MEAN)
    std = getattr(backbone, "input_std", IMAGENET_STD)
    with torch.inference_mode():
        batch = normalize(resize(pixels.to(describer.device), size)[None], mean, std)
        features = backbone(batch)
        activation = features[0].float().clamp(min=0).mean(dim=0).cpu().numpy()
        locations: np.ndarray = np.empty(0, dtype=np.int64)
        if isinstance(head, TopKRegionHead):
            locations = head.forward_regions(features).locations[0].cpu().numpy()
    return render_region_heatmap(pixels, locations, activation.shape, scores=activation)


def _plot_uri(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _pr_curve(outcomes: list[QueryOutcome]) -> str:
    """Precision and recall of the accepted answers taken by decreasing confidence (the
    curve whose area is the micro-AP)."""
    accepted = sorted((o for o in outcomes if o.answer is not None), key=lambda o: -o.confidence)
    right = np.array([o.correct for o in accepted], dtype=float)
    n_known = sum(o.known for o in outcomes)
    figure = Figure(figsize=(5, 3.6))
    axes = figure.subplots()
    if right.size and n_known:
        hits = np.cumsum(right)
        axes.step(hits / n_known, hits / np.arange(1, right.size + 1), where="post")
    axes.set(xlabel="recall (of known queries)", ylabel="precision", xlim=(0, 1.02),
             ylim=(0, 1.05), title="precision-recall, answers by confidence")  # fmt: skip
    axes.grid(alpha=0.3)
    return _plot_uri(figure)


def _histogram(outcomes: list[QueryOutcome], threshold: float | None) -> str:
    """Confidences of known and unknown queries, with the threshold drawn."""
    figure = Figure(figsize=(5, 3.6))
    axes = figure.subplots()
    bins = np.linspace(0.0, 1.0, 21)
    for known, label, colour in ((True, "known", "#2e8b57"), (False, "unknown", "#c0392b")):
        values = [o.confidence for o in outcomes if o.known is known]
        if values:
            axes.hist(values, bins=bins, alpha=0.6, label=f"{label} ({len(values)})", color=colour)
    if threshold is not None:
        axes.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
    axes.set(xlabel="confidence", ylabel="queries", title="confidence of known vs unknown")
    if axes.get_legend_handles_labels()[0]:  # no queries and no threshold: nothing to name
        axes.legend()
    return _plot_uri(figure)
