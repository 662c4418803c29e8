"""The service's building blocks on their own (no index, no network): Prometheus metrics,
error answers, upload checks, the uploads folder and the review queue."""

from __future__ import annotations

import asyncio
import io
import json
import os
import threading
import time
from pathlib import Path

import pytest
from fastapi import FastAPI, Query
from fastapi.testclient import TestClient
from PIL import Image
from starlette.exceptions import HTTPException

from pyinstance.index import IndexBusyError, IndexWriteError
from pyinstance.serve import errors as errors_module
from pyinstance.serve.errors import ApiError, error_response, install_error_handlers, not_in_index
from pyinstance.serve.metrics import BUCKETS, Metrics
from pyinstance.serve.review import ReviewQueue
from pyinstance.serve.upload_folder import UploadFolder
from pyinstance.serve.uploads import FORMATS, IMAGE_TYPES, decode_image, open_image, read_body

from .fakes import picture

# -- metrics ----------------------------------------------------------------------------------


def test_metrics_render_every_family_in_order() -> None:
    metrics = Metrics()
    metrics.request("GET", "/b", 200, 0.005)
    metrics.request("GET", "/b", 200, 0.02)
    metrics.request("POST", "/a", 404, 11.0)
    metrics.request("GET", '/q"\\\n', 500, 0.0)
    metrics.rejected("not_found")
    metrics.rejected("not_found")
    metrics.rejected('a"b')
    metrics.answer(True)
    metrics.answer(False)
    metrics.answer(False)
    lines = metrics.render().split("\n")
    assert lines[-1] == ""
    b_buckets = [int(bound >= 0.005) + int(bound >= 0.02) for bound in BUCKETS]
    expected = [
        "# HELP pyinstance_requests_total HTTP requests answered, by endpoint and status.",
        "# TYPE pyinstance_requests_total counter",
        'pyinstance_requests_total{method="GET",endpoint="/b",status="200"} 2',
        'pyinstance_requests_total{method="GET",endpoint="/q\\"\\\\\\n",status="500"} 1',
        'pyinstance_requests_total{method="POST",endpoint="/a",status="404"} 1',
        "# HELP pyinstance_request_seconds Request latency by endpoint.",
        "# TYPE pyinstance_request_seconds histogram",
        *(f'pyinstance_request_seconds_bucket{{endpoint="/a",le="{b}"}} 0' for b in BUCKETS),
        'pyinstance_request_seconds_bucket{endpoint="/a",le="+Inf"} 1',
        'pyinstance_request_seconds_sum{endpoint="/a"} 11.000000',
        'pyinstance_request_seconds_count{endpoint="/a"} 1',
        *(
            f'pyinstance_request_seconds_bucket{{endpoint="/b",le="{b}"}} {n}'
            for b, n in zip(BUCKETS, b_buckets, strict=True)
        ),
        'pyinstance_request_seconds_bucket{endpoint="/b",le="+Inf"} 2',
        'pyinstance_request_seconds_sum{endpoint="/b"} 0.025000',
        'pyinstance_request_seconds_count{endpoint="/b"} 2',
        *(
            f'pyinstance_request_seconds_bucket{{endpoint="/q\\"\\\\\\n",le="{b}"}} 1'
            for b in BUCKETS
        ),
        'pyinstance_request_seconds_bucket{endpoint="/q\\"\\\\\\n",le="+Inf"} 1',
        'pyinstance_request_seconds_sum{endpoint="/q\\"\\\\\\n"} 0.000000',
        'pyinstance_request_seconds_count{endpoint="/q\\"\\\\\\n"} 1',
        "# HELP pyinstance_rejected_requests_total Requests refused with a 4xx, by code.",
        "# TYPE pyinstance_rejected_requests_total counter",
        'pyinstance_rejected_requests_total{code="a\\"b"} 1',
        'pyinstance_rejected_requests_total{code="not_found"} 2',
        "# HELP pyinstance_identifications_total Identifications by result "
        "(unknown: rejected by the open-set threshold).",
        "# TYPE pyinstance_identifications_total counter",
        'pyinstance_identifications_total{result="known"} 1',
        'pyinstance_identifications_total{result="unknown"} 2',
        "",
    ]
    assert lines == expected


