"""The environment's per-gateway limit holds for everything it sends through the gateway, on both engines.

An occurrence and trigger sends share one gateway (the sandbox) with a limit of a few messages a
minute, worked by two dispatchers at once on an injected clock: no minute hands the gateway more
than the limit, everyone is sent in the end, no one twice, and nobody deferred counts as excluded.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from magpie.store.deliveries import Planned, PrepareRecipients
from magpie.store.writer import BatchRunner
from tests.support import (
    AppClient,
    Env,
    FakeClock,
    add_token,
    apply_campaign,
    close_dispatcher,
    dispatch,
    make_dispatcher,
    trigger,
)

LIMIT = 4


def _limit(client: AppClient, env: Env, limit: int = LIMIT) -> None:
    limited = {"settings": {"gatewayRatePerMinute": {"sandbox": limit}}}
    assert client.put(f"/admin/v1/environments/{env.name}", json=limited, headers=env.admin).status_code == 200


def _people(client: AppClient, env: Env, prefix: str, n: int) -> list[str]:
    ids = [f"{prefix}-{i}" for i in range(n)]
    for user_id in ids:
        response = client.post(
            "/v1/properties", json={"userId": user_id, "operations": {"$set": {"n": 1}}}, headers=env.headers
        )
        assert response.status_code == 200, response.text
        add_token(client, env, device_id=f"dev-{user_id}", token=f"tok-{user_id}", user_id=user_id)
    return ids


def _sent(client: AppClient, env: Env) -> list[tuple[str, int]]:
    db = client.app.db
    with db.transaction(write=False) as conn:
        rows = db.fetchall(conn, "SELECT token, created_at FROM inbox WHERE env_id = ?", (env.id,))
    return [(str(token), int(at)) for token, at in rows]


def test_the_gateway_limit_holds_for_an_occurrence_and_triggers_together(client: AppClient, env: Env) -> None:
    from magpie.dispatch.scheduler import Scheduler

    _limit(client, env)
    audience = _people(client, env, "aud", 10)
    named = _people(client, env, "trg", 6)
    # The broadcast goes to everyone (the named users too); the trigger campaign is sent by name.
    apply_campaign(client, env, schedule={"type": "daily", "time": "10:00"})
    apply_campaign(client, env, key=8)
    ctx = client.app.ctx
    assert ctx is not None

    async def build() -> Any:
        return Scheduler(ctx.runtime, settings=client.settings, clock=clock)

    clock = FakeClock(time.time())
    scheduler = client.run(build())
    started = client.post(f"/admin/v1/environments/{env.name}/campaigns/7/send-now", headers=env.admin)
    assert started.status_code == 200, started.text
    occurrence_id = started.json()["occurrence"]["id"]
    clock.now = time.time()
    triggered = [
        trigger(client, env, [{"userId": u} for u in named[:3]], key=8),
        trigger(client, env, [{"userId": u} for u in named[3:]], key=8),
    ]
    first, second = make_dispatcher(client, clock=clock), make_dispatcher(client, clock=clock)

    async def both() -> None:
        await asyncio.gather(first.run_until_idle(), second.run_until_idle())

    everyone = audience + named + named
    try:
        for _ in range(90):
            client.run(scheduler.tick())
            client.run(both())
            if len(_sent(client, env)) >= len(everyone):
                break
            clock.advance(10)
        client.run(both())
    finally:
        close_dispatcher(client, first)
        close_dispatcher(client, second)
    client.run(scheduler.tick())

    sent = _sent(client, env)
    per_minute = Counter(at // 60_000 for _, at in sent)
    assert max(per_minute.values()) <= LIMIT, per_minute
    # 22 messages at four a minute: at least six minutes, and the limit was reached.
    assert len(per_minute) >= 6 and LIMIT in per_minute.values()
    tokens = sorted(token for token, _ in sent)
    assert tokens == sorted(f"tok-{u}" for u in everyone)  # everyone, no one twice in a dispatch
    progress = client.get(f"/admin/v1/environments/{env.name}/occurrences/{occurrence_id}", headers=env.admin).json()
    assert progress["occurrence"]["state"] == "completed"
    assert (progress["progress"]["sent"], progress["progress"]["excluded"], progress["progress"]["remaining"]) == (
        16,
        0,
        0,
    )
    for dispatch_id in triggered:
        view = dispatch(client, env, dispatch_id)
        assert view["status"] == "COMPLETED"
        assert [r["outcome"] for r in view["recipients"]] == ["SENT"] * 3


def test_recipients_past_the_minute_budget_are_deferred_not_excluded(client: AppClient, env: Env) -> None:
    _limit(client, env, 2)
    named = _people(client, env, "trg", 3)
    apply_campaign(client, env, purpose="MARKETING")
    dispatch_id = trigger(client, env, [{"userId": u} for u in named])

    def prepare(now_ms: int) -> PrepareRecipients:
        planned = [
            Planned(
                idx=i,
                user_key=f"u:{u}",
                tokens=[(f"dev-{u}", f"tok-{u}", "ANDROID")],
                marketing=True,
                provider_names={f"tok-{u}": "sandbox"},
            )
            for i, u in enumerate(named)
        ]
        return PrepareRecipients(
            env_id=env.id,
            dispatch_id=dispatch_id,
            campaign_key=7,
            users=[(u, None) for u in named],
            excluded={},
            planned=planned,
            caps=[{"limit": 5, "windowHours": 24}],
            tags=[],
            now_ms=now_ms,
            gateway="sandbox",
            gateway_limit=2,
        )

    db = client.app.db
    runner = BatchRunner(db=db)
    minute = 29_000_000 * 60_000
    try:
        job = prepare(minute + 5_000)
        [((ids, capped), failed)] = runner.run_batch([job])
        assert not failed
        assert (sorted(ids), job.deferred, capped) == ([0, 1], [2], {2})
        # The same attempt again (a worker that took the item over): its deliveries were counted once.
        again = prepare(minute + 6_000)
        [((ids, _), _)] = runner.run_batch([again])
        assert sorted(ids) == [0, 1] and again.deferred == [2]
        with db.transaction(write=False) as conn:
            counted = db.fetchall(conn, "SELECT minute, count FROM gateway_sends WHERE env_id = ?", (env.id,))
            reserved = db.fetchall(conn, "SELECT user_key FROM marketing_sends WHERE dispatch_id = ?", (dispatch_id,))
            outcomes = db.fetchall(conn, "SELECT idx, outcome FROM recipients WHERE dispatch_id = ?", (dispatch_id,))
        assert [(int(m), int(c)) for m, c in counted] == [(minute // 60_000, 2)]
        # The deferred recipient holds no frequency-cap reservation and has no outcome yet.
        assert sorted(str(k) for (k,) in reserved) == [f"u:{u}" for u in named[:2]]
        assert sorted((int(i), o) for i, o in outcomes) == [(0, None), (1, None), (2, None)]
        # The next minute has room for it; an old minute's row goes when a new one begins.
        later = prepare(minute + 61_000)
        [((ids, capped), _)] = runner.run_batch([later])
        assert sorted(ids) == [0, 1, 2] and later.deferred == [] and capped == set()
        with db.transaction(write=False) as conn:
            counted = db.fetchall(conn, "SELECT minute, count FROM gateway_sends WHERE env_id = ?", (env.id,))
        assert sorted((int(m), int(c)) for m, c in counted) == [(minute // 60_000, 2), (minute // 60_000 + 1, 1)]
    finally:
        runner.shutdown()
