"""The ``pyinstance index`` command group: build, add, remove, update, refit, compact, info."""

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

from pyinstance.commands import EXIT_ERROR, add_engine_option, make_console
from pyinstance.index.describer import Describer
from pyinstance.index.instance_index import InstanceIndex
from pyinstance.index.metadata import read_metadata_file
from pyinstance.index.recipe import DEFAULT_RECIPE, DTYPES
from pyinstance.index.report import AddReport
from pyinstance.index.store import IndexBusyError
from pyinstance.models.regions import DEFAULT_WINDOWS
from pyinstance.postprocess import REDUCTIONS
from pyinstance.postprocess.pipeline import WHITENING_METHODS

_SHOWN_SKIPS = 20


_DEFAULT_WHITEN = DEFAULT_RECIPE.postprocessing.whiten
#: ``--whiten-min-references`` when not given: the default recipe's (None: always fitted).
_DEFAULT_MIN_REFERENCES = None if _DEFAULT_WHITEN is None else _DEFAULT_WHITEN.min_references


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
        type=_query_side,
        default=DEFAULT_RECIPE.query_max_side,
        metavar="PIXELS|same",
        help="longest side of query photos (one scale), or 'same': queries described "
        "exactly as references, at every scale (default: "
        f"{DEFAULT_RECIPE.query_max_side or 'same'})",
    )
    build.add_argument(
        "--windows",
        type=_windows,
        default=DEFAULT_RECIPE.query_windows,
        help="query windows: 'none', 'default' (19 windows) or FRACTION:COUNT,... (e.g. "
        f"1:1,0.5:3); default: {'default' if DEFAULT_RECIPE.query_windows else 'none'}",
    )
    build.add_argument(
        "--dtype", choices=DTYPES, default=DEFAULT_RECIPE.dtype, help="descriptor storage dtype"
    )
    build.add_argument("--instance", help="instance id of image files given as SOURCE")
    build.add_argument(
        "--model",
        help="a trained model file (pyinstance train): its backbone, head and weights replace "
        "--backbone, --head and --head-param",
    )
    _postprocess_options(build)
    add_engine_option(build)
    _common(build)
    _metadata_option(build)
    build.set_defaults(run=_guarded(_build))

    add = sub.add_parser("add", help="add reference images (identical files are no-ops)")
    add.add_argument("index", metavar="INDEX")
    add.add_argument("source", nargs="+")
    add.add_argument("--instance", help="instance id of image files given as SOURCE")
    add_engine_option(add)
    _common(add)
    _metadata_option(add)
    add.set_defaults(run=_guarded(_add))

    update = sub.add_parser("update", help="re-extract changed files, add new ones")
    update.add_argument("index", metavar="INDEX")
    update.add_argument("source", nargs="+")
    update.add_argument("--instance", help="instance id of image files given as SOURCE")
    add_engine_option(update)
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

    refit = sub.add_parser(
        "refit", help="fit the post-processing state (whitening) on the collection again"
    )
    refit.add_argument("index", metavar="INDEX")
    refit.add_argument("--json", action="store_true", help="print JSON")
    refit.set_defaults(run=_guarded(_refit))

    info = sub.add_parser("info", help="images, instances, recipe, size of an index")
    info.add_argument("index", metavar="INDEX")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(run=_guarded(_info))


def _postprocess_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "post-processing (stored in the index, refitted in every commit that changes it)"
    )
    group.add_argument(
        "--whiten",
        action=argparse.BooleanOptionalAction,
        default=_DEFAULT_WHITEN is not None,
        help="PCA-whitening learnt from the references (default: "
        f"{'on' if _DEFAULT_WHITEN is not None else 'off'})",
    )
    group.add_argument(
        "--whiten-min-references",
        type=int,
        default=None,
        metavar="N",
        help="fit the whitening only once the collection holds N references; with fewer it "
        "is skipped, and refitted when references are added (default: "
        f"{_DEFAULT_MIN_REFERENCES})",
    )
    group.add_argument(
        "--whiten-method",
        choices=WHITENING_METHODS,
        default="pca",
        help="pca, or pairs: learnt from pairs of references of one instance",
    )
    group.add_argument(
        "--whiten-from",
        action="append",
        metavar="SOURCE",
        help="fit the PCA-whitening once on this separate set (a folder, manifest or image "
        "files, described with the index's recipe) instead of the references; kept when the "
        "collection changes (repeatable)",
    )
    options = (
        ("--whiten-dim", int, None, "D", "whitened dimensions (default: all)"),
        ("--shrinkage", float, 1.0, "S", "whitening power in [0, 1]: 1 whitens fully, 0 rotates"),
        ("--whiten-ridge", float, 0.0, "R", "eigenvalue regularisation, R × the largest one"),
        ("--dba", int, None, "K", "database-side augmentation with K neighbours"),
        ("--dba-alpha", float, None, "A", "DBA similarity weights s^A (default: rank weights)"),
        ("--qe", int, None, "K", "query expansion with K references"),
        ("--alpha-qe", float, 0.0, "A", "query expansion weights s^A (0: average QE; 3: α-QE)"),
    )
    for flag, kind, default, metavar, text in options:
        shown = "" if default is None else " (default: %(default)s)"
        group.add_argument(flag, type=kind, default=default, metavar=metavar, help=text + shown)
    group.add_argument(
        "--scale-weights",
        metavar="W1,W2,...|learnt",
        help="keep one descriptor per scale (--scales) and sum them with these weights, or "
        "with weights learnt from the instances with several references (refitted with the "
        "collection)",
    )
    group.add_argument(
        "--matrix-scoring",
        choices=REDUCTIONS,
        metavar="REDUCTION",
        help="keep one descriptor per scale (--scales) and score the query's and the "
        f"reference's sets by their similarity matrix: {', '.join(REDUCTIONS)}",
    )


