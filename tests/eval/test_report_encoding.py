"""The report is UTF-8 whatever the locale says (a page's dashes and names are not ASCII)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
