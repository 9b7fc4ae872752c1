"""The browser set-up itself: Debian's Chromium, driven by Playwright, reads a real magpie server."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tests.support import ServerProcess


def test_chromium_reads_a_real_server(page: Any, tmp_path: Path) -> None:
    with ServerProcess(data_dir=tmp_path / "data", env={"MAGPIE_WORKERS": "0"}) as server:
        response = page.goto(server.url + "/healthz")
        assert response is not None and response.status == 200
        body = json.loads(page.inner_text("body"))
        assert body.get("status") == "ok", body


def test_screenshots_go_to_an_ignored_build_directory_unless_asked_for_docs() -> None:
    import subprocess

    from tests.chromium import ROOT, SCREENSHOTS

    if os.environ.get("MAGPIE_SCREENSHOTS"):  # `make screenshots`
        assert SCREENSHOTS == ROOT / "docs" / "img"
        return
    assert SCREENSHOTS == ROOT / "build" / "screenshots"
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(SCREENSHOTS / "any.png")], cwd=ROOT, capture_output=True, check=False
    )
    assert ignored.returncode == 0, "build/ must be in .gitignore"
