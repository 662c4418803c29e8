"""The ``pyinstance index`` command group: build, add, remove, update, compact, info."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pyinstance.commands import add_engine_option, make_console
from pyinstance.index.describer import Describer
from pyinstance.index.instance_index import InstanceIndex
from pyinstance.index.metadata import read_metadata_file
from pyinstance.index.recipe import DEFAULT_RECIPE, DTYPES
from pyinstance.index.report import AddReport
from pyinstance.index.store import IndexBusyError
from pyinstance.models.regions import DEFAULT_WINDOWS

#: Exit status of a command that failed with a clear message.
EXIT_ERROR = 2
_SHOWN_SKIPS = 20


def add_index_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``index`` and its sub-commands on the main parser's sub-parsers."""
    index = commands.add_parser("index", help="build and maintain a persistent instance index")
    sub = index.add_subparsers(dest="index_command", required=True)

    build = sub.add_parser("build", help="create an index from reference images")
    build.add_argument(
        "source",
        nargs="+",
        help="folder (one sub-folder per instance), manifest .csv, or image files",
    )
    build.add_argument(
        "-o", "--output", required=True, metavar="INDEX", help="index folder to create"
    )
    build.add_argument(
        "--backbone", default=DEFAULT_RECIPE.backbone, help="backbone name (default: %(default)s)"
    )
    build.add_argument(
        "--head", default=DEFAULT_RECIPE.head, help="pooling head name (default: %(default)s)"
    )
    build.add_argument(
        "--head-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="head keyword argument (VALUE read as JSON when it parses), repeatable",
    )
    build.add_argument(
        "--scales",
        type=_floats,
        default=DEFAULT_RECIPE.scales,
        help="comma-separated scales of max-side",
    )
    build.add_argument(
        "--max-side", type=int, default=DEFAULT_RECIPE.max_side, help="longest side in pixels"
    )
    build.add_argument(
        "--query-max-side",
        type=int,
        default=DEFAULT_RECIPE.query_max_side,
        help="longest side of query photos, when it differs from --max-side",
    )
    build.add_argument(
        "--windows",
        type=_windows,
        default=DEFAULT_RECIPE.query_windows,
        help="query windows: 'default' or FRACTION:COUNT,... (e.g. 1:1,0.5:3)",
    )
    build.add_argument(
        "--dtype", choices=DTYPES, default=DEFAULT_RECIPE.dtype, help="descriptor storage dtype"
    )
    build.add_argument("--instance", help="instance id of image files given as SOURCE")
    add_engine_option(build)
    _common(build)
    _metadata_option(build)
    build.set_defaults(run=_guarded(_build))

    add = sub.add_parser("add", help="add reference images (identical files are no-ops)")
    add.add_argument("index", metavar="INDEX")
    add.add_argument("source", nargs="+")
    add.add_argument("--instance", help="instance id of image files given as SOURCE")
    _common(add)
    _metadata_option(add)
    add.set_defaults(run=_guarded(_add))

    update = sub.add_parser("update", help="re-extract changed files, add new ones")
    update.add_argument("index", metavar="INDEX")
    update.add_argument("source", nargs="+")
    update.add_argument("--instance", help="instance id of image files given as SOURCE")
    _common(update)
    update.set_defaults(run=_guarded(_update))

    remove = sub.add_parser("remove", help="remove an instance or images")
    remove.add_argument("index", metavar="INDEX")
    which = remove.add_mutually_exclusive_group(required=True)
    which.add_argument("--instance", nargs="+", metavar="ID", help="instance id(s)")
    which.add_argument("--image", nargs="+", metavar="ID", help="image id(s)")
    remove.add_argument("--json", action="store_true", help="print JSON")
    remove.set_defaults(run=_guarded(_remove))

    compact = sub.add_parser("compact", help="reclaim the space of removed images")
    compact.add_argument("index", metavar="INDEX")
    compact.add_argument("--json", action="store_true", help="print JSON")
    compact.set_defaults(run=_guarded(_compact))

    info = sub.add_parser("info", help="images, instances, recipe, size of an index")
    info.add_argument("index", metavar="INDEX")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(run=_guarded(_info))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _metadata_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metadata",
        metavar="FILE",
        help="instance metadata (title, author, ...): a CSV with an instance_id column and "
        "one column per field, or JSON {id: {field: value}}; instances not in the index are "
        "left out",
    )


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from error


def _windows(text: str) -> tuple[tuple[float, int], ...] | None:
    if text == "none":
        return None
    if text == "default":
        return DEFAULT_WINDOWS
    try:
        pairs = [part.split(":") for part in text.split(",")]
        return tuple((float(fraction), int(count)) for fraction, count in pairs)
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"expected 'none', 'default' or FRACTION:COUNT,..., got {text!r}"
        ) from error


