"""Curating the collection through the service: answers the other files of this folder leave
open (adding photos, thumbnails, the review queue), each checked against values worked out
here, over the fakes of tests/serve/fakes.py."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import pyinstance.serve.app as app_module
from pyinstance.serve.app import create_app, read_token_file

from . import test_app_units as units
from .fakes import World, image_record, picture
from .test_app_units import AUTH

world, client = units.world, units.client  # the fixtures: a fake collection, its client


def add(client: TestClient, instance: str, photos: list[tuple[str, bytes]]) -> Any:
    files = [("files", (name, data, "image/png")) for name, data in photos]
    return client.post(f"/v1/instances/{instance}/images", headers=AUTH, files=files)


def upload_name(data: bytes, ext: str) -> str:
    return f"{hashlib.sha256(data).hexdigest()}.{ext}"


# -- adding photos ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("added", "updated", "unchanged", "status"), [(1, 0, 1, 201), (0, 1, 1, 200), (2, 0, 2, 201)]
)
def test_photos_added_and_unchanged_in_one_request_are_an_answer(
    client: TestClient, world: World, added: int, updated: int, unchanged: int, status: int
) -> None:
    world.add_report = SimpleNamespace(
        added=added, updated=updated, unchanged=unchanged, skipped=()
    )
    photos = [(f"{i}.png", picture((20 + i, 10), "PNG")) for i in range(2)]
    response = add(client, "tower", photos)
    assert response.status_code == status, response.text
    answer = response.json()
    assert (answer["added"], answer["unchanged"], answer["skipped"]) == (added, unchanged, [])


def test_a_skipped_photo_is_held_by_no_instance(client: TestClient, world: World) -> None:
    """The collection keeps every upload, but only the photos it added are in the index."""
    collection = client.app.state.collection
    kept, refused = picture((30, 10), "PNG"), picture((31, 10), "PNG")

    async def add_the_first(instance: str, photos: Any, metadata: Any = None) -> Any:
        paths = [collection.path / "uploads" / name for name, _ in photos]
        first = paths[0].stem
        world.images[first] = {
            **image_record(first, instance, str(paths[0]), "t9"),
            "sha256": first,
        }
        world.number += 1
        collection._publish()
        skipped = (SimpleNamespace(path=str(paths[1]), reason="too small"),)
        return SimpleNamespace(added=1, updated=0, unchanged=0, skipped=skipped), paths

    collection.add = add_the_first
    response = add(client, "lonely", [("kept.png", kept), ("refused.png", refused)])
    assert response.status_code == 201, response.text
    answer = response.json()
    assert answer["already_in_other_instances"] == []
    assert answer["skipped"] == [{"file": upload_name(refused, "png"), "reason": "too small"}]
    assert [image["id"] for image in answer["images"]] == [upload_name(kept, "png")[:-4]]


def test_a_truncated_photo_is_refused_before_anything_is_added(
    client: TestClient, world: World
) -> None:
    """Its header reads well (size and format), its pixels cannot be decoded."""
    pixels = np.random.default_rng(5).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    whole = out.getvalue()
    calls = len(world.calls)
    response = add(client, "tower", [("whole.png", whole), ("cut.png", whole[: len(whole) // 2])])
    message = units.error_of(response, 422, "corrupt_image")
    assert message.startswith("cut.png: cannot be decoded (truncated or corrupt: ")
    assert len(world.calls) == calls


# -- thumbnails -------------------------------------------------------------------------------


def test_large_jpeg_sources_are_decoded_at_reduced_size(
    client: TestClient, world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 2560×2560 JPEG is decoded at 1/8 scale (320×320, JPEG's DCT scaling), not whole:
    the smallest scale whose sides are still at least the thumbnail's 320."""
    source = tmp_path / "large.jpg"
    source.write_bytes(picture((2560, 2560), colour=(20, 120, 220)))
    world.images["tower/a.jpg"]["source"] = str(source)
    client.app.state.collection.open()
    opened: list[Image.Image] = []
    real_open = Image.open

    def recording_open(*args: Any, **kwargs: Any) -> Image.Image:
        opened.append(real_open(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(Image, "open", recording_open)
    response = client.get("/v1/images/tower/a.jpg/thumbnail")
    monkeypatch.undo()
    assert response.status_code == 200, response.text
    assert [image.size for image in opened] == [(320, 320)]
    thumb = Image.open(io.BytesIO(response.content))
    assert thumb.size == (320, 320)
    assert thumb.getpixel((160, 160)) == pytest.approx((20, 120, 220), abs=6)


# -- the token file ---------------------------------------------------------------------------

TOKEN_SCRIPT = """
import sys
from pyinstance.serve.app import create_app, read_token_file
sys.stdout.buffer.write(read_token_file(sys.argv[1]).encode("utf-8"))
"""


def test_token_files_are_read_as_utf8_under_an_ascii_locale(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_bytes(" clé-à-écrire \n".encode())
    assert read_token_file(path) == "clé-à-écrire"
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    env.pop("PYTHONIOENCODING", None)
    env["PYTHONPATH"] = os.pathsep.join(entry for entry in sys.path if entry)  # this pyinstance
    done = subprocess.run(
        [sys.executable, "-c", TOKEN_SCRIPT, str(path)], env=env, capture_output=True, check=False
    )
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")
    assert done.stdout.decode("utf-8") == "clé-à-écrire"


# -- creating the application -----------------------------------------------------------------


def test_the_service_defaults(world: World, tmp_path: Path) -> None:
    """Two workers, a queue of 64 (the 503 starts at 66 identifications), a refresh every 2 s,
    no review queue; the workers are the limiter's tokens."""
    service = create_app(tmp_path).state.service
    assert (service.workers, service.max_queue, service.refresh_seconds) == (2, 64, 2.0)
    assert service.limiter.total_tokens == 2 and service.review is None
    assert create_app(tmp_path, workers=3).state.service.limiter.total_tokens == 3


def test_cors_preflights_allow_exactly_the_service_methods_and_headers(
    world: World, tmp_path: Path
) -> None:
    """GET, POST, PATCH and DELETE with Authorization and Content-Type (plus the headers CORS
    always allows), nothing else."""
    origin = "http://museum.example"
    with units.make_client(world, tmp_path, cors_origins=[origin]) as client:
        for method, status in (("GET", 200), ("POST", 200), ("PATCH", 200), ("DELETE", 200),
                               ("PUT", 400)):  # fmt: skip
            headers = {"Origin": origin, "Access-Control-Request-Method": method}
            answer = client.options("/v1/instances/tower", headers=headers)
            assert answer.status_code == status, method
        methods = answer.headers["access-control-allow-methods"]
        assert sorted(m.strip() for m in methods.split(",")) == ["DELETE", "GET", "PATCH", "POST"]
        allowed = answer.headers["access-control-allow-headers"]
        assert sorted(h.strip().lower() for h in allowed.split(",")) == [
            "accept",
            "accept-language",
            "authorization",
            "content-language",
            "content-type",
        ]


# -- metrics ----------------------------------------------------------------------------------


def test_request_durations_are_end_minus_start(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clock reads 100 at the start of the request and 107 at its end: 7 seconds."""
    ticks = iter([100.0, 107.0])
    monkeypatch.setattr(app_module, "time", SimpleNamespace(perf_counter=lambda: next(ticks)))
    assert client.get("/healthz").status_code == 200
    monkeypatch.undo()
    metrics = client.get("/metrics").text
    assert 'pyinstance_request_seconds_sum{endpoint="/healthz"} 7.000000' in metrics
    assert 'pyinstance_request_seconds_bucket{endpoint="/healthz",le="5.0"} 0' in metrics
