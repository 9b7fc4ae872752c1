"""A user's data is data: values that look like template syntax go out as text on every channel, a
template failing on one recipient fails that recipient only, and rendering is bounded and leaves the
event loop free."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from magpie.domain.campaigns import RENDER_LOOP_LIMIT
from tests.dispatch.test_messages import TEMPLATE, alimtalk, brand, inbox, run, send, setup, sms, user, view
from tests.fakes.nhn import FakeNhn
from tests.support import AppClient, Env, add_token, apply_campaign, make_dispatcher, trigger

# Values an SDK key holder can write that look like AlimTalk placeholders or Liquid.
LOOKALIKES = [
    pytest.param("#{x}", id="placeholder"),
    pytest.param("#{주문번호}", id="declared-placeholder"),
    pytest.param("{{ x }}", id="liquid-output"),
    pytest.param("{%raw%}", id="liquid-tag"),
    pytest.param("{% endraw %}{{", id="liquid-unbalanced"),
]
HEAVY_LOOP = "{% for i in (1..user_properties.n) %}.{% endfor %}"


@pytest.fixture
def nhn() -> Iterator[FakeNhn]:
    with FakeNhn(templates={"ORDER_SHIPPED": TEMPLATE}) as fake:
        yield fake


def _set(client: AppClient, env: Env, user_id: str, **properties: Any) -> None:
    response = client.post(
        "/v1/properties", json={"userId": user_id, "operations": {"$set": properties}}, headers=env.headers
    )
    assert response.status_code == 200, response.text


def _by_user(view: dict[str, Any]) -> dict[str, tuple[str, str | None]]:
    return {r["userId"]: (r["outcome"], r["reason"]) for r in view["recipients"]}


@pytest.mark.parametrize("value", LOOKALIKES)
def test_rendering_lookalike_values_go_out_as_text_on_kakao_and_sms(client: AppClient, env: Env, value: str) -> None:
    information_sms = sms(purpose="INFORMATION")
    setup(client, env, None, alimtalk(), brand(), information_sms)
    user(client, env, "odd", name=value, kakao_marketing="SUBSCRIBED")
    user(client, env, "plain", phone="010-3333-4444", kakao_marketing="SUBSCRIBED")
    users = [
        {"userId": "odd", "apiProperties": {"orderNo": value}},
        {"userId": "plain", "apiProperties": {"orderNo": "A-2"}},
    ]
    dispatches = {channel: send(client, env, channel, key, users) for channel, key in (("kakao", 10), ("kakao", 11))}
    sms_dispatch = send(client, env, "sms", 12, users)
    run(client)
    for dispatch_id in (*dispatches.values(), sms_dispatch):
        channel = "sms" if dispatch_id == sms_dispatch else "kakao"
        assert _by_user(view(client, env, channel, dispatch_id)) == {"odd": ("SENT", None), "plain": ("SENT", None)}
    texts = sorted(m["message"]["text"] for m in inbox(client, env))
    assert sorted(texts) == sorted(
        [
            f"{value}님, 주문 {value}이 출발했어요",
            "홍길동님, 주문 A-2이 출발했어요",
            f"{value}님, 겨울 세일이 시작됐어요",
            "홍길동님, 겨울 세일이 시작됐어요",
            f"{value}님 봄 세일 20%",
            "홍길동님 봄 세일 20%",
        ]
    )


@pytest.mark.parametrize("value", LOOKALIKES)
def test_rendering_lookalike_values_fill_an_alimtalk_fallback_as_text(
    client: AppClient, env: Env, nhn: FakeNhn, value: str
) -> None:
    campaign = alimtalk()
    campaign["message"]["fallback"] = {"text": "{{ user_properties.name }}: 주문 #{주문번호} 출발"}
    setup(client, env, {"kakaoGateway": "nhn", "providers": {"nhn": nhn.config()}}, campaign)
    user(client, env, "odd", name=value)
    user(client, env, "plain", phone="010-3333-4444")
    nhn.kakao_unreachable.update({"01011112222", "01033334444"})
    users = [
        {"userId": "odd", "apiProperties": {"orderNo": value}},
        {"userId": "plain", "apiProperties": {"orderNo": "A-2"}},
    ]
    dispatch_id = send(client, env, "kakao", 10, users)
    run(client)
    assert _by_user(view(client, env, "kakao", dispatch_id)) == {"odd": ("SENT", None), "plain": ("SENT", None)}
    fallbacks = {a.to: a.text for a in nhn.accepted if a.kind == "fallback"}
    assert fallbacks == {"01011112222": f"{value}: 주문 {value} 출발", "01033334444": "홍길동: 주문 A-2 출발"}


@pytest.mark.parametrize("value", LOOKALIKES)
def test_rendering_lookalike_values_go_out_as_text_in_a_push(client: AppClient, env: Env, value: str) -> None:
    apply_campaign(client, env, message={"title": "{{ user_properties.name }}", "body": "주문 {{ api_properties.n }}"})
    for user_id in ("odd", "plain"):
        add_token(client, env, device_id=f"d-{user_id}", token=f"t-{user_id}", user_id=user_id)
    _set(client, env, "odd", name=value)
    _set(client, env, "plain", name="홍길동")
    trigger(
        client, env, [{"userId": "odd", "apiProperties": {"n": value}}, {"userId": "plain", "apiProperties": {"n": 2}}]
    )
    run(client)
    shown = sorted((m["message"]["title"], m["message"]["body"]) for m in inbox(client, env))
    assert shown == sorted([(value, f"주문 {value}"), ("홍길동", "주문 2")])


@pytest.mark.parametrize(
    ("template", "light"),
    [
        pytest.param(HEAVY_LOOP, "...", id="loop"),
        pytest.param("{{ (1..user_properties.n) | join: ',' }}", "1,2,3", id="range-filter"),
    ],
)
def test_rendering_past_the_loop_bound_fails_that_recipient_only(
    client: AppClient, env: Env, caplog: pytest.LogCaptureFixture, template: str, light: str
) -> None:
    setup(client, env, None, sms(purpose="INFORMATION", message={"text": "점검 " + template}))
    user(client, env, "heavy")
    user(client, env, "light", phone="010-3333-4444")
    _set(client, env, "heavy", n=4_000_000)
    _set(client, env, "light", n=3)
    dispatch_id = send(client, env, "sms", 12, [{"userId": "heavy"}, {"userId": "light"}])
    with caplog.at_level(logging.WARNING):
        run(client)
    assert _by_user(view(client, env, "sms", dispatch_id)) == {
        "heavy": ("FAILED", "RENDER_ERROR"),
        "light": ("SENT", None),
    }
    assert [m["message"]["text"] for m in inbox(client, env)] == [f"점검 {light}"]
    assert "4000000" not in caplog.text and "Traceback" not in caplog.text


def test_rendering_past_the_loop_bound_fails_that_push_recipient_only(client: AppClient, env: Env) -> None:
    apply_campaign(client, env, message={"title": "점검", "body": HEAVY_LOOP})
    for user_id, n in (("heavy", RENDER_LOOP_LIMIT + 1), ("light", RENDER_LOOP_LIMIT)):
        add_token(client, env, device_id=f"d-{user_id}", token=f"t-{user_id}", user_id=user_id)
        _set(client, env, user_id, n=n)
    dispatch_id = trigger(client, env, [{"userId": "heavy"}, {"userId": "light"}])
    run(client)
    result = client.get(f"/v1/push-message/dispatches/{dispatch_id}", headers=env.headers).json()
    assert _by_user(result) == {"heavy": ("FAILED", "RENDER_ERROR"), "light": ("SENT", None)}


@pytest.mark.alone  # timed
@pytest.mark.parametrize(
    "text",
    [
        pytest.param("{% for i in (1..2000000) %}x{% endfor %}", id="loop"),
        pytest.param("{% for i in (1..1500) %}{% for j in (1..1500) %}{% endfor %}{% endfor %}", id="nested"),
        pytest.param("{% for i in (1..1500) %}{% endfor %}" * 2, id="series"),
        pytest.param("{% for i in (1..1900) %}{{ 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' }}{% endfor %}", id="output"),
    ],
)
def test_rendering_apply_refuses_an_unbounded_template_quickly(client: AppClient, env: Env, text: str) -> None:
    started = time.perf_counter()
    response = client.post(
        f"/admin/v1/environments/{env.name}/campaigns",
        json=sms(purpose="INFORMATION", message={"text": text}),
        headers=env.admin,
    )
    elapsed = time.perf_counter() - started
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "INVALID_CAMPAIGN" and "limit reached" in response.json()["message"]
    assert elapsed < 1.0


def test_rendering_leaves_healthz_responsive(client: AppClient, env: Env) -> None:
    setup(client, env, None, sms(purpose="INFORMATION", message={"text": "점검 " + HEAVY_LOOP}))
    users = [f"u{i}" for i in range(50)]
    for user_id in users:
        user(client, env, user_id)
        _set(client, env, user_id, n=4_000_000)
    dispatch_id = send(client, env, "sms", 12, [{"userId": u} for u in users])
    dispatcher = make_dispatcher(client)
    assert client.http is not None
    http = client.http

    async def probe(stop: asyncio.Event) -> list[float]:
        latencies: list[float] = []
        while not stop.is_set():
            started = time.perf_counter()
            response = await http.get("/healthz")
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 200
            await asyncio.sleep(0.005)
        return latencies

    async def both() -> list[float]:
        stop = asyncio.Event()
        watcher = asyncio.create_task(probe(stop))
        await asyncio.sleep(0.02)
        await dispatcher.run_until_idle()
        await asyncio.sleep(0.02)
        stop.set()
        return await watcher

    try:
        latencies = client.run(both())
    finally:
        client.run(dispatcher.aclose())
    assert set(_by_user(view(client, env, "sms", dispatch_id)).values()) == {("FAILED", "RENDER_ERROR")}
    assert len(latencies) >= 2 and max(latencies) < 0.2, latencies
