"""The ``pyinstance`` command."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from pyinstance import build_info
from pyinstance.index.cli import add_index_commands
from pyinstance.plugins import list_plugins, registry


def _info(args: argparse.Namespace, console: Console) -> int:
    info = build_info()
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    cpu = info["cpu"]
    table = Table(title=f"pyinstance {info['version']}", show_header=False)
    table.add_row("C++ compiler", info["compiler"])
    table.add_row("CPU ISA compiled", ", ".join(cpu["isa_compiled"]))
    table.add_row("CPU ISA detected / active", f"{cpu['isa_detected']} / {cpu['isa_active']}")
    table.add_row("bf16 screening (mining)", "yes" if cpu["bf16_dot"] else "no")
    table.add_row("CPU features", " ".join(cpu["cpu_features"]) or "-")
    table.add_row("OpenMP threads", str(info["openmp_threads"]))
    cuda = info["cuda"]
    if cuda is None:
        table.add_row(
            "CUDA", "not compiled" + (f" ({info['cuda_error']})" if "cuda_error" in info else "")
        )
    else:
        table.add_row("CUDA compiler", cuda["compiler"])
        table.add_row("CUDA architectures", ", ".join(cuda["architectures"]))
        devices = ", ".join(
            f"{d['index']}: {d['name']} (sm {d['capability']})" for d in cuda["devices"]
        )
        table.add_row("CUDA devices", devices or "none visible")
    console.print(table)
    return 0


def _plugins(args: argparse.Namespace, console: Console) -> int:
    components = list_plugins(args.kind)
    if args.json:
        rows = [
            {
                "kind": c.kind,
                "name": c.name,
                "aliases": list(c.aliases),
                "plugin": c.plugin,
                "distribution": c.distribution,
            }
            for c in components
        ]
        print(json.dumps(rows, indent=2))
    else:
        table = Table(title="pyinstance components")
        for column in ("kind", "name", "aliases", "plugin", "distribution"):
            table.add_column(column)
        for c in components:
            table.add_row(c.kind, c.name, ", ".join(c.aliases), c.plugin, c.distribution or "-")
        console.print(table)
    for failure in registry.failures():
        console.print(
            f"[red]plugin {failure.plugin!r} failed during {failure.stage}: {failure.error}[/red]"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``pyinstance`` command."""
    parser = argparse.ArgumentParser(prog="pyinstance", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    info = commands.add_parser("info", help="show the build: compiler, CPU ISA, OpenMP, CUDA")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.set_defaults(run=_info)

    plugins = commands.add_parser("plugins", help="list every registered component")
    plugins.add_argument(
        "--kind", choices=["backbone", "head", "loss", "miner", "classifier"], help="only this kind"
    )
    plugins.add_argument("--json", action="store_true", help="print JSON instead of a table")
    plugins.set_defaults(run=_plugins)
    add_index_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pyinstance`` command."""
    args = build_parser().parse_args(argv)
    return args.run(args, Console())


if __name__ == "__main__":
    sys.exit(main())
