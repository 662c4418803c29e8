"""The identification service: a FastAPI application over one instance index.

Create it with :func:`create_app` and serve it with uvicorn (``pyinstance serve``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import io
import json
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
from fastapi import Depends, FastAPI, Query, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from PIL import Image
from starlette.datastructures import UploadFile

from pyinstance.identification import ThresholdMismatchError
from pyinstance.index.metadata import check_fields
from pyinstance.index.thresholds import StaleThresholdError
from pyinstance.objects import THRESHOLD_SETTING as OBJECTS_THRESHOLD
from pyinstance.plugins import PluginError
from pyinstance.rerank import resolve_reranker
from pyinstance.serve.collection import Collection, Version
from pyinstance.serve.errors import ApiError, install_error_handlers, not_in_index
from pyinstance.serve.heatmap import similarity_heatmap
from pyinstance.serve.metrics import Metrics
from pyinstance.serve.review import ReviewQueue
from pyinstance.serve.uploads import FORMATS, IMAGE_TYPES, decode_image, open_image, read_body

#: Defaults of the upload limits.
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_PIXELS = 40_000_000
#: Photos one add request may carry.
MAX_FILES = 20
#: Environment variable holding the write token.
TOKEN_ENV = "PYINSTANCE_API_TOKEN"
THUMBNAIL_SIDE = 320
_THUMBNAILS_KEPT = 512
_MULTIPART_SLACK = 64 * 1024
_METADATA_BYTES = 64 * 1024
_PAGE_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'unsafe-inline'; connect-src 'self'; form-action 'self'"
)
_IDENTIFY_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            **{kind: {"schema": {"type": "string", "format": "binary"}} for kind in IMAGE_TYPES},
        },
    }
}
_ADD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "files": {"type": "array", "items": {"type": "string", "format": "binary"}}
                    },
                    "required": ["files"],
                }
            },
            **{kind: {"schema": {"type": "string", "format": "binary"}} for kind in IMAGE_TYPES},
        },
    }
}

_METADATA_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "additionalProperties": {"type": ["string", "number", "boolean", "null"]},
                }
            }
        },
    }
}


def _name_problem(name: str) -> str | None:
    """Why ``name`` cannot be one path segment of an id (None when it can)."""
    if not name or name != name.strip():
        return "empty, or leading/trailing white space"
    if name in (".", ".."):
        return "'.' and '..' are not names"
    if "\\" in name or any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "contains a backslash or a control character"
    return None


def check_instance_id(value: str) -> str:
    """An instance id: one name of at most 128 characters (no '/', '\\', control
    characters, '.' or '..'); any other character, Unicode included, is fine."""
    problem = "contains '/'" if "/" in value else _name_problem(value)
    if problem is None and len(value) > 128:
        problem = "longer than 128 characters"
    if problem is not None:
        raise ApiError(400, "invalid_id", f"instance id {value[:80]!r}: {problem}")
    return value


def check_image_id(value: str) -> str:
    """An image id: '/'-separated names (as :func:`check_instance_id`), 1024 characters
    at most, not starting with '/'."""
    problem = next(filter(None, map(_name_problem, value.split("/"))), None)
    if problem is None and len(value) > 1024:
        problem = "longer than 1024 characters"
    if problem is not None:
        raise ApiError(400, "invalid_id", f"image id {value[:80]!r}: {problem}")
    return value


def thumbnail_url(image_id: str | None) -> str | None:
    return None if image_id is None else f"/v1/images/{quote(image_id, safe='/')}/thumbnail"


def read_token_file(path: str | os.PathLike[str]) -> str:
    """The token in ``path`` (surrounding whitespace dropped); empty is an error."""
    token = Path(path).read_text(encoding="utf-8").strip()
    if not token:
        raise ValueError(f"token file {str(path)!r} is empty")
    return token


@dataclass
class Service:
    """What the routes of one application share (``app.state.service``)."""

    collection: Collection
    token: str | None
    max_upload_bytes: int
    max_pixels: int
    workers: int
    max_queue: int
    refresh_seconds: float
    scorer: Any  # the service's re-ranker; None: the index's stored one; False: none
    review: ReviewQueue | None
    metrics: Metrics
    limiter: anyio.CapacityLimiter
    in_flight: int = 0  # identifications running or waiting for a worker
    thumbnails: OrderedDict[tuple[str, str | None], bytes] = field(default_factory=OrderedDict)

    def version(self) -> Version:
        """The collection's current version."""
        assert self.collection.current is not None
        return self.collection.current

    def queue(self) -> ReviewQueue:
        """The review queue (404 when the service keeps none)."""
        if self.review is None:
            raise ApiError(
                404, "review_disabled", "the review queue is off (start the service with "
                "--review-days N to keep low-confidence visitor photos)"
            )  # fmt: skip
        return self.review