def test_empty_metrics_still_count_zero_identifications() -> None:
    text = Metrics().render()
    assert text.endswith(
        'pyinstance_identifications_total{result="known"} 0\n'
        'pyinstance_identifications_total{result="unknown"} 0\n'
    )
    assert "pyinstance_request_seconds_bucket" not in text


def test_bucket_bounds_are_inclusive() -> None:
    metrics = Metrics()
    for bound in BUCKETS:
        metrics.request("GET", "/x", 200, bound)
    text = metrics.render()
    for i, bound in enumerate(BUCKETS):
        assert f'pyinstance_request_seconds_bucket{{endpoint="/x",le="{bound}"}} {i + 1}\n' in text


def test_metrics_are_safe_from_many_threads() -> None:
    metrics = Metrics()

    def hammer() -> None:
        for _ in range(2000):
            metrics.request("GET", "/x", 200, 0.001)
            metrics.rejected("c")
            metrics.answer(True)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    text = metrics.render()
    assert 'pyinstance_requests_total{method="GET",endpoint="/x",status="200"} 8000' in text
    assert 'pyinstance_rejected_requests_total{code="c"} 8000' in text
    assert 'pyinstance_identifications_total{result="known"} 8000' in text
    assert 'pyinstance_request_seconds_count{endpoint="/x"} 8000' in text
    assert f'pyinstance_request_seconds_bucket{{endpoint="/x",le="{BUCKETS[0]}"}} 8000' in text


# -- errors -----------------------------------------------------------------------------------


def test_api_error_and_not_in_index() -> None:
    error = ApiError(418, "teapot", "short and stout", {"X-A": "1"})
    assert (error.status, error.code, error.message, error.headers) == (
        418,
        "teapot",
        "short and stout",
        {"X-A": "1"},
    )
    assert str(error) == "short and stout"
    assert ApiError(400, "c", "m").headers is None
    missing = not_in_index("image", "a/b.jpg")
    assert (missing.status, missing.code, missing.message) == (
        404,
        "unknown_image",
        "no image 'a/b.jpg' in the index",
    )


def test_error_response_shape() -> None:
    response = error_response(409, "conflict", "m", {"Retry-After": "3"})
    assert response.status_code == 409
    assert json.loads(response.body) == {"error": {"code": "conflict", "message": "m"}}
    assert response.headers["retry-after"] == "3"


@pytest.fixture
def error_app() -> tuple[TestClient, Metrics]:
    metrics = Metrics()
    app = FastAPI()
    install_error_handlers(app, metrics)

    @app.get("/api")
    async def api() -> None:
        raise ApiError(418, "teapot", "short", {"X-Why": "tea"})

    @app.get("/http/{status}")
    async def http(status: int) -> None:
        raise HTTPException(status, detail=f"detail {status}", headers={"X-S": str(status)})

    @app.get("/valid")
    async def valid(n: int = Query(..., ge=1), m: int = Query(...)) -> None:
        return None

    @app.get("/write")
    async def write() -> None:
        raise IndexWriteError("disk full")

    @app.get("/busy")
    async def busy() -> None:
        raise IndexBusyError("locked")

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret detail")

    return TestClient(app, raise_server_exceptions=False), metrics


