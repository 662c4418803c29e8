"""The sub-commands' argument parsers, parse only (nothing runs): every option's name, type,
default and value as the ``pyinstance`` command parses them, the values refused, and a help
text for every option (for mutation testing: milliseconds a test)."""

from __future__ import annotations

import argparse

import pytest

from pyinstance import __version__, cli, plugins
from pyinstance.commands import demo, evaluate, identify


def parse(*argv: str) -> dict[str, object]:
    return vars(cli.build_parser().parse_args(list(argv)))


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as raised:
        cli.build_parser().parse_args(list(argv))
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: pyinstance")
    return err


def sub_command(name: str) -> argparse.ArgumentParser:
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices[name]


def command_help(name: str) -> str | None:
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    (text,) = [a.help for a in commands._choices_actions if a.dest == name]
    return text


IDENTIFY_DEFAULTS = {
    "command": "identify",
    "top_k": 5,
    "threshold": None,
    "classifier": None,
    "json": False,
    "multi": False,
    "objects_threshold": None,
    "rerank": None,
    "engine": "auto",
    "run": identify._identify,
}


def test_identify_defaults() -> None:
    assert parse("identify", "idx", "a.jpg") == {
        **IDENTIFY_DEFAULTS,
        "index": "idx",
        "images": ["a.jpg"],
    }


def test_identify_every_option_given() -> None:
    args = parse(
        "identify", "idx", "a.jpg", "photos", "--top-k", "7", "--threshold", "0.25",
        "--classifier", "knn", "--json", "--multi", "--objects-threshold", "0.4",
        "--rerank", "none", "--engine", "torch",
    )  # fmt: skip
    assert args == {
        **IDENTIFY_DEFAULTS,
        "index": "idx",
        "images": ["a.jpg", "photos"],
        "top_k": 7,
        "threshold": 0.25,
        "classifier": "knn",
        "json": True,
        "multi": True,
        "objects_threshold": 0.4,
        "rerank": False,
        "engine": "torch",
    }
    assert type(args["top_k"]) is int
    assert type(args["threshold"]) is type(args["objects_threshold"]) is float


def test_identify_converts_the_numbers() -> None:
    args = parse("identify", "idx", "a.jpg", "--threshold", "1", "--objects-threshold", "0")
    assert (args["threshold"], args["objects_threshold"]) == (1.0, 0.0)
    assert type(args["threshold"]) is type(args["objects_threshold"]) is float
    assert parse("identify", "idx", "a.jpg", "--rerank", "v.pt")["rerank"] == "v.pt"


@pytest.mark.parametrize(
    "argv",
    [
        ("identify", "idx"),
        ("identify",),
        ("identify", "idx", "a.jpg", "--top-k", "2.5"),
        ("identify", "idx", "a.jpg", "--threshold", "high"),
        ("identify", "idx", "a.jpg", "--objects-threshold", "x"),
        ("identify", "idx", "a.jpg", "--json", "yes"),
        ("identify", "idx", "a.jpg", "--multi", "yes"),
        ("identify", "idx", "a.jpg", "--engine", "tensorrt"),
    ],
)
def test_identify_refuses(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]) -> None:
    assert "error:" in refused(capsys, *argv)


CALIBRATE_DEFAULTS = {
    "command": "calibrate",
    "far": 0.05,
    "classifier": "nn",
    "views": 4,
    "distractors": [],
    "objects": False,
    "scenes": 60,
    "references": 60,
    "json": False,
    "rerank": None,
    "engine": "auto",
    "run": identify._calibrate,
}


def test_calibrate_defaults() -> None:
    assert parse("calibrate", "idx") == {**CALIBRATE_DEFAULTS, "index": "idx"}


