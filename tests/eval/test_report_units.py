"""The evaluation report without a network or a browser: hand-made outcomes, their page
(order, counts, cards, tables), the plots' data, the heat map's input and the file written."""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import os
import re
import stat
from pathlib import Path
from types import SimpleNamespace

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from PIL import Image

from pyinstance.data.manifest import RowProblem
from pyinstance.eval import report as report_module
from pyinstance.eval.evaluate import SUMMARY_KEYS, EvaluationResult, QueryOutcome, QuerySpec
from pyinstance.eval.report import (
    REPORT_FILE,
    _metrics_table,
    _picture_uri,
    _plot_uri,
    attention_map,
    render_html,
    write_report,
)
from pyinstance.identification import Match
from pyinstance.index import Describer
from pyinstance.models.region_head import TopKRegionHead


def _png(path: Path, size=(20, 10), colour=(10, 200, 30)) -> Path:
    Image.new("RGB", size, colour).save(path)
    return path


def _outcome(folder: Path, name: str, truth, answer, confidence, matches, query_set, ms=12.4):
    spec = QuerySpec(_png(folder / name), tuple(truth), query_set, None, f"m.csv:{name}")
    return QueryOutcome(spec, tuple(truth), answer, confidence, tuple(matches), ms)


@pytest.fixture
def result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> EvaluationResult:
    # The plots' PNGs are not drawn here (the slowest part of a page, and every mutant of
    # report.py reruns these tests): the test_plot* tests check the figures and the PNG.
    monkeypatch.setattr(report_module, "_plot_uri", lambda figure: "data:image/png;base64,")
    ref_a = str(_png(tmp_path / "ref_a.png", colour=(200, 0, 0)))
    ref_b = str(_png(tmp_path / "ref_b.png", colour=(0, 0, 200)))
    many = [Match(i, 0.1, None, None) for i in "abcdef"]  # six: only five are shown
    outcomes = [
        _outcome(tmp_path, "q_right.png", ("a", "b"), "a", 0.8, [Match("a", 0.8, "1", ref_a)], "s1"),
        _outcome(tmp_path, "q_wrong.png", ("a",), "b", 0.4,
                 [Match("b", 0.4, "2", ref_b), Match("a", 0.3, "1", ref_a)], "s1"),
        _outcome(tmp_path, "q_rejected.png", ("a",), None, 0.2, many, "s<2>"),
        _outcome(tmp_path, "q_unknown.png", (), "a", 0.9, [Match("a", 0.9, "1", ref_a)], None),
    ]  # fmt: skip
    return EvaluationResult(
        metrics={"queries": 4, "p_at_1": 0.5, "map": float("nan")},
        outcomes=outcomes,
        problems=[RowProblem("m.csv:7", "bad <row>")],
        failed_queries=3,
        index="/ix<1>",
        recipe={"backbone": "net<x>", "head": "gem", "dim": 8, "max_side": 160},
        classifier="knn<vote>",
        threshold=0.5,
    )


def _cards(page: str) -> list[str]:
    return re.findall(r'<div class="result \w+">.*?</div></div>', page, flags=re.DOTALL)


def test_cards_wrong_then_rejected_then_right_most_confident_first(result) -> None:
    page = render_html(result)
    captions = re.findall(r"<figcaption>query: (\w+)\.png</figcaption>", page)
    assert captions == ["q_unknown", "q_wrong", "q_rejected", "q_right"]
    verdicts = re.findall(r'<div class="result (\w+)">', page)
    assert verdicts == ["wrong", "wrong", "rejected", "right"]


def test_setup_counts_problems_and_metrics(result) -> None:
    page = render_html(result)
    assert "index /ix&lt;1&gt; · net&lt;x&gt;\n+ gem, 8-D, max side 160\n" in page
    assert "· classifier knn&lt;vote&gt; · threshold 0.500<br>" in page
    assert "4 queries evaluated: 1 right, 2 wrong,\n1 rejected; 3 failed to decode</p>" in page
    assert '<h2>Problems</h2><ul class="problems"><li>m.csv:7: bad &lt;row&gt;</li></ul>' in page
    assert _metrics_table(result.metrics) in page
    assert "Every object in the photo" not in page
    assert page.startswith("<!DOCTYPE html>") and page.endswith("</body></html>\n")
    assert ".result.wrong { border-left-color: #c0392b; }" in page  # the verdicts' colours
    result.threshold, result.problems = None, []
    page = render_html(result)
    assert "threshold none (no rejection)<br>" in page and "Problems" not in page


