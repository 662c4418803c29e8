"""Sub-commands of the ``pyinstance`` command that run the identification pipeline."""

from __future__ import annotations

import argparse

from rich.console import Console

ENGINES = ("auto", "torch", "onnxruntime", "openvino")
#: Exit status of a command refused with a clear message (bad input), as argparse's own.
EXIT_ERROR = 2


def add_engine_option(parser: argparse.ArgumentParser) -> None:
    """``--engine``: what runs the networks (default: the fastest one installed)."""
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="auto",
        help="inference engine: openvino or onnxruntime (pip install 'pyinstance[fast]'), "
        "torch, or auto (the fastest installed; default)",
    )


def add_rerank_option(parser: argparse.ArgumentParser) -> None:
    """``--rerank MODEL``: a verification re-ranker after the classifier (``none``: none)."""
    parser.add_argument(
        "--rerank",
        metavar="MODEL",
        type=_rerank,
        help="re-rank the top candidates with a verifier file (pyinstance train, objective "
        "'verification') or a registered re-ranker; its probability is the confidence "
        "(default: the index's, from calibrate --rerank; 'none': no re-ranker)",
    )


def _rerank(text: str) -> str | bool:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a verifier file, a re-ranker name or 'none'")
    return False if text == "none" else text


def make_console() -> Console:
    """A rich console; when the output is not a terminal (a pipe, a log), wide enough that
    result tables are never cut."""
    console = Console()
    return console if console.is_terminal else Console(width=max(console.width, 160))
