"""``pyinstance index``'s summary, error guard and small helpers, called directly.

``_summary`` is given a stand-in index (its ``info()``, ``path`` and ``metadata()``) and a
real ``AddReport``, so that every printed number is chosen here and worked out by hand:
the JSON summary verbatim, the text table row by row, the skip lines and their limit.
"""

from __future__ import annotations

import argparse
import json
from io import StringIO
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from pyinstance.cli import build_parser
from pyinstance.index import cli
from pyinstance.index.describer import FileError
from pyinstance.index.report import AddReport


class FakeIndex:
    """What ``_summary`` reads of an index."""

    def __init__(self, info: dict, metadata: dict, path: str = "/data/ix") -> None:
        self._info = info
        self._metadata = metadata
        self.path = Path(path)

    def info(self) -> dict:
        return dict(self._info)

    def metadata(self) -> dict:
        return dict(self._metadata)


def index_info(**changes) -> dict:
    return {
        "images": 10,
        "instances": 5,
        "size_on_disk": 1536,
        "whitening_skipped": None,
        "stale_thresholds": {},
    } | changes


def summary(
    capsys: pytest.CaptureFixture,
    report: AddReport,
    seconds: float,
    engine: str | None = "torch",
    *,
    json_: bool = False,
    console: Console | None = None,
    info: dict | None = None,
) -> tuple[str, str]:
    """(what the console shows, what stdout shows) of one ``_summary`` call that returns 0."""
    buffer = StringIO()
    console = console or Console(file=buffer, width=200, color_system=None)
    console.file = buffer
    index = FakeIndex(info or index_info(), {"a": {"title": "A"}, "b": {"title": "B"}})
    args = argparse.Namespace(json=json_)
    assert cli._summary(args, console, index, report, seconds, engine) == 0
    out, err = capsys.readouterr()
    assert err == ""
    return buffer.getvalue(), out


def table_rows(shown: str) -> tuple[str, list[tuple[str, str]]]:
    """The title and the (label, value) rows of a rich table without a header."""
    lines = shown.splitlines()
    title = lines[0].strip()
    assert lines[1].startswith("┌") and lines[1].endswith("┐")  # no header row above
    end = next(i for i, line in enumerate(lines) if line.startswith("└"))
    rows = []
    for line in lines[2:end]:
        cells = [cell.strip() for cell in line.strip("│").split("│")]
        rows.append((cells[0], cells[1]))
    return title, rows


# the JSON summary ------------------------------------------------------------------------

REPORT = AddReport(
    added=3,
    updated=2,
    unchanged=1,
    skipped=(FileError("/photos/bad.png", "cannot decode"),),
    instances=4,
    seconds=99.0,
)


def test_json_summary_verbatim(capsys) -> None:
    info = index_info(whitening_skipped="skipped: 3 of 8 references", stale_thresholds={"t": "r"})
    shown, out = summary(capsys, REPORT, 2.71828, "openvino", json_=True, info=info)
    assert shown == ""  # nothing on the console
    expected = {
        "added": 3,
        "updated": 2,
        "unchanged": 1,
        "skipped": [{"path": "/photos/bad.png", "reason": "cannot decode"}],
        "instances": 4,
        "seconds": 2.718,  # the measured time, rounded to ms, not the report's
        "engine": "openvino",
        "images_per_second": 1.84,  # (3 + 2) / 2.71828 = 1.8394
        "index": "/data/ix",
        "images": 10,
        "size_on_disk": 1536,
        "instances_with_metadata": 2,
        "whitening_skipped": "skipped: 3 of 8 references",
        "stale_thresholds": {"t": "r"},
    }
    assert out == json.dumps(expected, indent=2) + "\n"
    assert out.startswith('{\n  "added": 3,\n  "updated": 2,\n')


