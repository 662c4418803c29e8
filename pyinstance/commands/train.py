"""``pyinstance train CONFIG``: fine-tune a descriptor on a collection; writes a model file."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.table import Table

from pyinstance.commands import make_console


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``train`` to the ``pyinstance`` command."""
    parser = commands.add_parser(
        "train", help="fine-tune a descriptor (TOML config); writes a model for index build --model"
    )
    parser.add_argument("config", help="the training configuration (TOML, see configs/)")
    parser.add_argument("--epochs", type=int, help="override train.epochs")
    parser.add_argument("--max-steps", type=int, help="stop after this many steps (override)")
    parser.add_argument("--output", help="override the output folder")
    parser.add_argument(
        "--restart", action="store_true", help="ignore a checkpoint in the output folder"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pyinstance.train import Trainer, TrainingDiverged, load_config
    from pyinstance.train.distributed import process_context

    overrides: dict[str, object] = {}
    if args.epochs is not None:
        overrides["train.epochs"] = args.epochs
    if args.max_steps is not None:
        overrides["train.max_steps"] = args.max_steps
    if args.output is not None:
        overrides["output"] = args.output
    if args.no_progress:
        overrides["train.progress"] = False
    config = load_config(args.config, **overrides)
    console = make_console()
    if config.train.objective == "verification":
        return _verification(config, args, console)
    # Under torchrun every process runs this; only the main one (rank 0) reports.
    with process_context(config.train.device) as context:
        trainer = Trainer(config, context=context)
        main = context.is_main
        for skip in trainer.data.skipped if main else ():
            print(f"pyinstance train: skipped {skip.path}: {skip.reason}", file=sys.stderr)
        if not args.restart and trainer.resume() and main:
            console.print(f"resumed at step {trainer.step} (epoch {trainer.epoch + 1})")
        try:
            result = trainer.fit()
        except TrainingDiverged as error:
            print(f"pyinstance train: error: {error}", file=sys.stderr)
            return 1
    if not main:
        return 0
    summary = {
        "model": str(result.model_path),
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "images": len(trainer.data),
        "instances": trainer.data.num_classes,
        "skipped": result.skipped,
        "epochs": result.epochs,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    keys = ["epoch", "loss", "active_triplets", "p_at_1", "seconds"]
    console.print(_epochs_table(f"training {config.output}", keys, result.epochs))
    console.print(
        f"{len(trainer.data)} images of {trainer.data.num_classes} instances, "
        f"{result.skipped} skipped; {result.steps} steps in {result.seconds:.0f} s; "
        f"model written to {result.model_path}"
    )
    return 0


def _verification(config: Any, args: argparse.Namespace, console: Any) -> int:
    """``objective = "verification"``: the re-ranker of an index (one process)."""
    from pyinstance.train.verification import VerificationTrainer

    if args.max_steps is not None:
        raise ValueError("--max-steps: not for objective 'verification' (use --epochs)")
    trainer = VerificationTrainer(config)
    try:
        result = trainer.fit()
    finally:
        trainer.index.close()
    summary = {
        "model": str(result.model_path),
        "pairs": result.pairs,
        "seconds": round(result.seconds, 1),
        "describe_seconds": round(result.describe_seconds, 1),
        "images": len(trainer.data),
        "instances": trainer.data.num_classes,
        "epochs": result.epochs,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    keys = ["epoch", "loss", "train_top1", "val_top1", "val_raw_top1", "val_auroc", "val_raw_auroc"]
    console.print(_epochs_table(f"verification training {config.output}", keys, result.epochs))
    console.print(
        f"{result.pairs} pairs from {len(trainer.data)} photos; {result.seconds:.0f} s "
        f"({result.describe_seconds:.0f} s describing views); re-ranker written to "
        f"{result.model_path} (use: --rerank {result.model_path})"
    )
    return 0


def _epochs_table(title: str, keys: list[str], epochs: list[dict[str, Any]]) -> Table:
    """One row per epoch, one column per key."""
    table = Table(title=title)
    for key in keys:
        table.add_column(key, justify="right")
    for row in epochs:
        table.add_row(*(_cell(row.get(key)) for key in keys))
    return table


def _cell(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)
