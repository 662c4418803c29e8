"""``pyinstance demo``: the main job on the bundled sample collection, offline."""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from rich.table import Table

from pyinstance.commands import add_engine_option, make_console


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``demo`` to the ``pyinstance`` command."""
    demo = commands.add_parser(
        "demo",
        help="index the bundled sample collection, identify changed photos of it and of "
        "unknown objects, print a table and write an HTML page",
    )
    demo.add_argument(
        "--out", default="pyinstance-demo", help="folder for the index, queries and page"
    )
    demo.add_argument("--far", type=float, default=0.05, help="target false-accept rate")
    add_engine_option(demo)
    demo.set_defaults(run=_demo)


def _fresh_index_folder(folder: Path) -> None:
    """Remove a previous demo index at ``folder``; refuse to remove anything else."""
    from pyinstance.index import InstanceIndex

    if not folder.exists():
        return
    try:
        InstanceIndex.open(folder).close()
    except (OSError, ValueError) as error:
        raise ValueError(
            f"--out: {str(folder)!r} exists and is not a pyinstance index ({error}); "
            "choose another --out folder"
        ) from error
    shutil.rmtree(folder)


def _demo(args: argparse.Namespace) -> int:
    console = make_console()
    from pyinstance.calibration import calibrate
    from pyinstance.demo import COLLECTION_DIR
    from pyinstance.demo.page import QueryResult, write_page
    from pyinstance.demo.queries import make_queries
    from pyinstance.identification import Identifier
    from pyinstance.index import InstanceIndex

    out = Path(args.out)
    started = time.perf_counter()
    _fresh_index_folder(out / "index")
    console.print(f"indexing the sample collection {COLLECTION_DIR} ...")
    index, report = InstanceIndex.build(
        out / "index", COLLECTION_DIR, progress=True, engine=args.engine
    )
    with index:
        skipped = index.info()["whitening_skipped"]
        if skipped is not None:
            console.print(f"{skipped} (the default recipe's policy for small collections)")
        fit = calibrate(index, target_far=args.far, progress=True)
        console.print(
            f"{report.added} references of {len(index.instances)} objects indexed; open-set "
            f"threshold {fit.threshold:.3f} fitted for a {args.far:.0%} false-accept rate"
        )
        queries = make_queries(out / "queries")
        identifier = Identifier(index, top_k=3)
        results = []
        for query in queries:
            (answer,) = identifier.identify([query.path])
            results.append(
                QueryResult(
                    query=query.path,
                    truth=query.truth,
                    answer=answer.instance,
                    confidence=answer.confidence,
                    top_k=[(m.instance, m.score, Path(m.image_path)) for m in answer.top_k],
                    ms=answer.ms["total"],
                )
            )
    table = Table(title="pyinstance demo: changed photos of the collection and unknown objects")
    for column in ("query", "truth", "answer", "confidence", "", "ms"):
        table.add_column(column)
    for result in results:
        table.add_row(
            result.query.name,
            result.truth or "(not in collection)",
            result.answer or "unknown",
            f"{result.confidence:.3f}",
            "[green]right[/green]" if result.right else "[red]wrong[/red]",
            f"{result.ms:.0f}",
        )
    console.print(table)
    page = write_page(results, out / "results.html", title="pyinstance demo")
    right = sum(result.right for result in results)
    console.print(
        f"{right} of {len(results)} right in {time.perf_counter() - started:.0f} s; page: {page}"
    )
    return 0
