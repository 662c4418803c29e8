"""``pyinstance serve`` without a server: the options parsed, checked and handed to
``create_app`` and uvicorn (both replaced by recorders)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import uvicorn

import pyinstance.serve.app as app_module
from pyinstance.cli import build_parser, main


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What ``run`` handed to ``create_app`` and ``uvicorn.run``."""
    seen: dict[str, Any] = {}

    def create_app(index: str, **options: Any) -> str:
        seen["index"], seen["options"] = index, options
        return "the app"

    def run(app: Any, **options: Any) -> None:
        seen["app"], seen["uvicorn"] = app, options

    monkeypatch.setattr(app_module, "create_app", create_app)
    monkeypatch.setattr(uvicorn, "run", run)
    return seen


def test_defaults_reach_the_app_and_uvicorn(served: dict[str, Any]) -> None:
    assert main(["serve", "ix"]) == 0
    assert served["index"] == "ix"
    assert served["options"] == {
        "token": None,
        "max_upload_bytes": 10 * 1024 * 1024,
        "max_pixels": 40_000_000,
        "workers": 2,
        "cors_origins": (),
        "review_days": None,
        "review_below": 0.5,
        "engine": "auto",
        "reranker": None,
    }
    assert served["app"] == "the app"
    assert served["uvicorn"] == {"host": "127.0.0.1", "port": 8000, "log_level": "info"}


def test_every_option_reaches_the_app_and_uvicorn(served: dict[str, Any], tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("  s3cret \n", encoding="utf-8")
    arguments = ["serve", "ix", "--host", "0.0.0.0", "--port", "1", "--token-file", str(token)]
    arguments += ["--workers", "1", "--max-upload-mb", "0.5", "--max-megapixels", "2.5"]
    arguments += ["--cors-origin", "http://a", "--cors-origin", "http://b"]
    arguments += ["--review-days", "1.5", "--review-below", "0.25"]
    arguments += ["--rerank", "none", "--engine", "torch"]
    assert main(arguments) == 0
    assert served["options"] == {
        "token": "s3cret",
        "max_upload_bytes": 524288,
        "max_pixels": 2_500_000,
        "workers": 1,
        "cors_origins": ("http://a", "http://b"),
        "review_days": 1.5,
        "review_below": 0.25,
        "engine": "torch",
        "reranker": False,
    }
    assert served["uvicorn"] == {"host": "0.0.0.0", "port": 1, "log_level": "info"}


def test_highest_port_a_named_reranker_and_under_a_megapixel(served: dict[str, Any]) -> None:
    arguments = ["--port", "65535", "--rerank", "verifier.pt", "--max-megapixels", "0.5"]
    assert main(["serve", "ix", *arguments]) == 0
    assert served["uvicorn"]["port"] == 65535
    assert served["options"]["max_pixels"] == 500_000
    assert served["options"]["reranker"] == "verifier.pt"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--port", "0"], "--port: expected 1-65535, got 0"),
        (["--port", "65536"], "--port: expected 1-65535, got 65536"),
        (["--workers", "0"], "--workers: expected >= 1, got 0"),
        (["--max-upload-mb", "0"], "--max-upload-mb and --max-megapixels"),
        (["--max-megapixels", "0"], "--max-upload-mb and --max-megapixels"),
        (["--max-megapixels", "-1"], "--max-upload-mb and --max-megapixels"),
    ],
)
def test_bad_options_never_reach_the_app(
    served: dict[str, Any], capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    assert main(["serve", "ix", *arguments]) == 2
    assert message in capsys.readouterr().err
    assert served == {}


def test_parser_defaults() -> None:
    args = build_parser().parse_args(["serve", "ix"])
    assert (args.host, args.port, args.token_file, args.workers) == ("127.0.0.1", 8000, None, 2)
    assert (args.max_upload_mb, args.max_megapixels, args.cors_origin) == (10.0, 40.0, [])
    assert (args.review_days, args.review_below) == (None, 0.5)


def test_every_option_is_documented_in_the_help() -> None:
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]
    helps = {action.dest: action.help for action in serve._actions if action.dest != "help"}
    assert helps == {
        "index": "the index folder (pyinstance index build)",
        "host": "address to listen on",
        "port": "port to listen on",
        "token_file": "file holding the bearer token of the write endpoints (default: "
        "$PYINSTANCE_API_TOKEN; neither: read-only)",
        "workers": "identifications running at once (threads)",
        "max_upload_mb": "largest photo in MB",
        "max_megapixels": "largest photo in megapixels",
        "cors_origin": "allow this origin (repeatable)",
        "review_days": "keep visitor photos answered unknown or with a low confidence for this "
        "many days in INDEX/review, for curators (default: keep none)",
        "review_below": "confidence below which a visitor photo goes to the review queue",
        "rerank": helps["rerank"],  # shared with other commands (pyinstance.commands)
        "engine": helps["engine"],
    }
    commands = build_parser()._subparsers._group_actions[0]
    (serve_help,) = [a.help for a in commands._choices_actions if a.dest == "serve"]
    assert serve_help == "serve an index over HTTP: identification API, visitor and curator pages"
