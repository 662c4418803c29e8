"""The opt-in review queue: low-confidence visitor photos kept for curators, added in one click."""

from __future__ import annotations

import os
import time
from pathlib import Path

from fastapi.testclient import TestClient

from pyinstance.index import InstanceIndex
from pyinstance.serve import create_app

from .conftest import TOKEN
from .test_api import AUTH, assert_error, identify


def test_review_queue_keeps_adds_and_discards(index_copy: Path, pairs: Path) -> None:
    app = create_app(index_copy, token=TOKEN, review_days=7, review_below=0.9)
    with TestClient(app) as client:
        assert identify(client, pairs / "query" / "rubberwhale2.png")["confidence"] > 0.9
        low = identify(client, pairs / "query" / "aero3.jpg")
        assert low["confidence"] < 0.9
        identify(client, pairs / "query" / "box_in_scene.png")
        assert_error(client.get("/v1/review"), 401, "unauthorized")
        items = client.get("/v1/review", headers=AUTH).json()["items"]
        assert {i["top_k"][0]["instance"] for i in items} == {"aero", "box"}
        aero = next(i for i in items if i["top_k"][0]["instance"] == "aero")
        assert aero["top_k"][0]["metadata"] == {}
        with InstanceIndex.open(index_copy) as other:  # titles set after the photo came
            other.set_metadata({"aero": {"title": "Plane"}})
        client.portal.call(app.state.collection.refresh)
        items = client.get("/v1/review", headers=AUTH).json()["items"]
        aero = next(i for i in items if i["top_k"][0]["instance"] == "aero")
        assert aero["top_k"][0]["metadata"] == {"title": "Plane"}
        photo = client.get(aero["photo_url"], headers=AUTH)
        assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
        assert photo.content == (pairs / "query" / "aero3.jpg").read_bytes()

        added = client.post(
            f"/v1/review/{aero['id']}/add", params={"instance": "aero"}, headers=AUTH
        )
        assert added.status_code == 201, added.text
        assert client.get("/v1/instances/aero").json()["images"] == 2
        assert identify(client, pairs / "query" / "aero3.jpg")["confidence"] > 0.99
        remaining = client.get("/v1/review", headers=AUTH).json()["items"]
        assert [i["top_k"][0]["instance"] for i in remaining] == ["box"]

        box = remaining[0]["id"]
        assert client.delete(f"/v1/review/{box}", headers=AUTH).status_code == 200
        assert client.get("/v1/review", headers=AUTH).json()["items"] == []
        assert_error(client.delete(f"/v1/review/{box}", headers=AUTH), 404, "unknown_review_item")
        assert_error(client.get("/v1/review/..%2Fetc/photo", headers=AUTH), 404)
        bad = client.post(f"/v1/review/{box}/add", params={"instance": "x/y"}, headers=AUTH)
        assert_error(bad, 400, "invalid_id")


def test_review_items_expire(index_copy: Path, pairs: Path) -> None:
    app = create_app(index_copy, token=TOKEN, review_days=1, review_below=1.0)
    with TestClient(app) as client:
        identify(client, pairs / "query" / "aero3.jpg")
        assert len(client.get("/v1/review", headers=AUTH).json()["items"]) == 1
        old = time.time() - 2 * 86400
        for path in (index_copy / "review").iterdir():
            os.utime(path, (old, old))
        assert client.get("/v1/review", headers=AUTH).json()["items"] == []
        assert list((index_copy / "review").iterdir()) == []


def test_review_is_off_by_default(client: TestClient, built_index: Path, pairs: Path) -> None:
    assert identify(client, pairs / "query" / "aero3.jpg", threshold=1.0)["instance"] is None
    assert_error(client.get("/v1/review", headers=AUTH), 404, "review_disabled")
    assert not (built_index / "review").exists()
