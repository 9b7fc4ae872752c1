"""A real ``magpie serve`` as the browser tests drive it: Hackle's API with the first start's key,
the admin API with its token, waiting for the in-process worker, and signing a page in."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.support import ServerProcess


class Magpie:
    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.url = server.url
        self.key, self.token = server.credentials()
        self.http = httpx.Client(base_url=server.url, timeout=10)

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"X-HACKLE-API-KEY": key or self.key, "Content-Type": "application/json"}

    def post(self, path: str, body: Any, *, key: str | None = None) -> httpx.Response:
        if isinstance(body, str):
            return self.http.post(path, content=body.encode(), headers=self.headers(key))
        return self.http.post(path, json=body, headers=self.headers(key))

    def ok(self, path: str, body: Any) -> dict[str, Any]:
        """POST with the environment's key; the request must succeed."""
        response = self.post(path, body)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def admin(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        """The admin API of the ``development`` environment; the request must succeed."""
        response = self.http.request(
            method,
            "/admin/v1/environments/development" + path,
            json=body,
            headers={"Authorization": f"Bearer {self.token}"},
        )
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def settle(self, dispatch_id: str, channel: str = "push") -> dict[str, Any]:
        """Wait for the in-process worker to finish a dispatch."""
        deadline = time.monotonic() + 20
        while True:
            view: dict[str, Any] = self.http.get(
                f"/v1/{channel}-message/dispatches/{dispatch_id}", headers=self.headers()
            ).json()
            if view["status"] == "COMPLETED" or time.monotonic() > deadline:
                return view
            time.sleep(0.1)

    def sign_in(self, page: Any, path: str = "/dashboard/") -> None:
        page.goto(self.url + path)
        page.get_by_label("Admin token").fill(self.token)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_load_state()


@contextmanager
def served(data_dir: Path, *, env: dict[str, str] | None = None) -> Iterator[Magpie]:
    """A first start of ``magpie serve`` on ``data_dir`` (demo environment, key and token), stopped after.

    ``env``: extra environment variables for the server (``MAGPIE_...`` settings).
    """
    with ServerProcess(data_dir=data_dir, env=env) as server:
        instance = Magpie(server)
        try:
            yield instance
        finally:
            instance.http.close()
