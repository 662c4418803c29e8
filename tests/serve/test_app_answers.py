"""The service's identification path and handlers called directly (no HTTP client): each
answer checked against values worked out in the test, over the fakes of tests/serve/fakes.py."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import pyinstance.serve.app as app_module
from pyinstance.identification import ThresholdMismatchError
from pyinstance.index.thresholds import StaleThresholdError
from pyinstance.plugins import PluginError
from pyinstance.serve.app import Service, _identifier, _Options, identify
from pyinstance.serve.errors import ApiError
from pyinstance.serve.metrics import Metrics

from . import test_app_units as units
from .fakes import World, picture
from .test_app_units import AUTH, error_of, make_client

world, client = units.world, units.client  # the fixtures: a fake collection, its client


def service_of(world: World, **fields: Any) -> Service:
    """A Service over ``world`` (its collection is never reached by these tests)."""
    values: dict[str, Any] = {
        "collection": None,
        "token": None,
        "max_upload_bytes": 1000,
        "max_pixels": 10_000,
        "workers": 1,
        "max_queue": 1,
        "refresh_seconds": 1.0,
        "scorer": None,
        "review": None,
        "metrics": Metrics(),
        "limiter": None,
    }
    values.update(fields)
    return Service(**values)


def options(rerank: bool | None = None, multi: bool = False) -> _Options:
    return _Options(top_k=3, threshold=0.5, classifier="knn", multi=multi, rerank=rerank)


STORED, GIVEN = "stored-verifier", object()


@pytest.mark.parametrize(
    ("scorer", "stored", "rerank", "chosen"),
    [
        # rerank unset: the service's choice as it is (None: the index's stored one)
        (None, None, None, None),
        (None, STORED, None, None),
        (False, STORED, None, False),
        (GIVEN, None, None, GIVEN),
        # rerank=false: none, whatever the service or the index has
        (None, STORED, False, False),
        (GIVEN, STORED, False, False),
        # rerank=true: the service's own, else the index's stored one (None)
        (GIVEN, None, True, GIVEN),
        (None, STORED, True, None),
        (False, STORED, True, None),
    ],
)
def test_the_reranker_handed_to_the_identifier(
    scorer: Any, stored: Any, rerank: bool | None, chosen: Any
) -> None:
    world = World()
    if stored is not None:
        world.settings["reranker"] = stored
    pinned = world.version()
    _identifier(service_of(world, scorer=scorer), pinned, options(rerank))
    assert world.calls == [("identifier", "knn", 0.5, 3, False, chosen)]
    assert world.calls[0][-1] is chosen


@pytest.mark.parametrize("scorer", [None, False])
def test_rerank_true_without_any_reranker_is_a_409(scorer: Any) -> None:
    world = World()
    with pytest.raises(ApiError) as caught:
        _identifier(service_of(world, scorer=scorer), world.version(), options(True))
    assert (caught.value.status, caught.value.code) == (409, "no_reranker")
    assert world.calls == []


def test_multi_needs_the_objects_threshold_setting_only() -> None:
    world = World()
    with pytest.raises(ApiError) as caught:
        _identifier(service_of(world), world.version(), options(multi=True))
    assert (caught.value.status, caught.value.code) == (409, "objects_uncalibrated")
    world.settings[app_module.OBJECTS_THRESHOLD] = 0.0  # a threshold of 0 is a threshold
    _identifier(service_of(world), world.version(), options(multi=True))
    assert world.calls == [("identifier", "knn", 0.5, 3, True, None)]


class RawRequest:
    """A request with a raw image body, as the handlers read it."""

    def __init__(self, service: Service, body: bytes, kind: str = "image/jpeg"):
        self.app = SimpleNamespace(state=SimpleNamespace(service=service))
        self.headers = {"content-type": kind}
        self.body = body

    async def stream(self) -> Any:
        yield self.body


def identify_world() -> World:
    world = World()
    world.result = SimpleNamespace(instance="tower", confidence=0.75, ms={}, top_k=(), objects=None)
    return world


def test_identifications_in_flight_are_counted_and_bounded() -> None:
    world = identify_world()
    seen: list[int] = []

    async def scenario() -> Service:
        service = service_of(
            world,
            collection=SimpleNamespace(current=world.version()),
            limiter=anyio.CapacityLimiter(1),
            workers=2,
            max_queue=3,
        )
        # in the worker thread: the count, and the service's own limiter holding the worker
        world.entered = SimpleNamespace(
            set=lambda: seen.append((service.in_flight, service.limiter.borrowed_tokens))
        )
        service.in_flight = 4  # workers + max_queue - 1 running or waiting: one more waits
        answer = await identify(RawRequest(service, picture()), 5, None, None, False, None)
        assert answer["instance"] == "tower" and answer["version"] == 7
        assert service.in_flight == 4 and seen == [(5, 1)]
        service.in_flight = 5  # the queue is full
        with pytest.raises(ApiError) as caught:
            await identify(RawRequest(service, picture()), 5, None, None, False, None)
        assert (caught.value.status, caught.value.code) == (503, "busy")
        assert caught.value.message == "3 identifications are already waiting; retry shortly"
        assert caught.value.headers == {"Retry-After": "1"}
        assert service.in_flight == 5 and seen == [(5, 1)]
        service.in_flight = 0
        world.identify_error = ValueError("too small")
        with pytest.raises(ApiError) as caught:
            await identify(RawRequest(service, picture()), 5, None, None, False, None)
        assert (caught.value.status, caught.value.code) == (422, "unusable_image")
        assert service.in_flight == 0 and seen == [(5, 1), (1, 1)]
        return service

    service = asyncio.run(scenario())
    metrics = service.metrics.render()
    assert 'pyinstance_identifications_total{result="known"} 1' in metrics
    assert 'pyinstance_identifications_total{result="unknown"} 0' in metrics


# -- uploads, through the application -----------------------------------------------------


def noise(side: int, seed: int) -> bytes:
    """A PNG of random pixels: about 3 × side² bytes (PNG cannot compress noise)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def test_a_content_type_is_needed_and_its_parameters_ignored(client: TestClient) -> None:
    response = client.post("/v1/identify", content=b"abc")  # no Content-Type at all
    assert "content-type" not in response.request.headers
    assert error_of(response, 415, "unsupported_media_type").startswith("content type 'none': ")
    spaced = client.post(
        "/v1/identify", content=picture(), headers={"Content-Type": "Image/JPEG ; q=1"}
    )
    assert spaced.status_code == 200, spaced.text