def _params(items: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--head-param: expected KEY=VALUE, got {item!r}")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def _guarded(
    command: Callable[[argparse.Namespace, Console], int],
) -> Callable[[argparse.Namespace], int]:
    """Run ``command``; expected failures become one clear line on stderr and status 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args, make_console())
        except (ValueError, TypeError, KeyError, OSError, IndexBusyError, sqlite3.Error) as error:
            message = error.args[0] if isinstance(error, KeyError) and error.args else error
            print(f"pyinstance index {args.index_command}: error: {message}", file=sys.stderr)
            return EXIT_ERROR

    return run


def _build(args: argparse.Namespace, console: Console) -> int:
    start = time.perf_counter()
    metadata = read_metadata_file(args.metadata) if args.metadata else None
    describer = Describer.for_components(
        args.backbone,
        args.head,
        head_params=_params(args.head_param),
        scales=args.scales,
        max_side=args.max_side,
        query_max_side=args.query_max_side,
        query_windows=args.windows,
        dtype=args.dtype,
    )
    describer.set_engine(args.engine)
    index, report = InstanceIndex.build(
        args.output,
        args.source,
        describer.recipe,
        instance=args.instance,
        progress=not args.no_progress,
        describer=describer,
    )
    with index:
        if metadata:
            index.set_metadata(metadata, unknown="skip")
        return _summary(args, console, index, report, time.perf_counter() - start)


def _add(args: argparse.Namespace, console: Console) -> int:
    metadata = read_metadata_file(args.metadata) if args.metadata else None
    with InstanceIndex.open(args.index) as index:
        report = index.add(
            args.source, args.instance, progress=not args.no_progress, metadata=metadata
        )
        return _summary(args, console, index, report, report.seconds)


def _update(args: argparse.Namespace, console: Console) -> int:
    with InstanceIndex.open(args.index) as index:
        report = index.update(args.source, args.instance, progress=not args.no_progress)
        return _summary(args, console, index, report, report.seconds)


def _summary(
    args: argparse.Namespace,
    console: Console,
    index: InstanceIndex,
    report: AddReport,
    seconds: float,
) -> int:
    info = index.info()
    summary = report.to_dict() | {
        "seconds": round(seconds, 3),
        "index": str(index.path),
        "images": info["images"],
        "size_on_disk": info["size_on_disk"],
        "instances_with_metadata": len(index.metadata()),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    table = Table(title=f"index {index.path}", show_header=False)
    table.add_row("images added", str(report.added))
    if report.updated:
        table.add_row("images updated", str(report.updated))
    table.add_row("unchanged (already indexed)", str(report.unchanged))
    table.add_row("skipped", str(len(report.skipped)))
    table.add_row("images in the index", str(info["images"]))
    table.add_row("instances", str(info["instances"]))
    table.add_row("instances with metadata", str(summary["instances_with_metadata"]))
    table.add_row("time", f"{seconds:.1f} s")
    table.add_row("size on disk", _size(info["size_on_disk"]))
    console.print(table)
    for skip in report.skipped[:_SHOWN_SKIPS]:
        console.print(
            f"[yellow]skipped[/yellow] {escape(skip.path)}: {escape(skip.reason)}",
            markup=True,
            highlight=False,
            soft_wrap=True,
        )
    if len(report.skipped) > _SHOWN_SKIPS:
        console.print(f"... and {len(report.skipped) - _SHOWN_SKIPS} more skipped (see --json)")
    return 0


def _remove(args: argparse.Namespace, console: Console) -> int:
    with InstanceIndex.open(args.index) as index:
        removed = index.remove(instance=args.instance, image=args.image)
        info = index.info()
    if args.json:
        print(
            json.dumps(
                {"removed": removed, "images": info["images"], "instances": info["instances"]}
            )
        )
    else:
        console.print(
            f"removed {removed} image(s); {info['images']} image(s) of {info['instances']} instance(s) remain"
        )
    return 0


def _compact(args: argparse.Namespace, console: Console) -> int:
    with InstanceIndex.open(args.index) as index:
        reclaimed = index.compact()
        size = index.info()["size_on_disk"]
    if args.json:
        print(json.dumps({"reclaimed_rows": reclaimed, "size_on_disk": size}))
    else:
        console.print(f"reclaimed {reclaimed} row(s); size on disk {_size(size)}")
    return 0


def _info(args: argparse.Namespace, console: Console) -> int:
    with InstanceIndex.open(args.index) as index:
        info = index.info()
        recipe = index.recipe
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    table = Table(title=f"index {info['path']}", show_header=False)
    for key in ("images", "instances", "removed_rows", "version", "pyinstance_version"):
        table.add_row(key.replace("_", " "), str(info[key]))
    table.add_row("recipe", recipe.describe())
    table.add_row("size on disk", _size(info["size_on_disk"]))
    for key, value in sorted(info["settings"].items()):
        table.add_row(f"setting {key}", json.dumps(value))
    console.print(table)
    return 0


def _size(count: float) -> str:
    units = ["B", "KiB", "MiB", "GiB"]
    while count >= 1024 and len(units) > 1:
        count /= 1024
        units.pop(0)
    return f"{count:.0f} B" if units[0] == "B" else f"{count:.1f} {units[0]}"
