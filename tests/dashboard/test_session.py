"""Dashboard sessions and forms over the real ASGI app: cookies, expiry, revocation, CSRF."""

from __future__ import annotations

import re

import httpx
import pytest

from magpie.dashboard.session import SESSION_COOKIE, Signer
from magpie.store import accounts
from tests.security.dashboard import form_token
from tests.security.dashboard import login_form as _login_form
from tests.security.dashboard import send as _send
from tests.support import AppClient, Env


def _sign_in(client: AppClient, env: Env) -> dict[str, str]:
    csrf, cookies = _login_form(client)
    response = _send(
        client,
        "POST",
        "/dashboard/login",
        data={"csrf": csrf, "token": env.admin_token, "next": f"/dashboard/{env.name}/"},
        cookies=cookies,
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == f"/dashboard/{env.name}/"
    set_cookie = response.headers["set-cookie"]
    assert "httponly" in set_cookie.lower() and "samesite=strict" in set_cookie.lower()
    assert "secure" not in set_cookie.lower()  # plain http on loopback; https adds Secure
    return {SESSION_COOKIE: response.cookies[SESSION_COOKIE]}


def _page_csrf(client: AppClient, url: str, cookies: dict[str, str]) -> str:
    page = _send(client, "GET", url, cookies=cookies)
    assert page.status_code == 200, page.text
    return form_token(page.text)


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/dashboard/", id="home"),
        pytest.param("/dashboard/{env}/", id="overview"),
        pytest.param("/dashboard/{env}/campaigns", id="campaigns"),
        pytest.param("/dashboard/{env}/users?q=u1", id="users"),
        pytest.param("/dashboard/{env}/inbox", id="inbox"),
        pytest.param("/dashboard/{env}/keys", id="keys"),
    ],
)
def test_session_missing_redirects_to_sign_in(client: AppClient, env: Env, path: str) -> None:
    response = _send(client, "GET", path.format(env=env.name), follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/dashboard/login?next=")


def test_session_page_is_served_after_sign_in_in_the_environments_zone(client: AppClient, env: Env) -> None:
    cookies = _sign_in(client, env)
    response = _send(client, "GET", f"/dashboard/{env.name}/", cookies=cookies)
    assert response.status_code == 200
    assert "Times in Asia/Seoul." in response.text
    assert "default-src 'self'" in response.headers["content-security-policy"]


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda v: v[:-2] + ("AA" if not v.endswith("AA") else "BB"), id="bad-signature"),
        pytest.param(lambda v: "x" + v, id="bad-payload"),
        pytest.param(lambda v: "", id="empty"),
    ],
)
def test_session_tampered_cookie_is_no_session(client: AppClient, env: Env, mangle: object) -> None:
    cookies = _sign_in(client, env)
    forged = {SESSION_COOKIE: mangle(cookies[SESSION_COOKIE])}  # type: ignore[operator]
    response = _send(client, "GET", f"/dashboard/{env.name}/", cookies=forged, follow_redirects=False)
    assert response.status_code == 303


def test_session_expired_cookie_is_no_session(client: AppClient, env: Env) -> None:
    signer = Signer(client.app.ctx.cipher.key)  # type: ignore[union-attr]
    from magpie.store.crypto import hash_secret

    old = signer.dumps({"t": hash_secret(env.admin_token), "a": "x", "c": "y"}, ttl=60, now=1_000_000)
    response = _send(client, "GET", f"/dashboard/{env.name}/", cookies={SESSION_COOKIE: old}, follow_redirects=False)
    assert response.status_code == 303


def test_session_ends_when_its_admin_token_is_revoked(client: AppClient, env: Env) -> None:
    cookies = _sign_in(client, env)
    with client.app.db.transaction() as conn:
        client.app.db.execute(conn, "UPDATE admin_tokens SET revoked_at = 1 WHERE revoked_at IS NULL")
    response = _send(client, "GET", f"/dashboard/{env.name}/", cookies=cookies, follow_redirects=False)
    assert response.status_code == 303


def test_session_sign_in_with_a_wrong_token_is_refused(client: AppClient, env: Env) -> None:
    csrf, cookies = _login_form(client)
    response = _send(client, "POST", "/dashboard/login", data={"csrf": csrf, "token": "mga_wrong"}, cookies=cookies)
    assert response.status_code == 401
    assert SESSION_COOKIE not in response.cookies


def test_session_sign_in_without_the_forms_token_is_refused(client: AppClient, env: Env) -> None:
    response = _send(client, "POST", "/dashboard/login", data={"csrf": "made-up", "token": env.admin_token})
    assert response.status_code == 403
    assert SESSION_COOKIE not in response.cookies


