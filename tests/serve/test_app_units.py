"""The service's routes over a fake collection (no network, no index): status codes, JSON
answers and refusals, fast enough for mutation testing (tests/serve/test_api.py runs the
same service over a real index)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import pyinstance.serve.app as app_module
from pyinstance.identification import ThresholdMismatchError
from pyinstance.plugins import PluginError
from pyinstance.serve.app import (
    MAX_FILES,
    check_image_id,
    check_instance_id,
    create_app,
    read_token_file,
    thumbnail_url,
)
from pyinstance.serve.errors import ApiError

from .fakes import World, fake_collection, image_record, picture

TOKEN = "secret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> World:
    found = World()
    red = tmp_path / "red.jpg"
    red.write_bytes(picture((640, 480)))
    found.images = {
        "tower/a.jpg": image_record("tower/a.jpg", "tower", str(red), "t2"),
        "tower/b.jpg": image_record("tower/b.jpg", "tower", None, "t1"),
        "Bridge one/c d.jpg": image_record("Bridge one/c d.jpg", "Bridge one", str(red), "t3"),
    }
    found.metadata = {"tower": {"title": "Eiffel", "year": 1889}, "lonely": {}}
    found.result = SimpleNamespace(
        instance="tower",
        confidence=0.75,
        ms={"extract": 1.5, "search": 0.5},
        top_k=(
            SimpleNamespace(instance="tower", score=0.9, image_id="tower/a.jpg"),
            SimpleNamespace(instance="Bridge one", score=0.4, image_id="Bridge one/c d.jpg"),
            SimpleNamespace(instance="ghost", score=0.1, image_id=None),
        ),
        objects=None,
    )
    found.add_report = SimpleNamespace(added=1, updated=0, unchanged=0, skipped=())
    monkeypatch.setattr(app_module, "Collection", fake_collection(found))
    monkeypatch.delenv(app_module.TOKEN_ENV, raising=False)
    return found


def make_client(world: World, tmp_path: Path, **options: Any) -> TestClient:
    options.setdefault("token", TOKEN)
    (tmp_path / "index").mkdir(exist_ok=True)
    return TestClient(create_app(tmp_path / "index", **options))


@pytest.fixture
def client(world: World, tmp_path: Path):
    with make_client(world, tmp_path) as test_client:
        yield test_client


def error_of(response: httpx.Response, status: int, code: str) -> str:
    """The message of an error answer, after checking its status, code and shape."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    return body["error"]["message"]


def identify(client: TestClient, data: bytes | None = None, **params: Any) -> httpx.Response:
    data = picture() if data is None else data
    return client.post("/v1/identify", params=params, files={"file": ("q.jpg", data, "image/jpeg")})


# -- module functions -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "empty, or leading/trailing white space"),
        (" a", "empty, or leading/trailing white space"),
        ("a ", "empty, or leading/trailing white space"),
        (".", "'.' and '..' are not names"),
        ("..", "'.' and '..' are not names"),
        ("a\\b", "contains a backslash or a control character"),
        ("a\x1fb", "contains a backslash or a control character"),
        ("a\x7fb", "contains a backslash or a control character"),
        ("a/b", "contains '/'"),
        ("x" * 129, "longer than 128 characters"),
    ],
)
def test_instance_ids_refused_with_the_reason(value: str, problem: str) -> None:
    with pytest.raises(ApiError) as caught:
        check_instance_id(value)
    assert (caught.value.status, caught.value.code) == (400, "invalid_id")
    assert caught.value.message == f"instance id {value[:80]!r}: {problem}"


@pytest.mark.parametrize("value", ["a", "x" * 128, "a b", "é ✓", "...", "a.b", "a\x20b", "~\x80"])
def test_instance_ids_accepted(value: str) -> None:
    assert check_instance_id(value) == value


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("/a", "empty, or leading/trailing white space"),
        ("a//b", "empty, or leading/trailing white space"),
        ("a/", "empty, or leading/trailing white space"),
        ("a/../b", "'.' and '..' are not names"),
        ("a/./b", "'.' and '..' are not names"),
        ("a/b\\c", "contains a backslash or a control character"),
        ("a/" + "x" * 1023, "longer than 1024 characters"),
        ("a/ b/..", "empty, or leading/trailing white space"),
    ],
)
def test_image_ids_refused_with_the_reason(value: str, problem: str) -> None:
    with pytest.raises(ApiError) as caught:
        check_image_id(value)
    assert (caught.value.status, caught.value.code) == (400, "invalid_id")
    assert caught.value.message == f"image id {value[:80]!r}: {problem}"


@pytest.mark.parametrize("value", ["a", "a/b/c.jpg", "a/" + "x" * 1022, "Bridge one/c d.jpg"])
def test_image_ids_accepted(value: str) -> None:
    assert check_image_id(value) == value


def test_thumbnail_urls_quote_all_but_slashes() -> None:
    assert thumbnail_url(None) is None
    assert thumbnail_url("a b/c?d#é.jpg") == "/v1/images/a%20b/c%3Fd%23%C3%A9.jpg/thumbnail"