@pytest.mark.parametrize(
    ("added", "updated", "seconds", "rate"),
    [
        (1, 0, 0.5, 2.0),  # under a second
        (0, 1, 4.0, 0.25),  # updated images count
        (2, 1, 3.0, 1.0),
        (5, 0, 3.0, 1.67),  # 1.6667 to 2 places
        (0, 0, 1.0, None),  # nothing described
        (2, 0, 0.0, None),  # no measurable time
        (2, 0, -1.0, None),
    ],
)
def test_json_throughput(added, updated, seconds, rate, capsys) -> None:
    report = AddReport(added=added, updated=updated)
    _, out = summary(capsys, report, seconds, json_=True)
    assert json.loads(out)["images_per_second"] == rate


def test_json_seconds_are_rounded_to_milliseconds(capsys) -> None:
    _, out = summary(capsys, AddReport(added=0), 1.23456, None, json_=True)
    assert (json.loads(out)["seconds"], json.loads(out)["engine"]) == (1.235, None)


# the text summary ------------------------------------------------------------------------


def test_text_summary_rows(capsys) -> None:
    info = index_info(whitening_skipped="skipped: 3 of 8 references")
    shown, out = summary(capsys, REPORT, 2.71828, "openvino", info=info)
    assert out == ""
    title, rows = table_rows(shown)
    assert title == "index /data/ix"
    assert rows == [
        ("images added", "3"),
        ("images updated", "2"),
        ("unchanged (already indexed)", "1"),
        ("skipped", "1"),
        ("images in the index", "10"),
        ("instances", "5"),  # the index's, not the report's 4
        ("instances with metadata", "2"),
        ("time", "2.7 s"),
        ("throughput", "1.84 images/s (openvino engine)"),
        ("size on disk", "1.5 KiB"),
        ("whitening", "skipped: 3 of 8 references"),
    ]
    assert shown.splitlines()[-1] == "skipped /photos/bad.png: cannot decode"


def test_text_summary_leaves_out_empty_rows(capsys) -> None:
    shown, _ = summary(capsys, AddReport(added=0, unchanged=2), 0.04, None)
    title, rows = table_rows(shown)
    assert rows == [
        ("images added", "0"),
        ("unchanged (already indexed)", "2"),
        ("skipped", "0"),
        ("images in the index", "10"),
        ("instances", "5"),
        ("instances with metadata", "2"),
        ("time", "0.0 s"),
        ("size on disk", "1.5 KiB"),
    ]  # no update, no throughput, no whitening note
    assert shown.splitlines()[-1].startswith("└")  # nothing after the table


def test_text_summary_warns_of_stale_thresholds(capsys) -> None:
    info = index_info(stale_thresholds={"open_threshold": "fitted on version 3"})
    shown, _ = summary(capsys, AddReport(added=1), 1.0, info=info)
    assert shown.splitlines()[-1] == "stale open_threshold: fitted on version 3"


def skips(count: int) -> AddReport:
    return AddReport(
        added=0, skipped=tuple(FileError(f"/p/{n}.png", "cannot decode") for n in range(count))
    )


@pytest.mark.parametrize(
    ("count", "listed", "more"),
    [(19, 19, None), (20, 20, None), (21, 20, 1), (23, 20, 3)],
)
def test_skips_are_listed_up_to_twenty(count, listed, more, capsys) -> None:
    shown, _ = summary(capsys, skips(count), 1.0)
    lines = shown.splitlines()
    end = max(i for i, line in enumerate(lines) if line.startswith("└"))
    after = lines[end + 1 :]
    expected = [f"skipped /p/{n}.png: cannot decode" for n in range(listed)]
    if more is not None:
        expected.append(f"... and {more} more skipped (see --json)")
    assert after == expected


def test_skip_lines_are_marked_up_escaped_and_not_wrapped(capsys) -> None:
    console = Console(force_terminal=True, color_system="standard", width=30)
    path = "/photos/instance 12/image 0042 [draft].png"
    report = AddReport(added=0, skipped=(FileError(path, "too small: 1x1 [min 32]"),))
    shown, _ = summary(capsys, report, 1.0, console=console)
    yellow, reset = "\x1b[33m", "\x1b[0m"
    assert shown.endswith(f"{yellow}skipped{reset} {path}: too small: 1x1 [min 32]\n")


