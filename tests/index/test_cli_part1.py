"""``pyinstance index`` parsers (``add_index_commands``, ``_postprocess_options``), parse only.

What the help must do, not its wording (error messages are not pinned either): every option
and sub-command has a help text, the defaults it shows are the values the options take, and
each sub-command runs its own function. Milliseconds a test, for mutation testing.
"""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from pyinstance.cli import build_parser
from pyinstance.index import cli
from pyinstance.index.recipe import DEFAULT_RECIPE, WHITEN_MIN_REFERENCES

COMMANDS = ("build", "add", "update", "remove", "compact", "refit", "info")
#: The positional arguments written without a help text (their metavar says it all).
NO_HELP = {
    ("add", "index"), ("add", "source"), ("update", "index"), ("update", "source"),
    ("remove", "index"), ("compact", "index"), ("refit", "index"), ("info", "index"),
}  # fmt: skip


def sub_parsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def index_parser() -> argparse.ArgumentParser:
    return sub_parsers(build_parser()).choices["index"]


def command(name: str) -> argparse.ArgumentParser:
    return sub_parsers(index_parser()).choices[name]


def shortest(name: str) -> list[str]:
    """The shortest command line of sub-command ``name``."""
    rest = {"build": ["s", "-o", "ix"], "add": ["ix", "s"], "update": ["ix", "s"]}
    return [name, *rest.get(name, ["ix", "--image", "i"] if name == "remove" else ["ix"])]


def shown_help(parser: argparse.ArgumentParser, flag: str) -> str:
    """The help of one option as ``--help`` prints it (``%(default)s`` expanded)."""
    action = parser._option_string_actions[flag]
    return " ".join(parser._get_formatter()._expand_help(action).split())


def test_the_index_command_and_its_sub_commands_have_a_help_text() -> None:
    (text,) = [a.help for a in sub_parsers(build_parser())._choices_actions if a.dest == "index"]
    assert isinstance(text, str) and text.strip()
    texts = {a.dest: a.help for a in sub_parsers(index_parser())._choices_actions}
    assert set(texts) == set(COMMANDS)
    for name, text in texts.items():
        assert isinstance(text, str) and text.strip(), name


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_has_a_help_text(name: str) -> None:
    for action in command(name)._actions:
        if (name, action.dest) in NO_HELP:
            assert action.help is None, action.dest
        else:
            assert isinstance(action.help, str) and action.help.strip(), (name, action.dest)


def test_post_processing_options_are_a_titled_group_of_build() -> None:
    groups = {
        group.title: {a.dest for a in group._group_actions}
        for group in command("build")._action_groups
    }
    titled = [
        dests for title, dests in groups.items() if title and title.startswith("post-processing")
    ]
    assert titled == [
        {
            "whiten", "whiten_min_references", "whiten_method", "whiten_from", "whiten_dim",
            "shrinkage", "whiten_ridge", "dba", "dba_alpha", "qe", "alpha_qe",
            "scale_weights", "matrix_scoring",
        }
    ]  # fmt: skip


def test_help_shows_the_defaults_the_options_take() -> None:
    build = command("build")
    assert shown_help(build, "--backbone").endswith(f"(default: {DEFAULT_RECIPE.backbone})")
    assert shown_help(build, "--head").endswith(f"(default: {DEFAULT_RECIPE.head})")
    assert shown_help(build, "--shrinkage").endswith("(default: 1.0)")
    assert shown_help(build, "--whiten-ridge").endswith("(default: 0.0)")
    assert shown_help(build, "--alpha-qe").endswith("(default: 0.0)")
    for flag in ("--whiten-dim", "--dba", "--dba-alpha", "--qe"):  # no default: None not shown
        assert "None" not in shown_help(build, flag), flag
    assert "(default: on)" in shown_help(build, "--whiten")
    assert shown_help(build, "--whiten-min-references").endswith(
        f"(default: {WHITEN_MIN_REFERENCES})"
    )
    side = DEFAULT_RECIPE.query_max_side
    assert shown_help(build, "--query-max-side").endswith(f"(default: {side or 'same'})")
    windows = "default" if DEFAULT_RECIPE.query_windows else "none"
    assert shown_help(build, "--windows").endswith(f"default: {windows}")


