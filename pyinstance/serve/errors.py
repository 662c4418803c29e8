"""The service's errors: every one answers ``{"error": {"code", "message"}}``."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pyinstance.index import IndexBusyError, IndexWriteError
from pyinstance.serve.metrics import Metrics

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    503: "busy",
    507: "write_failed",
}


class ApiError(Exception):
    """An error answered with ``status`` and ``{"error": {"code": code, "message": ...}}``."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def not_in_index(kind: str, name: str) -> ApiError:
    """The 404 of an id of ``kind`` (``"instance"``, ``"image"``) the index does not hold."""
    return ApiError(404, f"unknown_{kind}", f"no {kind} {name!r} in the index")


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def install_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    """Answer our errors, HTTP errors, validation errors and anything else as JSON; count
    the refusals."""

    @app.exception_handler(ApiError)
    async def _api(request: Request, error: ApiError) -> JSONResponse:
        metrics.rejected(error.code)
        return error_response(error.status, error.code, error.message, error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = _CODES.get(error.status_code, "http_error")
        metrics.rejected(code)
        return error_response(error.status_code, code, str(error.detail), error.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
            for e in error.errors()
        )
        metrics.rejected("invalid_request")
        return error_response(422, "invalid_request", problems or "invalid request")

    @app.exception_handler(IndexWriteError)
    async def _write_failed(request: Request, error: IndexWriteError) -> JSONResponse:
        metrics.rejected("write_failed")
        return error_response(507, "write_failed", str(error))

    @app.exception_handler(IndexBusyError)
    async def _busy(request: Request, error: IndexBusyError) -> JSONResponse:
        metrics.rejected("index_busy")
        return error_response(503, "index_busy", str(error), {"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        return error_response(500, "internal", f"internal error: {type(error).__name__}")
