"""CORS: off unless origins are configured, then only those origins."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from pyinstance.serve import create_app

from .conftest import TOKEN

KIOSK = "https://kiosk.example"
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


def test_no_cors_headers_unless_configured(client: TestClient) -> None:
    response = client.get("/v1/info", headers={"Origin": KIOSK})
    assert response.status_code == 200
    assert not any(h.lower().startswith("access-control-") for h in response.headers)
    preflight = client.options("/v1/identify", headers={"Origin": KIOSK, **PREFLIGHT})
    assert "access-control-allow-origin" not in preflight.headers


def test_configured_origins_only(built_index: Path) -> None:
    app = create_app(built_index, token=TOKEN, cors_origins=[KIOSK])
    with TestClient(app) as client:
        allowed = client.get("/v1/info", headers={"Origin": KIOSK})
        assert allowed.headers["access-control-allow-origin"] == KIOSK
        other = client.get("/v1/info", headers={"Origin": "https://elsewhere.example"})
        assert other.status_code == 200
        assert "access-control-allow-origin" not in other.headers

        preflight = client.options("/v1/identify", headers={"Origin": KIOSK, **PREFLIGHT})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == KIOSK
        assert "POST" in preflight.headers["access-control-allow-methods"]
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        refused = client.options(
            "/v1/identify", headers={"Origin": "https://elsewhere.example", **PREFLIGHT}
        )
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers
