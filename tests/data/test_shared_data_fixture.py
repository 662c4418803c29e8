"""The shared_data fixture: missing data skips on a developer's machine, fails in CI (CI=true)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("ci", "outcome"), [(None, "1 skipped"), ("true", "1 error"), ("0", "1 skipped")]
)
def test_missing_shared_data(tmp_path: Path, ci: str | None, outcome: str) -> None:
    probe = tmp_path / "test_probe.py"
    probe.write_text("def test_needs_data(shared_data):\n    assert shared_data.is_dir()\n")
    env = {**os.environ, "PYINSTANCE_SHARED": str(tmp_path / "nowhere")}
    env.pop("CI", None)
    if ci is not None:
        env["CI"] = ci
    result = subprocess.run(
        [
            sys.executable,
            "-P",
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--rootdir={tmp_path}",
            "--confcutdir",
            str(TESTS),
            "-c",
            os.devnull,
            "-p",
            "conftest",
            str(probe),
        ],
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": str(TESTS)},
        timeout=120,
    )
    assert outcome in result.stdout, result.stdout + result.stderr
    if outcome == "1 error":  # a fixture that fails makes the run fail
        assert result.returncode != 0
        assert "CI is set, so this is a failure, not a skip" in result.stdout
    else:
        assert result.returncode == 0
