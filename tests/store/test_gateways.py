"""Gateway health derived from recorded deliveries, on both engines: a Kakao gateway that took a batch
and could not say so (UNKNOWN), an SMS gateway that sent, reported one message undelivered and hit
the daily paid-message limit, and a push through the sandbox; read by the store, the admin API."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import msgspec
import pytest

from magpie.store.gateways import GatewayReport, gateway_report
from tests.dispatch.test_messages import NOON, SEOUL, TEMPLATE, TOMORROW, alimtalk, run, send, setup, sms, user
from tests.fakes.nhn import FakeNhn
from tests.fakes.solapi import PF_ID, FakeSolapi
from tests.support import AppClient, Env, add_token, apply_campaign, trigger

DAY = TOMORROW.isoformat()  # the dispatchers' clocks run at noon tomorrow (see tests.dispatch.test_messages)
# Outcomes are counted at the writer's time, today: a range with both days sees everything.
TODAY = (TOMORROW - timedelta(days=1)).isoformat()
LIMIT = 5
WEBHOOK = "https://hooks.example/notify?token=hook-url-secret"


@pytest.fixture
def traffic(client: AppClient, env: Env) -> Iterator[dict[str, Any]]:
    with FakeNhn(templates={"ORDER_SHIPPED": TEMPLATE}) as nhn, FakeSolapi() as solapi:
        yield record_traffic(client, env, nhn, solapi)


def record_traffic(client: AppClient, env: Env, nhn: FakeNhn, solapi: FakeSolapi) -> dict[str, Any]:
    """Real deliveries through the fakes: 2 Kakao UNKNOWN (nhn), 3 SMS sent + 1 over the limit (solapi),
    one SMS reported undelivered, and one push through the sandbox."""
    solapi_config = {**solapi.config(), "webhookSecret": "report-secret"}
    settings = {
        "kakaoGateway": "nhn",
        "smsGateway": "solapi",
        "paidMessagesDailyLimit": LIMIT,
        "providers": {
            "nhn": nhn.config(),
            "solapi": solapi_config,
            "webhook": {"url": WEBHOOK, "secret": "webhook-signing-secret"},
        },
    }
    setup(client, env, settings, alimtalk(), sms(purpose="INFORMATION"))
    for i in range(4):
        user(client, env, f"u{i}", phone=f"010-7777-000{i}")
    # Kakao: the gateway takes the batch, never answers, and cannot be asked: UNKNOWN, still paid.
    nhn.drop_after_accept = nhn.fail_queries = 100
    kakao = send(client, env, "kakao", 10, [{"userId": f"u{i}", "apiProperties": {"orderNo": "A"}} for i in (0, 1)])
    run(client, max_delivery_attempts=1)
    # SMS: 2 paid already, a limit of 5: three sent, the fourth excluded DAILY_LIMIT.
    solapi.undeliverable.add("01077770002")
    text = send(client, env, "sms", 12, [{"userId": f"u{i}"} for i in range(4)])
    run(client)
    for report in solapi.reports:
        answer = client.post(f"/v1/gateways/solapi/reports/{env.name}?secret=report-secret", json=report)
        assert answer.status_code == 200, answer.text
    # Push through the sandbox.
    apply_campaign(client, env, key=1, provider="sandbox")
    add_token(client, env, device_id="d1", user_id="u0", token="fcm-token-u0-0123456789")
    push = trigger(client, env, [{"userId": "u0"}], key=1)
    run(client)
    secrets = [
        *(v for k, v in nhn.config().items() if "Key" in k),
        solapi_config["apiKey"],
        solapi_config["apiSecret"],
        "report-secret",
        "webhook-signing-secret",
        "hook-url-secret",
    ]
    return {"kakao": kakao, "sms": text, "push": push, "secrets": secrets}


def _report(client: AppClient, env: Env, *, now_ms: int) -> GatewayReport:
    db = client.app.db
    with db.transaction(write=False) as conn:
        row = db.fetchone(conn, "SELECT settings FROM environments WHERE id = ?", (env.id,))
        assert row is not None
        settings = msgspec.json.decode(row[0])
        start = int(datetime.combine(TOMORROW, datetime.min.time(), SEOUL).timestamp() * 1000)
        return gateway_report(
            conn,
            db,
            env_id=env.id,
            settings=settings,
            timezone="Asia/Seoul",
            since=start - 86_400_000,
            until=start + 86_400_000,
            now_ms=now_ms,
        )


def test_gateway_report_derives_health_from_recorded_deliveries(
    client: AppClient, env: Env, traffic: dict[str, Any]
) -> None:
    report = _report(client, env, now_ms=int(NOON * 1000))
    push, kakao, text = report.channels
    assert [c.channel for c in report.channels] == ["push", "kakao", "sms"]

    assert [g.name for g in push.configured] == ["sandbox", "webhook"]
    assert push.configured[1].details == {"host": "hooks.example"}
    assert kakao.configured[0].name == "nhn" and text.configured[0].name == "solapi"
    assert text.configured[0].details == {"pfId": PF_ID, "sender": "02-1234-5678"}
    assert kakao.configured[0].details == {"sender": "02-1234-5678"}

    assert (kakao.sent, kakao.unknown, kakao.failed, kakao.last_success) == (0, {"GATEWAY_UNCONFIRMED": 2}, {}, None)
    assert kakao.last_error is not None
    assert (kakao.last_error.provider, kakao.last_error.code) == ("nhn", "GATEWAY_UNCONFIRMED")

    assert (text.sent, text.delivered, text.undelivered, text.awaiting_report) == (3, 2, {"3040": 1}, 0)
    assert text.last_success is not None and text.last_success.provider == "solapi"
    assert text.last_error is None and text.unknown == {}  # DAILY_LIMIT is magpie's exclusion, not the gateway's

    assert push.sent == 1 and push.last_success is not None and push.last_success.provider == "sandbox"

    # Paid: the limit's own counter, on the day the dispatcher's clock said: 2 UNKNOWN + 3 SMS.
    assert report.paid_limit == LIMIT and report.today == DAY and report.paid_today == LIMIT
    by_day = {d.day: d for d in report.days}
    assert by_day[DAY].paid == LIMIT and by_day[DAY].sent_by_type == {"SMS": 3}
    assert report.sent_by_type == {"SMS": 3}


def test_gateway_report_without_a_limit_counts_paid_messages_from_deliveries(
    client: AppClient, env: Env, traffic: dict[str, Any]
) -> None:
    stored = client.get(f"/admin/v1/environments/{env.name}", headers=env.admin).json()["settings"]
    response = client.put(
        f"/admin/v1/environments/{env.name}",
        json={"settings": {**stored, "paidMessagesDailyLimit": 0}},
        headers=env.admin,
    )
    assert response.status_code == 200, response.text
    report = _report(client, env, now_ms=int(NOON * 1000))
    assert (report.paid_limit, report.paid_source) == (0, "deliveries")
    assert report.paid_today == 5 and {d.day: d.paid for d in report.days}[DAY] == 5


def test_admin_gateways_answers_the_report_and_never_a_secret(
    client: AppClient, env: Env, traffic: dict[str, Any]
) -> None:
    url = f"/admin/v1/environments/{env.name}/gateways"
    response = client.get(url, params={"from": TODAY, "to": DAY}, headers=env.admin)
    assert response.status_code == 200, response.text
    body = response.json()
    channels = {c["channel"]: c for c in body["channels"]}
    assert channels["kakao"]["unknown"] == 2 and channels["kakao"]["unknownByReason"] == {"GATEWAY_UNCONFIRMED": 2}
    assert channels["kakao"]["lastError"]["code"] == "GATEWAY_UNCONFIRMED"
    assert channels["sms"]["undeliveredByCode"] == {"3040": 1} and channels["sms"]["delivered"] == 2
    assert [g["name"] for g in channels["push"]["configured"]] == ["sandbox", "webhook"]
    assert body["paidMessages"]["dailyLimit"] == LIMIT and body["paidMessages"]["byDay"] == {TODAY: 0, DAY: LIMIT}
    assert body["sentByType"] == {"SMS": 3} and body["sentByTypePerDay"] == {TODAY: {}, DAY: {"SMS": 3}}
    assert (channels["sms"]["sent"], channels["push"]["sent"], channels["kakao"]["sent"]) == (3, 1, 0)
    for secret in traffic["secrets"]:
        assert secret not in response.text, secret
    # The default range, the last 7 days, ends today: the dispatchers' tomorrow is outside it.
    default = client.get(url, headers=env.admin).json()
    assert len(default["paidMessages"]["byDay"]) == 7 and DAY not in default["paidMessages"]["byDay"]
    assert {c["channel"]: c["sent"] for c in default["channels"]} == {"push": 1, "kakao": 0, "sms": 3}


def test_admin_gateways_last_answer_known_only_to_the_hour(
    client: AppClient, env: Env, traffic: dict[str, Any]
) -> None:
    """Today alone: the statistics counted today's outcomes, but the deliveries carry the dispatchers'
    time (tomorrow), so push's last success is known to the hour only, without its provider."""
    url = f"/admin/v1/environments/{env.name}/gateways"
    body = client.get(url, params={"from": TODAY, "to": TODAY}, headers=env.admin).json()
    push = next(c for c in body["channels"] if c["channel"] == "push")
    last = push["lastSuccess"]
    assert (push["sent"], last["exact"], last["provider"], last["at"] % 3_600_000) == (1, False, None, 0)
    assert body["sentByType"] == {}  # the messages were prepared tomorrow


@pytest.mark.parametrize(
    "query",
    [
        pytest.param({"from": "2026-13-01", "to": "2026-12-31"}, id="no-such-month"),
        pytest.param({"from": "0001-01-01", "to": "0001-12-31"}, id="year-one"),
        pytest.param({"from": "9999-12-31", "to": "9999-12-31"}, id="year-9999"),
        pytest.param({"from": "2026-02-01", "to": "2026-01-01"}, id="reversed"),
        pytest.param({"from": "2024-01-01", "to": "2026-01-01"}, id="over-a-year"),
        pytest.param({"from": "2026-01-01"}, id="from-alone"),
        pytest.param({"from": "1767225600000", "to": "1767312000000"}, id="epoch-ms"),
    ],
)
def test_admin_gateways_bad_range_is_400(client: AppClient, env: Env, query: dict[str, str]) -> None:
    response = client.get(f"/admin/v1/environments/{env.name}/gateways", params=query, headers=env.admin)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "INVALID_REQUEST"


def test_admin_gateways_needs_the_admin_token(client: AppClient, env: Env) -> None:
    response = client.get(f"/admin/v1/environments/{env.name}/gateways", headers=env.headers)
    assert response.status_code == 401