def _postprocess(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe's ``postprocess`` from the build options."""
    whiten_only = {
        "--whiten-dim": args.whiten_dim is not None,
        "--shrinkage": args.shrinkage != 1.0,
        "--whiten-ridge": args.whiten_ridge != 0.0,
        "--whiten-method": args.whiten_method != "pca",
        "--whiten-from": args.whiten_from is not None,
        "--whiten-min-references": args.whiten_min_references is not None,
    }
    stray = [name for name, given in whiten_only.items() if given and not args.whiten]
    if stray:
        raise ValueError(f"{', '.join(stray)}: only with --whiten")
    if args.whiten_from is not None and args.whiten_method != "pca":
        raise ValueError("--whiten-from: only with --whiten-method pca")
    if args.whiten_from is not None and args.whiten_min_references is not None:
        raise ValueError("--whiten-min-references: not with --whiten-from (fitted once)")
    if args.dba_alpha is not None and args.dba is None:
        raise ValueError("--dba-alpha: only with --dba K")
    if args.alpha_qe != 0.0 and args.qe is None:
        raise ValueError("--alpha-qe: only with --qe K")
    config: dict[str, Any] = {}
    if args.whiten:
        config["whiten"] = {
            "dim": args.whiten_dim,
            "power": args.shrinkage,
            "ridge": args.whiten_ridge,
            "method": args.whiten_method,
        }
        if args.whiten_from is not None:
            config["whiten"]["fit_on"] = "separate"
        else:
            minimum = args.whiten_min_references
            if minimum is not None and minimum < 2:
                raise ValueError(f"--whiten-min-references: expected an int >= 2, got {minimum}")
            if minimum is None:
                minimum = _DEFAULT_MIN_REFERENCES
            if minimum is not None:
                config["whiten"]["min_references"] = minimum
    if args.dba is not None:
        config["dba"] = {"k": args.dba, "alpha": args.dba_alpha}
    if args.qe is not None:
        config["qe"] = {"k": args.qe, "alpha": args.alpha_qe}
    if args.matrix_scoring is not None:
        config["multiscale"] = {"reduction": args.matrix_scoring}
    if args.scale_weights is not None:
        config["scale_weights"] = _scale_weights(args.scale_weights)
    return config


def _scale_weights(text: str) -> str | list[float]:
    """``--scale-weights``: ``learnt`` or comma-separated numbers."""
    if text == "learnt":
        return text
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(
            f"--scale-weights: expected comma-separated numbers (one per scale) or 'learnt', "
            f"got {text!r}"
        ) from None


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


def _query_side(text: str) -> int | None:
    """``--query-max-side``: a positive number of pixels, or ``same`` (None: as references)."""
    if text == "same":
        return None
    try:
        side = int(text)
    except ValueError:
        side = 0
    if side < 1:
        raise argparse.ArgumentTypeError(
            f"expected a positive number of pixels or 'same', got {text!r}"
        )
    return side


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
    fields = {
        "scales": args.scales,
        "max_side": args.max_side,
        "query_max_side": args.query_max_side,
        "query_windows": args.windows,
        "dtype": args.dtype,
        "postprocess": _postprocess(args),
    }
    if args.model is not None:
        _refuse_components_with_model(args)
        describer = Describer.for_model(args.model, **fields)
    else:
        describer = Describer.for_components(
            args.backbone, args.head, head_params=_params(args.head_param), **fields
        )
    describer.set_engine(args.engine)
    index, report = InstanceIndex.build(
        args.output,
        args.source,
        describer.recipe,
        instance=args.instance,
        progress=not args.no_progress,
        describer=describer,
        whiten_from=args.whiten_from,
    )
    with index:
        if metadata:
            index.set_metadata(metadata, unknown="skip")
        return _summary(args, console, index, report, time.perf_counter() - start, describer.engine)


def _refuse_components_with_model(args: argparse.Namespace) -> None:
    """A model file fixes the network: naming another one beside it is a mistake."""
    given = [
        option
        for option, value, default in (
            ("--backbone", args.backbone, DEFAULT_RECIPE.backbone),
            ("--head", args.head, DEFAULT_RECIPE.head),
            ("--head-param", args.head_param, []),
        )
        if value != default
    ]
    if given:
        raise ValueError(f"--model: the model file fixes the network; drop {', '.join(given)}")


def _add(args: argparse.Namespace, console: Console) -> int:
    metadata = read_metadata_file(args.metadata) if args.metadata else None
    with InstanceIndex.open(args.index, engine=args.engine) as index:
        report = index.add(
            args.source, args.instance, progress=not args.no_progress, metadata=metadata
        )
        return _summary(args, console, index, report, report.seconds, _engine_used(index, report))


def _update(args: argparse.Namespace, console: Console) -> int:
    with InstanceIndex.open(args.index, engine=args.engine) as index:
        report = index.update(args.source, args.instance, progress=not args.no_progress)
        return _summary(args, console, index, report, report.seconds, _engine_used(index, report))


def _engine_used(index: InstanceIndex, report: AddReport) -> str | None:
    """The engine that described the new images (``None`` when nothing was extracted)."""
    return index.describer.engine if report.added or report.updated else None


def _summary(
    args: argparse.Namespace,
    console: Console,
    index: InstanceIndex,
    report: AddReport,
    seconds: float,
    engine: str | None,
) -> int:
    info = index.info()
    described = report.added + report.updated
    rate = described / seconds if described and seconds > 0 else None
    summary = report.to_dict() | {
        "seconds": round(seconds, 3),
        "engine": engine,
        "images_per_second": None if rate is None else round(rate, 2),
        "index": str(index.path),
        "images": info["images"],
        "size_on_disk": info["size_on_disk"],
        "instances_with_metadata": len(index.metadata()),
        "whitening_skipped": info["whitening_skipped"],
        "stale_thresholds": info["stale_thresholds"],
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
    if rate is not None:
        table.add_row("throughput", f"{rate:.2f} images/s ({engine} engine)")
    table.add_row("size on disk", _size(info["size_on_disk"]))
    if info["whitening_skipped"] is not None:
        table.add_row("whitening", info["whitening_skipped"])
    console.print(table)
    _warn_stale(console, info)
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
                {
                    "removed": removed,
                    "images": info["images"],
                    "instances": info["instances"],
                    "stale_thresholds": info["stale_thresholds"],
                }
            )
        )
    else:
        console.print(
            f"removed {removed} image(s); {info['images']} image(s) of {info['instances']} instance(s) remain"
        )
        _warn_stale(console, info)
    return 0