def test_multipart_bodies_hold_photos_of_the_byte_limit(world: World, tmp_path: Path) -> None:
    photos = [noise(190, seed) for seed in range(3)]  # each over the 64 KiB form slack
    limit = max(len(p) for p in photos)
    assert min(len(p) for p in photos) > 64 * 1024
    with make_client(world, tmp_path, max_upload_bytes=limit) as client:
        one = client.post("/v1/identify", files={"file": ("a.png", photos[0], "image/png")})
        assert one.status_code == 200, one.text
        files = [("files", (f"{i}.png", p, "image/png")) for i, p in enumerate(photos)]
        added = client.post("/v1/instances/tower/images", headers=AUTH, files=files)
        assert added.status_code == 201, added.text
        assert [len(data) for _, data in world.calls[-1][2]] == [len(p) for p in photos]


@pytest.mark.parametrize(
    ("error", "references", "status", "code", "message"),
    [
        (ThresholdMismatchError("fitted 'X'"), 3, 409, "threshold_mismatch", "fitted 'X'"),
        (StaleThresholdError("stale 'X'"), 3, 409, "threshold_stale", "stale 'X'"),
        (
            PluginError("unknown classifier 'X'"),
            3,
            400,
            "unknown_classifier",
            "unknown classifier 'X",
        ),
        (KeyError("X-ray"), 3, 400, "unknown_classifier", "X-ray"),
        (KeyError('"quoted"'), 3, 400, "unknown_classifier", "quoted"),
        (ValueError("k: expected 'X'"), 1, 400, "invalid_classifier", "k: expected 'X'"),
        (ValueError("k: expected 'X'"), 0, 409, "empty_index", "the index holds no references"),
    ],
)
def test_the_identifier_refusals_are_answered(
    error: Exception, references: int, status: int, code: str, message: str
) -> None:
    world = World(identifier_error=error, references=references)
    with pytest.raises(ApiError) as caught:
        _identifier(service_of(world), world.version(), options())
    assert (caught.value.status, caught.value.code, caught.value.message) == (
        status,
        code,
        message,
    )
    assert caught.value.__cause__ is error