def test_object_metrics_table_when_measured(result) -> None:
    values = dict.fromkeys(
        ("queries", "objects", "named", "found", "recall", "precision", "inventing"), 1
    )
    result.metrics["objects"] = {"unknown": {**values, "ms_per_query": 2.0}}
    page = render_html(result)
    assert "<h2>Every object in the photo</h2>" in page and "<td>unknown</td>" in page


def test_metrics_table_cells() -> None:
    metrics = {
        "queries": 4, "p_at_1": 0.5, "map": float("nan"), "far": 1 / 3,
        "groups": {"s<1>": {"queries": 2, "p_at_1": 1.0}},
    }  # fmt: skip
    table = _metrics_table(metrics)
    header = "<tr><th>group</th>" + "".join(f"<th>{k}</th>" for k in SUMMARY_KEYS) + "</tr>"
    assert table.startswith(f'<table class="metrics">{header}<tr><td>all</td>')
    rows = re.findall(r"<tr><td>(.*?)</td>(.*?)</tr>", table)
    cells = {name: re.findall(r"<td>(.*?)</td>", rest) for name, rest in rows}
    assert cells["all"] == ["4", "0.500", "–", "–", "–", "–", "–", "0.333", "–", "–"]
    assert cells["s&lt;1&gt;"] == ["2", "1.000"] + ["–"] * 8
    assert table.endswith("</tr></table>")


def test_card_contents(result, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []

    def thumbnail(path: Path) -> str:
        made.append(str(path))
        return f"data:image/jpeg;base64,{Path(path).stem}"

    monkeypatch.setattr(report_module, "_thumbnail_uri", thumbnail)
    unknown, wrong, rejected, right = _cards(render_html(result))
    assert sorted(made) == sorted(set(made))  # each picture made once (ref_a: three cards)
    assert len(made) == 4 + 2
    assert (
        '<figure><img alt="query: q_wrong.png" src="data:image/jpeg;base64,q_wrong">'
        "<figcaption>query: q_wrong.png</figcaption></figure>"
    ) in wrong
    assert (
        '<div class="answer"><div class="verdict">wrong</div>\nanswer: <b>b</b><br>'
        "confidence 0.400<br>\ntruth: a<br>group: s1<br>12 ms</div>"
    ) in wrong
    assert (
        '<div class="matches"><figure><img alt="b · 0.400" src="data:image/jpeg;base64,ref_b">'
        "<figcaption>b · 0.400</figcaption></figure>"
        '<figure class="true"><img alt="a · 0.300" src="data:image/jpeg;base64,ref_a">'
        "<figcaption>a · 0.300</figcaption></figure></div>"
    ) in wrong
    assert "truth: unknown (not in the collection)<br>group: -<br>" in unknown
    assert "answer: <b>unknown</b>" in rejected and "group: s&lt;2&gt;<br>" in rejected
    assert rejected.count("<div>(no image)</div>") == 5  # five of the six matches
    assert rejected.count('<figure class="true">') == 1  # a
    assert "truth: a or b<br>" in right
    assert "where it looks" not in "".join((unknown, wrong, rejected, right))


def test_plots_show_the_answers(result, monkeypatch: pytest.MonkeyPatch) -> None:
    figures: list[Figure] = []

    def keep(figure: Figure) -> str:
        figures.append(figure)
        return f"data:image/png;base64,plot{len(figures)}"

    monkeypatch.setattr(report_module, "_plot_uri", keep)
    page = render_html(result)
    assert '<img alt="precision-recall curve" src="data:image/png;base64,plot1">' in page
    assert '<img alt="confidence histogram" src="data:image/png;base64,plot2">' in page
    pr, hist = figures
    # accepted by confidence: q_unknown (wrong), q_right, q_wrong; three known queries
    (line,) = pr.axes[0].lines
    np.testing.assert_allclose(line.get_xdata(), [0, 1 / 3, 1 / 3])
    np.testing.assert_allclose(line.get_ydata(), [0, 1 / 2, 1 / 3])
    assert line.get_drawstyle() == "steps-post"
    axes = pr.axes[0]
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("recall (of known queries)", "precision")
    assert axes.get_xlim() == (0, 1.02) and axes.get_ylim() == (0, 1.05)
    assert axes.get_title() == "precision-recall, answers by confidence"
    assert tuple(pr.get_size_inches()) == (5, 3.6) == tuple(hist.get_size_inches())
    grid = axes.xaxis.get_gridlines() + axes.yaxis.get_gridlines()
    assert all(line.get_visible() and line.get_alpha() == 0.3 for line in grid)
    axes = hist.axes[0]
    bars = axes.patches
    heights = np.array([bar.get_height() for bar in bars]).reshape(2, 20)
    expected = np.zeros((2, 20))
    expected[0, [4, 8, 16]] = 1  # known: 0.2, 0.4, 0.8
    expected[1, 18] = 1  # unknown: 0.9
    np.testing.assert_array_equal(heights, expected)
    np.testing.assert_allclose([bar.get_x() for bar in bars[:20]], np.arange(20) / 20, atol=1e-12)
    assert bars[0].get_facecolor() == to_rgba("#2e8b57", 0.6)
    assert bars[20].get_facecolor() == to_rgba("#c0392b", 0.6)
    (threshold,) = axes.lines
    assert list(threshold.get_xdata()) == [0.5, 0.5] and threshold.get_linestyle() == "--"
    labels = [text.get_text() for text in axes.get_legend().get_texts()]
    assert labels == ["known (3)", "unknown (1)", "threshold 0.500"]
    assert threshold.get_color() == "black"
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("confidence", "queries")
    assert axes.get_title() == "confidence of known vs unknown"


def test_plots_without_answers_or_threshold(result, monkeypatch: pytest.MonkeyPatch) -> None:
    figures: list[Figure] = []
    monkeypatch.setattr(report_module, "_plot_uri", lambda f: figures.append(f) or "x")
    result.threshold = None
    result.outcomes = [o for o in result.outcomes if o.answer is None]  # rejected only
    render_html(result)
    pr, hist = figures
    assert len(pr.axes[0].lines) == 0  # nothing accepted: no curve
    assert len(hist.axes[0].lines) == 0  # no threshold line
    labels = [text.get_text() for text in hist.axes[0].get_legend().get_texts()]
    assert labels == ["known (1)"]  # no unknown query: no bars for them


def test_plot_is_a_tight_png_at_80_dpi() -> None:
    figure = Figure(figsize=(5, 3.6))
    figure.subplots().plot([0, 1], [0, 1])
    uri = _plot_uri(figure)
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix)
    picture = Image.open(io.BytesIO(base64.b64decode(uri[len(prefix) :])))
    assert picture.format == "PNG"
    assert picture.info["dpi"] == pytest.approx((80, 80), abs=0.01)
    width, height = picture.size
    assert width < 5 * 80 and height < 3.6 * 80  # cropped to the drawing ("tight")
    assert width > 0.8 * 5 * 80


