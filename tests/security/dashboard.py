"""Signing a dashboard session in over the real ASGI app, and sending its forms."""

from __future__ import annotations

import re

import httpx

from magpie.dashboard.session import SESSION_COOKIE
from tests.support import AppClient, Env


def send(
    client: AppClient, method: str, url: str, *, cookies: dict[str, str] | None = None, **kw: object
) -> httpx.Response:
    """One request with exactly these cookies (the client's own jar is emptied first)."""
    assert client.http is not None
    client.http.cookies.clear()
    if cookies:
        kw["headers"] = {**kw.get("headers", {}), "cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}  # type: ignore[dict-item]
    return client.request(method, url, **kw)


def login_form(client: AppClient) -> tuple[str, dict[str, str]]:
    response = send(client, "GET", "/dashboard/login")
    assert response.status_code == 200
    return form_token(response.text), dict(response.cookies)


def form_token(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None, html[:500]
    return found.group(1)


def sign_in(client: AppClient, env: Env) -> dict[str, str]:
    csrf, cookies = login_form(client)
    response = send(client, "POST", "/dashboard/login", data={"csrf": csrf, "token": env.admin_token}, cookies=cookies)
    assert response.status_code == 303, response.text
    return {SESSION_COOKIE: response.cookies[SESSION_COOKIE]}


def page_token(client: AppClient, url: str, cookies: dict[str, str]) -> str:
    page = send(client, "GET", url, cookies=cookies)
    assert page.status_code == 200, page.text
    return form_token(page.text)
