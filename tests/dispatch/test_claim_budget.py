"""A worker claims work by recipients as well as by items: broadcasts hand it dispatches of many users,
and it holds only as many of them as ``MAGPIE_WORKER_RECIPIENTS`` allows."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from magpie.store.deliveries import ClaimWork
from tests.dispatch.test_broadcasts import _scheduler, _users
from tests.support import AppClient, Env, apply_campaign, close_dispatcher, make_dispatcher


def _plan(client: AppClient, env: Env, users: int, *, page: int) -> None:
    _users(client, env, users, with_token=users)
    apply_campaign(client, env)
    sent = client.post(f"/admin/v1/environments/{env.name}/campaigns/7/send-now", headers=env.admin)
    assert sent.status_code == 200, sent.text
    client.run(_scheduler(client, broadcast_page_size=page).tick())


def _claim(client: AppClient, **fields: Any) -> list[Any]:
    ctx = client.app.ctx
    assert ctx is not None
    job = ClaimWork(owner="test", now_ms=int(time.time() * 1000), lease_ms=60_000, **fields)

    async def submit() -> list[Any]:
        items: list[Any] = await ctx.runtime.writer.submit(job)
        return items

    return client.run(submit())


def _clear_other_work(client: AppClient, env: Env) -> None:
    """Earlier tests on the same store may have left work: only this environment's counts here."""
    db = client.app.db
    with db.transaction() as conn:
        db.execute(conn, "UPDATE work_items SET done = 1 WHERE env_id <> ?", (env.id,))


async def _inboxed(client: AppClient, env: Env) -> int:
    """The sandbox inbox's size, read on the app's loop (the HTTP client would wait on that loop)."""
    ctx = client.app.ctx
    assert ctx is not None
    db = ctx.runtime.db
    count: int = await ctx.runtime.reader.read(
        lambda conn: db.scalar(conn, "SELECT COUNT(*) FROM inbox WHERE env_id = ?", (env.id,))
    )
    return count


def test_a_claim_takes_items_whose_recipients_fit_the_budget(client: AppClient, env: Env) -> None:
    _plan(client, env, 35, page=10)
    _clear_other_work(client, env)
    first = _claim(client, limit=64, max_recipients=25)
    # Oldest first: 10 + 10 fit in 25, a third 10 would not.
    assert [item.size for item in first] == [10, 10]
    # The first item is taken whatever its size, so that no item waits forever.
    assert [item.size for item in _claim(client, limit=64, max_recipients=3)] == [10]
    # Without a budget, the item limit alone.
    assert [item.size for item in _claim(client, limit=64)] == [5]
    assert _claim(client, limit=64) == []


def test_a_worker_holds_no_more_recipients_than_its_budget(client: AppClient, env: Env) -> None:
    _plan(client, env, 60, page=10)
    _clear_other_work(client, env)
    peaks = []
    for budget in (20, 4000):
        dispatcher = make_dispatcher(client, worker_recipients=budget, worker_concurrency=64)
        active = [0, 0]
        real = dispatcher.process

        async def counted(item: Any, real: Any = real, active: list[int] = active) -> None:
            active[0] += 1
            active[1] = max(active[1], active[0])
            try:
                await asyncio.sleep(0.02)  # long enough for the loop to claim beside it if it may
                await real(item)
            finally:
                active[0] -= 1

        dispatcher.process = counted

        async def run(dispatcher: Any = dispatcher) -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(dispatcher.run(stop))
            deadline = time.monotonic() + 60
            want = 60 * len(peaks) + 60
            while await _inboxed(client, env) < want and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            stop.set()
            await task

        try:
            client.run(run())
        finally:
            close_dispatcher(client, dispatcher)
        peaks.append(active[1])
        if budget == 20:
            assert client.run(_inboxed(client, env)) == 60
            # Plan again for the run without a budget to speak of.
            sent = client.post(f"/admin/v1/environments/{env.name}/campaigns/7/send-now", headers=env.admin)
            assert sent.status_code == 200, sent.text
            client.run(_scheduler(client, broadcast_page_size=10).tick())
    assert client.run(_inboxed(client, env)) == 120
    # Two items of ten at once under a budget of 20; all six at once under the default.
    assert peaks == [2, 6]
