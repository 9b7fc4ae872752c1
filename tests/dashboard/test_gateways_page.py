"""The Gateways page over the real ASGI app on both engines, after real sends through the fakes."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest

from magpie.domain import reasons
from tests.dashboard.test_session import _send, _sign_in
from tests.store.test_gateways import DAY, LIMIT, TODAY, traffic  # noqa: F401 (the fixture)
from tests.support import AppClient, Env


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_gateways_page_shows_each_channel_paid_use_and_sends_by_type(
    client: AppClient,
    env: Env,
    traffic: dict[str, Any],  # noqa: F811
) -> None:
    cookies = _sign_in(client, env)
    response = _send(client, "GET", f"/dashboard/{env.name}/gateways?from={TODAY}&to={DAY}", cookies=cookies)
    assert response.status_code == 200, response.text[:2000]
    page = _text(response.text)
    assert "Configured nhn sender 02-1234-5678" in page
    # Each code with its explanation beside it (a gateway's own report code is said to be one).
    assert f"GATEWAY_UNCONFIRMED 2 {reasons.describe('GATEWAY_UNCONFIRMED')}" in page
    assert f"3040 1 {reasons.PROVIDER_CODE}" in html.unescape(page)
    assert "delivered 2 · undelivered 1" in page
    assert f"of {LIMIT} allowed on" in page
    assert re.search(rf"{DAY} 3 {LIMIT}", page), page  # SMS 3, paid 5 on the dispatchers' day
    assert 'href="/dashboard/' + env.name + '/gateways"' in response.text  # in the navigation
    for secret in traffic["secrets"]:
        assert secret not in response.text


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("?from=0001-01-01&to=0001-12-31", id="year-one"),
        pytest.param("?from=9999-12-31&to=9999-12-31", id="year-9999"),
        pytest.param("?from=2026-02-30&to=2026-03-01", id="no-such-day"),
        pytest.param("?from=2026-02-01&to=2026-01-01", id="reversed"),
        pytest.param("?to=2026-01-01", id="to-alone"),
    ],
)
def test_gateways_page_bad_dates_are_a_400_page(client: AppClient, env: Env, query: str) -> None:
    cookies = _sign_in(client, env)
    response = _send(client, "GET", f"/dashboard/{env.name}/gateways{query}", cookies=cookies)
    assert response.status_code == 400, response.text[:500]
    assert "INVALID_REQUEST" in response.text