def create_app(
    index_path: str | os.PathLike[str],
    *,
    token: str | None = None,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = MAX_PIXELS,
    workers: int = 2,
    cors_origins: Sequence[str] = (),
    refresh_seconds: float = 2.0,
    max_queue: int = 64,
    review_days: float | None = None,
    review_below: float = 0.5,
    engine: str = "torch",
    reranker: str | os.PathLike[str] | bool | None = None,
) -> FastAPI:
    """The service over the index at ``index_path``.

    Args:
        engine: what runs the networks (``torch``, ``onnxruntime``, ``openvino`` or
            ``auto``).
        token: bearer token of the write endpoints; default: ``$PYINSTANCE_API_TOKEN``;
            none at all: the service is read-only (writes answer 403).
        max_upload_bytes: largest accepted photo, in bytes (413 beyond).
        max_pixels: largest accepted photo, in pixels, read from its header before any
            decoding (413 beyond: decompression bombs never get decoded).
        workers: identifications running at once, in threads outside the event loop.
        cors_origins: origins allowed by CORS; none: CORS off.
        refresh_seconds: how often to look for commits made by other processes.
        max_queue: identifications waiting for a worker beyond which requests answer 503.
        review_days: opt-in review queue: keep visitor photos answered unknown or below
            ``review_below`` confidence for this many days, for curators (in
            ``INDEX/review/``); None: no photo is kept.
        review_below: confidence below which a photo goes to the review queue.
        reranker: a verification re-ranker (verifier file or registered name) used by
            ``/v1/identify`` unless a request says ``rerank=false``; resolved and checked
            against the index's recipe here, before serving. None: the index's stored one
            (``pyinstance calibrate --rerank``), if any; False: none unless a request says
            ``rerank=true``.
    """
    for name, value in (
        ("max_upload_bytes", max_upload_bytes),
        ("max_pixels", max_pixels),
        ("workers", workers),
        ("max_queue", max_queue),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
    if isinstance(cors_origins, str):
        raise TypeError("cors_origins: expected a sequence of origins, got a str")
    if token is None:
        token = os.environ.get(TOKEN_ENV) or None
    if token is not None and (not isinstance(token, str) or not token.strip()):
        raise ValueError("token: expected a non-empty str")
    collection = Collection(index_path, engine=engine)
    collection.open()  # fails here, before serving, when the index cannot be opened
    assert collection.current is not None
    scorer = (
        reranker
        if reranker is None or reranker is False
        else resolve_reranker(reranker, collection.current.view.recipe)
    )
    review = (
        ReviewQueue(collection.path / "review", days=review_days, below=review_below)
        if review_days is not None
        else None
    )
    metrics = Metrics()
    app = FastAPI(
        title="pyinstance identification service",
        version=collection.current.info["pyinstance_version"],
        description="Identify photos against an instance index; curate the collection.",
        lifespan=contextlib.asynccontextmanager(_lifespan),
    )
    app.state.service = Service(
        collection=collection,
        token=token,
        max_upload_bytes=max_upload_bytes,
        max_pixels=max_pixels,
        workers=workers,
        max_queue=max_queue,
        refresh_seconds=refresh_seconds,
        scorer=scorer,
        review=review,
        metrics=metrics,
        limiter=anyio.CapacityLimiter(workers),
    )
    app.state.collection = collection
    app.state.metrics = metrics
    install_error_handlers(app, metrics)
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.middleware("http")(count)
    _add_routes(app)
    return app


def _add_routes(app: FastAPI) -> None:
    """Every route of the service, in matching order."""
    write = [Depends(writer)]
    app.post(
        "/v1/identify",
        summary="Identify a photo: the instance or unknown, with a confidence",
        openapi_extra=_IDENTIFY_BODY,
    )(identify)
    app.post(
        "/v1/heatmap",
        summary="Where a photo matches a reference image: similarity heat map (JPEG)",
        openapi_extra=_IDENTIFY_BODY,
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}},
    )(heatmap)
    # reading the collection
    app.get(
        "/v1/instances",
        summary="Instances, optionally filtered by a substring of the id or of a metadata field",
    )(list_instances)
    app.get("/v1/instances/{instance_id}", summary="One instance and its reference images")(
        get_instance
    )
    app.get(
        "/v1/images/{image_id:path}/thumbnail",
        summary="A reference image as a JPEG thumbnail",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}},
    )(thumbnail)
    # changing the collection
    app.post(
        "/v1/instances/{instance_id}/images",
        summary="Add photos to an instance (created if new), in one commit",
        dependencies=write,
        status_code=201,
        openapi_extra=_ADD_BODY,
    )(add_images)
    app.patch(
        "/v1/instances/{instance_id}",
        summary="Set an instance's metadata fields (null deletes one), in one commit",
        dependencies=write,
        openapi_extra=_METADATA_BODY,
    )(set_metadata)
    app.delete(
        "/v1/instances/{instance_id}",
        summary="Remove an instance and all its images, in one commit",
        dependencies=write,
    )(delete_instance)
    app.delete(
        "/v1/images/{image_id:path}",
        summary="Remove one reference image, in one commit",
        dependencies=write,
    )(delete_image)
    # review queue
    app.get(
        "/v1/review",
        summary="Visitor photos answered unknown or with a low confidence (newest first)",
        dependencies=write,
    )(review_list)
    app.get(
        "/v1/review/{item_id}/photo",
        summary="A review item's photo",
        dependencies=write,
        response_class=Response,
    )(review_photo)
    app.post(
        "/v1/review/{item_id}/add",
        summary="Add a review item's photo to an instance (one commit) and take it off the queue",
        dependencies=write,
        status_code=201,
    )(review_add)
    app.delete("/v1/review/{item_id}", summary="Discard a review item", dependencies=write)(
        review_discard
    )
    # service
    app.get("/healthz", summary="Liveness: the index is open")(healthz)
    app.get("/v1/info", summary="The index: recipe, counts, version, limits")(info)
    app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)(prometheus)
    # pages
    app.get("/", include_in_schema=False)(visitor_page)
    app.get("/curator", include_in_schema=False)(curator_page)


