"""Money is at stake: a worker killed with ``kill -9`` after a gateway took a batch, before magpie recorded
the answer, leaves the batch marked SENDING; the next worker resends exactly that batch asking the
gateway first (NHN's list by senderGroupingKey, Solapi's message list), and no phone gets a message twice."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from magpie.config import Settings
from tests.dispatch.test_messages import alimtalk, send, setup, sms, user, view
from tests.fakes.nhn import FakeNhn
from tests.fakes.solapi import FakeSolapi
from tests.support import AppClient, Env, ServerProcess, close_dispatcher, drain, make_dispatcher

USERS = 20


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.parametrize("gateway", ["nhn", "solapi"])
def test_worker_killed_after_the_gateway_accepted_sends_nobody_twice(
    client: AppClient, env: Env, settings: Settings, gateway: str
) -> None:
    fake: FakeNhn | FakeSolapi
    fake = FakeNhn(templates={"ORDER_SHIPPED": alimtalk()["message"]["text"]}) if gateway == "nhn" else FakeSolapi()
    with fake:
        channel, campaign = ("kakao", alimtalk()) if gateway == "nhn" else ("sms", sms(purpose="INFORMATION"))
        setup(client, env, {f"{channel}Gateway": gateway, "providers": {gateway: fake.config()}}, campaign)
        for i in range(USERS):
            user(client, env, f"u{i}", phone=f"010-4444-{i:04d}")
        users: list[dict[str, Any]] = [
            {"userId": f"u{i}", "apiProperties": {"orderNo": f"A-{i}"}} for i in range(USERS)
        ]
        dispatch_id = send(client, env, channel, int(campaign["key"]), users)

        # The gateway takes the batch, then keeps its answer until the worker is dead.
        fake.hold_after_accept = 30.0
        worker = ServerProcess(
            data_dir=settings.data_dir,
            database_url=settings.database_url_override,
            args=["worker"],
            env={"MAGPIE_LEASE_SECONDS": "3", "MAGPIE_POLL_INTERVAL": "0.05", "MAGPIE_REPORT_POLL_SECONDS": "3600"},
        )
        worker.start(wait=False)
        try:
            _wait(lambda: len(fake.accepted) >= USERS, 60, f"the gateway to accept the batch: {worker.output()}")
        finally:
            worker.kill9()
        fake.hold_after_accept = 0.0
        before = view(client, env, channel, dispatch_id)
        assert before["counts"]["PENDING"] == USERS
        assert {r["deliveries"][0]["status"] for r in before["recipients"]} == {"SENDING"}

        time.sleep(3.5)  # the dead worker's lease lapses
        dispatcher = make_dispatcher(client)
        try:
            assert drain(client, dispatcher) >= 1
        finally:
            close_dispatcher(client, dispatcher)

        after = view(client, env, channel, dispatch_id)
        assert after["counts"] == {"SENT": USERS, "FAILED": 0, "UNKNOWN": 0, "EXCLUDED": 0, "PENDING": 0}
        sent = [(a.to, a.message_id) for a in fake.accepted]
        assert fake.sent_twice() == [], (sent, worker.output()[-3000:])
        assert len(fake.accepted) == USERS
        accepted_ids = {a.message_id.rsplit(":", 1)[0] for a in fake.accepted}
        recorded = {r["deliveries"][0]["providerMessageId"] for r in after["recipients"]}
        if gateway == "solapi":
            # The ids recorded are those of the messages the dead worker's batch created.
            assert recorded == {a.message_id for a in fake.accepted}
        else:
            # One NHN request, found again by its senderGroupingKey: the same request id everywhere.
            assert len(accepted_ids) == 1
            request_id = next(iter(accepted_ids))
            assert all(f":{request_id}:" in r for r in recorded), recorded