def test_picture_uri_is_a_thumbnail_jpeg() -> None:
    uri = _picture_uri(Image.new("RGB", (320, 100), (0, 128, 0)))
    prefix = "data:image/jpeg;base64,"
    assert uri.startswith(prefix)
    picture = Image.open(io.BytesIO(base64.b64decode(uri[len(prefix) :])))
    assert picture.size == (160, 50) and picture.format == "JPEG"
    reference = io.BytesIO()
    Image.new("RGB", (8, 8)).save(reference, "JPEG", quality=80)
    assert picture.quantization == Image.open(reference).quantization


# --------------------------------------------------------------------------- heat maps


class _Identity(torch.nn.Module):
    """A "backbone" whose feature map is its (normalised) input."""

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return batch


def _describer(backbone: torch.nn.Module, head: torch.nn.Module, max_side: int) -> Describer:
    describer = Describer.__new__(Describer)  # no network: the attributes attention_map reads
    describer.recipe = SimpleNamespace(max_side=max_side)
    describer.backbone, describer.head = backbone, head
    describer.device = torch.device("cpu")
    return describer


@pytest.fixture
def heat_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    calls: list[tuple] = []

    def record(image, locations, grid_hw, **options):
        calls.append((image, locations, grid_hw, options))
        return Image.new("RGB", (4, 4))

    monkeypatch.setattr(report_module, "render_region_heatmap", record)
    return calls


