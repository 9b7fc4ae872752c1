"""The daily limit on paid messages counts each delivery once: when its row is created, on that day.

Two attempts at one work item (a worker that stalled past its lease, and the one that took over)
prepare the same recipients; a recipient's failure may be recorded by both, after midnight. None
of it changes today's count beyond one per delivery the gateway may charge.
"""

from __future__ import annotations

from typing import Any

from magpie.store.db import Database
from magpie.store.deliveries import DeliveryResult, Planned, PrepareRecipients, RecordRecipient, RecordRecipients
from magpie.store.writer import BatchRunner, Job
from tests.dispatch.test_messages import send, setup, sms, user
from tests.fakes.nhn import FakeNhn
from tests.support import AppClient, Env

DAY = "2026-03-02"
USERS = [{"userId": f"u{i}"} for i in range(3)]


def _paid(db: Database, env_id: int) -> dict[str, int]:
    with db.transaction(write=False) as conn:
        rows = db.fetchall(conn, "SELECT day, count FROM paid_messages WHERE env_id = ?", (env_id,))
    return {str(day): int(count) for day, count in rows}


def _run(runner: BatchRunner, job: Job[Any]) -> Any:
    [(value, failed)] = runner.run_batch([job])
    assert not failed, value
    return value


def _prepare(env: Env, dispatch_id: str, *, batch_key: str, limit: int = 10) -> PrepareRecipients:
    planned = [
        Planned(
            idx=i,
            user_key=f"u:u{i}",
            tokens=[("", "sms", "SMS")],
            marketing=False,
            provider_names={"sms": "nhn"},
            channel="sms",
            kind="SMS",
            size_bytes=20,
            paid=True,
        )
        for i in range(len(USERS))
    ]
    return PrepareRecipients(
        env_id=env.id,
        dispatch_id=dispatch_id,
        campaign_key=12,
        users=USERS,
        excluded={},
        planned=planned,
        caps=[],
        tags=[],
        now_ms=1_000,
        channel="sms",
        paid_limit=limit,
        day=DAY,
        batch_key=batch_key,
    )


def _failed(env: Env, dispatch_id: str, idx: int, delivery_id: int) -> RecordRecipients:
    result = DeliveryResult(delivery_id, "sms", "FAILED", "nhn", None, "NHN_-9", 1)
    record = RecordRecipient(
        env_id=env.id,
        dispatch_id=dispatch_id,
        idx=idx,
        results=[result],
        outcome="FAILED",
        reason="NHN_-9",
        user_key=f"u:u{idx}",
        now_ms=2_000,
    )
    return RecordRecipients(records=[record])


def test_paid_messages_count_each_delivery_once_whoever_prepares_or_records_it(client: AppClient, env: Env) -> None:
    with FakeNhn() as nhn:
        setup(
            client,
            env,
            {"smsGateway": "nhn", "paidMessagesDailyLimit": 10, "providers": {"nhn": nhn.config()}},
            sms(purpose="INFORMATION"),
        )
        for i in range(len(USERS)):
            user(client, env, f"u{i}", phone=f"010-5555-000{i}")
        dispatch_id = send(client, env, "sms", 12, USERS)
    runner = BatchRunner(db=client.app.db)
    try:
        # The stalled worker's attempt and its successor's: one delivery row each, counted once.
        ids, _ = _run(runner, _prepare(env, dispatch_id, batch_key="first"))
        again, _ = _run(runner, _prepare(env, dispatch_id, batch_key="second"))
        assert again == ids
        assert _paid(client.app.db, env.id) == {DAY: 3}

        # The gateway refused one message: released from the day it was counted on, once, however
        # often (and on whichever day) its failure is recorded.
        for _ in range(2):
            _run(runner, _failed(env, dispatch_id, 0, ids[0]["sms"]))
        assert _paid(client.app.db, env.id) == {DAY: 2}
    finally:
        runner.shutdown()


def test_paid_messages_at_the_limit_exclude_only_recipients_without_a_delivery(client: AppClient, env: Env) -> None:
    with FakeNhn() as nhn:
        setup(
            client,
            env,
            {"smsGateway": "nhn", "paidMessagesDailyLimit": 3, "providers": {"nhn": nhn.config()}},
            sms(purpose="INFORMATION"),
        )
        dispatch_id = send(client, env, "sms", 12, USERS)
    runner = BatchRunner(db=client.app.db)
    try:
        ids, capped = _run(runner, _prepare(env, dispatch_id, batch_key="first", limit=3))
        assert (len(ids), capped) == (3, set())
        # Taking the item over at the limit: the recipients already have their deliveries.
        ids, capped = _run(runner, _prepare(env, dispatch_id, batch_key="second", limit=3))
        assert (len(ids), capped) == (3, set())
        assert _paid(client.app.db, env.id) == {DAY: 3}
    finally:
        runner.shutdown()