# -- changing the collection ----------------------------------------------------------------


def test_a_new_instance_whose_only_photo_another_holds(client: TestClient, world: World) -> None:
    import hashlib

    data = picture((14, 12))
    digest = hashlib.sha256(data).hexdigest()
    world.images[digest] = {
        **units.image_record(digest, "Bridge one", None, "t0"),
        "sha256": digest,
    }
    client.app.state.collection.open()
    world.add_report = SimpleNamespace(added=0, updated=0, unchanged=1, skipped=())
    files = [("files", ("mine.jpg", data, "image/jpeg"))]
    response = client.post("/v1/instances/newcomer/images", headers=AUTH, files=files)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["instance"] == "newcomer"
    assert (answer["metadata"], answer["images"]) == ({}, [])
    assert answer["already_in_other_instances"] == [{"file": "mine.jpg", "instance": "Bridge one"}]


def test_added_and_updated_photos_together_are_an_answer(client: TestClient, world: World) -> None:
    world.add_report = SimpleNamespace(added=1, updated=1, unchanged=0, skipped=())
    files = [("files", (f"{i}.jpg", picture((20 + i, 10)), "image/jpeg")) for i in range(2)]
    response = client.post("/v1/instances/tower/images", headers=AUTH, files=files)
    assert response.status_code == 201, response.text
    assert (response.json()["added"], response.json()["unchanged"]) == (1, 0)


# -- thumbnails -----------------------------------------------------------------------------


