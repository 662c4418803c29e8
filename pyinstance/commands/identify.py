"""``pyinstance identify`` and ``pyinstance calibrate``: the main job on an index."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.table import Table
from tqdm.auto import tqdm

from pyinstance.commands import add_engine_option, add_rerank_option, make_console
from pyinstance.data.images import ImageDecodeError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """Add ``identify`` and ``calibrate`` to the ``pyinstance`` command."""
    identify = commands.add_parser(
        "identify", help="identify photos against an index: instance or unknown, confidence"
    )
    identify.add_argument("index", help="the index folder (pyinstance index build)")
    identify.add_argument("images", nargs="+", help="photos, or folders of photos")
    identify.add_argument("--top-k", type=int, default=5, help="instances listed per photo")
    identify.add_argument(
        "--threshold", type=float, help="confidence below which the answer is unknown "
        "(default: the index's fitted threshold; 0 disables rejection)"
    )  # fmt: skip
    identify.add_argument("--classifier", help="a registered classifier (default: the index's)")
    identify.add_argument("--json", action="store_true", help="one JSON object per photo")
    identify.add_argument(
        "--multi", action="store_true",
        help="also name every collection object in the photo, with its box (JSON: objects)",
    )  # fmt: skip
    identify.add_argument(
        "--objects-threshold", type=float,
        help="with --multi: the score an object needs (default: the index's, fitted by "
        "'pyinstance calibrate --objects')",
    )  # fmt: skip
    add_rerank_option(identify)
    add_engine_option(identify)
    identify.set_defaults(run=_identify)

    calibrate = commands.add_parser(
        "calibrate", help="fit and store the index's open-set threshold for a false-accept rate"
    )
    calibrate.add_argument("index", help="the index folder")
    calibrate.add_argument("--far", type=float, default=0.05, help="target false-accept rate")
    calibrate.add_argument("--classifier", default="nn", help="a registered classifier")
    calibrate.add_argument(
        "--views", type=int, default=4,
        help="augmented views per reference of single-reference instances",
    )  # fmt: skip
    calibrate.add_argument(
        "--distractors", nargs="*", default=[], help="photos (or folders) of things not in it"
    )
    calibrate.add_argument(
        "--objects", action="store_true",
        help="fit the threshold of identify --multi instead (objects in a photo)",
    )  # fmt: skip
    calibrate.add_argument(
        "--scenes", type=int, default=60,
        help="with --objects: gallery scenes composited from the references to fit on",
    )  # fmt: skip
    calibrate.add_argument(
        "--references", type=int, default=60,
        help="with --objects: reference photos (an even sample) searched as visitor photos",
    )  # fmt: skip
    calibrate.add_argument("--json", action="store_true", help="print the fit as JSON")
    calibrate.add_argument(
        "--rerank", metavar="MODEL",
        help="fit the threshold of this verification re-ranker's confidence (a verifier file "
        "or a registered re-ranker); stored as the index's default re-ranker",
    )  # fmt: skip
    add_engine_option(calibrate)
    calibrate.set_defaults(run=_calibrate)


def image_paths(items: list[str]) -> list[Path]:
    """Files as given, folders expanded to their image files (sorted)."""
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            paths += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            paths.append(path)
    return paths


def _identify(args: argparse.Namespace) -> int:
    console = make_console()
    from pyinstance.identification import Identifier
    from pyinstance.index import InstanceIndex

    paths = image_paths(args.images)
    if not paths:
        raise ValueError(f"images: no image file in {args.images}")
    failed = 0
    with InstanceIndex.open(args.index, engine=args.engine) as index:
        identifier = Identifier(
            index,
            classifier=args.classifier,
            threshold=args.threshold,
            top_k=args.top_k,
            multi=args.multi,
            objects_threshold=args.objects_threshold,
            reranker=args.rerank,
        )
        table = _result_table(identifier.threshold, args.multi, identifier.reranker_name)
        for path in tqdm(paths, desc="identify", unit="img", disable=args.json or len(paths) < 2):
            try:
                (result,) = identifier.identify([path])
            except (ImageDecodeError, OSError) as error:
                failed += 1
                if args.json:
                    print(json.dumps({"image": str(path), "error": str(error)}), flush=True)
                else:
                    console.print(f"[red]{path}: {error}[/red]")
                continue
            if args.json:
                print(json.dumps(result.to_dict()), flush=True)
            else:
                table.add_row(
                    result.image,
                    result.instance or "[yellow]unknown[/yellow]",
                    f"{result.confidence:.3f}",
                    "\n".join(
                        f"{m.instance} {m.score:.3f} ({Path(m.image_path).name if m.image_path else '-'})"
                        for m in result.top_k
                    ),
                    *([_objects_cell(result.objects)] if result.objects is not None else []),
                    f"{result.ms['total']:.0f}",
                )
    if not args.json:
        console.print(table)
    return 1 if failed else 0


def _result_table(threshold: float | None, multi: bool, reranker: str | None = None) -> Table:
    title = "threshold " + (f"{threshold:.3f}" if threshold is not None else "none (no rejection)")
    if reranker is not None:
        title += f", re-ranker {reranker}"
    table = Table(title=f"identification ({title})")
    columns = ["image", "answer", "confidence", "top matches (score, reference)"]
    for column in [*columns, *(["objects (confidence, box)"] if multi else []), "ms"]:
        table.add_column(column, overflow="fold")
    return table


def _objects_cell(objects: tuple) -> str:
    if not objects:
        return "[yellow]none[/yellow]"
    return "\n".join(
        f"{found.instance} {found.confidence:.3f} {list(found.box)}" for found in objects
    )


def _calibrate(args: argparse.Namespace) -> int:
    console = make_console()
    from pyinstance.calibration import calibrate
    from pyinstance.index import InstanceIndex

    if args.objects:
        if args.rerank is not None:
            raise ValueError("--rerank: not with --objects (objects are not re-ranked)")
        return _calibrate_objects(args, console)
    with InstanceIndex.open(args.index, engine=args.engine) as index:
        fit = calibrate(
            index,
            classifier=args.classifier,
            target_far=args.far,
            views=args.views,
            distractors=image_paths(args.distractors),
            progress=not args.json,
            reranker=args.rerank,
        )
    reranked = f", re-ranker {args.rerank}" if args.rerank else ""
    return _show_fit(
        args,
        console,
        fit,
        f"threshold {fit.threshold:.4f} stored in {args.index} (classifier {args.classifier}"
        f"{reranked}):"
        f" FAR {fit.far:.3f} (target {fit.target_far}), FRR "
        + (f"{fit.frr:.3f}" if fit.frr is not None else "n/a")
        + f"; known queries {fit.known}, unknown queries {fit.unknown}",
    )


def _show_fit(args: argparse.Namespace, console: Any, fit: Any, line: str) -> int:
    """The fit as JSON (``--json``) or ``line``."""
    if args.json:
        print(json.dumps(fit.to_dict()))
    else:
        console.print(line)
    return 0


def _calibrate_objects(args: argparse.Namespace, console: Any) -> int:
    from pyinstance.index import InstanceIndex
    from pyinstance.objects import calibrate_objects

    with InstanceIndex.open(args.index, engine=args.engine) as index:
        fit = calibrate_objects(
            index,
            target_far=args.far,
            distractors=image_paths(args.distractors),
            scenes=args.scenes,
            references=args.references,
            progress=not args.json,
        )
    return _show_fit(
        args,
        console,
        fit,
        f"objects threshold {fit.threshold:.4f} stored in {args.index}: photos inventing "
        f"an object {fit.far:.3f} (target {fit.target_far}) of {fit.photos}, references "
        f"named {fit.recall:.3f}",
    )