def test_session_sign_in_never_redirects_off_the_dashboard(client: AppClient, env: Env) -> None:
    csrf, cookies = _login_form(client)
    response = _send(
        client,
        "POST",
        "/dashboard/login",
        data={"csrf": csrf, "token": env.admin_token, "next": "https://evil.example/"},
        cookies=cookies,
        follow_redirects=False,
    )
    assert response.headers["location"] == "/dashboard/"


@pytest.mark.parametrize(
    ("path", "form"),
    [
        pytest.param("/campaigns/1/status", {"to": "PAUSED"}, id="pause"),
        pytest.param("/keys", {"name": "forged"}, id="create-key"),
        pytest.param("/keys/{prefix}/revoke", {}, id="revoke-key"),
    ],
)
def test_session_post_without_csrf_is_403_and_changes_nothing(
    client: AppClient, env: Env, path: str, form: dict[str, str]
) -> None:
    cookies = _sign_in(client, env)
    prefix = env.key[:12]
    for attempt in (form, {**form, "csrf": "guessed"}):
        response = _send(
            client, "POST", f"/dashboard/{env.name}" + path.format(prefix=prefix), data=attempt, cookies=cookies
        )
        assert response.status_code == 403, response.text
    keys = accounts.list_api_keys(client.app.db, environment=env.name)
    assert [(k.name, k.revoked_at) for k in keys] == [("", None)]


def test_session_keys_create_shows_the_key_once_and_revoke_rejects_it(client: AppClient, env: Env) -> None:
    cookies = _sign_in(client, env)
    csrf = _page_csrf(client, f"/dashboard/{env.name}/keys", cookies)
    posted = _send(client, "POST", f"/dashboard/{env.name}/keys", data={"csrf": csrf, "name": "ci"}, cookies=cookies)
    assert posted.status_code == 303  # POST, then the keys page shows the new key once
    created = _send(client, "GET", posted.headers["location"], cookies=cookies)
    key = re.search(r'value="(mgp_[^"]+)"', created.text)
    assert key is not None
    listing = _send(client, "GET", f"/dashboard/{env.name}/keys", cookies=cookies)
    assert key.group(1) not in listing.text and key.group(1)[:12] in listing.text
    body = {"userId": "u1", "operations": {"$set": {"a": 1}}}
    headers = {"X-HACKLE-API-KEY": key.group(1)}
    assert _send(client, "POST", "/v1/properties", json=body, headers=headers).status_code == 200
    revoked = _send(
        client, "POST", f"/dashboard/{env.name}/keys/{key.group(1)[:12]}/revoke", data={"csrf": csrf}, cookies=cookies
    )
    assert (revoked.status_code, revoked.headers["location"]) == (303, f"/dashboard/{env.name}/keys")
    rejected = _send(client, "POST", "/v1/properties", json=body, headers=headers)
    assert (rejected.status_code, rejected.json()["code"]) == (401, "INVALID_API_KEY")


def test_session_keys_of_another_environment_cannot_be_revoked_here(client: AppClient, env: Env) -> None:
    from tests.support import make_env

    other = make_env(client.app.db)
    cookies = _sign_in(client, env)
    csrf = _page_csrf(client, f"/dashboard/{env.name}/keys", cookies)
    response = _send(
        client, "POST", f"/dashboard/{env.name}/keys/{other.key[:12]}/revoke", data={"csrf": csrf}, cookies=cookies
    )
    assert response.status_code == 404
    assert accounts.list_api_keys(client.app.db, environment=other.name)[0].revoked_at is None


def test_session_unknown_campaign_and_environment_pages_are_404(client: AppClient, env: Env) -> None:
    cookies = _sign_in(client, env)
    assert _send(client, "GET", f"/dashboard/{env.name}/campaigns/999", cookies=cookies).status_code == 404
    assert _send(client, "GET", "/dashboard/no-such-env/", cookies=cookies).status_code == 404
    bad = _send(client, "GET", f"/dashboard/{env.name}/campaigns/abc", cookies=cookies)
    assert bad.status_code == 400 and "INVALID_REQUEST" in bad.text


def test_session_cookie_is_secure_over_https(client: AppClient, env: Env) -> None:
    async def over_https() -> httpx.Response:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="https://magpie.test") as https:
            form = await https.get("/dashboard/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert csrf is not None
            return await https.post("/dashboard/login", data={"csrf": csrf.group(1), "token": env.admin_token})

    response = client.run(over_https())
    assert response.status_code == 303, response.text
    assert "secure" in response.headers["set-cookie"].lower()
