"""The service refuses a calibrated threshold that went stale (whitening switched off)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from pyinstance.index import DEFAULT_RECIPE, InstanceIndex
from pyinstance.index.recipe import WHITEN_MIN_REFERENCES
from pyinstance.index.thresholds import calibrated
from pyinstance.serve import create_app

from .conftest import TOKEN


def test_a_stale_threshold_answers_409_until_one_is_given(tmp_path: Path, pairs: Path) -> None:
    rng = np.random.default_rng(0)
    x = 2.0 + rng.standard_normal((WHITEN_MIN_REFERENCES, DEFAULT_RECIPE.dim))
    rows = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    with InstanceIndex.create(tmp_path / "index", DEFAULT_RECIPE) as index:
        ids = [f"im{row}" for row in range(len(rows))]
        index.add_descriptors(rows, [f"i{row // 2}" for row in range(len(rows))], ids, index.recipe)
        index.set_settings(calibrated(index, "threshold", 0.6))  # as calibrate stores it
        index.remove(image=ids[-1])  # 95 references: searched unwhitened from now on
    photo = (pairs / "query" / "box_in_scene.png").read_bytes()
    png = {"Content-Type": "image/png"}
    with TestClient(create_app(tmp_path / "index", token=TOKEN)) as client:
        stale = client.get("/v1/info").json()["stale_thresholds"]
        assert "now searched unwhitened" in stale["threshold"]
        response = client.post("/v1/identify", content=photo, headers=png)
        assert response.status_code == 409, response.text
        error = response.json()["error"]
        assert error["code"] == "threshold_stale"
        assert "pyinstance calibrate" in error["message"] and "pass a threshold" in error["message"]
        given = client.post("/v1/identify", params={"threshold": 0.5}, content=photo, headers=png)
        assert given.status_code == 200, given.text
        assert given.json()["threshold"] == 0.5