def test_calibrate_every_option_given() -> None:
    args = parse(
        "calibrate", "idx", "--far", "0.01", "--classifier", "knn", "--views", "2",
        "--distractors", "d1", "d2", "--objects", "--scenes", "12", "--references", "9",
        "--json", "--rerank", "none", "--engine", "onnxruntime",
    )  # fmt: skip
    assert args == {
        **CALIBRATE_DEFAULTS,
        "index": "idx",
        "far": 0.01,
        "classifier": "knn",
        "views": 2,
        "distractors": ["d1", "d2"],
        "objects": True,
        "scenes": 12,
        "references": 9,
        "json": True,
        "rerank": "none",  # calibrate's re-ranker is a name or a file, never "none"
        "engine": "onnxruntime",
    }
    assert [type(args[key]) for key in ("far", "views", "scenes", "references")] == [
        float,
        int,
        int,
        int,
    ]


def test_calibrate_distractors_may_be_given_empty() -> None:
    assert parse("calibrate", "idx", "--distractors")["distractors"] == []
    assert parse("calibrate", "idx", "--distractors", "x")["distractors"] == ["x"]
    assert type(parse("calibrate", "idx", "--far", "1")["far"]) is float


@pytest.mark.parametrize(
    "argv",
    [
        ("calibrate",),
        ("calibrate", "idx", "more"),
        ("calibrate", "idx", "--far", "low"),
        ("calibrate", "idx", "--views", "2.0"),
        ("calibrate", "idx", "--scenes", "many"),
        ("calibrate", "idx", "--references", "1e3"),
        ("calibrate", "idx", "--objects", "yes"),
        ("calibrate", "idx", "--json", "yes"),
        ("calibrate", "idx", "--rerank"),
        ("calibrate", "idx", "--engine", "cuda"),
    ],
)
def test_calibrate_refuses(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]) -> None:
    assert "error:" in refused(capsys, *argv)


EVALUATE_DEFAULTS = {
    "command": "evaluate",
    "extra": None,
    "json": None,
    "report": None,
    "force": False,
    "classifier": None,
    "threshold": None,
    "top_k": 5,
    "group": [],
    "multi": False,
    "rerank": None,
    "engine": "auto",
    "run": evaluate.run,
}


def test_evaluate_defaults() -> None:
    args = parse("evaluate", "idx", "--manifest", "m.csv")
    assert args == {**EVALUATE_DEFAULTS, "index": "idx", "manifest": "m.csv"}


def test_evaluate_every_option_given() -> None:
    args = parse(
        "evaluate", "idx", "--manifest", "m.csv", "--extra", "x.csv", "--json", "o.json",
        "--report", "rep", "--force", "--classifier", "knn", "--threshold", "0.5",
        "--top-k", "3", "--group", "crop=a,b", "--group", "all= c ", "--multi",
        "--rerank", "v.pt", "--engine", "openvino",
    )  # fmt: skip
    assert args == {
        **EVALUATE_DEFAULTS,
        "index": "idx",
        "manifest": "m.csv",
        "extra": "x.csv",
        "json": "o.json",
        "report": "rep",
        "force": True,
        "classifier": "knn",
        "threshold": 0.5,
        "top_k": 3,
        "group": [("crop", ("a", "b")), ("all", ("c",))],
        "multi": True,
        "rerank": "v.pt",
        "engine": "openvino",
    }
    assert type(args["threshold"]) is float
    assert type(parse("evaluate", "i", "--manifest", "m", "--threshold", "1")["threshold"]) is float


def test_evaluate_groups_do_not_leak_between_parses() -> None:
    assert parse("evaluate", "i", "--manifest", "m", "--group", "g=a")["group"] == [("g", ("a",))]
    assert parse("evaluate", "i", "--manifest", "m")["group"] == []


@pytest.mark.parametrize(
    "argv",
    [
        ("evaluate", "idx"),
        ("evaluate", "--manifest", "m.csv"),
        ("evaluate", "idx", "--manifest", "m.csv", "--top-k", "0"),
        ("evaluate", "idx", "--manifest", "m.csv", "--threshold", "x"),
        ("evaluate", "idx", "--manifest", "m.csv", "--force", "yes"),
        ("evaluate", "idx", "--manifest", "m.csv", "--multi", "yes"),
        ("evaluate", "idx", "--manifest", "m.csv", "--group", "nothing"),
        ("evaluate", "idx", "--manifest", "m.csv", "--engine", "cuda"),
    ],
)
def test_evaluate_refuses(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]) -> None:
    assert "error:" in refused(capsys, *argv)