def _service(request: Request) -> Service:
    return request.app.state.service


async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Look for other processes' commits every ``refresh_seconds`` while serving; close the
    collection at the end."""
    service: Service = app.state.service
    watcher = asyncio.create_task(_watch(service.collection, service.refresh_seconds))
    try:
        yield
    finally:
        watcher.cancel()
        service.collection.close()


async def _watch(collection: Collection, seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        with contextlib.suppress(Exception):  # a busy or vanished index: next time
            await collection.refresh()


async def count(request: Request, call_next: Any) -> Response:
    """Middleware: count each request, its status and duration by route."""
    start = time.perf_counter()
    response = await call_next(request)
    route = request.scope.get("route")
    endpoint = getattr(route, "path", None) or "unmatched"
    request.app.state.metrics.request(
        request.method, endpoint, response.status_code, time.perf_counter() - start
    )
    return response


def writer(request: Request) -> None:
    """Dependency of the write endpoints: the bearer token must be the service's."""
    token = _service(request).token
    if token is None:
        raise ApiError(
            403, "read_only", "this service is read-only: start it with a token "
            f"(${TOKEN_ENV} or --token-file) to allow changes"
        )  # fmt: skip
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise ApiError(
            401, "unauthorized", "missing 'Authorization: Bearer <token>' header",
            {"WWW-Authenticate": "Bearer"},
        )  # fmt: skip
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError(401, "unauthorized", "wrong token", {"WWW-Authenticate": "Bearer"})


