"""``POST /v1/identify?multi=true``: every collection object in the photo, with its box."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from pyinstance.index import InstanceIndex
from pyinstance.objects import THRESHOLD_SETTING
from pyinstance.serve import create_app

from .conftest import TOKEN
from .test_api import assert_error, identify


def test_multi_lists_the_objects_with_boxes_metadata_and_thumbnails(
    index_copy: Path, pairs: Path
) -> None:
    with InstanceIndex.open(index_copy) as index:
        index.set_setting(THRESHOLD_SETTING, 0.1)
        index.set_metadata({"graf": {"title": "Graffiti"}})
    photo = pairs / "query" / "graf3.png"
    with TestClient(create_app(index_copy, token=TOKEN)) as client:
        answer = identify(client, photo, multi="true")
        assert answer["instance"] == "graf"
        (found,) = [o for o in answer["objects"] if o["instance"] == "graf"]
        assert found["metadata"] == {"title": "Graffiti"} and 0.1 <= found["confidence"] <= 1
        width, height = 800, 640  # graf3.png
        left, top, right, bottom = found["box"]
        assert 0 <= left < right <= width and 0 <= top < bottom <= height
        assert client.get(found["thumbnail_url"]).status_code == 200
        assert len({o["instance"] for o in answer["objects"]}) == len(answer["objects"])
        assert "objects" in answer["ms"] and "objects" not in identify(client, photo)


def test_multi_without_a_fitted_threshold_is_a_clear_409(client: TestClient, pairs: Path) -> None:
    photo = pairs / "query" / "graf3.png"
    response = client.post(
        "/v1/identify",
        params={"multi": "true"},
        files={"file": (photo.name, photo.read_bytes(), "image/png")},
    )
    assert_error(response, 409, "objects_uncalibrated")
    assert "calibrate" in response.json()["error"]["message"]
