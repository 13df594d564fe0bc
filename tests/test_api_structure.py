"""The HTTP app's structure: every route but the open ones (probes, viewer page and static
files) checks the key as a router-level dependency; each keyed router documents its errors
as ErrorOut; routes get the app state and the model as dependencies; ``create_app`` takes
the gateway settings instead of reading the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.routing import Mount

from serving.api.auth import checks_key, flat_routes, is_open, routed_to_key_check
from serving.api.main import create_app
from serving.gateway.settings import GatewaySettings
from serving.settings import Settings

KEY = "k-structure-8d2e4f6a1c3b5907"
PROBES = {"/healthz", "/readyz"}


@pytest.fixture()
def app(tmp_path: Path) -> FastAPI:
    """An app with a key, never started (no lifespan: no model)."""
    return create_app(Settings(api_keys=[KEY], results_dir=tmp_path / "results"))


def routes_of(app: FastAPI) -> list[tuple[str, frozenset[str], Any]]:
    """``(path, methods, route)`` of every route of ``app`` but the mounts."""
    return [(route.path, frozenset(route.methods or ()), route) for route in flat_routes(app.routes)
            if not isinstance(getattr(route, "original_route", route), Mount)]


def unkeyed(app: FastAPI) -> list[str]:
    """The routes that are not open by design and lack the key dependency."""
    return [f"{sorted(methods)} {path}" for path, methods, route in routes_of(app)
            if not is_open(path) and not checks_key(route)]


def test_every_non_open_route_checks_the_key(app: FastAPI) -> None:
    found = {(path, method) for path, methods, _ in routes_of(app) for method in methods}
    for expected in (("/v1/detect", "POST"), ("/v1/render", "POST"), ("/v1/models", "GET"),
                     ("/metrics", "GET"), ("/dicomweb/studies", "POST"),
                     ("/dicomweb/studies/{study}", "GET"), ("/v1/jobs", "GET"),
                     ("/v1/jobs/{job_id}/resend", "POST"), ("/openapi.json", "GET"),
                     ("/docs", "GET"), ("/healthz", "GET"), ("/readyz", "GET")):
        assert expected in found, expected
    assert unkeyed(app) == []
    keyed = {path for path, _, route in routes_of(app) if checks_key(route)}
    assert "/v1/detect" in keyed
    # the open routes stay open: the probes and the viewer page carry no key check
    assert {path for path, _, route in routes_of(app) if not checks_key(route)} == {*PROBES, "/"}


def test_a_route_without_the_key_dependency_is_found(app: FastAPI) -> None:
    @app.get("/v1/leak")
    async def leak() -> dict[str, str]:
        return {}

    assert unkeyed(app) == ["['GET'] /v1/leak"]


def _scope(app: FastAPI, method: str, path: str) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "root_path": "", "app": app,
            "query_string": b"", "headers": []}


def test_routing_hands_keyed_routes_their_own_check(app: FastAPI) -> None:
    """What a key-checking route serves is left to its dependency; the rest (unknown path,
    wrong method, slash redirect, probes) is not."""
    assert routed_to_key_check(_scope(app, "POST", "/v1/detect"))
    assert routed_to_key_check(_scope(app, "GET", "/dicomweb/studies/1.2.3/metadata"))
    assert routed_to_key_check(_scope(app, "GET", "/openapi.json"))
    for method, path in (("GET", "/v1/detect"), ("GET", "/v1/models/"), ("GET", "/v2/detect"),
                         ("GET", "/healthz"), ("GET", "/")):
        assert not routed_to_key_check(_scope(app, method, path)), (method, path)


def test_keyed_routes_answer_401_from_their_dependency(app: FastAPI) -> None:
    """The route's dependency refuses (the metric names the route), the probes answer, and
    with the key a route gets the state and the model: 503 ``not_ready`` without a model."""
    client = TestClient(app, base_url="http://localhost")  # no lifespan: no model load
    r = client.get("/v1/models")
    assert (r.status_code, r.json()["detail"]) == (401, "missing_credentials")
    assert r.headers["www-authenticate"] == "Bearer"
    assert client.get("/v2/models").status_code == 401  # refused before routing
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").json()["status"] == "loading"
    auth = {"Authorization": f"Bearer {KEY}"}
    r = client.get("/v1/models", headers=auth)
    assert (r.status_code, r.json()["detail"]) == (503, "not_ready")
    metrics = client.get("/metrics", headers=auth).text
    assert 'endpoint="/v1/models",method="GET",status="401"' in metrics


def test_keyed_operations_document_their_errors(app: FastAPI) -> None:
    """Every keyed operation documents 401 as ErrorOut (from its router); the probes do not."""
    paths = app.openapi()["paths"]
    error_out = {"$ref": "#/components/schemas/ErrorOut"}
    for path, operations in paths.items():
        for method, operation in operations.items():
            responses = operation["responses"]
            if path in PROBES:
                assert "401" not in responses, (method, path)
                continue
            schema = responses["401"]["content"]["application/json"]["schema"]
            assert schema == error_out, (method, path)
    detect = paths["/v1/detect"]["post"]["responses"]
    assert {"200", "400", "401", "403", "413", "415", "422", "503"} <= set(detect)


def test_create_app_takes_the_gateway_settings_given(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Gateway settings given: the environment is not read (here it would enable one)."""
    monkeypatch.setenv("GALACTO_GATEWAY_ENABLED", "true")
    monkeypatch.setenv("GALACTO_GATEWAY_SPOOL_DIR", str(tmp_path / "spool"))
    settings = Settings(api_keys=[KEY], results_dir=tmp_path / "results",
                        model=tmp_path / "no-model")  # fails to load at once: no work
    app = create_app(settings, gateway_settings=GatewaySettings(enabled=False))
    with TestClient(app, base_url="http://localhost") as client:
        assert app.state.gateway is None
        r = client.get("/v1/jobs", headers={"Authorization": f"Bearer {KEY}"})
        assert (r.status_code, r.json()["detail"]) == (404, "gateway_disabled")