async def uploaded(
    request: Request, *, many: bool
) -> tuple[list[tuple[str, bytes]], dict[str, str]]:
    """The photos of a multipart body (field ``file``/``files``) or a raw image body,
    and the form's text fields."""
    max_upload_bytes = _service(request).max_upload_bytes
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind in IMAGE_TYPES:
        return [("body", await read_body(request, max_upload_bytes))], {}
    if kind != "multipart/form-data":
        raise ApiError(
            415, "unsupported_media_type", f"content type {kind or 'none'!r}: send "
            f"multipart/form-data or a raw image body ({', '.join(IMAGE_TYPES)})"
        )  # fmt: skip
    files = MAX_FILES if many else 1
    request._body = await read_body(request, files * max_upload_bytes + _MULTIPART_SLACK)
    # Starlette refuses more than ``files`` files itself (400 "Too many files").
    form = await request.form(max_files=files, max_fields=8)
    parts = [
        part
        for key in ("file", "files", "image")
        for part in form.getlist(key)
        if isinstance(part, UploadFile)
    ]
    if not parts:
        raise ApiError(422, "missing_file", "no image in the form (field 'file' or 'files')")
    out = []
    for part in parts:
        data = await part.read()
        if len(data) > max_upload_bytes:
            raise ApiError(413, "too_large", f"{part.filename}: exceeds {max_upload_bytes} bytes")
        out.append((part.filename or "file", data))
    fields = {key: value for key, value in form.multi_items() if isinstance(value, str)}
    return out, fields


# -- identification -------------------------------------------------------------------


async def identify(
    request: Request,
    top_k: int = Query(5, ge=1, le=50, description="instances listed"),
    threshold: float | None = Query(
        None, ge=0.0, le=1.0, description="confidence below which the answer is unknown"
    ),
    classifier: str | None = Query(
        None, max_length=64, description="a registered classifier (default: the index's)"
    ),
    multi: bool = Query(
        False, description="also list every collection object in the photo, with its box"
    ),
    rerank: bool | None = Query(
        None,
        description="re-rank the top candidates with the verification re-ranker (default: "
        "the service's or the index's, when there is one)",
    ),
) -> dict[str, Any]:
    service = _service(request)
    ((name, data),), _ = await uploaded(request, many=False)
    if service.in_flight >= service.workers + service.max_queue:
        raise ApiError(
            503, "busy", f"{service.max_queue} identifications are already waiting; retry "
            "shortly", {"Retry-After": "1"},
        )  # fmt: skip
    pinned = service.version()
    options = _Options(top_k, threshold, classifier, multi, rerank)
    service.in_flight += 1  # the event loop's thread only: no lock needed
    try:
        answer = await anyio.to_thread.run_sync(
            identify_photo, service, pinned, name, data, options, limiter=service.limiter
        )
    finally:
        service.in_flight -= 1
    service.metrics.answer(answer["instance"] is not None)
    return answer


@dataclass(frozen=True)
class _Options:
    """The query options of one identification."""

    top_k: int
    threshold: float | None
    classifier: str | None
    multi: bool
    rerank: bool | None