def test_attention_map_is_the_mean_positive_activation(tmp_path: Path, heat_calls) -> None:
    # A 16 x 8 picture of (255, 0, 128) at max side 8: an 8 x 4 map. ImageNet-normalised:
    # red (1 - 0.485) / 0.229, green (0 - 0.456) / 0.224 < 0 (clipped to 0), blue
    # (128/255 - 0.406) / 0.225; the map is their mean.
    path = _png(tmp_path / "p.png", size=(8, 16), colour=(255, 0, 128))
    attention_map(_describer(_Identity(), torch.nn.Identity(), 8), path)
    ((image, locations, grid_hw, options),) = heat_calls
    assert image.shape == (3, 16, 8) and bool((image[0] == 255).all())
    assert locations.dtype == np.int64 and locations.shape == (0,)
    expected = ((1 - 0.485) / 0.229 + (128 / 255 - 0.406) / 0.225) / 3
    assert grid_hw == (8, 4) and list(options) == ["scores"]
    np.testing.assert_allclose(options["scores"], np.full((8, 4), expected), rtol=1e-6)


def test_attention_map_uses_the_backbone_s_own_normalisation(tmp_path: Path, heat_calls) -> None:
    backbone = _Identity()
    backbone.input_mean, backbone.input_std = (0.0, 0.0, 0.0), (1.0, 1.0, 0.5)
    path = _png(tmp_path / "p.png", size=(6, 6), colour=(255, 51, 0))
    attention_map(_describer(backbone, torch.nn.Identity(), 3), path)
    ((_, _, grid_hw, options),) = heat_calls
    assert grid_hw == (3, 3)
    np.testing.assert_allclose(options["scores"], np.full((3, 3), (1 + 0.2) / 3), rtol=1e-6)


def test_attention_map_outlines_a_top_k_head_s_regions(tmp_path: Path, heat_calls) -> None:
    picture = np.zeros((8, 8, 3), dtype=np.uint8)
    picture[2, 5] = picture[6, 1] = 255  # two bright cells
    path = tmp_path / "p.png"
    Image.fromarray(picture).save(path)
    torch.manual_seed(0)
    head = TopKRegionHead(3, num_classes=2, k=2)
    attention_map(_describer(_Identity(), head, 8), path)
    ((_, locations, _, _),) = heat_calls
    pixels = torch.from_numpy(picture).permute(2, 0, 1).float()[None] / 255
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    batch = (pixels - mean) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.inference_mode():
        expected = head.forward_regions(batch).locations[0].numpy()
    np.testing.assert_array_equal(locations, expected)
    assert locations.shape == (2,)


def test_attention_map_refuses_a_non_describer(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="^describer: expected a Describer, got SimpleNamespace"):
        attention_map(SimpleNamespace(), _png(tmp_path / "p.png"))


