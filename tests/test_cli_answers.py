"""The ``pyinstance`` command's own answers, in-process with fake build facts and a fake
registry: every row of ``info``, the ``plugins`` table and JSON, the options shared by the
sub-commands, and the one-line error of a refused command (written for mutation testing)."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import types

import pytest

import pyinstance
from pyinstance import _backend, cli, commands, engine, plugins
from pyinstance.idle_threads import SETTINGS
from pyinstance.plugins import PluginRegistry

BUILD = {
    "version": "9.8.7",
    "compiler": "GNU 1.2",
    "cpu": {
        "isa_compiled": ["generic", "avx2"],
        "isa_detected": "avx2",
        "isa_active": "generic",
        "bf16_dot": False,
        "cpu_features": [],
    },
    "openmp_threads": 3,
    "cuda_compiled": False,
    "cuda": None,
}
ENGINES = {
    "engines": ["torch", "onnxruntime"],
    "default": "onnxruntime",
    "openvino": None,
    "openvino_precision": None,
    "bf16": False,
    "int8": None,
}


def _rows(text: str) -> dict[str, str]:
    """The label -> value cells of a rich table of two columns."""
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("│┃").split("│")]
        if len(cells) == 2 and cells[0]:
            rows[cells[0]] = cells[1]
    return rows


@pytest.fixture
def facts(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    for name in SETTINGS:  # the command sets them: restored after the test
        monkeypatch.delenv(name, raising=False)
    build = json.loads(json.dumps(BUILD))
    engines = dict(ENGINES)
    monkeypatch.setattr(_backend, "build_info", lambda: build)
    monkeypatch.setattr(engine, "engine_info", lambda: engines)
    return build, engines


def test_info_rows_without_cuda(facts, capsys):
    build, _ = facts
    build["cuda_error"] = "libcudart missing"
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "pyinstance 9.8.7" in out.splitlines()[0]
    assert _rows(out) == {
        "C++ compiler": "GNU 1.2",
        "CPU ISA compiled": "generic, avx2",
        "CPU ISA detected / active": "avx2 / generic",
        "bf16 screening (mining)": "no",
        "CPU features": "-",
        "OpenMP threads": "3",
        "idle threads": "OMP_WAIT_POLICY=PASSIVE, OPENBLAS_THREAD_TIMEOUT=4",
        "inference engines": "torch, onnxruntime (active: onnxruntime)",
        "CUDA": "not compiled (libcudart missing)",
    }


def test_info_rows_with_openvino_and_cuda(facts, capsys):
    build, engines = facts
    build["cpu"]["bf16_dot"] = True
    build["cpu"]["cpu_features"] = ["avx2", "fma"]
    build["cuda"] = {
        "compiler": "NVIDIA 12.4",
        "architectures": ["80", "90"],
        "devices": [
            {"index": 0, "name": "H100", "capability": "9.0"},
            {"index": 1, "name": "A100", "capability": "8.0"},
        ],
    }
    engines.update(openvino="2026.1", openvino_precision="bf16", bf16=True, int8=True)
    assert cli.main(["info"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows["bf16 screening (mining)"] == "yes"
    assert rows["CPU features"] == "avx2 fma"
    assert rows["OpenVINO"] == "2026.1, computes in bf16 (native bf16: yes; int8: yes)"
    assert rows["CUDA compiler"] == "NVIDIA 12.4"
    assert rows["CUDA architectures"] == "80, 90"
    assert rows["CUDA devices"] == "0: H100 (sm 9.0), 1: A100 (sm 8.0)"
    assert "CUDA" not in rows


def test_info_without_cuda_error_or_visible_devices(facts, capsys):
    build, engines = facts
    assert cli.main(["info"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows["CUDA"] == "not compiled"
    assert "OpenVINO" not in rows
    build["cuda"] = {"compiler": "c", "architectures": [], "devices": []}
    engines.update(openvino="1.0", openvino_precision="fp32", bf16=False, int8=False)
    assert cli.main(["info"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows["CUDA devices"] == "none visible"
    assert (
        rows["OpenVINO"] == "1.0, computes in fp32 (native bf16: no; int8: no (pip install nncf))"
    )


def test_info_json_merges_the_engines(facts, capsys):
    build, engines = facts
    assert cli.main(["info", "--json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out) == {**BUILD, "inference": ENGINES, "idle_threads": SETTINGS}
    assert out.startswith('{\n  "version": "9.8.7",')  # indented by two


def test_aligned_columns():
    text = cli._aligned(("a", "bb"), [("long cell", "x"), ("y", "")])
    assert text.splitlines() == ["a          bb", "---------  --", "long cell  x", "y"]


def _fake_registry() -> PluginRegistry:
    def pyinstance_register_heads(register):
        register("zeta", object, aliases=("z", "last"))
        register("alpha", object)

    def pyinstance_register_losses(register):
        register("mine", object)

    registry = PluginRegistry(builtins=(), autoload=False)
    registry.register_plugin(
        types.SimpleNamespace(
            pyinstance_register_heads=pyinstance.hookimpl(pyinstance_register_heads)
        ),
        "fake.heads",
        "fake-dist",
    )
    registry.register_plugin(
        types.SimpleNamespace(
            pyinstance_register_losses=pyinstance.hookimpl(pyinstance_register_losses)
        ),
        "local",
    )
    return registry


def test_plugins_table(monkeypatch, capsys):
    monkeypatch.setattr(plugins, "registry", _fake_registry())
    assert cli.main(["plugins"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "kind  name   aliases  plugin      distribution",
        "----  -----  -------  ----------  ------------",
        "head  alpha  -        fake.heads  fake-dist",
        "head  zeta   z, last  fake.heads  fake-dist",
        "loss  mine   -        local       -",
    ]
    assert captured.err == ""


def test_plugins_json_of_one_kind(monkeypatch, capsys):
    monkeypatch.setattr(plugins, "registry", _fake_registry())
    assert cli.main(["plugins", "--kind", "head", "--json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out) == [
        {"kind": "head", "name": "alpha", "aliases": [], "plugin": "fake.heads", "distribution": "fake-dist"},
        {"kind": "head", "name": "zeta", "aliases": ["z", "last"], "plugin": "fake.heads", "distribution": "fake-dist"},
    ]  # fmt: skip
    assert out.startswith('[\n  {\n    "kind": "head",')
    assert cli.main(["plugins", "--kind", "loss", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["distribution"] is None


def test_plugins_kind_choices_are_the_kinds(capsys):
    with pytest.raises(SystemExit) as raised:
        cli.main(["plugins", "--kind", "widget"])
    assert raised.value.code == 2
    assert "invalid choice: 'widget'" in capsys.readouterr().err


def _refusing_command(error: BaseException):
    def add(commands_: argparse._SubParsersAction) -> None:
        parser = commands_.add_parser("refuse")

        def run(args):
            raise error

        parser.set_defaults(run=run)

    return add


@pytest.mark.parametrize(
    "error",
    [ValueError("bad value"), FileNotFoundError("no file"), plugins.PluginError("broken plugin")],
)
def test_a_refused_command_prints_one_line_and_exits_2(monkeypatch, capsys, error):
    real_build = cli.build_parser

    def build_parser():
        parser = real_build()
        subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        _refusing_command(error)(subparsers)
        return parser

    monkeypatch.setattr(cli, "build_parser", build_parser)
    assert cli.main(["refuse"]) == commands.EXIT_ERROR == 2
    assert capsys.readouterr().err == f"pyinstance refuse: error: {error}\n"


def test_other_errors_are_not_swallowed(monkeypatch):
    real_build = cli.build_parser

    def build_parser():
        parser = real_build()
        subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        _refusing_command(RuntimeError("a bug"))(subparsers)
        return parser

    monkeypatch.setattr(cli, "build_parser", build_parser)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["refuse"])


def test_a_command_is_required(capsys):
    with pytest.raises(SystemExit) as raised:
        cli.main([])
    assert raised.value.code == 2
    assert "pyinstance" in capsys.readouterr().err


def test_every_sub_command_is_added():
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert {"info", "plugins", "identify", "calibrate", "demo", "serve", "evaluate", "train", "index"} <= set(subparsers.choices)  # fmt: skip
    assert parser.prog == "pyinstance"


def test_engine_option_defaults_to_auto_and_lists_the_engines():
    parser = argparse.ArgumentParser()
    commands.add_engine_option(parser)
    assert parser.parse_args([]).engine == "auto"
    assert parser.parse_args(["--engine", "openvino"]).engine == "openvino"
    assert commands.ENGINES == ("auto", "torch", "onnxruntime", "openvino")
    with pytest.raises(SystemExit):
        parser.parse_args(["--engine", "tensorrt"])


def test_rerank_option(capsys):
    parser = argparse.ArgumentParser()
    commands.add_rerank_option(parser)
    assert parser.parse_args([]).rerank is None
    assert parser.parse_args(["--rerank", "none"]).rerank is False
    assert parser.parse_args(["--rerank", "v.pt"]).rerank == "v.pt"
    assert parser.parse_args(["--rerank", " none"]).rerank == " none"
    with pytest.raises(SystemExit):
        parser.parse_args(["--rerank", "  "])
    assert (
        "argument --rerank: expected a verifier file, a re-ranker name or 'none'\n"
        in capsys.readouterr().err
    )


def test_make_console_is_wide_when_not_a_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert commands.make_console().width == 160
    monkeypatch.setenv("COLUMNS", "200")
    assert commands.make_console().width == 200


def test_plugins_prints_each_failure_on_stderr(monkeypatch, capsys):
    def pyinstance_register_heads(register):
        raise KeyError("no head")

    class _EntryPoint:
        name = "headless"
        dist = None

        @staticmethod
        def load():
            return types.SimpleNamespace(
                pyinstance_register_heads=pyinstance.hookimpl(pyinstance_register_heads)
            )

    monkeypatch.setattr(
        importlib.metadata,
        "entry_points",
        lambda group: [_EntryPoint()] if group == plugins.ENTRY_POINT_GROUP else [],
    )
    monkeypatch.setattr(plugins, "registry", PluginRegistry(builtins=(), autoload=True))
    with pytest.warns(RuntimeWarning):
        assert cli.main(["plugins", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == []
    assert captured.err == (
        "plugin 'headless' failed during registering heads: KeyError: 'no head'\n"
    )


def test_make_console_keeps_a_terminal_s_width(monkeypatch):
    from rich.console import Console

    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(Console, "is_terminal", property(lambda self: True))
    assert commands.make_console().width == 80


def test_info_table_has_no_header_row(facts, capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "┃" not in out and "╇" not in out  # rich draws a header row with these
    assert out.splitlines()[1].startswith("┌")  # the first row follows the top border


def test_info_json_prints_other_values_as_text(facts, capsys):
    from pathlib import Path

    build, engines = facts
    build["source"] = Path("/src/pyinstance")
    engines["openvino"] = types.SimpleNamespace()
    assert cli.main(["info", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["source"] == str(Path("/src/pyinstance"))
    assert printed["inference"]["openvino"] == str(engines["openvino"])
