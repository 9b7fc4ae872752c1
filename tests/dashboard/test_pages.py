"""Every dashboard page over the real ASGI app on both backends, after real sends and clicks."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from magpie.app import create_app
from magpie.config import Settings
from magpie.logs import JsonFormatter
from tests.dashboard.test_session import _send, _sign_in
from tests.dispatch.test_messages import run as run_messages
from tests.dispatch.test_messages import send as send_messages
from tests.dispatch.test_messages import setup, sms
from tests.dispatch.test_messages import user as add_user
from tests.fakes.nhn import FakeNhn
from tests.sdk.batches import send, track_event
from tests.support import (
    AppClient,
    Env,
    add_token,
    apply_campaign,
    dispatch,
    run_dispatcher,
    trigger,
)


@pytest.fixture
def sent(client: AppClient, env: Env) -> dict[str, Any]:
    apply_campaign(
        client,
        env,
        key=3,
        name="주말 할인",
        purpose="MARKETING",
        message={"title": "{{ user_properties.name | default: '고객' }}님 할인", "body": "지금 확인하세요"},
        audience={
            "targets": [
                {
                    "conditions": [
                        {
                            "key": {"type": "USER_PROPERTY", "name": "grade"},
                            "match": {"type": "MATCH", "operator": "IN", "valueType": "STRING", "values": ["GOLD"]},
                        }
                    ]
                }
            ]
        },
    )
    settings = {"settings": {"senderName": "magpie shop", "frequencyCaps": [{"limit": 3, "windowHours": 24}]}}
    assert client.put(f"/admin/v1/environments/{env.name}", json=settings, headers=env.admin).status_code == 200
    for user, grade in (("u1", "GOLD"), ("u2", "SILVER")):
        body = {"userId": user, "operations": {"$set": {"grade": grade, "name": "민지"}}}
        assert client.post("/v1/properties", json=body, headers=env.headers).status_code == 200
        add_token(client, env, device_id=f"d-{user}", user_id=user, token=f"tok-{user}-0123456789")
        # Night-time consent too, so the run does not depend on the hour in Seoul.
        consent = {"userId": user, "marketingSubscriptionStatus": "SUBSCRIBED", "nightSubscriptionStatus": "SUBSCRIBED"}
        assert client.post("/v1/push-subscriptions", json=consent, headers=env.headers).status_code == 200
    dispatch_id = trigger(client, env, [{"userId": "u1"}, {"userId": "u2"}, {"userId": "ghost"}], key=3)
    run_dispatcher(client)
    view = dispatch(client, env, dispatch_id)
    delivery = next(r for r in view["recipients"] if r["userId"] == "u1")["deliveries"][0]["deliveryId"]
    click = {"push_message_key": 3, "push_message_delivery_id": delivery}
    send(client, env, track_event("$push_click", user_id="u1", properties=click))
    return view


def _page(client: AppClient, cookies: dict[str, str], url: str) -> httpx.Response:
    response = _send(client, "GET", url, cookies=cookies)
    assert response.status_code == 200, response.text[:2000]
    assert response.headers["content-type"].startswith("text/html")
    return response


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_pages_show_the_same_numbers_as_the_api(client: AppClient, env: Env, sent: dict[str, Any]) -> None:
    cookies = _sign_in(client, env)
    e = f"/dashboard/{env.name}"
    stats = client.get("/v1/push-message/campaigns/3/stats", headers=env.headers).json()
    assert (stats["requested"], stats["sent"], stats["uniqueClicks"]) == (3, 1, 1)

    overview = _text(_page(client, cookies, e + "/").text)
    assert "Requested 3 3 3" in overview and "Sent 1 1 1" in overview and "CTR 100.0% 100.0% 100.0%" in overview

    campaign = _text(_page(client, cookies, e + "/campaigns/3").text)
    assert "Requested 3" in campaign and "Sent 1" in campaign and "NOT_IN_AUDIENCE 1" in campaign
    # The marketing rules on sample data made from the template's own property: user_properties.name.
    assert "(광고) magpie shop [name]님 할인" in campaign
    assert "수신거부" in campaign  # the default opt-out text
    assert "property “grade” is GOLD" in campaign
    assert "at most 3 marketing messages of any channel per user in 1 day" in campaign
    as_user = _text(_page(client, cookies, e + "/campaigns/3?as=u1").text)
    assert "(광고) magpie shop 민지님 할인" in as_user and '"grade": "GOLD"' in as_user  # u1's own properties
    assert "key: 3" in campaign and "purpose: MARKETING" in campaign

    hourly = _page(client, cookies, e + "/campaigns/3?range=24h&grain=hour").text
    assert 'data-chart="campaign-chart"' in hourly
    dated = _page(client, cookies, e + "/campaigns/3?from=2026-01-01&to=2026-01-31&grain=day").text
    assert "2026-01-01" in dated

    listing = _text(_page(client, cookies, e + "/campaigns?sort=ctr&status=ACTIVE&q=할인").text)
    assert "주말 할인" in listing
    assert "주말 할인" not in _text(_page(client, cookies, e + "/campaigns?status=PAUSED").text)

    page = _text(_page(client, cookies, e + f"/dispatches/{sent['dispatchId']}").text)
    assert "u1" in page and "ghost" in page and "UNKNOWN_USER" in page
    excluded = _text(_page(client, cookies, e + f"/dispatches/{sent['dispatchId']}?outcome=EXCLUDED").text)
    assert "ghost" in excluded and "d-u1" not in excluded


def test_pages_user_lookup_inbox_and_keys(client: AppClient, env: Env, sent: dict[str, Any]) -> None:
    cookies = _sign_in(client, env)
    e = f"/dashboard/{env.name}"
    user = _text(_page(client, cookies, e + "/users?q=u1").text)
    assert "GOLD" in user and "SUBSCRIBED" in user and "tok-u1-0…" in user
    assert "$push_click" in user and "attributed" in user
    assert "#3 주말 할인 Push SENT" in user
    # Not only deliveries: an excluded recipient sees why, in words, with the campaign's name and channel.
    excluded = _text(_page(client, cookies, e + "/users?q=u2").text)
    assert (
        "#3 주말 할인 Push EXCLUDED NOT_IN_AUDIENCE The user does not match the campaign&#39;s audience conditions. —"
        in excluded
    )
    assert "ghost" not in excluded and "None" not in excluded
    by_device = _text(_page(client, cookies, e + "/users?q=d-u2").text)
    assert "Device d-u2 is linked to user u2" in by_device
    assert "No user or device" in _text(_page(client, cookies, e + "/users?q=nobody").text)

    inbox = _text(_page(client, cookies, e + "/inbox").text)
    assert "(광고) magpie shop 민지님 할인" in inbox
    assert "No message yet" in _text(_page(client, cookies, e + "/inbox?user=u2").text)
    assert env.key[:12] in _page(client, cookies, e + "/keys").text


@pytest.mark.parametrize(
    ("query", "code"),
    [
        pytest.param("?range=7d&grain=week", "INVALID_REQUEST", id="grain"),
        pytest.param("?from=2026-02-01&to=2026-01-01", "INVALID_REQUEST", id="reversed-dates"),
        pytest.param("?from=yesterday&to=today", "INVALID_REQUEST", id="not-dates"),
    ],
)
def test_pages_bad_query_is_a_400_page(
    client: AppClient, env: Env, sent: dict[str, Any], query: str, code: str
) -> None:
    cookies = _sign_in(client, env)
    response = _send(client, "GET", f"/dashboard/{env.name}/campaigns/3{query}", cookies=cookies)
    assert response.status_code == 400 and code in response.text


def test_dispatch_page_shows_and_filters_recipients_a_gateway_left_unknown(client: AppClient, env: Env) -> None:
    with FakeNhn() as nhn:
        setup(client, env, {"smsGateway": "nhn", "providers": {"nhn": nhn.config()}}, sms(purpose="INFORMATION"))
        add_user(client, env, "u1")
        nhn.drop_after_accept = nhn.fail_queries = 100  # takes the batch, never answers, cannot be asked
        dispatch_id = send_messages(client, env, "sms", 12, [{"userId": "u1"}])
        run_messages(client, max_delivery_attempts=1)
    cookies = _sign_in(client, env)
    url = f"/dashboard/{env.name}/dispatches/{dispatch_id}"
    page = _text(_page(client, cookies, url).text)
    assert "UNKNOWN 1" in page and "GATEWAY_UNCONFIRMED" in page
    assert "COMPLETED · 1 unknown" in page  # not a plain green COMPLETED
    # The columns of a text message: type, bytes, masked number, gateway; never Python's None.
    assert "+82 10-****-2222 SMS" in page and "NHN Cloud" in page and "None" not in page
    assert "may have taken the message but would not confirm it" in page
    for listing in ("/", "/campaigns/12"):
        shown = _text(_page(client, cookies, f"/dashboard/{env.name}{listing}").text)
        assert "COMPLETED · 1 unknown" in shown, listing
    campaigns = _text(_page(client, cookies, f"/dashboard/{env.name}/campaigns?channel=sms").text)
    assert "Spring sale SMS ACTIVE INFORMATION NHN Cloud" in campaigns
    assert "Spring sale" not in _text(_page(client, cookies, f"/dashboard/{env.name}/campaigns?channel=push").text)
    assert "u1" in _text(_page(client, cookies, url + "?outcome=UNKNOWN").text)
    assert "u1" not in _text(_page(client, cookies, url + "?outcome=FAILED").text)


def test_favicon_is_served_and_linked_from_every_page(client: AppClient, env: Env) -> None:
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/x-icon"
    assert icon.content[:4] == b"\x00\x00\x01\x00"  # an ICO file
    svg = client.get("/dashboard/static/favicon.svg")
    assert svg.status_code == 200 and svg.text.startswith("<svg")
    page = _page(client, _sign_in(client, env), f"/dashboard/{env.name}/").text
    assert 'rel="icon" href="/dashboard/static/favicon.svg"' in page


def test_unhandled_error_log_record_names_the_request_without_its_query(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(_: Any) -> Any:
        raise RuntimeError("something unexpected")

    app = create_app(settings)
    app.admin_extensions.append(lambda _ctx: [Route("/broken/{name}", broken)])
    with AppClient(settings, app=app) as client, caplog.at_level(logging.ERROR, logger="magpie.http"):
        response = client.get("/broken/here?token=mga_secret-in-the-query")
    assert response.status_code == 500 and response.json()["code"] == "INTERNAL_ERROR"
    (record,) = [r for r in caplog.records if r.exc_info]
    assert record.fields == {"method": "GET", "path": "/broken/here"}  # type: ignore[attr-defined]
    assert "GET /broken/here" in record.getMessage() and "secret" not in record.getMessage()
    line = json.loads(JsonFormatter().format(record))
    assert (line["method"], line["path"]) == ("GET", "/broken/here")
