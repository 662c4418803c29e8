"""The ``pyinstance`` command."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from pyinstance import __version__, plugins
from pyinstance.idle_threads import idle_thread_settings, sleep_idle_threads


def _info(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from pyinstance._backend import build_info
    from pyinstance.engine import engine_info

    info = build_info()
    engines = engine_info()
    idle = idle_thread_settings()
    if args.json:
        print(
            json.dumps({**info, "inference": engines, "idle_threads": idle}, indent=2, default=str)
        )
        return 0
    cpu = info["cpu"]
    table = Table(title=f"pyinstance {info['version']}", show_header=False)
    table.add_row("C++ compiler", info["compiler"])
    table.add_row("CPU ISA compiled", ", ".join(cpu["isa_compiled"]))
    table.add_row("CPU ISA detected / active", f"{cpu['isa_detected']} / {cpu['isa_active']}")
    table.add_row("bf16 screening (mining)", "yes" if cpu["bf16_dot"] else "no")
    table.add_row("CPU features", " ".join(cpu["cpu_features"]) or "-")
    table.add_row("OpenMP threads", str(info["openmp_threads"]))
    table.add_row(
        "idle threads",
        ", ".join(f"{name}={value or '(library default: spins)'}" for name, value in idle.items()),
    )
    table.add_row(
        "inference engines", f"{', '.join(engines['engines'])} (active: {engines['default']})"
    )
    if engines["openvino"] is not None:
        table.add_row(
            "OpenVINO",
            f"{engines['openvino']}, computes in {engines['openvino_precision']} (native bf16: "
            f"{'yes' if engines['bf16'] else 'no'}; int8: "
            f"{'yes' if engines['int8'] else 'no (pip install nncf)'})",
        )
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
    Console().print(table)
    return 0


def _aligned(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns as wide as their widest cell: nothing is cut at any width."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [header, ["-" * width for width in widths], *rows]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def _plugins(args: argparse.Namespace) -> int:
    components = plugins.list_plugins(args.kind)
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
        header = ("kind", "name", "aliases", "plugin", "distribution")
        rows = [
            (c.kind, c.name, ", ".join(c.aliases) or "-", c.plugin, c.distribution or "-")
            for c in components
        ]
        print(_aligned(header, rows))
    for failure in plugins.registry.failures():
        print(
            f"plugin {failure.plugin!r} failed during {failure.stage}: "
            f"{type(failure.error).__name__}: {failure.error}",
            file=sys.stderr,
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``pyinstance`` command."""
    parser = argparse.ArgumentParser(prog="pyinstance", description=__doc__)
    parser.add_argument("--version", action="version", version=f"pyinstance {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    info = commands.add_parser("info", help="show the build: compiler, CPU ISA, OpenMP, CUDA")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.set_defaults(run=_info)

    listing = commands.add_parser("plugins", help="list every registered component")
    listing.add_argument("--kind", choices=list(plugins.HOOKS), help="only this kind")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(run=_plugins)

    from pyinstance.commands import demo, evaluate, identify, serve, train
    from pyinstance.index.cli import add_index_commands

    add_index_commands(commands)
    identify.add_parsers(commands)
    demo.add_parser(commands)
    serve.add_parser(commands)
    evaluate.add_parser(commands)
    train.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pyinstance`` command."""
    # Idle OpenMP and OpenBLAS threads must not spin: a server identifying photos beside
    # another busy process collapses otherwise (benchmarks/engine.py, benchmarks/latency.py).
    # Before numpy and torch load.
    sleep_idle_threads(warn=False)
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError, plugins.PluginError) as error:  # the user's to fix: no traceback
        from pyinstance.commands import EXIT_ERROR

        print(f"pyinstance {args.command}: error: {error}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
