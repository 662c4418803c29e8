"""The service's pages are read as UTF-8 whatever the locale (their text is not ASCII)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyinstance.serve.app as app_module

SCRIPT = """
import sys
from pyinstance.serve.app import page
sys.stdout.buffer.write(page(sys.argv[1]).body)
"""


def test_pages_are_read_as_utf8_under_an_ascii_locale() -> None:
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    env.pop("PYTHONIOENCODING", None)
    env["PYTHONPATH"] = os.pathsep.join(path for path in sys.path if path)  # this pyinstance
    for name in ("visitor.html", "curator.html"):
        expected = (Path(app_module.__file__).parent / "static" / name).read_bytes()
        assert any(byte > 127 for byte in expected)  # the test means something
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT, name], env=env, capture_output=True, check=False
        )
        assert done.returncode == 0, done.stderr.decode("utf-8", "replace")
        assert done.stdout == expected
