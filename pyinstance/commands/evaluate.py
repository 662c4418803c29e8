"""``pyinstance evaluate``: measure identification on labelled queries; table, JSON, report."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from rich.table import Table

from pyinstance._files import write_atomic
from pyinstance.commands import add_engine_option, add_rerank_option, make_console


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``evaluate`` to the ``pyinstance`` command."""
    parser = commands.add_parser(
        "evaluate", help="measure identification on a manifest's queries: metrics, report"
    )
    parser.add_argument("index", help="the index folder")
    parser.add_argument(
        "--manifest", required=True,
        help="manifest CSV (path,instance_id,split[,query_set]); its split=query rows are the "
        "queries, an empty instance_id marks an unknown object",
    )  # fmt: skip
    parser.add_argument(
        "--extra", help="more queries: CSV path,instance_ids,kind[,query_set] (ids split by ';')"
    )
    parser.add_argument("--json", metavar="OUT", help="write the metrics and answers as JSON")
    parser.add_argument("--report", metavar="DIR", help="write an HTML report into DIR")
    parser.add_argument("--force", action="store_true", help="overwrite a report in DIR")
    parser.add_argument("--classifier", help="a registered classifier (default: the index's)")
    parser.add_argument(
        "--threshold", type=float,
        help="confidence below which the answer is unknown (default: the index's; 0: none)",
    )  # fmt: skip
    parser.add_argument(
        "--top-k", type=_positive, default=5, metavar="K",
        help="instances listed per query (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--group", action="append", default=[], type=_group, metavar="NAME=SET[,SET...]",
        help="also measure a named group of query sets, e.g. crop=qsd1_w1,qsd1_w3 (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--multi", action="store_true",
        help="also find every object in each photo: object recall and precision, boxes in "
        "the report",
    )  # fmt: skip
    add_rerank_option(parser)
    add_engine_option(parser)
    parser.set_defaults(run=run)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _group(text: str) -> tuple[str, tuple[str, ...]]:
    name, sep, sets = text.partition("=")
    members = tuple(part.strip() for part in sets.split(",") if part.strip())
    if not sep or not name.strip() or not members:
        raise argparse.ArgumentTypeError(f"expected NAME=SET[,SET...], got {text!r}")
    return name.strip(), members


def run(args: argparse.Namespace) -> int:
    from pyinstance.eval.evaluate import evaluate
    from pyinstance.eval.report import write_report
    from pyinstance.index import InstanceIndex

    report = Path(args.report) if args.report else None
    if report is not None and report.is_dir() and any(report.iterdir()) and not args.force:
        raise FileExistsError(
            f"--report: folder {str(report)!r} exists and is not empty; pass --force"
        )
    console = make_console()
    with InstanceIndex.open(args.index, engine=args.engine) as index:
        result = evaluate(
            index,
            args.manifest,
            args.extra,
            classifier=args.classifier,
            threshold=args.threshold,
            top_k=args.top_k,
            groups=dict(args.group),
            progress=True,
            multi=args.multi,
            reranker=args.rerank,
        )
        for problem in result.problems:
            print(f"pyinstance evaluate: {problem}", file=sys.stderr)
        console.print(
            summary_table(result.metrics, result.classifier, result.threshold, result.reranker)
        )
        if "objects" in result.metrics:
            console.print(objects_table(result.metrics["objects"]))
        if args.json:
            _write_json(Path(args.json), result.to_dict())
            console.print(f"metrics written to {args.json}")
        if report is not None:
            page = write_report(result, report, describer=index.describer, force=args.force)
            console.print(f"report written to {page}")
    return 0


def summary_table(
    metrics: dict[str, Any],
    classifier: str,
    threshold: float | None,
    reranker: str | None = None,
) -> Table:
    """The metrics overall and per group, one row each."""
    from pyinstance.eval.evaluate import SUMMARY_KEYS, summary_rows

    shown = "none" if threshold is None else f"{threshold:.3f}"
    reranked = f", re-ranker {reranker}" if reranker else ""
    table = Table(title=f"evaluation (classifier {classifier}{reranked}, threshold {shown})")
    table.add_column("group")
    for key in SUMMARY_KEYS:
        table.add_column(_HEADERS[key], justify="right")
    rows = summary_rows(metrics)
    for name, values in rows:
        table.add_row(name, *(_cell(values[key]) for key in SUMMARY_KEYS))
    return table


def objects_table(metrics: dict[str, dict[str, Any]]) -> Table:
    """Object recall and precision per group (``evaluate --multi``)."""
    table = Table(title="every object in the photo")
    table.add_column("group")
    keys = ("queries", "objects", "named", "found", "recall", "precision", "inventing")
    for key in (*keys, "ms_per_query"):
        table.add_column(_HEADERS.get(key, key), justify="right")
    for name, values in metrics.items():
        table.add_row(name, *(_cell(values[key]) for key in (*keys, "ms_per_query")))
    return table


_HEADERS = {
    "queries": "queries",
    "p_at_1": "P@1",
    "map": "mAP",
    "map_at_r": "mAP@R",
    "micro_ap": "µAP",
    "recall_at_5": "R@5",
    "auroc_unknown": "AUROC",
    "far": "FAR",
    "frr": "FRR",
    "ms_per_query": "ms",
}


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` atomically (a temporary file renamed over ``path``)."""
    write_atomic(path, (json.dumps(data, indent=2, allow_nan=False) + "\n").encode())
