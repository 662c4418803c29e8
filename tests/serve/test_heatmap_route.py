"""``POST /v1/heatmap``: one photo, named in the refusal of an unusable one."""

from __future__ import annotations

from fastapi.testclient import TestClient

from .fakes import picture
from .test_app_units import client, world  # noqa: F401 (fixtures)


def test_a_heat_map_of_two_photos_is_refused(client: TestClient) -> None:  # noqa: F811
    photo = ("a.jpg", picture(), "image/jpeg")
    files = [("file", photo), ("file", ("b.jpg", picture(), "image/jpeg"))]
    response = client.post("/v1/heatmap", params={"image_id": "tower/a.jpg"}, files=files)
    assert response.status_code == 400


def test_an_unreadable_photo_is_named(client: TestClient) -> None:  # noqa: F811
    files = {"file": ("broken.jpg", b"\xff\xd8 not a jpeg", "image/jpeg")}
    response = client.post("/v1/heatmap", params={"image_id": "tower/a.jpg"}, files=files)
    assert 400 <= response.status_code < 500
    assert "broken.jpg" in response.json()["error"]["message"]
