"""The HTTP findings over the real ASGI app: body limits, the auth throttle, names, date ranges,
archived campaigns, caching, the sign-in nonce and the content security policy."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from magpie.config import Settings
from magpie.store import accounts
from tests.security.dashboard import login_form, page_token, send, sign_in
from tests.support import AppClient, Env, apply_campaign, magpie_cli, make_env

BODY = {"userId": "u", "operations": {"$set": {"a": 1}}}


def _error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.text[:200]
    assert response.json()["code"] == code, response.text


def _from(client: AppClient, address: str, method: str, url: str, **kw: Any) -> httpx.Response:
    """A request from another client address (as the server would see the peer)."""

    async def one() -> httpx.Response:
        transport = httpx.ASGITransport(app=client.app, client=(address, 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://magpie.test") as http:
            return await http.request(method, url, **kw)

    return client.run(one())


# -- D1: one body limit, read at the edge ------------------------------------------------------------


@pytest.fixture
def small(settings: Settings) -> Iterator[AppClient]:
    """The app with a 4 KiB body limit."""
    with AppClient(settings.with_(max_body_bytes=4096)) as c:
        yield c


@pytest.mark.parametrize(
    ("method", "path"),
    [
        pytest.param("POST", "/v1/properties", id="public"),
        pytest.param("POST", "/admin/v1/environments", id="admin"),
        pytest.param("PUT", "/admin/v1/environments/x/cohorts/c", id="admin-cohort"),
        pytest.param("POST", "/dashboard/login", id="dashboard-login"),
        pytest.param("POST", "/v1/gateways/nhn/reports/x", id="webhook"),
        pytest.param("GET", "/docs", id="docs"),
        pytest.param("GET", "/healthz", id="health"),
    ],
)
def test_body_over_the_limit_is_413_json_on_every_route(small: AppClient, method: str, path: str) -> None:
    _error(small.request(method, path, content=b"x" * 5000), 413, "PAYLOAD_TOO_LARGE")


def test_dashboard_form_limit_is_enforced_while_reading(client: AppClient) -> None:
    # Under MAGPIE_MAX_BODY_BYTES (1 MiB), over the dashboard's 64 KiB: refused at the edge, in JSON.
    _error(client.post("/dashboard/login", content=b"csrf=" + b"x" * 70_000), 413, "PAYLOAD_TOO_LARGE")


# -- D3: failed authentication throttled per address and prefix, never the valid credential ---------


def test_valid_key_is_served_whatever_others_failed_from_its_address(client: AppClient, env: Env) -> None:
    bad = {"X-HACKLE-API-KEY": "mgp_guessing-a-key"}
    statuses = [client.post("/v1/properties", json=BODY, headers=bad).status_code for _ in range(30)]
    assert statuses[-1] == 429
    served = [client.post("/v1/properties", json=BODY, headers=env.headers).status_code for _ in range(10)]
    assert served == [200] * 10


def test_valid_admin_token_is_served_whatever_others_failed(client: AppClient, env: Env) -> None:
    wrong = {"Authorization": "Bearer mga_wrong-token"}
    statuses = [client.get("/admin/v1/environments", headers=wrong).status_code for _ in range(30)]
    assert statuses[:20] == [401] * 20 and statuses[-1] == 429
    assert client.get("/admin/v1/environments", headers=env.admin).status_code == 200


def test_failures_with_one_credential_prefix_are_throttled_across_addresses(client: AppClient, env: Env) -> None:
    statuses = [
        _from(
            client,
            f"10.0.{i // 250}.{i % 250}",
            "POST",
            "/v1/properties",
            json=BODY,
            headers={"X-HACKLE-API-KEY": f"mgp_samepref-guess-{i}"},
        ).status_code
        for i in range(30)
    ]
    assert statuses[:20] == [401] * 20 and statuses[-1] == 429, statuses
    # Another address with another prefix is not affected, nor is the valid key.
    other = _from(client, "10.9.9.9", "POST", "/v1/properties", json=BODY, headers={"X-HACKLE-API-KEY": "mgp_other"})
    assert other.status_code == 401
    assert client.post("/v1/properties", json=BODY, headers=env.headers).status_code == 200


def test_dashboard_sign_in_is_throttled_but_never_for_the_valid_token(client: AppClient, env: Env) -> None:
    csrf, cookies = login_form(client)
    statuses = [
        send(
            client, "POST", "/dashboard/login", data={"csrf": csrf, "token": f"mga_wrong{i}"}, cookies=cookies
        ).status_code
        for i in range(30)
    ]
    assert statuses[:20] == [401] * 20 and statuses[-1] == 429, statuses
    refused = send(client, "POST", "/dashboard/login", data={"csrf": csrf, "token": "mga_wrong"}, cookies=cookies)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    valid = send(client, "POST", "/dashboard/login", data={"csrf": csrf, "token": env.admin_token}, cookies=cookies)
    assert valid.status_code == 303


def test_forwarded_for_is_ignored_unless_the_proxy_is_trusted() -> None:
    from magpie.api.http.protocol import server_options

    assert server_options(Settings())["proxy_headers"] is False
    trusted = server_options(Settings(trusted_proxies="10.0.0.0/8, 192.168.1.7"))
    assert trusted["proxy_headers"] is True
    assert trusted["forwarded_allow_ips"] == ["10.0.0.0/8", "192.168.1.7/32"]
    with pytest.raises(ValueError, match="MAGPIE_TRUSTED_PROXIES"):
        Settings(trusted_proxies="10.0.0.0/33").trusted_proxy_networks  # noqa: B018


# -- D10: names matched whole ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["nl\n", "ok\n", "a\nb", " ok", "Ok"])
def test_environment_names_are_matched_whole(client: AppClient, env: Env, name: str) -> None:
    response = client.post("/admin/v1/environments", json={"name": name}, headers=env.admin)
    _error(response, 400, "INVALID_REQUEST")
    assert name not in [e.name for e in accounts.list_environments(client.app.db)]


def test_night_hours_are_matched_whole(client: AppClient, env: Env) -> None:
    url = f"/admin/v1/environments/{env.name}"
    response = client.put(url, json={"settings": {"nightStart": "21:00\n"}}, headers=env.admin)
    _error(response, 400, "INVALID_REQUEST")


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/campaigns/²", id="campaign"),
        pytest.param("/campaigns/²/figures.csv", id="figures-csv"),
        pytest.param("/compare?a=²&b=1", id="compare"),
    ],
)
def test_dashboard_campaign_key_of_other_digits_is_400(client: AppClient, env: Env, path: str) -> None:
    cookies = sign_in(client, env)
    response = send(client, "GET", f"/dashboard/{env.name}{path}", cookies=cookies)
    assert response.status_code == 400 and "INVALID_REQUEST" in response.text


# -- D12: date ranges --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("from=0001-01-01&to=0001-12-31", id="year-1"),
        pytest.param("from=9999-01-01&to=9999-12-31", id="year-9999"),
        pytest.param("from=1969-12-31&to=1970-01-05", id="before-1970"),
        pytest.param("from=2026-02-01&to=2026-01-01", id="backwards"),
    ],
)
def test_dashboard_campaign_date_range_out_of_bounds_is_400(client: AppClient, env: Env, query: str) -> None:
    apply_campaign(client, env, key=7)
    cookies = sign_in(client, env)
    response = send(client, "GET", f"/dashboard/{env.name}/campaigns/7?{query}", cookies=cookies)
    assert response.status_code == 400 and "INVALID_REQUEST" in response.text, response.text[:300]


@pytest.mark.parametrize(
    ("query", "status"),
    [
        pytest.param("from=0001-01-01&to=0001-12-31", 400, id="year-1"),
        pytest.param("from=9999-01-01&to=9999-12-31T23:59:59", 200, id="year-9999"),
        pytest.param("from=2026-02-01&to=2026-01-01", 400, id="backwards"),
        pytest.param("from=99999-01-01", 400, id="year-99999"),
        pytest.param("from=-99999999999999999", 400, id="ms-out-of-range"),
    ],
)
def test_statistics_date_ranges_are_checked_on_both_apis(client: AppClient, env: Env, query: str, status: int) -> None:
    apply_campaign(client, env, key=7)
    admin = client.get(f"/admin/v1/environments/{env.name}/campaigns/7/stats?{query}", headers=env.admin)
    public = client.get(f"/v1/push-message/campaigns/7/stats?{query}", headers=env.headers)
    assert (admin.status_code, public.status_code) == (status, status), (admin.text, public.text)


# -- ARCHIVED is final ------------------------------------------------------------------------------


def _archived(client: AppClient, env: Env) -> None:
    apply_campaign(client, env, key=7)
    url = f"/admin/v1/environments/{env.name}/campaigns/7/archive"
    assert client.post(url, headers=env.admin).status_code == 200


def test_archived_campaign_cannot_be_reactivated_from_the_dashboard(client: AppClient, env: Env) -> None:
    _archived(client, env)
    cookies = sign_in(client, env)
    url = f"/dashboard/{env.name}/campaigns/7/status"
    confirm = send(client, "GET", url + "?to=ACTIVE", cookies=cookies)
    assert confirm.status_code == 409 and "ARCHIVED" in confirm.text
    token = page_token(client, f"/dashboard/{env.name}/keys", cookies)
    response = send(client, "POST", url, data={"csrf": token, "to": "ACTIVE"}, cookies=cookies)
    assert response.status_code == 409 and "ARCHIVED" in response.text
    stored = client.get(f"/admin/v1/environments/{env.name}/campaigns/7", headers=env.admin).json()
    assert stored["status"] == "ARCHIVED"


def test_archived_campaign_cannot_be_reactivated_through_the_admin_api(client: AppClient, env: Env) -> None:
    _archived(client, env)
    body = {
        "key": 7,
        "name": "Test campaign",
        "status": "ACTIVE",
        "purpose": "INFORMATION",
        "provider": "sandbox",
        "message": {"title": "t", "body": "b"},
    }
    response = client.put(f"/admin/v1/environments/{env.name}/campaigns/7", json=body, headers=env.admin)
    _error(response, 409, "CONFLICT")
    assert "ARCHIVED" in response.json()["message"]
    # Applying it again as ARCHIVED is allowed (a file applied twice).
    again = client.put(
        f"/admin/v1/environments/{env.name}/campaigns/7", json={**body, "status": "ARCHIVED"}, headers=env.admin
    )
    assert again.status_code == 200


def test_archived_campaign_cannot_be_reactivated_from_the_cli(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", bootstrap=False, workers=0, writer="thread", freeze_gc=False)
    with AppClient(settings) as client:
        env = make_env(client.app.db)
        _archived(client, env)
    campaign = tmp_path / "c.json"
    body = {
        "key": 7,
        "name": "c",
        "status": "ACTIVE",
        "purpose": "INFORMATION",
        "provider": "sandbox",
        "message": {"title": "t", "body": "b"},
    }
    campaign.write_text(json.dumps(body))
    done = magpie_cli("campaign", "apply", "-f", str(campaign), "--env", env.name, data_dir=tmp_path / "data")
    assert done.returncode != 0 and "ARCHIVED" in done.stderr + done.stdout


# -- caching, the sign-in nonce, the content security policy --------------------------------------------


def test_json_answers_are_not_stored_by_caches(client: AppClient, env: Env) -> None:
    answers = [
        client.post("/v1/properties", json=BODY, headers=env.headers),
        client.post("/v1/properties", json=BODY, headers={"X-HACKLE-API-KEY": "mgp_nope"}),
        client.get(f"/admin/v1/environments/{env.name}/keys", headers=env.admin),
        client.get("/admin/v1/environments", headers={"Authorization": "Bearer nope"}),
        client.get("/admin/v1/no-such-route"),
        client.get("/healthz"),
    ]
    for answer in answers:
        assert answer.headers.get("cache-control") == "no-store", (answer.request.url, answer.headers)


def test_sign_in_nonce_does_not_come_from_the_clock(client: AppClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time_ns", lambda: 1_700_000_000_000_000_000)
    first, _ = login_form(client)
    second, _ = login_form(client)
    assert first != second and len(first) >= 24


def test_dashboard_images_load_over_https_only(client: AppClient) -> None:
    policy = client.get("/dashboard/login").headers["content-security-policy"]
    img = next(part.split()[1:] for part in policy.split(";") if part.strip().startswith("img-src"))
    assert sorted(img) == sorted(["'self'", "data:", "https:"])
