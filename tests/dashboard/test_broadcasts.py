"""The broadcast pages over the real ASGI app on both backends: reach, test send, send now, progress, controls."""

from __future__ import annotations

import re

from magpie.dashboard.catalogue import KO
from magpie.domain import reasons
from tests.dashboard.test_session import _send, _sign_in
from tests.dispatch.test_broadcasts import _scheduler, _users
from tests.support import AppClient, Env, apply_campaign, close_dispatcher, drain, make_dispatcher


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_broadcast_pages_reach_send_now_progress_and_cancel(client: AppClient, env: Env) -> None:
    _users(client, env, 5, with_token=3)
    apply_campaign(client, env, schedule={"type": "daily", "time": "10:00"})
    cookies = _sign_in(client, env)
    base = f"/dashboard/{env.name}"
    index = _send(client, "GET", base + "/broadcasts", cookies=cookies)
    assert index.status_code == 200 and "#7 Test campaign" in _text(index.text)
    page = _send(client, "GET", base + "/broadcasts/7", cookies=cookies)
    assert page.status_code == 200, page.text[:2000]
    text = _text(page.text)
    assert "Reachable on Push 3" in text and "NO_PUSH_TOKEN 2 The user has no active push token" in text
    started = _send(
        client,
        "POST",
        base + "/broadcasts/7/send-now",
        data={"csrf": _csrf(page.text)},
        cookies=cookies,
        follow_redirects=False,
    )
    assert started.status_code == 303, started.text[:2000]
    occurrence_url = started.headers["location"]
    occurrence_id = occurrence_url.rsplit("/", 1)[1]
    client.run(_scheduler(client).tick())
    shown = _send(client, "GET", occurrence_url, cookies=cookies)
    assert shown.status_code == 200 and "Planned 3" in _text(shown.text) and "sending" in shown.text
    progress = _send(client, "GET", occurrence_url + "/progress", cookies=cookies).json()
    assert progress["progress"]["planned"] == 3 and progress["progress"]["remaining"] == 3
    cancelled = _send(
        client,
        "POST",
        occurrence_url + "/cancel",
        data={"csrf": _csrf(shown.text)},
        cookies=cookies,
        follow_redirects=False,
    )
    assert cancelled.status_code == 303
    dispatcher = make_dispatcher(client)
    try:
        drain(client, dispatcher)
    finally:
        close_dispatcher(client, dispatcher)
    after = _send(client, "GET", f"{base}/occurrences/{occurrence_id}/progress", cookies=cookies).json()
    assert after["occurrence"]["state"] == "cancelled"
    assert after["progress"]["excludedBy"] == {"BROADCAST_CANCELLED": 3} and after["progress"]["sent"] == 0
    # In Korean: the state, the figures' names, the controls and the reason in words beside the code.
    korean = _send(client, "GET", occurrence_url, cookies={**cookies, "magpie_lang": "ko"})
    words = _text(korean.text)
    assert f"발송 회차 #{occurrence_id} 취소됨" in words and "계획 3" in words and "남음 0" in words
    assert f"BROADCAST_CANCELLED 3 {KO[reasons.REASONS['BROADCAST_CANCELLED']]}" in words
    assert "Planned" not in words and "cancelled" not in words and "Broadcasts" not in words
    korean_page = _text(_send(client, "GET", base + "/broadcasts/7", cookies={**cookies, "magpie_lang": "ko"}).text)
    assert "푸시(으)로 보낼 수 있음 3" in korean_page and "보낼 수 있는 사용자 3명 모두에게 지금 발송" in korean_page
    assert "Reachable" not in korean_page and "Send" not in korean_page


def test_broadcast_test_send_form_refuses_more_than_five_users(client: AppClient, env: Env) -> None:
    _users(client, env, 2, with_token=2)
    apply_campaign(client, env)
    cookies = _sign_in(client, env)
    page = _send(client, "GET", f"/dashboard/{env.name}/broadcasts/7", cookies=cookies)
    refused = _send(
        client,
        "POST",
        f"/dashboard/{env.name}/broadcasts/7/test-send",
        data={"csrf": _csrf(page.text), "users": "a,b,c,d,e,f"},
        cookies=cookies,
        follow_redirects=False,
    )
    assert refused.status_code == 400 and "1 to 5" in refused.text
    page = _send(client, "GET", f"/dashboard/{env.name}/broadcasts/7", cookies=cookies)
    sent = _send(
        client,
        "POST",
        f"/dashboard/{env.name}/broadcasts/7/test-send",
        data={"csrf": _csrf(page.text), "users": "user-0000\nuser-0001"},
        cookies=cookies,
        follow_redirects=False,
    )
    assert sent.status_code == 303
    shown = _send(client, "GET", sent.headers["location"], cookies=cookies)
    assert "test send" in _text(shown.text) and "Planned 2" in _text(shown.text)
