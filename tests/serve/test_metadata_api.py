"""Instance metadata over HTTP: set by curators, shown with instances and answers."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pyinstance.index import InstanceIndex
from pyinstance.serve import create_app

from .conftest import TOKEN
from .test_api import AUTH, add_photo, assert_error, identify


def patch(client: TestClient, instance: str, body: object, **params: object):
    return client.patch(
        f"/v1/instances/{instance}",
        params=params,
        content=json.dumps(body),
        headers={**AUTH, "Content-Type": "application/json"},
    )


def test_curator_sets_metadata_and_every_answer_shows_it(
    writer: TestClient, query_photos: dict[Path, str]
) -> None:
    response = patch(writer, "graf", {"title": "Graffiti", "author": "Unknown", "year": 2004})
    assert response.status_code == 200, response.text
    assert response.json()["metadata"] == {"title": "Graffiti", "author": "Unknown", "year": 2004}
    listed = {i["id"]: i for i in writer.get("/v1/instances").json()["instances"]}
    assert listed["graf"]["metadata"]["title"] == "Graffiti"
    assert listed["box"]["metadata"] == {}
    assert writer.get("/v1/instances", params={"q": "graffiti"}).json()["total"] == 1
    assert writer.get("/v1/instances/graf").json()["metadata"]["year"] == 2004

    graf = next(p for p, instance in query_photos.items() if instance == "graf")
    answer = identify(writer, graf)
    assert answer["instance"] == "graf" and answer["metadata"]["title"] == "Graffiti"
    assert answer["top_k"][0]["metadata"]["author"] == "Unknown"
    assert all(m["metadata"] == {} for m in answer["top_k"] if m["instance"] != "graf")

    patch(writer, "graf", {"author": None, "room": "B"})
    assert writer.get("/v1/instances/graf").json()["metadata"] == {
        "title": "Graffiti",
        "year": 2004,
        "room": "B",
    }
    patch(writer, "graf", {"title": "Wall"}, replace="true")
    assert writer.get("/v1/instances/graf").json()["metadata"] == {"title": "Wall"}


def test_photos_added_with_metadata_in_one_request(writer: TestClient, pairs: Path) -> None:
    photo = pairs / "query" / "rubberwhale2.png"
    metadata = json.dumps({"title": "Whale", "author": "Toy maker"})
    response = add_photo(writer, "whale-two", photo, metadata=metadata)
    assert response.status_code == 201, response.text
    assert response.json()["metadata"] == {"title": "Whale", "author": "Toy maker"}
    assert writer.get("/v1/instances/whale-two").json()["metadata"]["title"] == "Whale"


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        ("{not json", {}, 422, "invalid_metadata"),
        ("[1, 2]", {}, 422, "invalid_metadata"),
        ('{"title": {"a": 1}}', {}, 422, "invalid_metadata"),
        ('{"": "x"}', {}, 422, "invalid_metadata"),
        (json.dumps({f"f{i}": i for i in range(40)}), {}, 422, "invalid_metadata"),
        ('{"title": "x"}', {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        ("x" * 70_000, {}, 413, "too_large"),
    ],
)
def test_bad_metadata_is_a_clear_4xx(
    writer: TestClient, body: str, headers: dict, status: int, code: str
) -> None:
    response = writer.patch(
        "/v1/instances/graf",
        content=body,
        headers={**AUTH, "Content-Type": "application/json", **headers},
    )
    assert_error(response, status, code)
    assert writer.get("/v1/instances/graf").json()["metadata"] == {}


def test_metadata_needs_the_token_and_a_known_instance(writer: TestClient, pairs: Path) -> None:
    json_type = {"Content-Type": "application/json"}
    assert_error(writer.patch("/v1/instances/graf", content="{}", headers=json_type), 401)
    wrong = {"Authorization": "Bearer nope", **json_type}
    assert_error(writer.patch("/v1/instances/graf", content="{}", headers=wrong), 401)
    assert_error(patch(writer, "nope", {"title": "x"}), 404, "unknown_instance")
    assert_error(patch(writer, "back%5Cslash", {"title": "x"}), 400, "invalid_id")
    photo = pairs / "query" / "rubberwhale2.png"
    refused = add_photo(writer, "whale-two", photo, metadata='{"title": [1]}')
    assert_error(refused, 422, "invalid_metadata")
    assert_error(writer.get("/v1/instances/whale-two"), 404)


def test_metadata_set_by_another_process_is_seen_without_restart(index_copy: Path) -> None:
    app = create_app(index_copy, token=TOKEN, refresh_seconds=0.1)
    with TestClient(app) as client:
        assert client.get("/v1/instances/box").json()["metadata"] == {}
        revision = client.get("/healthz").json()["revision"]
        with InstanceIndex.open(index_copy) as other:
            other.set_metadata({"box": {"title": "A box"}})
        deadline = time.monotonic() + 30
        while client.get("/v1/instances/box").json()["metadata"] != {"title": "A box"}:
            assert time.monotonic() < deadline, "the change never showed"
            time.sleep(0.1)
        assert client.get("/healthz").json()["revision"] > revision