def test_evaluate_top_k_names_the_text_refused(capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(capsys, "evaluate", "i", "--manifest", "m", "--top-k", "-3")
    assert "argument --top-k: expected an integer >= 1, got '-3'" in err
    err = refused(capsys, "evaluate", "i", "--manifest", "m", "--group", "=a")
    assert "argument --group: expected NAME=SET[,SET...], got '=a'" in err


@pytest.mark.parametrize(
    ("text", "value"), [("1", 1), ("12", 12), (" 4 ", 4), ("+2", 2)]
)  # fmt: skip
def test_positive_accepts(text: str, value: int) -> None:
    assert evaluate._positive(text) == value
    assert type(evaluate._positive(text)) is int


@pytest.mark.parametrize("text", ["0", "-1", "1.5", "one", ""])
def test_positive_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="expected an integer >= 1"):
        evaluate._positive(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("crop=a", ("crop", ("a",))),
        (" crop = a , b ,, c ", ("crop", ("a", "b", "c"))),
        ("x=a=b", ("x", ("a=b",))),
        ("x=,a,", ("x", ("a",))),
    ],
)
def test_group_parses(text: str, value: tuple[str, tuple[str, ...]]) -> None:
    assert evaluate._group(text) == value


@pytest.mark.parametrize("text", ["crop", "=a", " =a", "crop=", "crop= , ,", ""])
def test_group_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="expected NAME=SET"):
        evaluate._group(text)


def test_demo_defaults_and_options() -> None:
    assert parse("demo") == {
        "command": "demo",
        "out": "pyinstance-demo",
        "far": 0.05,
        "engine": "auto",
        "run": demo._demo,
    }
    args = parse("demo", "--out", "here", "--far", "1", "--engine", "torch")
    assert (args["out"], args["far"], args["engine"]) == ("here", 1.0, "torch")
    assert type(args["far"]) is float


@pytest.mark.parametrize("argv", [("demo", "--far", "x"), ("demo", "extra"), ("demo", "--out")])
def test_demo_refuses(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]) -> None:
    assert "error:" in refused(capsys, *argv)


@pytest.mark.parametrize("name", ["info", "plugins", "identify", "calibrate", "evaluate", "demo"])
def test_every_option_and_the_command_have_a_help_text(name: str) -> None:
    """Help wording itself is not pinned (as error messages are not): every option has one."""
    parser = sub_command(name)
    for action in parser._actions:
        assert isinstance(action.help, str) and action.help.strip(), action.dest
    text = command_help(name)
    assert isinstance(text, str) and text.strip()


def test_evaluate_top_k_help_shows_its_default() -> None:
    text = sub_command("evaluate").format_help()
    assert "(default: 5)" in " ".join(text.split())


def test_info_and_plugins_options() -> None:
    assert parse("info") == {"command": "info", "json": False, "run": cli._info}
    assert parse("info", "--json")["json"] is True
    assert parse("plugins") == {
        "command": "plugins",
        "kind": None,
        "json": False,
        "run": cli._plugins,
    }
    assert parse("plugins", "--kind", "head", "--json") == {
        "command": "plugins",
        "kind": "head",
        "json": True,
        "run": cli._plugins,
    }
    assert sub_command("plugins")._option_string_actions["--kind"].choices == list(plugins.HOOKS)


@pytest.mark.parametrize("argv", [("info", "--json", "x"), ("plugins", "--kind"), ("widgets",)])
def test_info_and_plugins_refuse(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]) -> None:
    assert "error:" in refused(capsys, *argv)


def test_version_and_description(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        cli.build_parser().parse_args(["--version"])
    assert raised.value.code == 0
    assert capsys.readouterr().out == f"pyinstance {__version__}\n"
    parser = cli.build_parser()
    assert (parser.prog, parser.description) == ("pyinstance", cli.__doc__)
    assert parse("info")["command"] == "info"  # the sub-command's name is kept as "command"