# the engine that described -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("added", "updated", "engine"),
    [(1, 0, "openvino"), (0, 1, "openvino"), (2, 3, "openvino"), (0, 0, None)],
)
def test_engine_used(added, updated, engine) -> None:
    index = SimpleNamespace(describer=SimpleNamespace(engine="openvino"))
    report = AddReport(added=added, updated=updated, unchanged=4)
    assert cli._engine_used(index, report) == engine


# the error guard ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (ValueError("a", 2), "('a', 2)"),  # the error as str() writes it
        (KeyError("a", 2), "a"),  # a KeyError's first argument, unquoted
        (KeyError("it's"), "it's"),
        (FileNotFoundError(2, "No such file", "/x"), "[Errno 2] No such file: '/x'"),
    ],
)
def test_guarded_message(error: Exception, shown: str, capsys) -> None:
    def failing(args, console):
        raise error

    assert cli._guarded(failing)(argparse.Namespace(index_command="info")) == 2
    assert capsys.readouterr() == ("", f"pyinstance index info: error: {shown}\n")


def test_guarded_hands_a_console_and_the_arguments() -> None:
    seen = []
    args = argparse.Namespace(index_command="build")

    def command(given, console):
        seen.append((given, console))
        return 0

    assert cli._guarded(command)(args) == 0
    assert seen[0][0] is args and isinstance(seen[0][1], Console)


# parsers and value helpers --------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["index", *argv])


@pytest.mark.parametrize("command", ["build", "add", "update"])
def test_common_options(command: str) -> None:
    base = ["build", "s", "-o", "ix"] if command == "build" else [command, "ix", "s"]
    args = parse(*base)
    assert (args.json, args.no_progress) == (False, False)
    args = parse(*base, "--json", "--no-progress")
    assert (args.json, args.no_progress) == (True, True)
    args = parse(*base, "--no-progress")
    assert (args.json, args.no_progress) == (False, True)


@pytest.mark.parametrize("command", ["build", "add"])
def test_metadata_option(command: str, capsys) -> None:
    base = ["build", "s", "-o", "ix"] if command == "build" else [command, "ix", "s"]
    assert parse(*base).metadata is None
    assert parse(*base, "--metadata", "m.csv").metadata == "m.csv"
    with pytest.raises(SystemExit):
        parse(*base, "--metadata")
    assert "--metadata FILE" in capsys.readouterr().err  # the usage line


def test_floats() -> None:
    assert cli._floats("2") == (2.0,)
    assert cli._floats(" 1, 0.25 ,1e-1") == (1.0, 0.25, 0.1)
    assert isinstance(cli._floats("3"), tuple) and type(cli._floats("3")[0]) is float
    for bad in ("", "1,", "1;2", "1 2"):
        with pytest.raises(argparse.ArgumentTypeError, match="comma-separated numbers"):
            cli._floats(bad)


def test_params() -> None:
    assert cli._params([]) == {}
    assert cli._params(["t=true", "n=null", "f=1.5", 's="q"', 'o={"k": 1}']) == {
        "t": True,
        "n": None,
        "f": 1.5,
        "s": "q",
        "o": {"k": 1},
    }
    assert cli._params(["a=1", "a=2"]) == {"a": 2}  # the last one wins
    assert cli._params(["p=[1,"]) == {"p": "[1,"}  # not JSON: kept as text
    for bad in ("", "=", "=x", "x"):
        with pytest.raises(ValueError, match="--head-param: expected KEY=VALUE"):
            cli._params(["ok=1", bad])


def sub_parser(*names: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in names:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("build", ("json", "no_progress", "metadata")),
        ("add", ("json", "no_progress", "metadata")),
        ("update", ("json", "no_progress")),
    ],
)
def test_common_and_metadata_options_have_help(command: str, options: tuple[str, ...]) -> None:
    helps = {action.dest: action.help for action in sub_parser("index", command)._actions}
    for option in options:
        assert isinstance(helps[option], str) and len(helps[option]) > 10, option
