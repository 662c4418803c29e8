"""``pyinstance serve``: the identification service and its pages over an index."""

from __future__ import annotations

import argparse

from pyinstance.commands import add_engine_option, add_rerank_option


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``serve`` to the ``pyinstance`` command."""
    serve = commands.add_parser(
        "serve", help="serve an index over HTTP: identification API, visitor and curator pages"
    )
    serve.add_argument("index", help="the index folder (pyinstance index build)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    serve.add_argument(
        "--token-file",
        help="file holding the bearer token of the write endpoints (default: "
        "$PYINSTANCE_API_TOKEN; neither: read-only)",
    )
    serve.add_argument(
        "--workers", type=int, default=2, help="identifications running at once (threads)"
    )
    serve.add_argument("--max-upload-mb", type=float, default=10.0, help="largest photo in MB")
    serve.add_argument(
        "--max-megapixels", type=float, default=40.0, help="largest photo in megapixels"
    )
    serve.add_argument(
        "--cors-origin", action="append", default=[], help="allow this origin (repeatable)"
    )
    serve.add_argument(
        "--review-days", type=float,
        help="keep visitor photos answered unknown or with a low confidence for this many "
        "days in INDEX/review, for curators (default: keep none)",
    )  # fmt: skip
    serve.add_argument(
        "--review-below", type=float, default=0.5,
        help="confidence below which a visitor photo goes to the review queue",
    )  # fmt: skip
    add_rerank_option(serve)
    add_engine_option(serve)
    serve.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from pyinstance.serve.app import create_app, read_token_file
    except ImportError as error:
        raise OSError(
            f"pyinstance serve needs the serve extra: pip install 'pyinstance[serve]' ({error})"
        ) from error

    if not 0 < args.port < 65536:
        raise ValueError(f"--port: expected 1-65535, got {args.port}")
    if args.workers < 1:
        raise ValueError(f"--workers: expected >= 1, got {args.workers}")
    if args.max_upload_mb <= 0 or args.max_megapixels <= 0:
        raise ValueError("--max-upload-mb and --max-megapixels: expected positive numbers")
    token = read_token_file(args.token_file) if args.token_file else None
    app = create_app(
        args.index,
        token=token,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_pixels=int(args.max_megapixels * 1_000_000),
        workers=args.workers,
        cors_origins=tuple(args.cors_origin),
        review_days=args.review_days,
        review_below=args.review_below,
        engine=args.engine,
        reranker=args.rerank,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
