"""Dashboard sessions end server-side (D4); every form is POST-redirect-GET and acts once (D9)."""

from __future__ import annotations

import json
import time

from magpie.store import accounts
from tests.security.dashboard import page_token, send, sign_in
from tests.support import AppClient, Env, apply_campaign


def test_sign_out_ends_the_session_for_every_copy_of_its_cookie(client: AppClient, env: Env) -> None:
    cookies = sign_in(client, env)
    copied = dict(cookies)  # a cookie saved elsewhere before signing out
    keys = f"/dashboard/{env.name}/keys"
    token = page_token(client, keys, copied)
    out = send(client, "POST", "/dashboard/logout", data={"csrf": page_token(client, keys, cookies)}, cookies=cookies)
    assert (out.status_code, out.headers["location"]) == (303, "/dashboard/login")
    again = send(client, "GET", keys, cookies=copied)
    assert again.status_code == 303 and again.headers["location"].startswith("/dashboard/login")
    created = send(client, "POST", keys, data={"csrf": token, "name": "after sign-out"}, cookies=copied)
    assert created.status_code == 303 and created.headers["location"].startswith("/dashboard/login")
    assert [k.name for k in accounts.list_api_keys(client.app.db, environment=env.name)] == [""]


def test_sessions_of_one_token_are_independent(client: AppClient, env: Env) -> None:
    first, second = sign_in(client, env), sign_in(client, env)
    page = f"/dashboard/{env.name}/keys"
    send(client, "POST", "/dashboard/logout", data={"csrf": page_token(client, page, first)}, cookies=first)
    assert send(client, "GET", page, cookies=second).status_code == 200
    assert send(client, "GET", page, cookies=first).status_code == 303


def test_a_key_form_sent_twice_creates_one_key_and_redirects(client: AppClient, env: Env) -> None:
    cookies = sign_in(client, env)
    url = f"/dashboard/{env.name}/keys"
    token = page_token(client, url, cookies)
    first = send(client, "POST", url, data={"csrf": token, "name": "twice"}, cookies=cookies)
    second = send(client, "POST", url, data={"csrf": token, "name": "twice"}, cookies=cookies)
    assert (first.status_code, second.status_code) == (303, 303)
    assert second.headers["location"] == first.headers["location"]
    names = [k.name for k in accounts.list_api_keys(client.app.db, environment=env.name)]
    assert names.count("twice") == 1
    shown = send(client, "GET", first.headers["location"], cookies=cookies)
    assert 'id="created-key"' in shown.text
    # Shown once: a reload (or another session following the link) no longer sees it.
    assert 'id="created-key"' not in send(client, "GET", first.headers["location"], cookies=cookies).text


def test_a_key_form_sent_twice_at_once_creates_one_key(client: AppClient, env: Env) -> None:
    cookies = sign_in(client, env)
    url = f"/dashboard/{env.name}/keys"
    token = page_token(client, url, cookies)
    header = {"cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}
    assert client.http is not None
    client.http.cookies.clear()
    form = {"data": {"csrf": token, "name": "double-click"}, "headers": header}
    answers = client.gather([("POST", url, form), ("POST", url, form)])
    assert [a.status_code for a in answers] == [303, 303]
    names = [k.name for k in accounts.list_api_keys(client.app.db, environment=env.name)]
    assert names.count("double-click") == 1


def _backdate_push_consent(client: AppClient, env: Env, user_id: str, days: int) -> None:
    db = client.app.db
    at = int((time.time() - days * 86_400) * 1000)
    with db.transaction() as conn:
        row = db.fetchone(
            conn, "SELECT crm FROM profiles WHERE env_id = ? AND kind = 'u' AND ident = ?", (env.id, user_id)
        )
        assert row is not None
        crm = json.loads(row[0])
        crm["push"]["marketing"].update({"changedAt": at, "updatedAt": at})
        db.execute(
            conn,
            "UPDATE profiles SET crm = ? WHERE env_id = ? AND kind = 'u' AND ident = ?",
            (json.dumps(crm), env.id, user_id),
        )


def test_the_two_year_notice_posted_twice_is_sent_once(client: AppClient, env: Env) -> None:
    apply_campaign(client, env, key=7)
    for user_id in ("old-1", "old-2"):
        body = {"userId": user_id, "marketingSubscriptionStatus": "SUBSCRIBED"}
        assert client.post("/v1/push-subscriptions", json=body, headers=env.headers).status_code == 200
        _backdate_push_consent(client, env, user_id, 800)
    cookies = sign_in(client, env)
    url = f"/dashboard/{env.name}/consent"
    token = page_token(client, url + "?channel=push&withinDays=30", cookies)
    form = {"csrf": token, "campaign": "7", "channel": "push", "withinDays": "30"}
    answers = [send(client, "POST", url, data=form, cookies=cookies) for _ in range(2)]
    assert [a.status_code for a in answers] == [303, 303]
    with client.app.db.transaction(write=False) as conn:
        row = client.app.db.fetchone(conn, "SELECT COUNT(*) FROM dispatches WHERE env_id = ?", (env.id,))
    assert row is not None and row[0] == 1
    shown = send(client, "GET", answers[0].headers["location"], cookies=cookies)
    assert shown.status_code == 200 and "Notice sent" in shown.text


def test_the_two_year_notice_with_one_idempotency_key_is_sent_once_through_the_admin_api(
    client: AppClient, env: Env
) -> None:
    apply_campaign(client, env, key=7)
    body = {"userId": "old-1", "marketingSubscriptionStatus": "SUBSCRIBED"}
    assert client.post("/v1/push-subscriptions", json=body, headers=env.headers).status_code == 200
    _backdate_push_consent(client, env, "old-1", 800)
    url = f"/admin/v1/environments/{env.name}/consent-reconfirmations/send"
    headers = {**env.admin, "Idempotency-Key": "notice-2026-12"}
    answers = [client.post(url, json={"campaignKey": 7, "channel": "push"}, headers=headers) for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200], answers[0].text
    assert answers[0].json() == answers[1].json() and answers[0].json()["recipients"] == 1
    with client.app.db.transaction(write=False) as conn:
        row = client.app.db.fetchone(conn, "SELECT COUNT(*) FROM dispatches WHERE env_id = ?", (env.id,))
    assert row is not None and row[0] == 1


def test_a_status_change_posted_twice_records_one_change(client: AppClient, env: Env) -> None:
    apply_campaign(client, env, key=7)
    cookies = sign_in(client, env)
    url = f"/dashboard/{env.name}/campaigns/7/status"
    token = page_token(client, url + "?to=PAUSED", cookies)
    answers = [send(client, "POST", url, data={"csrf": token, "to": "PAUSED"}, cookies=cookies) for _ in range(2)]
    assert [a.status_code for a in answers] == [303, 303]
    with client.app.db.transaction(write=False) as conn:
        row = client.app.db.fetchone(
            conn, "SELECT COUNT(*) FROM audit_log WHERE env_id = ? AND target = 'campaign:7'", (env.id,)
        )
    assert row is not None and row[0] == 1


def test_a_form_token_of_another_session_is_refused(client: AppClient, env: Env) -> None:
    mine, theirs = sign_in(client, env), sign_in(client, env)
    url = f"/dashboard/{env.name}/keys"
    token = page_token(client, url, theirs)
    refused = send(client, "POST", url, data={"csrf": token, "name": "stolen"}, cookies=mine)
    assert refused.status_code == 403