def _refit(args: argparse.Namespace, console: Console) -> int:
    with InstanceIndex.open(args.index) as index:
        refitted = index.refit()
        info = index.info()
    if args.json:
        print(json.dumps({"refitted": refitted, "fitted": info["fitted"]}))
    elif refitted:
        console.print(
            f"refitted the post-processing state on {info['images']} image(s) "
            f"(collection version {info['collection']})"
        )
    else:
        console.print(
            "nothing to refit: the recipe's post-processing learns nothing from the collection"
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
    if info["whitening_set"] is not None:
        table.add_row("whitening fitted on", json.dumps(info["whitening_set"]))
    if info["whitening_skipped"] is not None:
        table.add_row("whitening", info["whitening_skipped"])
    for key, value in sorted(info["settings"].items()):
        table.add_row(f"setting {key}", json.dumps(value))
    console.print(table)
    _warn_stale(console, info)
    return 0


def _warn_stale(console: Console, info: dict[str, Any]) -> None:
    """One warning per stored threshold that no longer fits the collection's score space."""
    for setting, reason in info["stale_thresholds"].items():
        console.print(
            f"[yellow]stale {setting}[/yellow]: {escape(reason)}",
            markup=True,
            highlight=False,
            soft_wrap=True,
        )


def _size(count: float) -> str:
    units = ["B", "KiB", "MiB", "GiB"]
    while count >= 1024 and len(units) > 1:
        count /= 1024
        units.pop(0)
    return f"{count:.0f} B" if units[0] == "B" else f"{count:.1f} {units[0]}"
