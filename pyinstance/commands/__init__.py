"""Sub-commands of the ``pyinstance`` command that run the identification pipeline."""

from __future__ import annotations

import argparse

ENGINES = ("auto", "torch", "onnxruntime")


def add_engine_option(parser: argparse.ArgumentParser) -> None:
    """``--engine``: what runs the networks (default: the fastest one installed)."""
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="auto",
        help="inference engine: onnxruntime (pip install 'pyinstance[fast]'), torch, or auto "
        "(the fastest installed; default)",
    )
