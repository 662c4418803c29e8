"""The evaluation report: self-contained, ordered, and rendered by a real headless browser."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pyinstance.eval.evaluate import EvaluationResult
from pyinstance.eval.report import REPORT_FILE, attention_map, render_html, write_report
from pyinstance.index import Describer, InstanceIndex, Recipe

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_IN_CI = os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}
_IMG = re.compile(r"<img\b[^>]*\bsrc=\"([^\"]*)\"")

#: Appended to a copy of the report: writes into the DOM how many images failed to load.
_PROBE = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const broken = images.filter((i) => !i.complete || i.naturalWidth === 0).length;
  document.body.setAttribute("data-images", String(images.length));
  document.body.setAttribute("data-broken", String(broken));
});
</script></body>"""


@pytest.fixture(scope="module")
def report(
    evaluation: EvaluationResult,
    pairs_index: InstanceIndex,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    folder = tmp_path_factory.mktemp("report")
    return write_report(evaluation, folder, describer=pairs_index.describer)


def test_page_is_self_contained(report: Path) -> None:
    page = report.read_text(encoding="utf-8")
    sources = _IMG.findall(page)
    assert len(sources) >= 9 + 2  # a query each, the two plots, references, heat maps
    assert all(src.startswith("data:image/") for src in sources)
    text = re.sub(r"data:image/[a-z]+;base64,[A-Za-z0-9+/=]*", "", page)
    assert not re.search(r"https?:|//|url\(", text, re.IGNORECASE)
    assert "<link" not in page and "@import" not in page


def test_wrong_then_rejected_then_right_with_heat_maps(
    report: Path, evaluation: EvaluationResult
) -> None:
    page = report.read_text(encoding="utf-8")
    verdicts = re.findall(r'<div class="result (\w+)">', page)
    assert len(verdicts) == len(evaluation.outcomes)
    order = {"wrong": 0, "rejected": 1, "right": 2}
    assert verdicts == sorted(verdicts, key=order.__getitem__)
    not_right = sum(o.verdict != "right" for o in evaluation.outcomes)
    assert not_right == 4  # box_copy, rubber_copy, basket_copy, leuvenB (accepted or not)
    assert page.count("where it looks</figcaption>") == not_right
    for problem in evaluation.problems:
        assert str(problem).split(":")[-1].strip()[:20] in page


def test_without_describer_no_heat_maps(evaluation: EvaluationResult) -> None:
    page = render_html(evaluation)
    assert "where it looks" not in page
    assert 'alt="precision-recall curve"' in page and 'alt="confidence histogram"' in page


def test_existing_report_is_not_overwritten_without_force(
    evaluation: EvaluationResult, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="force"):
        write_report(evaluation, tmp_path)
    written = write_report(evaluation, tmp_path, force=True)
    assert written == tmp_path / REPORT_FILE and (tmp_path / "notes.txt").read_text() == "mine"
    with pytest.raises(NotADirectoryError):
        write_report(evaluation, tmp_path / "notes.txt")
    with pytest.raises(TypeError, match="result"):
        write_report({"queries": 1}, tmp_path / "other")


def test_attention_map_is_the_image_size(pairs_index: InstanceIndex) -> None:
    source = pairs_index.images()[0]["source"]
    picture = attention_map(pairs_index.describer, source)
    assert picture.size == Image.open(source).size
    with pytest.raises(TypeError, match="describer"):
        attention_map(pairs_index, source)


@pytest.mark.skipif(CHROMIUM is None and not _IN_CI, reason="chromium is not installed")
def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    assert CHROMIUM is not None, "CI must install chromium (apt-get install -y chromium)"
    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text(encoding="utf-8").replace("</body>", _PROBE))
    flags = [CHROMIUM, "--headless=new", "--disable-gpu", "--no-sandbox", "--hide-scrollbars"]
    flags += ["--virtual-time-budget=10000", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [*flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=180
    ).stdout
    images = re.search(r'data-images="(\d+)"', dom)
    broken = re.search(r'data-broken="(\d+)"', dom)
    assert images and broken, dom[:500]
    assert int(images.group(1)) == len(_IMG.findall(report.read_text(encoding="utf-8")))
    assert broken.group(1) == "0"
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*flags, f"--screenshot={shot}", "--window-size=1200,2000", report.as_uri()],
        capture_output=True,
        timeout=180,
        check=True,
    )
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (2000, 1200)
    assert pixels.std() > 20  # text, thumbnails and plots, not a blank page


def test_attention_map_outlines_the_regions_of_a_top_k_region_head(
    pairs_index: InstanceIndex,
) -> None:
    source = pairs_index.images()[0]["source"]
    recipe = Recipe(
        backbone="efficientnet_lite0",
        head="topk_region",
        dim=1280,
        max_side=160,
        head_params={"k": 3, "num_classes": 5},
    )
    red = (255, 0, 0)
    regions = np.asarray(attention_map(Describer(recipe), source))
    global_map = np.asarray(attention_map(pairs_index.describer, source))
    assert (regions == red).all(axis=-1).sum() > 3 * 4  # three outlined cells
    assert (global_map == red).all(axis=-1).sum() < (regions == red).all(axis=-1).sum()