def test_token_file_is_stripped_and_must_not_be_empty(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("  abc dé \n", encoding="utf-8")
    assert read_token_file(path) == "abc dé"
    path.write_text(" \n\t")
    with pytest.raises(ValueError, match="token file .* is empty"):
        read_token_file(path)


# -- creating the application -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["max_upload_bytes", "max_pixels", "workers", "max_queue"])
@pytest.mark.parametrize("bad", [0, -1, True, 2.0, "3", None])
def test_create_app_refuses_bad_limits(world: World, tmp_path: Path, name: str, bad: Any) -> None:
    with pytest.raises(ValueError, match=f"^{name}: expected an int >= 1, got {bad!r}$"):
        create_app(tmp_path, **{name: bad})
    assert world.opened == 0


def test_create_app_accepts_limits_of_one_and_opens_the_collection(
    world: World, tmp_path: Path
) -> None:
    app = create_app(
        tmp_path / "idx", max_upload_bytes=1, max_pixels=1, workers=1, max_queue=1, engine="e"
    )
    assert world.calls == [("collection", tmp_path / "idx", "e")] and world.opened == 1
    assert app.title == "pyinstance identification service" and app.version == "9.8.7"
    create_app(tmp_path)
    assert world.calls[-1] == ("collection", tmp_path, "torch")


def test_create_app_refuses_a_string_of_origins_and_empty_tokens(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(TypeError, match="^cors_origins: expected a sequence"):
        create_app(tmp_path, cors_origins="http://a")
    for bad in ("", " \t", 5):
        with pytest.raises(ValueError, match="^token: expected a non-empty str$"):
            create_app(tmp_path, token=bad)
    monkeypatch.setenv(app_module.TOKEN_ENV, "")
    with TestClient(create_app(tmp_path)) as client:  # an empty variable: read-only
        assert client.get("/v1/info").json()["read_only"] is True


def test_token_from_the_environment_unless_given(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(app_module.TOKEN_ENV, "from-env")
    with TestClient(create_app(tmp_path)) as client:
        assert client.delete("/v1/instances/tower", headers=AUTH).status_code == 401
        good = client.delete("/v1/instances/tower", headers={"Authorization": "Bearer from-env"})
        assert good.status_code == 200
    with TestClient(create_app(tmp_path, token=TOKEN)) as client:
        assert client.delete("/v1/instances/tower", headers=AUTH).status_code == 200


def test_rerankers_are_resolved_against_the_recipe_unless_none_or_false(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolved: list[Any] = []
    scorer = object()

    def resolve(name: Any, recipe: Any) -> Any:
        resolved.append((name, recipe))
        return scorer

    monkeypatch.setattr(app_module, "resolve_reranker", resolve)
    with make_client(world, tmp_path, reranker="verifier.pt") as client:
        assert identify(client).status_code == 200
    assert len(resolved) == 1 and resolved[0][0] == "verifier.pt"
    assert resolved[0][1].max_side == 100  # the served version's recipe
    assert world.calls[-1] == ("identifier", None, None, 5, False, scorer)
    for given in (None, False):
        with make_client(world, tmp_path, reranker=given) as client:
            assert identify(client).status_code == 200
        assert world.calls[-1][-1] is given
    assert len(resolved) == 1


def test_the_lifespan_refreshes_and_closes_the_collection(world: World, tmp_path: Path) -> None:
    with make_client(world, tmp_path, refresh_seconds=0.01) as client:
        deadline = time.monotonic() + 30
        while world.refreshes < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert client.get("/healthz").status_code == 200
        assert world.closed == 0
    assert world.refreshes >= 2 and world.closed == 1


def test_a_failing_refresh_does_not_stop_the_watcher(world: World, tmp_path: Path) -> None:
    app = create_app(tmp_path, refresh_seconds=0.01)
    collection = app.state.collection
    calls = []

    async def failing() -> bool:
        calls.append(1)
        raise RuntimeError("index busy")

    collection.refresh = failing
    with TestClient(app):
        deadline = time.monotonic() + 30
        while len(calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert len(calls) >= 2


def test_cors_only_for_the_given_origins(world: World, tmp_path: Path) -> None:
    preflight = {
        "Origin": "http://museum.example",
        "Access-Control-Request-Method": "PATCH",
        "Access-Control-Request-Headers": "Authorization, Content-Type",
    }
    with make_client(world, tmp_path, cors_origins=["http://museum.example"]) as client:
        answer = client.options("/v1/instances/tower", headers=preflight)
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == "http://museum.example"
        for method in ("GET", "POST", "PATCH", "DELETE"):
            assert method in answer.headers["access-control-allow-methods"]
        allowed = answer.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed and "content-type" in allowed
        other = client.options("/v1/instances/tower", headers={**preflight, "Origin": "http://x"})
        assert other.status_code == 400
        assert "access-control-allow-origin" not in other.headers
    with make_client(world, tmp_path) as client:
        answer = client.get("/healthz", headers={"Origin": "http://museum.example"})
        assert "access-control-allow-origin" not in answer.headers


# -- authorisation ----------------------------------------------------------------------------


def test_writes_are_refused_without_a_token(world: World, tmp_path: Path) -> None:
    with make_client(world, tmp_path, token=None) as client:
        message = error_of(client.delete("/v1/instances/tower", headers=AUTH), 403, "read_only")
        assert message == (
            "this service is read-only: start it with a token "
            f"(${app_module.TOKEN_ENV} or --token-file) to allow changes"
        )
        assert client.get("/v1/info").json()["read_only"] is True


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "missing 'Authorization: Bearer <token>' header"),
        ("Basic secret-token", "missing 'Authorization: Bearer <token>' header"),
        ("Bearer ", "missing 'Authorization: Bearer <token>' header"),
        ("Bearer    ", "missing 'Authorization: Bearer <token>' header"),
        ("Bearer secret-tokeN", "wrong token"),
        ("Bearer secret", "wrong token"),
        ("secret-token", "missing 'Authorization: Bearer <token>' header"),
    ],
)
def test_bad_authorisation_answers_401(
    client: TestClient, world: World, header: str | None, message: str
) -> None:
    headers = {} if header is None else {"Authorization": header}
    response = client.delete("/v1/instances/tower", headers=headers)
    assert error_of(response, 401, "unauthorized") == message
    assert response.headers["www-authenticate"] == "Bearer"
    assert not [call for call in world.calls if call[0] == "remove"]


@pytest.mark.parametrize(
    "header", ["Bearer secret-token", "bearer secret-token ", "BEARER   secret-token"]
)
def test_good_authorisation_is_accepted(client: TestClient, world: World, header: str) -> None:
    response = client.delete("/v1/instances/tower", headers={"Authorization": header})
    assert response.status_code == 200, response.text
    assert world.calls[-1] == ("remove", "tower", None)


# -- identification -----------------------------------------------------------------------


def test_identify_answers_with_the_instance_top_k_and_metadata(
    client: TestClient, world: World
) -> None:
    response = identify(client)
    assert response.status_code == 200, response.text
    answer = response.json()
    ms = answer.pop("ms")
    assert answer == {
        "instance": "tower",
        "metadata": {"title": "Eiffel", "year": 1889},
        "confidence": 0.75,
        "threshold": 0.25,
        "classifier": "default-classifier",
        "reranker": None,
        "top_k": [
            {
                "instance": "tower",
                "metadata": {"title": "Eiffel", "year": 1889},
                "score": 0.9,
                "image_id": "tower/a.jpg",
                "thumbnail_url": "/v1/images/tower/a.jpg/thumbnail",
            },
            {
                "instance": "Bridge one",
                "metadata": {},
                "score": 0.4,
                "image_id": "Bridge one/c d.jpg",
                "thumbnail_url": "/v1/images/Bridge%20one/c%20d.jpg/thumbnail",
            },
            {
                "instance": "ghost",
                "metadata": {},
                "score": 0.1,
                "image_id": None,
                "thumbnail_url": None,
            },
        ],
        "version": 7,
    }
    assert set(ms) == {"extract", "search", "decode", "prepare", "total"}
    assert (ms["extract"], ms["search"]) == (1.5, 0.5)
    assert world.calls[-1] == ("identifier", None, None, 5, False, None)


def test_identify_stage_times_in_milliseconds(
    client: TestClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticks = iter(range(1000))
    monkeypatch.setattr(app_module, "time", SimpleNamespace(perf_counter=lambda: next(ticks)))
    ms = identify(client).json()["ms"]
    # middleware start 0; run(): start 1, decoding 2, decoded 3, total 4; middleware end 5
    assert (ms["prepare"], ms["decode"], ms["total"]) == (1000.0, 1000.0, 3000.0)
    metrics = client.get("/metrics").text
    assert 'pyinstance_request_seconds_sum{endpoint="/v1/identify"} 5.000000' in metrics
    assert 'pyinstance_request_seconds_bucket{endpoint="/v1/identify",le="5.0"} 1' in metrics
    assert 'pyinstance_request_seconds_bucket{endpoint="/v1/identify",le="2.5"} 0' in metrics


def test_identify_passes_its_parameters_and_names_the_classifier(
    client: TestClient, world: World
) -> None:
    world.reranker_name = "verifier"
    answer = identify(client, top_k=2, threshold=0.6, classifier="knn").json()
    assert world.calls[-1] == ("identifier", "knn", 0.6, 2, False, None)
    assert (answer["classifier"], answer["threshold"], answer["reranker"]) == (
        "knn",
        0.6,
        "verifier",
    )
    world.settings["classifier"] = "stored"
    client.app.state.collection.open()  # a new version with the setting
    assert identify(client).json()["classifier"] == "stored"


def test_identify_decodes_at_the_recipe_size(client: TestClient, world: World) -> None:
    # longest = round(max(scales 0.5, 1.5) * max_side 100) = 150: JPEG draft to >= 300 px
    assert identify(client, picture((1200, 900))).status_code == 200
    assert world.seen_sizes == [(600, 450)]


def test_identify_raw_bodies_of_each_image_type(client: TestClient, world: World) -> None:
    for kind, fmt in (("image/jpeg", "JPEG"), ("image/png", "PNG"), ("image/webp", "WEBP")):
        response = client.post(
            "/v1/identify", content=picture((30, 20), fmt), headers={"Content-Type": kind + "; q=1"}
        )
        assert response.status_code == 200, response.text
    assert world.seen_sizes == [(30, 20)] * 3
    upper = client.post("/v1/identify", content=picture(), headers={"Content-Type": "IMAGE/JPEG"})
    assert upper.status_code == 200


def test_identify_refuses_other_content_types(client: TestClient) -> None:
    response = client.post("/v1/identify", content=b"abc", headers={"Content-Type": "text/plain"})
    assert error_of(response, 415, "unsupported_media_type") == (
        "content type 'text/plain': send multipart/form-data or a raw image body "
        "(image/jpeg, image/png, image/webp)"
    )
    response = client.post("/v1/identify", content=b"abc", headers={"Content-Type": ""})
    assert error_of(response, 415, "unsupported_media_type").startswith("content type 'none':")


def test_identify_form_fields(client: TestClient, world: World) -> None:
    for key in ("file", "files", "image"):
        response = client.post(
            "/v1/identify", files={key: ("x.png", picture((9, 8), "PNG"), "image/png")}
        )
        assert response.status_code == 200, response.text
    assert world.seen_sizes == [(9, 8)] * 3
    response = client.post(
        "/v1/identify", data={"file": "not a file"}, files={"other": ("x", b"1")}
    )
    assert (
        error_of(response, 422, "missing_file") == "no image in the form (field 'file' or 'files')"
    )
    two = [
        ("file", ("a.jpg", picture(), "image/jpeg")),
        ("files", ("b.jpg", picture(), "image/jpeg")),
    ]  # refused by the form parser (at most one file) before the service's own check
    assert error_of(client.post("/v1/identify", files=two), 400, "bad_request")
    assert world.seen_sizes == [(9, 8)] * 3


def test_identify_names_the_file_in_image_errors(client: TestClient) -> None:
    response = client.post("/v1/identify", files={"file": ("photo.jpg", b"nonsense", "image/jpeg")})
    assert error_of(response, 415, "not_an_image").startswith("photo.jpg: ")
    response = client.post("/v1/identify", files={"file": ("", b"", "image/jpeg")})
    assert response.status_code in (422, 415)
    response = client.post(
        "/v1/identify", content=b"nonsense", headers={"Content-Type": "image/png"}
    )
    assert error_of(response, 415, "not_an_image").startswith("body: ")


def test_upload_limits_in_bytes_and_pixels(world: World, tmp_path: Path) -> None:
    small = picture((16, 16), "PNG")
    with make_client(world, tmp_path, max_upload_bytes=len(small), max_pixels=256) as client:
        assert identify(client, small).status_code == 200
        big = picture((17, 16), "PNG")
        message = error_of(identify(client, big), 413, "too_many_pixels")
        assert message == "q.jpg: 17×16 pixels exceeds the limit of 256 pixels"
        raw = client.post(
            "/v1/identify", content=small + b"\0", headers={"Content-Type": "image/png"}
        )
        assert error_of(raw, 413, "too_large").endswith(f"exceeds {len(small)} bytes")
        padded = small + b"\0"
        form = client.post("/v1/identify", files={"file": ("p.png", padded, "image/png")})
        assert error_of(form, 413, "too_large") == f"p.png: exceeds {len(small)} bytes"
        info = client.get("/v1/info").json()
        assert info["limits"] == {"max_upload_bytes": len(small), "max_pixels": 256}


def test_identify_refusals_of_the_identifier(client: TestClient, world: World) -> None:
    world.identifier_error = ThresholdMismatchError("stored threshold was fitted without 'v'")
    assert (
        error_of(identify(client), 409, "threshold_mismatch")
        == "stored threshold was fitted without 'v'"
    )
    world.identifier_error = PluginError("unknown classifier 'x'")
    assert error_of(identify(client), 400, "unknown_classifier") == "unknown classifier 'x"
    world.identifier_error = KeyError("nope")
    assert error_of(identify(client), 400, "unknown_classifier") == "nope"
    world.identifier_error = ValueError("k too large")
    assert error_of(identify(client), 400, "invalid_classifier") == "k too large"
    world.references = 0
    assert error_of(identify(client), 409, "empty_index") == "the index holds no references"
    world.identifier_error = None
    world.identify_error = ValueError("image: 10 px is smaller than 32")
    assert error_of(identify(client), 422, "unusable_image") == "image: 10 px is smaller than 32"


def test_multi_needs_an_objects_threshold(client: TestClient, world: World) -> None:
    message = error_of(identify(client, multi="true"), 409, "objects_uncalibrated")
    assert message == (
        "multi: the index has no objects threshold; run 'pyinstance calibrate INDEX --objects' first"
    )
    world.settings[app_module.OBJECTS_THRESHOLD] = 0.4
    client.app.state.collection.open()
    found = SimpleNamespace(
        instance="tower",
        image_id="tower/a.jpg",
        to_dict=lambda: {"instance": "tower", "box": [1, 2, 3, 4]},
    )
    world.result.objects = (found,)
    answer = identify(client, multi="true").json()
    assert world.calls[-1] == ("identifier", None, None, 5, True, None)
    assert answer["objects"] == [
        {
            "instance": "tower",
            "box": [1, 2, 3, 4],
            "metadata": {"title": "Eiffel", "year": 1889},
            "thumbnail_url": "/v1/images/tower/a.jpg/thumbnail",
        }
    ]
    world.result.objects = None
    assert "objects" not in identify(client).json()


def test_rerank_query_chooses_the_reranker(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with make_client(world, tmp_path) as client:
        identify(client, rerank="false")
        assert world.calls[-1][-1] is False
        message = error_of(identify(client, rerank="true"), 409, "no_reranker")
        assert message == (
            "rerank: the service was started without a re-ranker and the index stores none "
            "(pyinstance serve --rerank MODEL)"
        )
        world.settings["reranker"] = "stored"
        client.app.state.collection.open()
        assert identify(client, rerank="true").status_code == 200
        assert world.calls[-1][-1] is None
    with make_client(world, tmp_path, reranker=False) as client:
        identify(client)
        assert world.calls[-1][-1] is False
        identify(client, rerank="true")
        assert world.calls[-1][-1] is None
    scorer = object()
    monkeypatch.setattr(app_module, "resolve_reranker", lambda name, recipe: scorer)
    with make_client(world, tmp_path, reranker="v") as client:
        identify(client, rerank="true")
        assert world.calls[-1][-1] is scorer
        identify(client, rerank="false")
        assert world.calls[-1][-1] is False


def test_identify_query_limits(client: TestClient) -> None:
    for params in (
        {"top_k": 0},
        {"top_k": 51},
        {"threshold": 1.5},
        {"threshold": -0.1},
        {"classifier": "x" * 65},
    ):
        assert error_of(identify(client, **params), 422, "invalid_request")
    message = error_of(identify(client, top_k=0), 422, "invalid_request")
    assert message.startswith("query.top_k: ")
    for params in (
        {"top_k": 1},
        {"top_k": 50},
        {"threshold": 0},
        {"threshold": 1},
        {"classifier": "x" * 64},
    ):
        assert identify(client, **params).status_code == 200


def test_identifications_are_counted_known_and_unknown(client: TestClient, world: World) -> None:
    identify(client)
    identify(client)
    world.result.instance = None
    identify(client)
    metrics = client.get("/metrics").text
    assert 'pyinstance_identifications_total{result="known"} 2' in metrics
    assert 'pyinstance_identifications_total{result="unknown"} 1' in metrics
    assert (
        'pyinstance_requests_total{method="POST",endpoint="/v1/identify",status="200"} 3' in metrics
    )
    client.get("/nowhere")
    metrics = client.get("/metrics").text
    assert 'pyinstance_requests_total{method="GET",endpoint="unmatched",status="404"} 1' in metrics
    assert 'pyinstance_rejected_requests_total{code="not_found"} 1' in metrics
    assert (
        client.get("/metrics").headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    )


def test_sequential_identifications_never_fill_the_queue(world: World, tmp_path: Path) -> None:
    with make_client(world, tmp_path, workers=1, max_queue=1) as client:
        for _ in range(4):
            assert identify(client).status_code == 200


def test_identifications_beyond_the_queue_answer_503(world: World, tmp_path: Path) -> None:
    app = create_app(tmp_path, workers=1, max_queue=1)
    world.gate, world.entered = threading.Event(), threading.Event()
    files = {"file": ("q.jpg", picture(), "image/jpeg")}

    async def scenario() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            first = asyncio.create_task(client.post("/v1/identify", files=files))
            while not world.entered.is_set():
                await asyncio.sleep(0.01)
            second = asyncio.create_task(client.post("/v1/identify", files=files))
            for _ in range(50):  # let the second request reach the queue
                await asyncio.sleep(0.01)
            third = await client.post("/v1/identify", files=files)
            world.gate.set()
            answers = [await first, await second]
            assert third.headers["retry-after"] == "1"
            assert third.json()["error"] == {
                "code": "busy",
                "message": "1 identifications are already waiting; retry shortly",
            }
            return [a.status_code for a in answers] + [third.status_code]

    assert asyncio.run(scenario()) == [200, 200, 503]


def test_review_queue_keeps_uncertain_answers(world: World, tmp_path: Path) -> None:
    with make_client(world, tmp_path, review_days=2, review_below=0.8) as client:
        data = picture((20, 10), "PNG")
        identify(client, data)  # 0.75 < 0.8: kept
        listed = client.get("/v1/review", headers=AUTH).json()
        assert (listed["days"], listed["below"]) == (2.0, 0.8)
        (item,) = listed["items"]
        assert item["ext"] == "png" and item["instance"] == "tower"
        assert item["metadata"] == {"title": "Eiffel", "year": 1889}
        assert item["top_k"][0] == {
            "instance": "tower",
            "score": 0.9,
            "metadata": {"title": "Eiffel", "year": 1889},
        }
        assert item["top_k"][2] == {"instance": "ghost", "score": 0.1, "metadata": {}}
        assert item["photo_url"] == f"/v1/review/{item['id']}/photo"
        photo = client.get(item["photo_url"], headers=AUTH)
        assert photo.content == data and photo.headers["content-type"] == "image/png"
        assert photo.headers["cache-control"] == "no-store"
        world.result.confidence = 0.8
        identify(client, picture((21, 10), "JPEG"))  # not below: not kept
        assert len(client.get("/v1/review", headers=AUTH).json()["items"]) == 1
        world.result.instance = None
        world.result.confidence = 0.95
        identify(client, picture((22, 10), "WEBP"))  # unknown: kept
        items = client.get("/v1/review", headers=AUTH).json()["items"]
        assert [i["ext"] for i in items] == ["webp", "png"]
        assert items[0]["metadata"] == {}
        webp = client.get(items[0]["photo_url"], headers=AUTH)
        assert webp.headers["content-type"] == "image/webp"
    assert (tmp_path / "index" / "review").is_dir()


def test_review_endpoints_add_and_discard(world: World, tmp_path: Path) -> None:
    with make_client(world, tmp_path, review_days=1) as client:
        world.result.instance = None
        data = picture((20, 10))
        identify(client, data)
        (item,) = client.get("/v1/review", headers=AUTH).json()["items"]
        assert item["ext"] == "jpg"
        photo = client.get(item["photo_url"], headers=AUTH)
        assert photo.headers["content-type"] == "image/jpeg"
        world.add_report = SimpleNamespace(
            added=0,
            updated=0,
            unchanged=0,
            skipped=(SimpleNamespace(path="/x/p.jpg", reason="too small"),),
        )
        failed = client.post(
            f"/v1/review/{item['id']}/add", params={"instance": "tower"}, headers=AUTH
        )
        assert error_of(failed, 422, "nothing_added") == "the photo could not be added (too small)"
        world.add_report = SimpleNamespace(added=0, updated=0, unchanged=1, skipped=())
        added = client.post(
            f"/v1/review/{item['id']}/add", params={"instance": "tower"}, headers=AUTH
        )
        assert added.status_code == 201
        assert added.json() == {"instance": "tower", "added": 0, "version": 9}
        instance, photos, metadata = world.calls[-1][1:]
        import hashlib

        assert instance == "tower" and metadata is None
        assert photos == [(f"{hashlib.sha256(data).hexdigest()}.jpg", data)]
        assert client.get("/v1/review", headers=AUTH).json()["items"] == []
        again = client.post(
            f"/v1/review/{item['id']}/add", params={"instance": "tower"}, headers=AUTH
        )
        assert error_of(again, 404, "unknown_review_item") == f"no review item {item['id']!r}"
        bad = client.post(f"/v1/review/{item['id']}/add", params={"instance": "a/b"}, headers=AUTH)
        assert error_of(bad, 400, "invalid_id")
        empty = client.post(f"/v1/review/{item['id']}/add", params={"instance": ""}, headers=AUTH)
        assert error_of(empty, 422, "invalid_request")
        long = client.post(
            f"/v1/review/{item['id']}/add", params={"instance": "x" * 129}, headers=AUTH
        )
        assert error_of(long, 422, "invalid_request")
        identify(client, picture((23, 10)))
        (item,) = client.get("/v1/review", headers=AUTH).json()["items"]
        assert client.delete(f"/v1/review/{item['id']}", headers=AUTH).json() == {
            "discarded": item["id"]
        }
        assert client.get("/v1/review", headers=AUTH).json()["items"] == []
        gone = client.delete(f"/v1/review/{item['id']}", headers=AUTH)
        assert error_of(gone, 404, "unknown_review_item")
        assert error_of(client.get("/v1/review", headers={}), 401, "unauthorized")


def test_review_is_off_by_default(client: TestClient) -> None:
    message = error_of(client.get("/v1/review", headers=AUTH), 404, "review_disabled")
    assert message == (
        "the review queue is off (start the service with --review-days N to keep "
        "low-confidence visitor photos)"
    )
    for method, path in (
        ("GET", "/v1/review/ab/photo"),
        ("DELETE", "/v1/review/ab"),
        ("POST", "/v1/review/ab/add?instance=x"),
    ):
        assert error_of(client.request(method, path, headers=AUTH), 404, "review_disabled")


# -- heat maps --------------------------------------------------------------------------------


def test_heatmap_answers_a_jpeg_of_the_reference(
    client: TestClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = []

    def heatmap(view: Any, image: Image.Image, image_id: str) -> bytes:
        seen.append((view.world is world, image.size, image_id))
        if image_id == "tower/b.jpg":
            raise ValueError("heat maps need descriptors in the feature space")
        return b"jpeg-bytes"

    monkeypatch.setattr(app_module, "similarity_heatmap", heatmap)
    files = {"file": ("q.jpg", picture((1200, 900)), "image/jpeg")}
    response = client.post("/v1/heatmap", params={"image_id": "tower/a.jpg"}, files=files)
    assert response.status_code == 200 and response.content == b"jpeg-bytes"
    assert response.headers["content-type"] == "image/jpeg"
    assert seen == [(True, (600, 450), "tower/a.jpg")]
    refused = client.post("/v1/heatmap", params={"image_id": "tower/b.jpg"}, files=files)
    assert (
        error_of(refused, 422, "heatmap_unavailable")
        == "heat maps need descriptors in the feature space"
    )
    unknown = client.post("/v1/heatmap", params={"image_id": "tower/z.jpg"}, files=files)
    assert error_of(unknown, 404, "unknown_image") == "no image 'tower/z.jpg' in the index"
    bad = client.post("/v1/heatmap", params={"image_id": "../x"}, files=files)
    assert error_of(bad, 400, "invalid_id")
    long = client.post("/v1/heatmap", params={"image_id": "x" * 1025}, files=files)
    assert error_of(long, 422, "invalid_request")


# -- reading the collection ---------------------------------------------------------------


def test_instances_listed_with_summaries(client: TestClient) -> None:
    listed = client.get("/v1/instances").json()
    assert listed == {
        "version": 7,
        "total": 3,
        "instances": [
            {
                "id": "tower",
                "metadata": {"title": "Eiffel", "year": 1889},
                "images": 2,
                "added": "t1",
                "thumbnail_url": "/v1/images/tower/a.jpg/thumbnail",
            },
            {
                "id": "Bridge one",
                "metadata": {},
                "images": 1,
                "added": "t3",
                "thumbnail_url": "/v1/images/Bridge%20one/c%20d.jpg/thumbnail",
            },
            {"id": "lonely", "metadata": {}, "images": 0, "added": None, "thumbnail_url": None},
        ],
    }


def test_instances_filtered_by_id_or_metadata_and_paged(client: TestClient) -> None:
    def ids(**params: Any) -> tuple[int, list[str]]:
        listed = client.get("/v1/instances", params=params).json()
        return listed["total"], [i["id"] for i in listed["instances"]]

    assert ids(q="EIFF") == (1, ["tower"])
    assert ids(q="188") == (1, ["tower"])
    assert ids(q="bridge") == (1, ["Bridge one"])
    assert ids(q="o") == (3, ["tower", "Bridge one", "lonely"])
    assert ids(q="zzz") == (0, [])
    assert ids(offset=1, limit=1) == (3, ["Bridge one"])
    assert ids(offset=2) == (3, ["lonely"])
    assert ids(limit=1000) == (3, ["tower", "Bridge one", "lonely"])
    for params in ({"offset": -1}, {"limit": 0}, {"limit": 1001}, {"q": "x" * 129}):
        assert error_of(client.get("/v1/instances", params=params), 422, "invalid_request")
    assert client.get("/v1/instances", params={"q": "x" * 128}).status_code == 200


def test_one_instance_with_its_images(client: TestClient) -> None:
    detail = client.get("/v1/instances/tower").json()
    assert detail == {
        "id": "tower",
        "metadata": {"title": "Eiffel", "year": 1889},
        "images": 2,
        "added": "t1",
        "thumbnail_url": "/v1/images/tower/a.jpg/thumbnail",
        "version": 7,
        "reference_images": [
            {
                "id": "tower/a.jpg",
                "instance": "tower",
                "added": "t2",
                "sha256": "sha-tower/a.jpg",
                "thumbnail_url": "/v1/images/tower/a.jpg/thumbnail",
            },
            {
                "id": "tower/b.jpg",
                "instance": "tower",
                "added": "t1",
                "sha256": "sha-tower/b.jpg",
                "thumbnail_url": "/v1/images/tower/b.jpg/thumbnail",
            },
        ],
    }
    assert client.get("/v1/instances/Bridge one").json()["images"] == 1
    assert error_of(client.get("/v1/instances/nobody"), 404, "unknown_instance") == (
        "no instance 'nobody' in the index"
    )
    assert error_of(client.get("/v1/instances/%20x"), 400, "invalid_id")


def test_thumbnails_are_small_jpegs_made_once(
    client: TestClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    response = client.get("/v1/images/tower/a.jpg/thumbnail")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["cache-control"] == "private, max-age=3600"
    import io

    with Image.open(io.BytesIO(response.content)) as thumbnail:
        assert thumbnail.format == "JPEG" and thumbnail.size == (320, 240)
        assert thumbnail.getpixel((100, 100)) == pytest.approx((200, 30, 40), abs=6)
    Path(world.images["tower/a.jpg"]["source"]).unlink()  # the cached one is answered
    assert client.get("/v1/images/tower/a.jpg/thumbnail").content == response.content
    missing = client.get("/v1/images/Bridge one/c d.jpg/thumbnail")
    assert (
        error_of(missing, 404, "source_unreadable")
        == "image 'Bridge one/c d.jpg': its file cannot be read"
    )
    nosource = client.get("/v1/images/tower/b.jpg/thumbnail")
    assert error_of(nosource, 404, "no_source") == "image 'tower/b.jpg' was added without a file"
    assert error_of(client.get("/v1/images/tower/z.jpg/thumbnail"), 404, "unknown_image") == (
        "no image 'tower/z.jpg' in the index"
    )
    assert error_of(client.get("/v1/images/a\\b/thumbnail"), 400, "invalid_id")


def test_thumbnail_cache_is_bounded(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_module, "_THUMBNAILS_KEPT", 1)
    source = Path(world.images["tower/a.jpg"]["source"])
    small = tmp_path / "small.png"
    small.write_bytes(picture((40, 30), "PNG"))
    world.images["Bridge one/c d.jpg"]["source"] = str(small)
    with make_client(world, tmp_path) as client:
        first = client.get("/v1/images/tower/a.jpg/thumbnail").content
        second = client.get("/v1/images/Bridge one/c d.jpg/thumbnail")
        with Image.open(__import__("io").BytesIO(second.content)) as thumbnail:
            assert thumbnail.size == (40, 30)
        assert client.get("/v1/images/tower/a.jpg/thumbnail").content == first
        source.unlink()
        client.get("/v1/images/Bridge one/c d.jpg/thumbnail")  # evicts tower/a.jpg
        assert client.get("/v1/images/tower/a.jpg/thumbnail").status_code == 404
        small.unlink()
        # the most recent one stays cached
        assert client.get("/v1/images/Bridge one/c d.jpg/thumbnail").status_code == 200


# -- changing the collection --------------------------------------------------------------


def post_photos(client: TestClient, instance: str, photos: list[tuple[str, bytes]], **form: str):
    files = [("files", (name, data, "image/jpeg")) for name, data in photos]
    return client.post(f"/v1/instances/{instance}/images", headers=AUTH, files=files, data=form)


def test_adding_photos_answers_the_new_images(client: TestClient, world: World) -> None:
    import hashlib

    first, second = picture((40, 30)), picture((40, 30), "PNG")
    response = post_photos(
        client, "tower", [("a.jpg", first), ("b.png", second)], metadata='{"room": "3"}'
    )
    assert response.status_code == 201, response.text
    names = [f"{hashlib.sha256(d).hexdigest()}.{e}" for d, e in ((first, "jpg"), (second, "png"))]
    assert world.calls[-1] == (
        "add",
        "tower",
        [(names[0], first), (names[1], second)],
        {"room": "3"},
    )
    answer = response.json()
    assert answer["instance"] == "tower" and answer["version"] == 8
    assert (answer["added"], answer["unchanged"], answer["skipped"]) == (1, 0, [])
    assert answer["already_in_other_instances"] == []
    assert answer["metadata"] == {"title": "Eiffel", "year": 1889}
    assert [i["id"] for i in answer["images"]] == [
        "tower/a.jpg",
        "tower/b.jpg",
        *(n[:-4] for n in names),
    ]
    assert answer["images"][0] == {
        "id": "tower/a.jpg",
        "instance": "tower",
        "added": "t2",
        "sha256": "sha-tower/a.jpg",
        "thumbnail_url": "/v1/images/tower/a.jpg/thumbnail",
    }


def test_adding_without_metadata_passes_none(client: TestClient, world: World) -> None:
    world.add_report = SimpleNamespace(
        added=0, updated=0, unchanged=1, skipped=(SimpleNamespace(path="/u/x.jpg", reason="dup"),)
    )
    response = post_photos(client, "new one", [("a.jpg", picture())])
    assert response.status_code == 200
    assert world.calls[-1][3] == {}
    assert response.json()["skipped"] == [{"file": "x.jpg", "reason": "dup"}]
    assert response.json()["unchanged"] == 1
    world.add_report = SimpleNamespace(added=0, updated=1, unchanged=0, skipped=())
    assert post_photos(client, "new one", [("a.jpg", picture())]).status_code == 200


def test_photos_already_held_by_other_instances_are_named(client: TestClient, world: World) -> None:
    import hashlib

    data = picture((12, 12))
    digest = hashlib.sha256(data).hexdigest()
    world.images[digest] = {**image_record(digest, "Bridge one", None, "t0"), "sha256": digest}
    client.app.state.collection.open()
    other = picture((13, 12))
    answer = post_photos(client, "tower", [("mine.jpg", data), ("new.jpg", other)]).json()
    assert answer["already_in_other_instances"] == [{"file": "mine.jpg", "instance": "Bridge one"}]
    again = post_photos(client, "Bridge one", [("mine.jpg", data)]).json()
    assert again["already_in_other_instances"] == []


def test_adding_nothing_is_a_422_with_the_reasons(client: TestClient, world: World) -> None:
    world.add_report = SimpleNamespace(
        added=0,
        updated=0,
        unchanged=0,
        skipped=(
            SimpleNamespace(path="/u/a.jpg", reason="too small"),
            SimpleNamespace(path="/u/b.jpg", reason="dark"),
        ),
    )
    message = error_of(post_photos(client, "tower", [("a.jpg", picture())]), 422, "nothing_added")
    assert message == "no photo could be added (a.jpg: too small; b.jpg: dark)"


def test_adding_refuses_bad_photos_and_metadata(client: TestClient, world: World) -> None:
    calls = len(world.calls)
    bad = post_photos(client, "tower", [("a.jpg", picture()), ("b.jpg", b"junk")])
    assert error_of(bad, 415, "not_an_image").startswith("b.jpg: ")
    meta = post_photos(client, "tower", [("a.jpg", picture())], metadata="{nope")
    assert error_of(meta, 422, "invalid_metadata").startswith("metadata: ")
    nulls = post_photos(client, "tower", [("a.jpg", picture())], metadata='{"a": null}')
    assert error_of(nulls, 422, "invalid_metadata").startswith("metadata: metadata of 'tower': ")
    assert error_of(post_photos(client, "a\\b", [("a.jpg", picture())]), 400, "invalid_id")
    assert len(world.calls) == calls
    files = [("files", (f"{i}.jpg", picture(), "image/jpeg")) for i in range(MAX_FILES)]
    assert client.post("/v1/instances/t/images", headers=AUTH, files=files).status_code == 201
    files.append(("files", ("x.jpg", picture(), "image/jpeg")))
    assert client.post("/v1/instances/t/images", headers=AUTH, files=files).status_code == 400


def test_raw_body_adds_one_photo(client: TestClient, world: World) -> None:
    data = picture((25, 25), "WEBP")
    response = client.post(
        "/v1/instances/tower/images", headers={**AUTH, "Content-Type": "image/webp"}, content=data
    )
    assert response.status_code == 201
    assert world.calls[-1][2][0][0].endswith(".webp")


def patch(client: TestClient, instance: str, body: Any, **params: Any):
    return client.patch(
        f"/v1/instances/{instance}",
        headers={**AUTH, "Content-Type": "application/json; charset=utf-8"},
        content=body,
        params=params,
    )


def test_metadata_is_set_and_answered(client: TestClient, world: World) -> None:
    answer = patch(client, "tower", '{"room": 4, "year": null}').json()
    assert world.calls[-1] == ("set_metadata", "tower", {"room": 4, "year": None}, False)
    assert answer["metadata"] == {"title": "Eiffel", "room": 4}
    assert answer["version"] == 8 and answer["id"] == "tower"
    assert len(answer["reference_images"]) == 2
    answer = patch(client, "tower", '{"room": 5}', replace="true").json()
    assert world.calls[-1] == ("set_metadata", "tower", {"room": 5}, True)
    assert answer["metadata"] == {"room": 5}


def test_metadata_refusals(client: TestClient, world: World) -> None:
    plain = client.patch(
        "/v1/instances/tower", headers={**AUTH, "Content-Type": "text/plain"}, content="{}"
    )
    assert error_of(plain, 415, "unsupported_media_type") == (
        "content type 'text/plain': send application/json, an object of metadata fields"
    )
    none = client.patch("/v1/instances/tower", headers=AUTH, content=b"{}")
    assert error_of(none, 415, "unsupported_media_type").startswith("content type 'none'")
    assert error_of(patch(client, "tower", "[1]"), 422, "invalid_metadata") == (
        "metadata: metadata of 'tower': expected an object of fields, got list"
    )
    assert error_of(patch(client, "tower", b"\xff"), 422, "invalid_metadata").startswith(
        "metadata: "
    )
    assert error_of(patch(client, "nobody", "{}"), 404, "unknown_instance")
    assert error_of(patch(client, " a", "{}"), 400, "invalid_id")
    big = '{"a": "' + "x" * 70_000 + '"}'
    assert error_of(patch(client, "tower", big), 413, "too_large")
    world.change_error = KeyError("'tower'")
    assert error_of(patch(client, "tower", "{}"), 404, "unknown_instance") == "tower"
    world.change_error = ValueError("too many fields")
    assert error_of(patch(client, "tower", "{}"), 422, "invalid_metadata") == "too many fields"


def test_metadata_of_an_instance_removed_meanwhile(client: TestClient, world: World) -> None:
    collection = client.app.state.collection

    async def vanish(instance, fields, *, replace):
        world.images = {k: v for k, v in world.images.items() if v["instance"] != instance}
        world.metadata.pop(instance, None)
        collection._publish()

    collection.set_metadata = vanish
    assert (
        error_of(patch(client, "tower", "{}"), 404, "unknown_instance")
        == "no instance 'tower' in the index"
    )


def test_removing_instances_and_images(client: TestClient, world: World) -> None:
    assert client.delete("/v1/instances/tower", headers=AUTH).json() == {
        "removed_images": 2,
        "version": 8,
    }
    assert world.calls[-1] == ("remove", "tower", None)
    world.removed = 1
    assert client.delete("/v1/images/Bridge one/c d.jpg", headers=AUTH).json() == {
        "removed_images": 1,
        "version": 9,
    }
    assert world.calls[-1] == ("remove", None, "Bridge one/c d.jpg")
    assert error_of(client.delete("/v1/instances/nobody", headers=AUTH), 404, "unknown_instance")
    assert error_of(client.delete("/v1/images/a/z.jpg", headers=AUTH), 404, "unknown_image") == (
        "no image 'a/z.jpg' in the index"
    )
    assert error_of(client.delete("/v1/instances/%20x", headers=AUTH), 400, "invalid_id")
    assert error_of(client.delete("/v1/images/a/%20x", headers=AUTH), 400, "invalid_id")
    calls = len(world.calls)
    world.change_error = KeyError("'tower'")
    assert (
        error_of(client.delete("/v1/instances/tower", headers=AUTH), 404, "unknown_instance")
        == "tower"
    )
    assert (
        error_of(client.delete("/v1/images/tower/a.jpg", headers=AUTH), 404, "unknown_image")
        == "tower"
    )
    assert len(world.calls) == calls + 2


# -- service --------------------------------------------------------------------------------


def test_health_info_and_pages(client: TestClient, world: World) -> None:
    assert client.get("/healthz").json() == {
        "status": "ok",
        "version": 7,
        "revision": 1,
        "images": 3,
    }
    world.settings["classifier"] = "stored"
    world.stale_thresholds["threshold"] = "calibrated unwhitened; the index now whitens"
    client.app.state.collection.open()
    assert client.get("/healthz").json()["revision"] == 2
    assert client.get("/v1/info").json() == {
        "version": 7,
        "format_version": 3,
        "images": 3,
        "instances": 3,
        "recipe": {"head": "gem"},
        "settings": {"classifier": "stored"},
        "stale_thresholds": {"threshold": "calibrated unwhitened; the index now whitens"},
        "classifier": "stored",
        "engine": "fake-engine",
        "pyinstance_version": "9.8.7",
        "read_only": False,
        "limits": {
            "max_upload_bytes": app_module.MAX_UPLOAD_BYTES,
            "max_pixels": app_module.MAX_PIXELS,
        },
    }
    for path, name in (("/", "visitor.html"), ("/curator", "curator.html")):
        page = client.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        expected = (Path(app_module.__file__).parent / "static" / name).read_text("utf-8")
        assert page.text == expected
        assert page.headers["content-security-policy"] == app_module._PAGE_CSP


def test_openapi_documents_the_upload_bodies(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/v1/identify"]["post"]["requestBody"]
    assert body["required"] is True
    assert set(body["content"]) == {"multipart/form-data", "image/jpeg", "image/png", "image/webp"}
    assert body["content"]["multipart/form-data"]["schema"]["required"] == ["file"]
    add = schema["paths"]["/v1/instances/{instance_id}/images"]["post"]["requestBody"]
    assert add["content"]["multipart/form-data"]["schema"]["properties"]["files"]["type"] == "array"
    patch_body = schema["paths"]["/v1/instances/{instance_id}"]["patch"]["requestBody"]
    assert "application/json" in patch_body["content"]
    assert "/" not in [p for p in schema["paths"]]


def test_forms_carry_at_most_eight_text_fields(client: TestClient) -> None:
    files = {"file": ("q.jpg", picture(), "image/jpeg")}
    eight = {f"f{i}": "x" for i in range(8)}
    assert client.post("/v1/identify", files=files, data=eight).status_code == 200
    nine = {**eight, "f8": "x"}
    assert error_of(client.post("/v1/identify", files=files, data=nine), 400, "bad_request")


def test_unknown_answers_have_no_metadata(client: TestClient, world: World) -> None:
    world.metadata["XXXX"] = {"never": "shown"}  # any name may be an instance id
    client.app.state.collection.open()
    world.result.instance = None
    answer = identify(client).json()
    assert answer["instance"] is None and answer["metadata"] == {}


def test_review_below_defaults_to_one_half(world: World, tmp_path: Path) -> None:
    with make_client(world, tmp_path, review_days=1) as client:
        assert client.get("/v1/review", headers=AUTH).json()["below"] == 0.5
