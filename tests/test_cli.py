"""The `pyinstance` command: info and plugins."""

import importlib.metadata
import json
import os
import subprocess
import sys

import pytest

import pyinstance
from pyinstance import cli, plugins


def test_info_json_matches_build_info(capsys):
    assert cli.main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["cpu"]["isa_detected"] in info["cpu"]["isa_compiled"]
    assert "cuda_compiled" in info


def test_info_table_names_isa_and_cuda(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "CPU ISA detected / active" in out and "CUDA" in out and "OpenMP threads" in out


def test_plugins_lists_kind_name_plugin_and_distribution(capsys):
    assert cli.main(["plugins", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    loss = next(r for r in rows if r["name"] == "triplet_margin")
    assert loss == {
        "kind": "loss",
        "name": "triplet_margin",
        "aliases": ["triplet"],
        "plugin": "pyinstance.builtin.losses",
        "distribution": "pyinstance",
    }
    assert cli.main(["plugins", "--kind", "loss"]) == 0
    assert "pyinstance.builtin.losses" in capsys.readouterr().out


def test_unknown_command_exits_with_usage():
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["frobnicate"])
    assert exit_info.value.code == 2


def test_module_entry_point_runs(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pyinstance.cli", "plugins", "--kind", "loss"],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # import the installed package, not the source tree
    )
    assert result.returncode == 0, result.stderr
    assert "contrastive" in result.stdout


def test_plugins_shows_failed_plugins_on_stderr(monkeypatch, capsys):
    def pyinstance_register_losses(register):
        register("contrastive", object)  # taken by a built-in

    class _Clash:
        pass

    _Clash.pyinstance_register_losses = staticmethod(
        pyinstance.hookimpl(pyinstance_register_losses)
    )

    class _EntryPoint:
        name = "clashing"
        dist = None

        @staticmethod
        def load():
            return _Clash

    monkeypatch.setattr(
        importlib.metadata,
        "entry_points",
        lambda group: [_EntryPoint()] if group == plugins.ENTRY_POINT_GROUP else [],
    )
    monkeypatch.setattr(plugins, "registry", plugins.PluginRegistry(autoload=True))
    with pytest.warns(RuntimeWarning):
        assert cli.main(["plugins", "--json"]) == 0
    captured = capsys.readouterr()
    assert {row["name"] for row in json.loads(captured.out)} >= {"contrastive", "batch_hard"}
    assert (
        "plugin 'clashing' failed during registering losses: PluginError: duplicate loss name 'contrastive'"
        in captured.err
    )


@pytest.mark.parametrize("columns", ["80", "20"])
def test_plugins_table_prints_names_whole_at_any_width(columns, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pyinstance.cli", "plugins"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": columns},
    )
    assert result.returncode == 0, result.stderr
    cells = {cell for line in result.stdout.splitlines()[2:] for cell in line.split()}
    for component in pyinstance.list_plugins():
        assert {component.name, component.plugin} <= cells, component
    assert "…" not in result.stdout


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"pyinstance {pyinstance.__version__}"


def test_a_bad_environment_is_a_warning_not_a_traceback():
    """A mistyped PYINSTANCE_ISA warns once, naming the variable, and the kernels go on."""
    result = subprocess.run(
        [
            sys.executable,
            "-P",
            "-c",
            "from pyinstance.cli import main; raise SystemExit(main(['info']))",
        ],
        env={**os.environ, "PYINSTANCE_ISA": "bogus"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "PYINSTANCE_ISA='bogus' is not one of generic, avx2, avx512" in result.stderr
    assert "Traceback" not in result.stderr


def test_plugins_table_names_a_plugin_that_fails_to_import_on_stderr(monkeypatch, capsys):
    class _Broken:
        name = "broken"
        dist = None

        @staticmethod
        def load():
            raise ImportError("No module named 'torchvision_extra'")

    monkeypatch.setattr(
        importlib.metadata,
        "entry_points",
        lambda group: [_Broken()] if group == plugins.ENTRY_POINT_GROUP else [],
    )
    monkeypatch.setattr(plugins, "registry", plugins.PluginRegistry(autoload=True))
    with pytest.warns(RuntimeWarning, match="broken"):
        assert cli.main(["plugins", "--kind", "loss"]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        "plugin 'broken' failed during import: ImportError: No module named 'torchvision_extra'"
    ]
    assert "broken" not in captured.out  # the table lists only working components
    assert "triplet_margin" in captured.out