def identify_photo(
    service: Service, pinned: Version, name: str, data: bytes, options: _Options
) -> dict[str, Any]:
    """The answer of ``/v1/identify`` for one photo (in a worker thread)."""
    start = time.perf_counter()
    identifier = _identifier(service, pinned, options)
    longest = round(max(pinned.view.recipe.scales) * pinned.view.recipe.max_side)
    decoding = time.perf_counter()
    image = decode_image(data, max_pixels=service.max_pixels, longest=longest, name=name)
    decoded = time.perf_counter()
    try:
        (result,) = identifier.identify([image])
    except ValueError as error:  # e.g. smaller than the backbone accepts
        raise ApiError(422, "unusable_image", str(error)) from error
    ms = dict(result.ms)
    ms["decode"] = (decoded - decoding) * 1e3
    ms["prepare"] = (decoding - start) * 1e3
    ms["total"] = (time.perf_counter() - start) * 1e3
    answer = {
        "instance": result.instance,
        "metadata": pinned.metadata.get(result.instance or "", {}),
        "confidence": result.confidence,
        "threshold": identifier.threshold,
        "classifier": options.classifier or pinned.default_classifier,
        "reranker": identifier.reranker_name,
        "top_k": [
            {
                "instance": m.instance,
                "metadata": pinned.metadata.get(m.instance, {}),
                "score": m.score,
                "image_id": m.image_id,
                "thumbnail_url": thumbnail_url(m.image_id),
            }
            for m in result.top_k
        ],
        "ms": ms,
        "version": pinned.number,
    }
    if result.objects is not None:
        answer["objects"] = [
            {
                **found.to_dict(),
                "metadata": pinned.metadata.get(found.instance, {}),
                "thumbnail_url": thumbnail_url(found.image_id),
            }
            for found in result.objects
        ]
    review = service.review
    if review is not None and review.wants(result.instance, result.confidence):
        fmt = open_image(data, max_pixels=service.max_pixels, name=name).format
        review.keep(hashlib.sha256(data).hexdigest(), data, FORMATS[fmt], answer)
    return answer


def _identifier(service: Service, pinned: Version, options: _Options) -> Any:
    """The pinned version's identifier for ``options`` (409/400 when it cannot be made)."""
    if options.multi and pinned.view.get_setting(OBJECTS_THRESHOLD) is None:
        raise ApiError(
            409, "objects_uncalibrated", "multi: the index has no objects threshold; "
            "run 'pyinstance calibrate INDEX --objects' first"
        )  # fmt: skip
    chosen: Any = service.scorer  # None: the index's stored re-ranker, if any
    if options.rerank is False:
        chosen = False
    elif options.rerank and (chosen is None or chosen is False):
        if pinned.view.get_setting("reranker") is None:
            raise ApiError(
                409, "no_reranker", "rerank: the service was started without a "
                "re-ranker and the index stores none (pyinstance serve --rerank MODEL)"
            )  # fmt: skip
        chosen = None
    try:
        return pinned.identifier(
            options.classifier, options.threshold, options.top_k, options.multi, chosen
        )
    except ThresholdMismatchError as error:
        raise ApiError(409, "threshold_mismatch", str(error)) from error
    except StaleThresholdError as error:
        raise ApiError(409, "threshold_stale", str(error)) from error
    except (PluginError, KeyError) as error:
        raise ApiError(400, "unknown_classifier", str(error).strip("'\"")) from error
    except ValueError as error:
        if len(pinned.view) == 0:
            raise ApiError(409, "empty_index", "the index holds no references") from error
        raise ApiError(400, "invalid_classifier", str(error)) from error


async def heatmap(
    request: Request,
    image_id: str = Query(..., max_length=1024, description="the reference image"),
) -> Response:
    check_image_id(image_id)
    service = _service(request)
    ((name, data),), _ = await uploaded(request, many=False)
    pinned = service.version()
    if image_id not in pinned.images:
        raise not_in_index("image", image_id)
    picture = await anyio.to_thread.run_sync(
        heatmap_picture, pinned, name, data, image_id, service.max_pixels, limiter=service.limiter
    )
    return Response(picture, media_type="image/jpeg")


