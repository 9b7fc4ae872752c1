"""The browser set-up itself: Debian's Chromium, driven by Playwright, reads a real magpie server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support import ServerProcess


def test_chromium_reads_a_real_server(page: Any, tmp_path: Path) -> None:
    with ServerProcess(data_dir=tmp_path / "data", env={"MAGPIE_WORKERS": "0"}) as server:
        response = page.goto(server.url + "/healthz")
        assert response is not None and response.status == 200
        body = json.loads(page.inner_text("body"))
        assert body.get("status") == "ok", body
