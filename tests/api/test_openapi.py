"""The OpenAPI document covers every public route, and the docs page is served locally."""

from __future__ import annotations

from tests.support import AppClient, Env


def test_openapi_describes_every_data_route(client: AppClient, env: Env) -> None:
    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    described = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    routes = set(client.app.routes)
    assert routes <= described, routes - described
    for method, path in (
        ("GET", "/v1/push-message/dispatches/{dispatchId}"),
        ("GET", "/v1/push-message/campaigns/{campaignKey}/stats"),
    ):
        assert (method, path) in described
    assert len(client.app.param_routes) <= len([p for p in doc["paths"] if "{" in p])
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert "summary" in op, (method, path)
            assert "401" in op["responses"] or op.get("security") == [], (method, path)


def test_openapi_error_schema_matches_error_bodies(client: AppClient, env: Env) -> None:
    doc = client.get("/openapi.json").json()
    assert doc["components"]["schemas"]["Error"]["required"] == ["code", "message"]
    text = str(doc)
    for code in (
        "API_KEY_NOT_FOUND",
        "INVALID_API_KEY",
        "EMPTY_IDENTIFIER",
        "INVALID_REQUEST",
        "PAYLOAD_TOO_LARGE",
    ):
        assert code in text


def test_docs_page_and_assets_are_served_without_cdn(client: AppClient, env: Env) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert "https://" not in page.text
    assert client.get("/docs/static/swagger-ui-bundle.js").status_code == 200
    assert client.get("/docs/static/swagger-ui.css").status_code == 200


def test_health_ready_and_metrics(client: AppClient, env: Env) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    client.post("/v1/properties", json={"userId": "u", "operations": {}}, headers=env.headers)
    metrics = client.get("/metrics").text
    assert "magpie_http_requests_total" in metrics
    assert "magpie_writer_batch_size" in metrics
    assert env.key not in metrics