def test_wrong_and_rejected_cards_get_a_heat_map(result, monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: list[str] = []

    given = _describer(_Identity(), _Identity(), 8)

    def fake_map(describer, path):
        assert describer is given
        drawn.append(Path(path).name)
        return Image.new("RGB", (320, 100))

    monkeypatch.setattr(report_module, "attention_map", fake_map)
    cards = _cards(render_html(result, describer=given))
    assert drawn == ["q_unknown.png", "q_wrong.png", "q_rejected.png"]
    heat = '<figure><img alt="where it looks" src="data:image/jpeg;base64,'
    assert [heat in card for card in cards] == [True, True, True, False]


# --------------------------------------------------------------------------- the file


def test_write_report_into_new_nested_and_empty_folders(result, tmp_path: Path) -> None:
    nested = tmp_path / "a" / "b"
    written = write_report(result, nested)
    assert written == nested / REPORT_FILE == nested / "index.html"
    assert os.listdir(nested) == ["index.html"]  # no temporary file left
    assert stat.S_IMODE(written.stat().st_mode) == 0o644
    page = written.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "q_wrong.png" in page
    empty = tmp_path / "empty"
    empty.mkdir()
    assert write_report(result, empty) == empty / "index.html"  # an empty folder: no force
    assert write_report(result, nested, force=True).read_text(encoding="utf-8") == page


def test_write_report_refusals(result, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="^report: folder .* exists and is not empty"):
        write_report(result, tmp_path)
    with pytest.raises(NotADirectoryError, match="^report: .*notes.txt' exists and is not a"):
        write_report(result, tmp_path / "notes.txt")
    with pytest.raises(TypeError, match="^result: expected an EvaluationResult, got dict"):
        write_report({"queries": 1}, tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_a_failed_write_leaves_nothing_behind(
    result, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    moves: list[tuple[Path, Path]] = []

    def fail(source, target):
        moves.append((Path(source), Path(target)))
        raise OSError("disk full")

    monkeypatch.setattr(report_module.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_report(result, tmp_path / "r")
    assert os.listdir(tmp_path / "r") == []
    # written beside the report (one file system: the replace is atomic), as a hidden file
    ((source, target),) = moves
    assert source.parent == target.parent == tmp_path / "r" and target.name == "index.html"
    assert source.name.startswith(".report-") and source.name.endswith(".html")


def test_the_page_escapes_names(result) -> None:
    assert html.escape("s<2>") in render_html(result)


def test_write_report_passes_the_describer_on(
    result, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report_module, "attention_map", lambda d, p: Image.new("RGB", (8, 8)))
    describer = _describer(_Identity(), _Identity(), 8)
    page = write_report(result, tmp_path / "r", describer=describer).read_text(encoding="utf-8")
    assert page.count("where it looks</figcaption>") == 3  # wrong and rejected queries


def test_the_page_holds_nothing_between_its_parts(result) -> None:
    result.problems = []
    page = render_html(result)
    # no object table, no problems: the metrics table, then the plots, then the queries
    assert f'{_metrics_table(result.metrics)}\n\n<div class="plots">' in page
    assert "</div>\n\n<h2>Queries (wrong, then rejected, then right)</h2>\n" in page


def test_a_card_shows_the_query_then_its_answer(result, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report_module, "_thumbnail_uri", lambda path: f"uri:{Path(path).stem}")
    boxed: list[QueryOutcome] = []

    def boxed_figure(outcome: QueryOutcome) -> str:
        boxed.append(outcome)
        return f"<figure>boxes of {outcome.spec.path.name}</figure>"

    monkeypatch.setattr(report_module, "boxed_figure", boxed_figure)
    result.outcomes[0] = dataclasses.replace(result.outcomes[0], objects=())
    unknown, wrong, rejected, right_card = _cards(render_html(result))
    assert wrong.startswith(
        '<div class="result wrong"><figure><img alt="query: q_wrong.png" src="uri:q_wrong">'
        '<figcaption>query: q_wrong.png</figcaption></figure>\n<div class="answer">'
    )  # no heat map without a describer, nothing else between
    assert boxed == [result.outcomes[0]]  # an outcome with objects (even none found)
    assert right_card.startswith(
        '<div class="result right"><figure>boxes of q_right.png</figure>\n<div class="answer">'
    )


def test_plots_are_png_whatever_the_saving_defaults() -> None:
    figure = Figure(figsize=(2, 2))
    figure.subplots().plot([0, 1], [0, 1])
    with matplotlib.rc_context({"savefig.format": "svg"}):
        uri = _plot_uri(figure)
    data = base64.b64decode(uri.removeprefix("data:image/png;base64,"))
    assert Image.open(io.BytesIO(data)).format == "PNG"


def test_figure_markup_with_and_without_a_picture() -> None:
    assert report_module._figure("", "q <1>") == (
        "<figure><div>(no image)</div><figcaption>q &lt;1&gt;</figcaption></figure>"
    )
    assert report_module._figure("data:x", "a", true=True) == (
        '<figure class="true"><img alt="a" src="data:x"><figcaption>a</figcaption></figure>'
    )


def test_pr_curve_takes_the_answers_by_decreasing_confidence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    figures: list[Figure] = []
    monkeypatch.setattr(report_module, "_plot_uri", lambda f: figures.append(f) or "x")
    outcomes = [
        _outcome(tmp_path, "low_wrong.png", ("a",), "b", 0.3, [], None),
        _outcome(tmp_path, "high_right.png", ("a",), "a", 0.9, [], None),
        _outcome(tmp_path, "mid_right.png", ("b",), "b", 0.6, [], None),
        _outcome(tmp_path, "rejected.png", ("c",), None, 0.1, [], None),
    ]
    report_module._pr_curve(outcomes)
    (line,) = figures[0].axes[0].lines
    # by confidence: right, right, wrong; four known queries
    np.testing.assert_allclose(line.get_xdata(), [1 / 4, 2 / 4, 2 / 4])
    np.testing.assert_allclose(line.get_ydata(), [1, 1, 2 / 3])


def test_metrics_table_is_the_rows_and_cells_alone() -> None:
    metrics = {**dict.fromkeys(SUMMARY_KEYS, 0.25), "queries": 2, "groups": {"g": {"queries": 1}}}
    header = "".join(f"<th>{key}</th>" for key in SUMMARY_KEYS)
    assert _metrics_table(metrics) == (
        f'<table class="metrics"><tr><th>group</th>{header}</tr>'
        f"<tr><td>all</td><td>2</td>{'<td>0.250</td>' * 9}</tr>"
        f"<tr><td>g</td><td>1</td>{'<td>–</td>' * 9}</tr></table>"
    )