def test_error_handlers_answer_json_and_count(error_app) -> None:
    client, metrics = error_app
    response = client.get("/api")
    assert response.status_code == 418 and response.headers["x-why"] == "tea"
    assert response.json() == {"error": {"code": "teapot", "message": "short"}}
    expected_codes = {
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
        418: "http_error",
    }
    assert {k: v for k, v in expected_codes.items() if k != 418} == errors_module._CODES
    for status, code in expected_codes.items():
        response = client.get(f"/http/{status}")
        assert response.status_code == status
        assert response.json() == {"error": {"code": code, "message": f"detail {status}"}}
        assert response.headers["x-s"] == str(status)
    response = client.get("/valid", params={"n": 0})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"
    message = response.json()["error"]["message"]
    assert message.startswith("query.n: ") and "; query.m: Field required" in message
    assert message.count("; ") == 1
    response = client.get("/write")
    assert response.status_code == 507
    assert response.json() == {"error": {"code": "write_failed", "message": "disk full"}}
    response = client.get("/busy")
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    assert response.json() == {"error": {"code": "index_busy", "message": "locked"}}
    response = client.get("/boom")
    assert response.status_code == 500
    assert response.json() == {
        "error": {"code": "internal", "message": "internal error: RuntimeError"}
    }
    text = metrics.render()
    for code, n in (
        ("teapot", 1),
        ("not_found", 1),
        ("invalid_request", 2),
        ("write_failed", 2),
        ("index_busy", 1),
        ("http_error", 1),
    ):
        assert f'pyinstance_rejected_requests_total{{code="{code}"}} {n}\n' in text
    assert 'code="internal"' not in text


def test_validation_messages_without_location_or_message() -> None:
    from fastapi.exceptions import RequestValidationError

    metrics = Metrics()
    app = FastAPI()
    install_error_handlers(app, metrics)

    @app.get("/odd")
    async def odd() -> None:
        raise RequestValidationError([{"type": "x"}, {"loc": ("body", 3), "msg": "bad"}])

    @app.get("/none")
    async def none() -> None:
        raise RequestValidationError([])

    client = TestClient(app)
    assert client.get("/odd").json()["error"]["message"] == ": invalid; body.3: bad"
    assert client.get("/none").json()["error"] == {
        "code": "invalid_request",
        "message": "invalid request",
    }


# -- uploads ----------------------------------------------------------------------------------


class FakeRequest:
    def __init__(self, chunks: list[bytes], declared: str | None):
        self.headers = {} if declared is None else {"content-length": declared}
        self.chunks = chunks
        self.read = 0

    async def stream(self):
        for chunk in self.chunks:
            self.read += 1
            yield chunk


def body(chunks: list[bytes], limit: int, declared: str | None = None) -> bytes:
    return asyncio.run(read_body(FakeRequest(chunks, declared), limit))


def test_read_body_joins_chunks_up_to_the_limit() -> None:
    assert body([b"ab", b"", b"cd"], 4) == b"abcd"
    assert body([b"ab", b"cd"], 4, declared="4") == b"abcd"
    assert body([], 1) == b""
    assert body([b"ab"], 4, declared="lots") == b"ab"
    assert body([b"ab"], 4, declared="-9") == b"ab"


def test_read_body_refuses_beyond_the_limit() -> None:
    with pytest.raises(ApiError) as caught:
        body([b"ab"], 4, declared="5")
    assert (caught.value.status, caught.value.code) == (413, "too_large")
    assert caught.value.message == "body of 5 bytes exceeds 4 bytes"
    request = FakeRequest([b"abc", b"de", b"never"], None)
    with pytest.raises(ApiError) as caught:
        asyncio.run(read_body(request, 4))
    assert (caught.value.status, caught.value.code, caught.value.message) == (
        413,
        "too_large",
        "body exceeds 4 bytes",
    )
    assert request.read == 2  # stopped at the first chunk beyond the limit


def api_error(call, *args, **kwargs) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call(*args, **kwargs)
    return caught.value