def jpeg_of(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG"
    return image


def test_a_changed_image_gets_a_new_thumbnail(
    client: TestClient, world: World, tmp_path: Path
) -> None:
    first = client.get("/v1/images/tower/a.jpg/thumbnail").content
    blue = tmp_path / "blue.png"
    Image.new("RGB", (60, 30), (10, 20, 230)).save(blue)
    world.images["tower/a.jpg"] = {
        **world.images["tower/a.jpg"],
        "source": str(blue),
        "sha256": "sha-blue",
    }
    client.app.state.collection.open()
    second = client.get("/v1/images/tower/a.jpg/thumbnail").content
    assert second != first
    thumb = jpeg_of(second)
    assert thumb.size == (60, 30)
    assert thumb.getpixel((30, 15)) == pytest.approx((10, 20, 230), abs=6)


@pytest.mark.parametrize("mode", ["RGBA", "P", "L", "I;16"])
def test_thumbnails_of_any_picture_mode_are_rgb_jpegs(
    client: TestClient, world: World, tmp_path: Path, mode: str
) -> None:
    source = tmp_path / f"picture-{mode.replace(';', '')}.png"
    Image.new("RGB", (700, 350), (200, 100, 50)).convert(mode).save(source)
    world.images["tower/a.jpg"]["source"] = str(source)
    client.app.state.collection.open()
    response = client.get("/v1/images/tower/a.jpg/thumbnail")
    assert response.status_code == 200, response.text
    thumb = jpeg_of(response.content)
    assert (thumb.mode, thumb.size) == ("RGB", (320, 160))


def test_thumbnails_are_saved_at_quality_85(client: TestClient, tmp_path: Path) -> None:
    thumb = jpeg_of(client.get("/v1/images/tower/a.jpg/thumbnail").content)
    expected = io.BytesIO()
    Image.new("RGB", (32, 32)).save(expected, "JPEG", quality=85)
    assert thumb.quantization == Image.open(expected).quantization


# -- review queue ---------------------------------------------------------------------------


def test_review_items_of_unknown_answers_have_no_metadata(world: World, tmp_path: Path) -> None:
    world.metadata["XXXX"] = {"never": "shown"}  # any name may be an instance id
    world.result.instance = None
    with make_client(world, tmp_path, review_days=1) as client:
        assert units.identify(client).status_code == 200
        (item,) = client.get("/v1/review", headers=AUTH).json()["items"]
        assert item["instance"] is None and item["metadata"] == {}


def test_review_items_are_added_to_ids_of_one_to_128_characters(
    world: World, tmp_path: Path
) -> None:
    world.result.instance = None
    world.add_report = SimpleNamespace(added=1, updated=0, unchanged=0, skipped=())
    with make_client(world, tmp_path, review_days=1) as client:
        for name in ("a", "x" * 128):
            units.identify(client, picture((30 + len(name), 10)))
            (item,) = client.get("/v1/review", headers=AUTH).json()["items"]
            added = client.post(
                f"/v1/review/{item['id']}/add", params={"instance": name}, headers=AUTH
            )
            assert added.status_code == 201, added.text
            assert added.json()["instance"] == name and world.calls[-1][1] == name


def test_a_damaged_review_photo_is_named_when_added(world: World, tmp_path: Path) -> None:
    world.result.instance = None
    with make_client(world, tmp_path, review_days=1) as client:
        units.identify(client, picture((20, 10), "PNG"))
        (item,) = client.get("/v1/review", headers=AUTH).json()["items"]
        (tmp_path / "index" / "review" / f"{item['id']}.png").write_bytes(b"not a picture")
        calls = len(world.calls)
        failed = client.post(
            f"/v1/review/{item['id']}/add", params={"instance": "tower"}, headers=AUTH
        )
        message = units.error_of(failed, 415, "not_an_image")
        assert message.startswith(f"{item['id']}.png: ")
        assert len(world.calls) == calls


def test_heat_maps_run_in_the_service_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    world = identify_world()
    world.images = {"tower/a.jpg": units.image_record("tower/a.jpg", "tower", None, "t1")}
    seen: list[Any] = []

    async def scenario() -> Any:
        service = service_of(
            world,
            collection=SimpleNamespace(current=world.version()),
            limiter=anyio.CapacityLimiter(1),
        )

        def heatmap(view: Any, image: Image.Image, image_id: str) -> bytes:
            seen.append((image.size, image_id, service.limiter.borrowed_tokens))
            return b"jpeg"

        monkeypatch.setattr(app_module, "similarity_heatmap", heatmap)
        request = RawRequest(service, picture((30, 20)))
        return await app_module.heatmap(request, "tower/a.jpg")

    response = asyncio.run(scenario())
    assert (response.body, response.media_type) == (b"jpeg", "image/jpeg")
    assert seen == [((30, 20), "tower/a.jpg", 1)]


# -- the routes -----------------------------------------------------------------------------

#: Every documented route: method, path, summary, success status, answer content type, the
#: request body types (the uploads'), and whether it needs the write token.
UPLOADS = ["image/jpeg", "image/png", "image/webp", "multipart/form-data"]
ROUTES = [
    ("post", "/v1/identify", "Identify a photo: the instance or unknown, with a confidence",
     "200", "application/json", UPLOADS, False),
    ("post", "/v1/heatmap",
     "Where a photo matches a reference image: similarity heat map (JPEG)",
     "200", "image/jpeg", UPLOADS, False),
    ("get", "/v1/instances",
     "Instances, optionally filtered by a substring of the id or of a metadata field",
     "200", "application/json", [], False),
    ("get", "/v1/instances/{instance_id}", "One instance and its reference images",
     "200", "application/json", [], False),
    ("get", "/v1/images/{image_id}/thumbnail", "A reference image as a JPEG thumbnail",
     "200", "image/jpeg", [], False),
    ("post", "/v1/instances/{instance_id}/images",
     "Add photos to an instance (created if new), in one commit",
     "201", "application/json", UPLOADS, True),
    ("patch", "/v1/instances/{instance_id}",
     "Set an instance's metadata fields (null deletes one), in one commit",
     "200", "application/json", ["application/json"], True),
    ("delete", "/v1/instances/{instance_id}",
     "Remove an instance and all its images, in one commit",
     "200", "application/json", [], True),
    ("delete", "/v1/images/{image_id}", "Remove one reference image, in one commit",
     "200", "application/json", [], True),
    ("get", "/v1/review",
     "Visitor photos answered unknown or with a low confidence (newest first)",
     "200", "application/json", [], True),
    ("get", "/v1/review/{item_id}/photo", "A review item's photo", "200", None, [], True),
    ("post", "/v1/review/{item_id}/add",
     "Add a review item's photo to an instance (one commit) and take it off the queue",
     "201", "application/json", [], True),
    ("delete", "/v1/review/{item_id}", "Discard a review item",
     "200", "application/json", [], True),
    ("get", "/healthz", "Liveness: the index is open", "200", "application/json", [], False),
    ("get", "/v1/info", "The index: recipe, counts, version, limits",
     "200", "application/json", [], False),
    ("get", "/metrics", "Prometheus metrics", "200", "text/plain", [], False),
]  # fmt: skip


def test_the_documented_routes(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert schema["info"] == {
        "title": "pyinstance identification service",
        "description": "Identify photos against an instance index; curate the collection.",
        "version": "9.8.7",
    }
    documented = [(m, p) for p, methods in schema["paths"].items() for m in methods]
    assert sorted(documented) == sorted((m, p) for m, p, *_ in ROUTES)
    for method, path, summary, status, answer, uploads, _ in ROUTES:
        operation = schema["paths"][path][method]
        assert operation["summary"] == summary, path
        assert list(operation["responses"])[0] == status, path
        content = operation["responses"][status].get("content", {})
        assert list(content) == ([] if answer is None else [answer]), path
        assert sorted(operation.get("requestBody", {}).get("content", {})) == uploads, path


@pytest.mark.parametrize(("method", "path", "writes"), [(r[0], r[1], r[6]) for r in ROUTES])
def test_only_the_writes_need_the_token(
    client: TestClient, world: World, method: str, path: str, writes: bool
) -> None:
    concrete = path.replace("{instance_id}", "tower").replace("{image_id}", "tower/a.jpg")
    response = client.request(method, concrete.replace("{item_id}", "0" * 64))
    assert (response.status_code == 401) == writes, response.text
    if writes:
        assert response.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(("path", "page"), [("/", "visitor.html"), ("/curator", "curator.html")])
def test_pages_are_served_but_not_documented(client: TestClient, path: str, page: str) -> None:
    assert path not in client.get("/openapi.json").json()["paths"]
    response = client.get(path)
    expected = (Path(app_module.__file__).parent / "static" / page).read_text("utf-8")
    assert response.status_code == 200 and response.text == expected


def test_a_photo_without_a_file_name_is_called_file(client: TestClient) -> None:
    body = (
        b"--xyz\r\n"
        b'Content-Disposition: form-data; name="file"; filename=""\r\n'
        b"Content-Type: image/jpeg\r\n\r\n"
        b"junk\r\n"
        b"--xyz--\r\n"
    )
    headers = {"Content-Type": "multipart/form-data; boundary=xyz"}
    response = client.post("/v1/identify", content=body, headers=headers)
    assert units.error_of(response, 415, "not_an_image").startswith("file: ")


def test_objects_of_instances_without_metadata_answer_an_empty_object() -> None:
    world = identify_world()
    world.metadata = {"tower": {"title": "Eiffel"}}
    world.settings[app_module.OBJECTS_THRESHOLD] = 0.4
    found = [
        SimpleNamespace(instance=name, image_id=image, to_dict=lambda name=name: {"id": name})
        for name, image in (("tower", "tower/a.jpg"), ("bridge", None))
    ]
    world.result.objects = tuple(found)
    answer = app_module.identify_photo(
        service_of(world), world.version(), "q.jpg", picture(), options(multi=True)
    )
    assert answer["objects"] == [
        {"id": "tower", "metadata": {"title": "Eiffel"}, "thumbnail_url": thumbnail("tower/a.jpg")},
        {"id": "bridge", "metadata": {}, "thumbnail_url": None},
    ]


def thumbnail(image_id: str) -> str:
    return f"/v1/images/{image_id}/thumbnail"
