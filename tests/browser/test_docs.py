"""The API reference at /docs renders the OpenAPI 3.1 documents in Chromium, offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.chromium import screenshot
from tests.support import ServerProcess


@pytest.mark.browser
def test_docs_page_shows_the_public_and_admin_operations(page: Any, tmp_path: Path) -> None:
    outside: list[str] = []
    with ServerProcess(data_dir=tmp_path / "data", env={"MAGPIE_WORKERS": "0"}) as server:
        page.on("request", lambda r: None if r.url.startswith(server.url) else outside.append(r.url))
        page.goto(server.url + "/docs")
        page.wait_for_selector(".opblock-summary-path", timeout=20_000)
        text = page.inner_text("body")
        assert "Unable to render this definition" not in text
        shown = {el.inner_text().strip() for el in page.query_selector_all(".opblock-summary-path")}
        for path in ("/v1/properties", "/v1/push-subscriptions", "/v1/push-message/trigger/send", "/api/v2/events"):
            assert path in shown, shown
        assert "OAS 3.1" in text
        screenshot(page, "docs-public")

        page.click("text=Admin API")
        page.wait_for_url(server.url + "/docs/admin")
        page.wait_for_selector(".opblock-summary-path", timeout=20_000)
        admin = {el.inner_text().strip() for el in page.query_selector_all(".opblock-summary-path")}
        assert "/admin/v1/environments/{env}/campaigns" in admin, admin
        assert "/admin/v1/environments/{env}/users/{user_id}" in admin, admin
        assert "Create or update a campaign by its key (declarative apply)" in page.inner_text("body")
        screenshot(page, "docs-admin")
    assert outside == [], "the docs page must load nothing from outside the server"