def test_open_image_accepts_jpeg_png_webp_within_the_pixel_limit() -> None:
    assert IMAGE_TYPES == ("image/jpeg", "image/png", "image/webp")
    assert FORMATS == {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
    for fmt in FORMATS:
        image = open_image(picture((20, 10), fmt), max_pixels=200)
        assert image.format == fmt and image.size == (20, 10)
    error = api_error(open_image, picture((20, 10), "PNG"), max_pixels=199, name="p.png")
    assert (error.status, error.code) == (413, "too_many_pixels")
    assert error.message == "p.png: 20×10 pixels exceeds the limit of 199 pixels"


def test_open_image_refusals() -> None:
    error = api_error(open_image, b"", max_pixels=10, name="e.jpg")
    assert (error.status, error.code) == (422, "empty_image")
    assert error.message == "e.jpg: empty; expected a JPEG, PNG or WebP image"
    error = api_error(open_image, b"plain text", max_pixels=10)
    assert (error.status, error.code, error.message) == (
        415,
        "not_an_image",
        "image: not a JPEG, PNG or WebP image",
    )
    gif = io.BytesIO()
    Image.new("RGB", (4, 4)).save(gif, "GIF")
    error = api_error(open_image, gif.getvalue(), max_pixels=100, name="g")
    assert (error.status, error.code) == (415, "unsupported_image")
    assert error.message == "g: GIF images are not accepted; send JPEG, PNG or WebP"


def test_open_image_refuses_decompression_bombs_from_the_header(monkeypatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)
    data = picture((20, 10), "PNG")  # 200 > 2 * 50 pixels: Pillow's bomb error
    error = api_error(open_image, data, max_pixels=10**6, name="b")
    assert (error.status, error.code) == (413, "too_many_pixels")
    assert error.message.startswith("b: too many pixels, a decompression bomb (")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 150)  # 200 > 150: only a warning, ignored
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert open_image(data, max_pixels=10**6).size == (20, 10)
        assert decode_image(data, max_pixels=10**6, longest=100).size == (20, 10)


def test_open_image_refuses_a_corrupt_header() -> None:
    for cut in (picture((20, 10))[:30], picture((20, 10), "WEBP")[:20]):  # OSError in open
        error = api_error(open_image, cut, max_pixels=100, name="c")
        assert (error.status, error.code) == (422, "corrupt_image")
        assert error.message.startswith("c: unreadable image header (")


def test_decode_image_applies_exif_and_draft() -> None:
    out = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to view
    Image.new("RGB", (40, 20), (10, 200, 30)).save(out, "JPEG", exif=exif)
    image = decode_image(out.getvalue(), max_pixels=10_000, longest=100)
    assert image.mode == "RGB" and image.size == (20, 40)
    big = picture((800, 600))
    assert decode_image(big, max_pixels=10**6, longest=100).size == (400, 300)  # 1/2 >= 200
    assert decode_image(big, max_pixels=10**6, longest=50).size == (200, 150)  # 1/4 >= 100
    assert decode_image(big, max_pixels=10**6, longest=400).size == (800, 600)
    png = picture((800, 600), "PNG")
    assert decode_image(png, max_pixels=10**6, longest=50).size == (800, 600)
    grey = io.BytesIO()
    Image.new("L", (8, 8), 90).save(grey, "PNG")
    decoded = decode_image(grey.getvalue(), max_pixels=100, longest=8)
    assert decoded.mode == "RGB" and decoded.getpixel((3, 3)) == (90, 90, 90)