def heatmap_picture(
    pinned: Version, name: str, data: bytes, image_id: str, max_pixels: int
) -> bytes:
    """The JPEG of ``/v1/heatmap`` for one photo (in a worker thread)."""
    longest = round(max(pinned.view.recipe.scales) * pinned.view.recipe.max_side)
    image = decode_image(data, max_pixels=max_pixels, longest=longest, name=name)
    try:
        return similarity_heatmap(pinned.view, image, image_id)
    except ValueError as error:
        raise ApiError(422, "heatmap_unavailable", str(error)) from error


# -- reading the collection -----------------------------------------------------------


def instance_summary(pinned: Version, name: str) -> dict[str, Any]:
    images = pinned.instances.get(name, [])
    first = images[0]["id"] if images else None
    return {
        "id": name,
        "metadata": pinned.metadata.get(name, {}),
        "images": len(images),
        "added": min((i["added"] for i in images), default=None),
        "thumbnail_url": thumbnail_url(first),
    }


def image_summary(image: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": image["id"],
        "instance": image["instance"],
        "added": image["added"],
        "sha256": image["sha256"],
        "thumbnail_url": thumbnail_url(image["id"]),
    }


def instance_detail(pinned: Version, instance_id: str) -> dict[str, Any]:
    return {
        **instance_summary(pinned, instance_id),
        "version": pinned.number,
        "reference_images": [image_summary(i) for i in pinned.instances[instance_id]],
    }


def matches(pinned: Version, name: str, q: str) -> bool:
    """Whether ``q`` is a case-insensitive substring of instance ``name`` or of one of its
    metadata values."""
    texts = [name, *(str(v) for v in pinned.metadata.get(name, {}).values())]
    return any(q.lower() in text.lower() for text in texts)


async def list_instances(
    request: Request,
    q: str | None = Query(
        None, max_length=128, description="substring of the id or a metadata value"
    ),
    offset: int = Query(0, ge=0),
    limit: int = Query(100, ge=1, le=1000),
) -> dict[str, Any]:
    pinned = _service(request).version()
    names = [n for n in pinned.instances if q is None or matches(pinned, n, q)]
    return {
        "version": pinned.number,
        "total": len(names),
        "instances": [instance_summary(pinned, n) for n in names[offset : offset + limit]],
    }


async def get_instance(request: Request, instance_id: str) -> dict[str, Any]:
    check_instance_id(instance_id)
    pinned = _service(request).version()
    if instance_id not in pinned.instances:
        raise not_in_index("instance", instance_id)
    return instance_detail(pinned, instance_id)


async def thumbnail(request: Request, image_id: str) -> Response:
    check_image_id(image_id)
    service = _service(request)
    image = service.version().images.get(image_id)
    if image is None:
        raise not_in_index("image", image_id)
    if image["source"] is None:
        raise ApiError(404, "no_source", f"image {image_id!r} was added without a file")
    key = (image_id, image["sha256"])
    thumbnails = service.thumbnails
    data = thumbnails.get(key)
    if data is None:
        data = await anyio.to_thread.run_sync(make_thumbnail, image["source"], image_id)
        thumbnails[key] = data
        while len(thumbnails) > _THUMBNAILS_KEPT:
            thumbnails.popitem(last=False)
    return Response(
        data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"}
    )


