"""The service against a real index over HTTP: answers, changes without restart, refusals."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from pyinstance.serve import create_app

from .conftest import TOKEN

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def content_type(path: Path) -> str:
    return "image/png" if path.suffix == ".png" else "image/jpeg"


def identify(client: TestClient, path: Path, **params: object) -> dict:
    response = client.post(
        "/v1/identify",
        params=params,
        files={"file": (path.name, path.read_bytes(), content_type(path))},
    )
    assert response.status_code == 200, response.text
    return response.json()


def add_photo(client: TestClient, instance: str, path: Path, **form: str) -> Any:
    """The response to posting ``path`` as a reference image of ``instance`` (with a token;
    ``form`` fields such as ``metadata`` beside it)."""
    return client.post(
        f"/v1/instances/{instance}/images",
        headers=AUTH,
        files=[("files", (path.name, path.read_bytes(), content_type(path)))],
        data=form,
    )


def assert_error(response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message"} and error["message"]
    if code is not None:
        assert error["code"] == code


def png_header_bomb(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` × ``height`` pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\0" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )


def test_identifies_every_query(client: TestClient, query_photos: dict[Path, str]) -> None:
    for path, instance in query_photos.items():
        answer = identify(client, path, top_k=3)
        assert answer["instance"] == instance, path.name
        assert 0.0 <= answer["confidence"] <= 1.0
        assert [m["instance"] for m in answer["top_k"]][0] == instance
        assert len(answer["top_k"]) == 3
        assert set(answer["ms"]) >= {"decode", "extract", "search", "classify", "total"}
        assert answer["version"] == client.get("/v1/info").json()["version"]


def test_raw_body_and_thumbnail_of_the_best_reference(
    client: TestClient, query_photos: dict[Path, str]
) -> None:
    path = next(p for p, instance in query_photos.items() if instance == "graf")
    response = client.post(
        "/v1/identify", content=path.read_bytes(), headers={"Content-Type": content_type(path)}
    )
    assert response.status_code == 200, response.text
    best = response.json()["top_k"][0]
    assert best["instance"] == "graf" and best["image_id"] == "reference/graf1.png"
    thumbnail = client.get(best["thumbnail_url"])
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumbnail.content)).size) <= 320


def test_threshold_turns_an_answer_unknown(
    client: TestClient, query_photos: dict[Path, str]
) -> None:
    path = next(iter(query_photos))
    answer = identify(client, path, threshold=1.0)
    assert answer["instance"] is None and answer["top_k"][0]["instance"] == query_photos[path]
    assert 'pyinstance_identifications_total{result="unknown"}' in client.get("/metrics").text


def test_instances_and_info(client: TestClient) -> None:
    listing = client.get("/v1/instances").json()
    assert listing["total"] == 9 and len(listing["instances"]) == 9
    assert client.get("/v1/instances", params={"q": "RUBBER"}).json()["total"] == 1
    box = client.get("/v1/instances/box").json()
    assert box["images"] == 1 and box["reference_images"][0]["id"] == "reference/box.png"
    assert client.get(box["reference_images"][0]["thumbnail_url"]).status_code == 200
    info = client.get("/v1/info").json()
    assert info["images"] == 9 and info["instances"] == 9 and info["recipe"]["max_side"] == 224
    assert info["read_only"] is False
    assert client.get("/healthz").json()["status"] == "ok"
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/identify", "/v1/instances/{instance_id}/images", "/metrics"} <= set(paths)


def test_remove_and_add_are_seen_without_restart(
    writer: TestClient, query_photos: dict[Path, str], pairs: Path
) -> None:
    aero = next(p for p, instance in query_photos.items() if instance == "aero")
    before = identify(writer, aero)
    assert before["instance"] == "aero"

    removed = writer.delete("/v1/instances/aero", headers=AUTH)
    assert removed.status_code == 200 and removed.json()["removed_images"] == 1
    after_removal = identify(writer, aero)
    assert after_removal["instance"] != "aero"
    assert "aero" not in {m["instance"] for m in after_removal["top_k"]}
    assert after_removal["version"] > before["version"]
    assert_error(writer.get("/v1/instances/aero"), 404, "unknown_instance")

    reference = pairs / "reference" / "aero1.jpg"
    added = add_photo(writer, "plane", reference)
    assert added.status_code == 201, added.text
    body = added.json()
    assert body["added"] == 1 and body["version"] > after_removal["version"]
    (image,) = body["images"]
    assert writer.get(image["thumbnail_url"]).status_code == 200
    assert identify(writer, aero)["instance"] == "plane"

    again = add_photo(writer, "plane", reference)
    assert again.status_code == 200 and again.json()["unchanged"] == 1

    deleted = writer.delete(f"/v1/images/{image['id']}", headers=AUTH)
    assert deleted.status_code == 200, deleted.text
    assert writer.get("/v1/instances", params={"q": "plane"}).json()["total"] == 0


def test_adding_to_an_existing_instance(writer: TestClient, pairs: Path) -> None:
    photo = pairs / "query" / "box_in_scene.png"
    response = writer.post(
        "/v1/instances/box/images",
        content=photo.read_bytes(),
        headers={**AUTH, "Content-Type": "image/png"},
    )
    assert response.status_code == 201, response.text
    assert writer.get("/v1/instances/box").json()["images"] == 2
    elsewhere = writer.post(
        "/v1/instances/other/images",
        content=photo.read_bytes(),
        headers={**AUTH, "Content-Type": "image/png"},
    )
    assert elsewhere.status_code == 200 and elsewhere.json()["unchanged"] == 1
    assert elsewhere.json()["already_in_other_instances"] == [{"file": "body", "instance": "box"}]
    assert_error(writer.get("/v1/instances/other"), 404, "unknown_instance")


@pytest.fixture(scope="module")
def photo(pairs: Path) -> bytes:
    return (pairs / "query" / "aero3.jpg").read_bytes()


def bad_requests(photo: bytes) -> list[tuple[str, str, dict, int, str | None]]:
    """(method, url, request keyword arguments, expected status, expected code)."""
    jpeg = {"Content-Type": "image/jpeg"}
    return [
        ("POST", "/v1/identify", {}, 415, "unsupported_media_type"),
        ("POST", "/v1/identify", {"headers": jpeg}, 422, "empty_image"),
        ("POST", "/v1/identify", {"content": b"x" * 2_100_000, "headers": jpeg}, 413, "too_large"),
        ("POST", "/v1/identify", {"content": b"hello, not an image", "headers": jpeg}, 415, None),
        ("POST", "/v1/identify", {"content": photo[: len(photo) // 3], "headers": jpeg}, 422, None),
        (
            "POST",
            "/v1/identify",
            {"content": png_header_bomb(30_000, 30_000), "headers": {"Content-Type": "image/png"}},
            413,
            "too_many_pixels",
        ),
        (
            "POST",
            "/v1/identify",
            {"content": photo, "headers": {"Content-Type": "text/plain"}},
            415,
            None,
        ),
        (
            "POST",
            "/v1/identify",
            {"content": b"{}", "headers": {"Content-Type": "application/json"}},
            415,
            None,
        ),
        (
            "POST",
            "/v1/identify",
            {"data": {"other": "field"}, "files": {"x": ("a", b"1")}},
            422,
            None,
        ),
        (
            "POST",
            "/v1/identify",
            {"files": {"file": ("a.gif", gif(), "image/gif")}},
            415,
            "unsupported_image",
        ),
        ("POST", "/v1/identify?top_k=0", {"content": photo, "headers": jpeg}, 422, None),
        ("POST", "/v1/identify?threshold=2", {"content": photo, "headers": jpeg}, 422, None),
        ("POST", "/v1/identify?classifier=bogus", {"content": photo, "headers": jpeg}, 400, None),
        ("GET", "/v1/instances/nope", {}, 404, "unknown_instance"),
        ("GET", "/v1/images/reference/nope.jpg/thumbnail", {}, 404, "unknown_image"),
        ("GET", "/v1/nothing-here", {}, 404, "not_found"),
        ("DELETE", "/v1/instances/nope", {"headers": AUTH}, 404, "unknown_instance"),
        ("DELETE", "/v1/images/reference/nope.jpg", {"headers": AUTH}, 404, "unknown_image"),
        ("DELETE", "/v1/instances/box", {}, 401, "unauthorized"),
        ("DELETE", "/v1/instances/box", {"headers": {"Authorization": "Bearer wrong"}}, 401, None),
        ("DELETE", "/v1/instances/box", {"headers": {"Authorization": TOKEN}}, 401, None),
        ("POST", "/v1/instances/box/images", {"content": photo, "headers": jpeg}, 401, None),
        ("GET", "/v1/instances/..%2F..%2Fetc%2Fpasswd", {}, 404, "not_found"),
        ("GET", "/v1/instances/%2E%2E", {}, 400, "invalid_id"),
        ("GET", "/v1/instances/%00x", {}, 400, "invalid_id"),
        ("GET", "/v1/images/..%2F..%2Fetc%2Fpasswd/thumbnail", {}, 400, "invalid_id"),
        ("GET", "/v1/images/reference/..%2F..%2Fmanifest.csv/thumbnail", {}, 400, "invalid_id"),
        ("DELETE", "/v1/images/%2Fetc%2Fpasswd", {"headers": AUTH}, 400, "invalid_id"),
        (
            "POST",
            "/v1/instances/..%5Cevil/images",
            {"content": photo, "headers": {**AUTH, **jpeg}},
            400,
            "invalid_id",
        ),
        (
            "POST",
            "/v1/instances/box/images",
            {"content": b"not an image", "headers": {**AUTH, **jpeg}},
            415,
            None,
        ),
        ("PUT", "/v1/identify", {}, 405, None),
    ]


def gif() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64)).save(out, "GIF")
    return out.getvalue()


def test_bad_requests_are_clear_4xx_and_the_service_keeps_serving(
    client: TestClient, photo: bytes, query_photos: dict[Path, str]
) -> None:
    for method, url, kwargs, status, code in bad_requests(photo):
        response = client.request(method, url, **kwargs)
        assert response.status_code == status, (method, url, response.text)
        assert_error(response, status, code)
    metrics = client.get("/metrics").text
    assert 'pyinstance_rejected_requests_total{code="too_many_pixels"} 1' in metrics
    assert 'endpoint="/v1/identify",status="413"' in metrics
    path = next(iter(query_photos))
    assert identify(client, path)["instance"] == query_photos[path]
    assert client.get("/v1/info").json()["images"] == 9


def test_read_only_without_a_token(built_index: Path, photo: bytes, monkeypatch) -> None:
    monkeypatch.delenv("PYINSTANCE_API_TOKEN", raising=False)
    with TestClient(create_app(built_index)) as client:
        assert client.get("/v1/info").json()["read_only"] is True
        for method, url in (("DELETE", "/v1/instances/box"), ("POST", "/v1/instances/x/images")):
            response = client.request(
                method, url, headers={**AUTH, "Content-Type": "image/jpeg"}, content=photo
            )
            assert_error(response, 403, "read_only")
        assert client.get("/v1/instances/box").status_code == 200


def test_token_from_the_environment(index_copy: Path, monkeypatch) -> None:
    monkeypatch.setenv("PYINSTANCE_API_TOKEN", "from-env")
    with TestClient(create_app(index_copy)) as client:
        assert client.delete("/v1/instances/box").status_code == 401
        response = client.delete("/v1/instances/box", headers={"Authorization": "Bearer from-env"})
        assert response.status_code == 200


def test_pages_are_self_contained(client: TestClient) -> None:
    for url in ("/", "/curator"):
        response = client.get(url)
        assert response.status_code == 200 and response.headers["content-type"].startswith(
            "text/html"
        )
        assert "default-src 'self'" in response.headers["content-security-policy"]
        assert "http://" not in response.text and "https://" not in response.text
    assert 'accept="image/*" capture' in client.get("/").text


def test_bad_arguments_of_create_app(built_index: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="workers"):
        create_app(built_index, workers=0)
    with pytest.raises(ValueError, match="max_pixels"):
        create_app(built_index, max_pixels=-1)
    with pytest.raises(FileNotFoundError):
        create_app(tmp_path / "absent")


def test_identifications_beyond_the_queue_answer_503(built_index: Path, photo: bytes) -> None:
    import asyncio

    import httpx

    app = create_app(built_index, workers=1, max_queue=1)

    async def burst() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await asyncio.gather(
                *(
                    client.post(
                        "/v1/identify", content=photo, headers={"Content-Type": "image/jpeg"}
                    )
                    for _ in range(6)
                )
            )

    statuses = sorted(r.status_code for r in asyncio.run(burst()))
    assert statuses[0] == 200 and statuses[-1] == 503 and set(statuses) == {200, 503}
    busy = next(r for r in asyncio.run(burst()) if r.status_code == 503)
    assert_error(busy, 503, "busy")
    assert busy.headers["retry-after"] == "1"


def test_exif_orientation_of_phone_photos_is_applied(client: TestClient, photo: bytes) -> None:
    from pyinstance.serve.uploads import decode_image

    upright = Image.open(io.BytesIO(photo))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # as a sideways-held phone stores it
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    out = io.BytesIO()
    stored.save(out, "JPEG", quality=95, exif=exif)
    decoded = decode_image(out.getvalue(), max_pixels=10**8, longest=4096)
    assert decoded.size == upright.size != stored.size
    response = client.post(
        "/v1/identify", content=out.getvalue(), headers={"Content-Type": "image/jpeg"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["instance"] == "aero"


def test_an_emptied_index_answers_409_then_serves_again(
    writer: TestClient, photo: bytes, pairs: Path
) -> None:
    for name in [i["id"] for i in writer.get("/v1/instances").json()["instances"]]:
        assert writer.delete(f"/v1/instances/{name}", headers=AUTH).status_code == 200
    jpeg = {"Content-Type": "image/jpeg"}
    assert_error(writer.post("/v1/identify", content=photo, headers=jpeg), 409, "empty_index")
    assert writer.get("/v1/info").json()["images"] == 0
    reference = (pairs / "reference" / "aero1.jpg").read_bytes()
    added = writer.post("/v1/instances/aero/images", content=reference, headers={**AUTH, **jpeg})
    assert added.status_code == 201, added.text
    assert writer.post("/v1/identify", content=photo, headers=jpeg).json()["instance"] == "aero"


def test_heatmap_of_a_photo_against_a_reference(client: TestClient, pairs: Path) -> None:
    photo = (pairs / "query" / "graf3.png").read_bytes()
    png = {"Content-Type": "image/png"}
    response = client.post(
        "/v1/heatmap", params={"image_id": "reference/graf1.png"}, content=photo, headers=png
    )
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    picture = Image.open(io.BytesIO(response.content))
    original = Image.open(io.BytesIO(photo))
    assert max(picture.size) <= 640
    assert abs(picture.width / picture.height - original.width / original.height) < 0.02
    unknown = client.post(
        "/v1/heatmap", params={"image_id": "reference/nope.png"}, content=photo, headers=png
    )
    assert_error(unknown, 404, "unknown_image")
    bad = client.post("/v1/heatmap", params={"image_id": "../x"}, content=photo, headers=png)
    assert_error(bad, 400, "invalid_id")
    assert_error(client.post("/v1/heatmap", content=photo, headers=png), 422, "invalid_request")


def test_ids_with_spaces_brackets_and_unicode(writer: TestClient, pairs: Path) -> None:
    name = "Mona Lisa (1503) – Léonard"
    url = f"/v1/instances/{quote(name)}"
    photo = (pairs / "reference" / "home.jpg").read_bytes()
    response = writer.post(
        url + "/images", content=photo, headers={**AUTH, "Content-Type": "image/jpeg"}
    )
    assert response.status_code == 200 and response.json()["unchanged"] == 1  # home has it
    other = (pairs / "query" / "leuvenB.jpg").read_bytes()
    response = writer.post(
        url + "/images", content=other, headers={**AUTH, "Content-Type": "image/jpeg"}
    )
    assert response.status_code == 201, response.text
    (image,) = response.json()["images"]
    assert image["id"].startswith(name + "/")
    assert writer.get(image["thumbnail_url"]).status_code == 200
    assert writer.get(url).json()["id"] == name
    assert writer.delete(url, headers=AUTH).status_code == 200
    for bad in (" padded", "a\\b", "tab\there", "x" * 129):
        assert_error(writer.get(f"/v1/instances/{quote(bad)}"), 400, "invalid_id")


def test_onnxruntime_engine_gives_the_same_answers(
    built_index: Path, client: TestClient, query_photos: dict[Path, str]
) -> None:
    pytest.importorskip("onnxruntime")
    assert client.get("/v1/info").json()["engine"] == "torch"
    with TestClient(create_app(built_index, engine="onnxruntime")) as fast:
        assert fast.get("/v1/info").json()["engine"] == "onnxruntime"
        for path in list(query_photos)[:3]:
            mine, theirs = identify(fast, path), identify(client, path)
            assert mine["instance"] == theirs["instance"]
            assert mine["confidence"] == pytest.approx(theirs["confidence"], abs=1e-3)