def test_decode_image_refuses_truncated_data() -> None:
    data = picture((200, 200), "PNG")
    error = api_error(decode_image, data[: len(data) // 2], max_pixels=10**6, longest=10, name="t")
    assert (error.status, error.code) == (422, "corrupt_image")
    assert error.message.startswith("t: cannot be decoded (truncated or corrupt: ")
    error = api_error(decode_image, b"", max_pixels=10, longest=10)
    assert error.code == "empty_image"


# -- the uploads folder ---------------------------------------------------------------------


def test_upload_folder_writes_once_and_creates_the_folder(tmp_path: Path) -> None:
    folder = UploadFolder(str(tmp_path / "uploads"))
    assert folder.path == tmp_path / "uploads"
    assert folder.clean([]) == 0  # no folder yet
    with folder.writing():
        path = folder.write("a.jpg", b"first")
        assert folder.write("a.jpg", b"second") == path
    assert path == tmp_path / "uploads" / "a.jpg" and path.read_bytes() == b"first"
    assert (tmp_path / "uploads" / ".lock").is_file()


def test_upload_folder_clean_removes_orphans_only(tmp_path: Path) -> None:
    folder = UploadFolder(tmp_path / "uploads")
    with folder.writing():
        kept = folder.write("k.jpg", b"k")
        folder.write("o.jpg", b"o")
    (folder.path / ".tmp-123").write_bytes(b"t")
    (folder.path / "sub").mkdir()
    (folder.path / "sub" / "x").write_bytes(b"x")
    link = tmp_path / "link.jpg"
    link.symlink_to(kept)
    assert folder.clean([str(link), tmp_path / "elsewhere.jpg"]) == 2
    assert sorted(p.name for p in folder.path.iterdir()) == [".lock", "k.jpg", "sub"]
    assert folder.clean([kept]) == 0


def test_upload_folder_clean_waits_for_writers(tmp_path: Path) -> None:
    folder = UploadFolder(tmp_path / "uploads")
    entered, leave = threading.Event(), threading.Event()

    def write() -> None:
        with folder.writing():
            folder.write("w.jpg", b"w")
            entered.set()
            leave.wait(30)

    writer = threading.Thread(target=write)
    writer.start()
    entered.wait(30)
    start = time.monotonic()
    assert folder.clean([], wait=0.2) == 0
    assert time.monotonic() - start >= 0.2
    assert (folder.path / "w.jpg").exists()
    releaser = threading.Timer(0.1, leave.set)
    releaser.start()
    assert folder.clean([], wait=30) == 1
    writer.join()
    assert not (folder.path / "w.jpg").exists()


# -- the review queue -----------------------------------------------------------------------

ANSWER = {
    "instance": "tower",
    "confidence": 0.3,
    "top_k": [{"instance": "tower", "score": 0.9, "image_id": "x", "metadata": {}}],
    "ms": {},
}
ID_A, ID_B = "a" * 64, "b" * 64


def test_review_queue_arguments(tmp_path: Path) -> None:
    for days in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="^review_days: expected a positive number"):
            ReviewQueue(tmp_path / "r", days=days, below=0.5)
    for below in (-0.01, 1.01, float("nan")):
        with pytest.raises(ValueError, match=r"^review_below: expected a number in \[0, 1\]"):
            ReviewQueue(tmp_path / "r", days=1, below=below)
    queue = ReviewQueue(tmp_path / "r", days=1, below=0)
    assert (queue.days, queue.below) == (1.0, 0.0) and type(queue.days) is float
    assert type(queue.below) is float
    assert ReviewQueue(tmp_path / "r", days=0.5, below=1).below == 1.0
    assert (tmp_path / "r").is_dir()


def test_review_queue_wants_unknown_or_uncertain(tmp_path: Path) -> None:
    queue = ReviewQueue(tmp_path / "r", days=1, below=0.5)
    assert queue.wants(None, 0.99)
    assert queue.wants("a", 0.49)
    assert not queue.wants("a", 0.5)
    assert not queue.wants("", 0.9)


def test_review_queue_keeps_lists_gets_and_discards(tmp_path: Path, monkeypatch) -> None:
    queue = ReviewQueue(tmp_path / "r", days=1, below=0.5)
    clock = [1000.0]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    queue.keep(ID_A, b"photo-a", "png", ANSWER)
    clock[0] = 1001.0
    queue.keep(ID_B, b"photo-b", "jpg", {**ANSWER, "instance": None, "top_k": []})
    record = json.loads((tmp_path / "r" / f"{ID_A}.json").read_text())
    assert record == {
        "id": ID_A,
        "ext": "png",
        "time": 1000.0,
        "instance": "tower",
        "confidence": 0.3,
        "top_k": [{"instance": "tower", "score": 0.9}],
    }
    assert (tmp_path / "r" / f"{ID_A}.png").read_bytes() == b"photo-a"
    assert [item["id"] for item in queue.items()] == [ID_B, ID_A]
    (tmp_path / "r" / "broken.json").write_text("{not json")
    assert [item["id"] for item in queue.items()] == [ID_B, ID_A]
    found = queue.get(ID_A)
    assert found == (record, tmp_path / "r" / f"{ID_A}.png")
    for bad in ("a" * 63, "A" * 64, "a" * 65, "../" + "a" * 61, "g" * 64):
        assert queue.get(bad) is None
    (tmp_path / "r" / f"{ID_B}.jpg").unlink()
    assert queue.get(ID_B) is None  # its photo is gone
    assert queue.get("c" * 64) is None
    assert queue.discard(ID_A) is True
    assert not (tmp_path / "r" / f"{ID_A}.png").exists()
    assert not (tmp_path / "r" / f"{ID_A}.json").exists()
    assert queue.discard(ID_A) is False
    assert queue.discard(ID_B) is False and (tmp_path / "r" / f"{ID_B}.json").exists()


def test_review_queue_purges_expired_items(tmp_path: Path) -> None:
    queue = ReviewQueue(tmp_path / "r", days=1, below=0.5)
    queue.keep(ID_A, b"a", "jpg", ANSWER)
    queue.keep(ID_B, b"b", "jpg", ANSWER)
    now = time.time()
    old = now - 86400 - 60
    recent = now - 86400 + 600
    for name in (f"{ID_A}.jpg", f"{ID_A}.json"):
        os.utime(tmp_path / "r" / name, (old, old))
    for name in (f"{ID_B}.jpg", f"{ID_B}.json"):
        os.utime(tmp_path / "r" / name, (recent, recent))
    assert [item["id"] for item in queue.items()] == [ID_B]
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == [f"{ID_B}.jpg", f"{ID_B}.json"]
    for name in (f"{ID_B}.jpg", f"{ID_B}.json"):
        os.utime(tmp_path / "r" / name, (old, old))
    assert queue.purge() == 1
    assert list((tmp_path / "r").iterdir()) == []
    (tmp_path / "r" / "x.jpg").write_bytes(b"x")
    os.utime(tmp_path / "r" / "x.jpg", (old, old))
    assert ReviewQueue(tmp_path / "r", days=1, below=0.5).purge() == 0
    assert list((tmp_path / "r").iterdir()) == []  # purged when the queue was made


def test_review_queue_longer_days_keep_older_items(tmp_path: Path) -> None:
    queue = ReviewQueue(tmp_path / "r", days=3, below=0.5)
    queue.keep(ID_A, b"a", "jpg", ANSWER)
    two_days = time.time() - 2 * 86400
    for name in (f"{ID_A}.jpg", f"{ID_A}.json"):
        os.utime(tmp_path / "r" / name, (two_days, two_days))
    assert queue.purge() == 0
    assert [item["id"] for item in queue.items()] == [ID_A]


def test_review_discard_of_an_item_deleted_meanwhile(tmp_path: Path, monkeypatch) -> None:
    queue = ReviewQueue(tmp_path / "r", days=1, below=0.5)
    queue.keep(ID_A, b"a", "jpg", ANSWER)
    found = queue.get

    def get_then_lose_the_photo(item_id: str):
        record = found(item_id)
        (tmp_path / "r" / f"{ID_A}.jpg").unlink()  # another request discarded it
        return record

    monkeypatch.setattr(queue, "get", get_then_lose_the_photo)
    assert queue.discard(ID_A) is True
    assert list((tmp_path / "r").iterdir()) == []


def test_review_items_skip_unreadable_records(tmp_path: Path) -> None:
    queue = ReviewQueue(tmp_path / "r", days=1, below=0.5)
    queue.keep(ID_A, b"a", "jpg", ANSWER)
    (tmp_path / "r" / "folder.json").mkdir()  # reading it is an OSError
    assert [item["id"] for item in queue.items()] == [ID_A]


def test_review_purge_counts_items_by_their_records(tmp_path: Path) -> None:
    folder = tmp_path / "r"
    queue = ReviewQueue(folder, days=1, below=0.5)
    for name in (f"{ID_A}.jpg", f"{ID_A}.json", f"{ID_B}.json", "c.json"):
        (folder / name).write_bytes(b"{}")
        os.utime(folder / name, (1.0, 1.0))
    (folder / "gone.jpg").symlink_to(folder / "missing")  # vanishes under the purge
    assert queue.purge() == 3
    assert [p.name for p in folder.iterdir()] == ["gone.jpg"]


def test_review_purge_limit_is_days_exactly(tmp_path: Path, monkeypatch) -> None:
    now = 2_000_000_000.0
    monkeypatch.setattr(time, "time", lambda: now)
    folder = tmp_path / "r"
    queue = ReviewQueue(folder, days=100, below=0.5)
    for name, age in (("edge.json", 100 * 86400), ("old.json", 100 * 86400 + 50)):
        (folder / name).write_bytes(b"{}")
        os.utime(folder / name, (now - age, now - age))
    assert queue.purge() == 1  # older than 100 days: purged; exactly 100 days: kept
    assert [p.name for p in folder.iterdir()] == ["edge.json"]


def test_decode_image_names_the_image() -> None:
    error = api_error(decode_image, b"", max_pixels=10, longest=10)
    assert error.message == "image: empty; expected a JPEG, PNG or WebP image"
    error = api_error(decode_image, b"junk", max_pixels=10, longest=10, name="x.jpg")
    assert error.message == "x.jpg: not a JPEG, PNG or WebP image"


def test_decode_image_drafts_jpegs_to_twice_the_longest_side() -> None:
    # draft picks the largest JPEG reduction (1/2, 1/4, 1/8) keeping both sides >= 2 * longest
    wide, tall = picture((1600, 400)), picture((400, 1600))
    assert decode_image(wide, max_pixels=10**7, longest=100).size == (800, 200)
    assert decode_image(tall, max_pixels=10**7, longest=100).size == (200, 800)
    assert decode_image(tall, max_pixels=10**7, longest=99).size == (200, 800)
    assert decode_image(tall, max_pixels=10**7, longest=25).size == (50, 200)


def test_upload_folder_clean_does_not_wait_by_default(tmp_path: Path, monkeypatch) -> None:
    import pyinstance.serve.upload_folder as upload_folder_module

    slept: list[float] = []
    monkeypatch.setattr(upload_folder_module.time, "sleep", slept.append)
    folder = UploadFolder(tmp_path / "uploads")
    with folder.writing():
        folder.write("w.jpg", b"w")
        done: list[int] = []
        cleaner = threading.Thread(target=lambda: done.append(folder.clean([])))
        cleaner.start()
        cleaner.join()
    assert done == [0] and slept == []
    assert (folder.path / "w.jpg").exists()


class _Clock:
    """A fake clock for UploadFolder.clean: ``sleep`` moves it on and is recorded."""

    def __init__(self, forbid_sleep: bool = False):
        self.now, self.slept, self.forbid_sleep = 100.0, [], forbid_sleep

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        if self.forbid_sleep:
            raise AssertionError(f"slept {seconds}")
        self.slept.append(seconds)
        self.now += seconds


def test_upload_folder_clean_polls_every_50_ms_until_the_deadline(
    tmp_path: Path, monkeypatch
) -> None:
    import pyinstance.serve.upload_folder as upload_folder_module

    folder = UploadFolder(tmp_path / "uploads")
    clock = _Clock(forbid_sleep=True)  # no wait: gives up at once, without sleeping
    monkeypatch.setattr(upload_folder_module, "time", clock)
    with folder.writing():  # held: clean cannot take the exclusive lock
        assert folder.clean([]) == 0
        clock = _Clock()
        monkeypatch.setattr(upload_folder_module, "time", clock)
        assert folder.clean([], wait=0.5) == 0
    assert set(clock.slept) == {0.05} and len(clock.slept) in (10, 11)  # float rounding


def test_upload_folder_clean_of_a_file_removed_meanwhile(tmp_path: Path, monkeypatch) -> None:
    import pyinstance.serve.upload_folder as upload_folder_module

    folder = UploadFolder(tmp_path / "uploads")
    with folder.writing():
        orphan = folder.write("o.jpg", b"o")
    realpath = os.path.realpath

    def racing(path) -> str:  # another process removes the orphan first
        if Path(path) == orphan and orphan.exists():
            orphan.unlink()
        return realpath(path)

    monkeypatch.setattr(upload_folder_module.os.path, "realpath", racing)
    assert folder.clean([]) == 1
    assert not orphan.exists()