def make_thumbnail(source: str, image_id: str) -> bytes:
    try:
        with Image.open(source) as image:
            image.draft("RGB", (THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            image = image.convert("RGB")
            image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            out = io.BytesIO()
            image.save(out, "JPEG", quality=85)
            return out.getvalue()
    except (OSError, ValueError) as error:
        raise ApiError(
            404, "source_unreadable", f"image {image_id!r}: its file cannot be read"
        ) from error


# -- changing the collection ----------------------------------------------------------


async def add_images(instance_id: str, request: Request) -> JSONResponse:
    check_instance_id(instance_id)
    service = _service(request)
    photos, fields = await uploaded(request, many=True)
    metadata = parse_fields(instance_id, fields.get("metadata", "{}"), allow_none=False)
    checked = await anyio.to_thread.run_sync(checked_uploads, photos, service.max_pixels)
    report, paths = await service.collection.add(instance_id, checked, metadata)
    if report.added + report.updated + report.unchanged == 0:
        reasons = "; ".join(f"{Path(s.path).name}: {s.reason}" for s in report.skipped)
        raise ApiError(422, "nothing_added", f"no photo could be added ({reasons})")
    pinned = service.version()
    holders = {image["sha256"]: image for image in pinned.images.values()}
    elsewhere = [
        {"file": name, "instance": holders[path.stem]["instance"]}
        for (name, _), path in zip(photos, paths, strict=True)
        if path.stem in holders and holders[path.stem]["instance"] != instance_id
    ]
    return JSONResponse(
        {
            "instance": instance_id,
            "metadata": pinned.metadata.get(instance_id, {}),
            "added": report.added,
            "unchanged": report.unchanged,
            "already_in_other_instances": elsewhere,
            "skipped": [{"file": Path(s.path).name, "reason": s.reason} for s in report.skipped],
            "version": pinned.number,
            "images": [image_summary(i) for i in pinned.instances.get(instance_id, [])],
        },
        status_code=201 if report.added else 200,
    )


async def set_metadata(
    instance_id: str,
    request: Request,
    replace: bool = Query(False, description="drop the fields not given"),
) -> dict[str, Any]:
    check_instance_id(instance_id)
    service = _service(request)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise ApiError(
            415, "unsupported_media_type", f"content type {kind or 'none'!r}: send "
            "application/json, an object of metadata fields"
        )  # fmt: skip
    body = await read_body(request, _METADATA_BYTES)
    fields = parse_fields(instance_id, body.decode("utf-8", "replace"), allow_none=True)
    if instance_id not in service.version().instances:
        raise not_in_index("instance", instance_id)
    try:
        await service.collection.set_metadata(instance_id, fields, replace=replace)
    except KeyError as error:  # removed meanwhile by another request
        raise ApiError(404, "unknown_instance", str(error).strip("\"'")) from error
    except ValueError as error:  # e.g. too many fields once merged
        raise ApiError(422, "invalid_metadata", str(error)) from error
    pinned = service.version()
    if instance_id not in pinned.instances:
        raise not_in_index("instance", instance_id)
    return instance_detail(pinned, instance_id)


def parse_fields(instance_id: str, text: str, *, allow_none: bool) -> dict[str, Any]:
    """A JSON object of metadata fields, checked (422 with the reason otherwise)."""
    try:
        fields = json.loads(text)
        return check_fields(instance_id, fields, allow_none=allow_none)
    except ValueError as error:  # JSONDecodeError included
        raise ApiError(422, "invalid_metadata", f"metadata: {error}") from error


async def delete_instance(request: Request, instance_id: str) -> dict[str, Any]:
    check_instance_id(instance_id)
    service = _service(request)
    if instance_id not in service.version().instances:
        raise not_in_index("instance", instance_id)
    try:
        removed = await service.collection.remove(instance=instance_id)
    except KeyError as error:  # removed meanwhile by another request
        raise ApiError(404, "unknown_instance", str(error).strip("\"'")) from error
    return {"removed_images": removed, "version": service.version().number}


async def delete_image(request: Request, image_id: str) -> dict[str, Any]:
    check_image_id(image_id)
    service = _service(request)
    if image_id not in service.version().images:
        raise not_in_index("image", image_id)
    try:
        removed = await service.collection.remove(image=image_id)
    except KeyError as error:
        raise ApiError(404, "unknown_image", str(error).strip("\"'")) from error
    return {"removed_images": removed, "version": service.version().number}


def checked_uploads(photos: list[tuple[str, bytes]], max_pixels: int) -> list[tuple[str, bytes]]:
    """Check each photo decodes; name it ``<sha256>.<ext>`` as the uploads folder keeps it."""
    named = []
    for name, data in photos:
        image = decode_image(data, max_pixels=max_pixels, longest=THUMBNAIL_SIDE, name=name)
        fmt = open_image(data, max_pixels=max_pixels, name=name).format
        del image
        named.append((f"{hashlib.sha256(data).hexdigest()}.{FORMATS[fmt]}", data))
    return named


# -- review queue -----------------------------------------------------------------------


def review_item(service: Service, item_id: str) -> tuple[dict[str, Any], Path]:
    found = service.queue().get(item_id)
    if found is None:
        raise ApiError(404, "unknown_review_item", f"no review item {item_id[:80]!r}")
    return found


async def review_list(request: Request) -> dict[str, Any]:
    service = _service(request)
    kept = service.queue()
    items = await anyio.to_thread.run_sync(kept.items)
    metadata = service.version().metadata  # today's titles, not those of the day of the photo
    return {
        "days": kept.days,
        "below": kept.below,
        "items": [
            {
                **i,
                "metadata": metadata.get(i["instance"] or "", {}),
                "top_k": [{**m, "metadata": metadata.get(m["instance"], {})} for m in i["top_k"]],
                "photo_url": f"/v1/review/{i['id']}/photo",
            }
            for i in items
        ],
    }


async def review_photo(request: Request, item_id: str) -> Response:
    record, photo = review_item(_service(request), item_id)
    data = await anyio.to_thread.run_sync(photo.read_bytes)
    kind = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}[record["ext"]]
    return Response(data, media_type=kind, headers={"Cache-Control": "no-store"})


async def review_add(
    request: Request, item_id: str, instance: str = Query(..., min_length=1, max_length=128)
) -> dict[str, Any]:
    check_instance_id(instance)
    service = _service(request)
    record, photo = review_item(service, item_id)
    data = await anyio.to_thread.run_sync(photo.read_bytes)
    checked = await anyio.to_thread.run_sync(
        checked_uploads, [(photo.name, data)], service.max_pixels
    )
    report, _ = await service.collection.add(instance, checked)
    if report.added + report.unchanged == 0:
        reasons = "; ".join(s.reason for s in report.skipped)
        raise ApiError(422, "nothing_added", f"the photo could not be added ({reasons})")
    service.queue().discard(item_id)
    return {"instance": instance, "added": report.added, "version": service.version().number}


async def review_discard(request: Request, item_id: str) -> dict[str, Any]:
    service = _service(request)
    review_item(service, item_id)
    service.queue().discard(item_id)
    return {"discarded": item_id}


# -- service --------------------------------------------------------------------------


async def healthz(request: Request) -> dict[str, Any]:
    service = _service(request)
    pinned = service.version()
    return {
        "status": "ok",
        "version": pinned.number,
        "revision": service.collection.revision,
        "images": len(pinned.images),
    }


async def info(request: Request) -> dict[str, Any]:
    service = _service(request)
    pinned = service.version()
    details = dict(pinned.info)
    return {
        "version": pinned.number,
        "format_version": details["version"],
        "images": details["images"],
        "instances": details["instances"],
        "recipe": details["recipe"],
        "settings": details["settings"],
        "stale_thresholds": details["stale_thresholds"],
        "classifier": pinned.default_classifier,
        "engine": pinned.view.describer.engine,
        "pyinstance_version": details["pyinstance_version"],
        "read_only": service.token is None,
        "limits": {
            "max_upload_bytes": service.max_upload_bytes,
            "max_pixels": service.max_pixels,
        },
    }


async def prometheus(request: Request) -> PlainTextResponse:
    metrics = _service(request).metrics
    return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")


# -- pages ----------------------------------------------------------------------------


def page(name: str) -> HTMLResponse:
    html = resources.files("pyinstance.serve").joinpath("static", name).read_text("utf-8")
    return HTMLResponse(html, headers={"Content-Security-Policy": _PAGE_CSP})


async def visitor_page() -> HTMLResponse:
    return page("visitor.html")


async def curator_page() -> HTMLResponse:
    return page("curator.html")
