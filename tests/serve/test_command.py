"""``pyinstance serve``: bad arguments are one error message, not a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyinstance.cli import build_parser, main


def test_serve_is_a_command_with_its_options() -> None:
    args = build_parser().parse_args(["serve", "ix", "--port", "9000", "--workers", "3"])
    assert (args.index, args.host, args.port, args.workers) == ("ix", "127.0.0.1", 9000, 3)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--port", "70000"], "--port"),
        (["--workers", "0"], "--workers"),
        (["--max-upload-mb", "0"], "--max-upload-mb"),
    ],
)
def test_bad_options(tmp_path: Path, capsys, arguments: list[str], message: str) -> None:
    assert main(["serve", str(tmp_path), *arguments]) == 2
    assert message in capsys.readouterr().err


def test_absent_index_and_empty_token_file(tmp_path: Path, built_index: Path, capsys) -> None:
    assert main(["serve", str(tmp_path / "absent")]) == 2
    assert "no such directory" in capsys.readouterr().err
    empty = tmp_path / "token"
    empty.write_text("\n")
    assert main(["serve", str(built_index), "--token-file", str(empty)]) == 2
    assert "is empty" in capsys.readouterr().err