def test_option_values_have_their_types() -> None:
    args = index_parser().parse_args(
        ["build", "s", "-o", "ix", "--whiten-dim", "4", "--shrinkage", "1", "--whiten-ridge",
         "2", "--dba", "3", "--dba-alpha", "1", "--qe", "2", "--alpha-qe", "1",
         "--whiten-min-references", "5", "--max-side", "9"]
    )  # fmt: skip
    values = {
        key: getattr(args, key)
        for key in (
            "whiten_dim", "shrinkage", "whiten_ridge", "dba", "dba_alpha", "qe", "alpha_qe",
            "whiten_min_references", "max_side",
        )
    }  # fmt: skip
    assert values == {
        "whiten_dim": 4, "shrinkage": 1.0, "whiten_ridge": 2.0, "dba": 3, "dba_alpha": 1.0,
        "qe": 2, "alpha_qe": 1.0, "whiten_min_references": 5, "max_side": 9,
    }  # fmt: skip
    assert {key: type(value) for key, value in values.items()} == {
        "whiten_dim": int, "shrinkage": float, "whiten_ridge": float, "dba": int,
        "dba_alpha": float, "qe": int, "alpha_qe": float, "whiten_min_references": int,
        "max_side": int,
    }  # fmt: skip
    for flag in ("--whiten-dim", "--dba", "--qe", "--whiten-min-references", "--max-side"):
        with pytest.raises(SystemExit):
            index_parser().parse_args(["build", "s", "-o", "ix", flag, "1.5"])


def test_whiten_is_a_switch_both_ways() -> None:
    parse = index_parser().parse_args
    assert parse(["build", "s", "-o", "ix", "--no-whiten"]).whiten is False
    assert parse(["build", "s", "-o", "ix", "--no-whiten", "--whiten"]).whiten is True
    assert parse(["build", "s", "-o", "ix", "--whiten-from", "a"]).whiten_from == ["a"]


@pytest.mark.parametrize("name", COMMANDS)
def test_each_sub_command_runs_its_own_function(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    called = []
    for other in COMMANDS:
        monkeypatch.setattr(
            cli, f"_{other}", lambda args, console, other=other: called.append(other) or 0
        )
    args = index_parser().parse_args(shortest(name))
    assert args.index_command == name
    assert args.run(args) == 0 and called == [name]


@pytest.mark.parametrize("name", COMMANDS)
def test_json_is_a_switch_of_every_sub_command(name: str) -> None:
    argv = shortest(name)
    assert index_parser().parse_args(argv).json is False
    assert index_parser().parse_args([*argv, "--json"]).json is True
    with pytest.raises(SystemExit):
        index_parser().parse_args([*argv, "--json=yes"])


def test_output_has_a_long_and_a_short_name() -> None:
    parse = index_parser().parse_args
    assert parse(["build", "s", "--output", "ix"]).output == "ix"
    assert parse(["build", "s", "-o", "ix"]).output == "ix"


def test_build_defaults_follow_the_default_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read when the parser is built: a recipe with a query side and windows shows them."""
    recipe = dataclasses.replace(
        DEFAULT_RECIPE, backbone="b", head="h", scales=(2.0,), max_side=99,
        query_max_side=320, query_windows=((1.0, 1),), dtype="float16",
    )  # fmt: skip
    monkeypatch.setattr(cli, "DEFAULT_RECIPE", recipe)
    args = index_parser().parse_args(["build", "s", "-o", "ix"])
    assert (args.backbone, args.head, args.scales, args.max_side) == ("b", "h", (2.0,), 99)
    assert (args.query_max_side, args.windows, args.dtype) == (320, ((1.0, 1),), "float16")
    assert shown_help(command("build"), "--query-max-side").endswith("(default: 320)")
    assert shown_help(command("build"), "--windows").endswith("default: default")
