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


def test_admin_openapi_describes_every_admin_route(client: AppClient, env: Env) -> None:
    from starlette.routing import Route

    from magpie.api.admin.fallback import build_fallback

    assert client.app.ctx is not None
    served = build_fallback(client.app.ctx).routes
    doc = client.get("/admin/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    described = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    admin = {
        (method, route.path)
        for route in served
        if isinstance(route, Route) and route.path.startswith("/admin/v1")
        for method in (route.methods or set()) - {"HEAD"}
    }
    assert admin and admin == described, admin ^ described
    for path, ops in doc["paths"].items():
        for op in ops.values():
            assert op["summary"] and op["security"] == [{"AdminToken": []}], path
            names = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert names == {part[1:-1] for part in path.split("/") if part.startswith("{")}, path


def test_vendored_swagger_ui_matches_its_listed_hashes() -> None:
    import hashlib
    import re

    from magpie.api.openapi.document import STATIC

    listed = dict(re.findall(r"\| `([\w.-]+)` \| `([0-9a-f]{64})` \|", (STATIC / "VENDORED.md").read_text()))
    assert set(listed) == {"swagger-ui-bundle.js", "swagger-ui.css", "LICENSE", "NOTICE"}
    for name, digest in listed.items():
        assert hashlib.sha256((STATIC / name).read_bytes()).hexdigest() == digest, name
    # Swagger UI reads OpenAPI 3.1 from version 5 on; 4.x shows "Unable to render this definition".
    assert re.search(r"\| version \| 5\.\d+\.\d+", (STATIC / "VENDORED.md").read_text())
