"""Report details the unit tests leave open: the page is UTF-8 whatever the locale says
(its dashes and names are not ASCII), and the heat map names a bad image."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import sys
from pyinstance.eval.evaluate import EvaluationResult
from pyinstance.eval.report import write_report
result = EvaluationResult({}, [], [], 0, "mus\\u00e9e \\u2713", {}, "nn", None)
write_report(result, sys.argv[1])
print(sys.getfilesystemencoding(), __import__("locale").getpreferredencoding(False))
"""


def test_report_is_written_in_utf8_under_an_ascii_locale(tmp_path: Path) -> None:
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    env.pop("PYTHONIOENCODING", None)
    env["PYTHONPATH"] = os.pathsep.join(path for path in sys.path if path)  # this pyinstance
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "report")],
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "ascii" in done.stdout.lower().replace("ansi_x3.4-1968", "ascii")  # the locale was ASCII
    page = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    assert "index musée ✓" in page and "<td>–</td>" in page


def test_attention_map_names_a_bad_image_image() -> None:
    import pytest
    import torch

    from pyinstance.eval.report import attention_map

    from .test_report_units import _describer, _Identity

    describer = _describer(_Identity(), torch.nn.Identity(), 8)
    with pytest.raises(TypeError, match="^image: expected a path, PIL image, numpy array"):
        attention_map(describer, 42)


def test_cards_are_one_after_the_other(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    from pyinstance.eval.report import render_html

    from .test_report_units import result as make_result

    page = render_html(make_result.__wrapped__(tmp_path, monkeypatch))
    start = page.index('<div class="result ')
    end = page.rindex("</div></div>") + len("</div></div>")
    pieces = [p for p in re.split(r'(?=<div class="result )', page[start:end]) if p]
    assert len(pieces) == 4 and all(p.endswith("</div></div>\n") for p in pieces[:-1])


@pytest.mark.filterwarnings("error")
def test_problems_are_one_list_item_each(tmp_path: Path) -> None:
    from pyinstance.data.manifest import RowProblem
    from pyinstance.eval.evaluate import EvaluationResult
    from pyinstance.eval.report import render_html

    problems = [RowProblem("m.csv:2", "first"), RowProblem("m.csv:3", "second")]
    page = render_html(EvaluationResult({}, [], problems, 0, "ix", {}, "nn", None))
    assert '<ul class="problems"><li>m.csv:2: first</li><li>m.csv:3: second</li></ul>' in page
