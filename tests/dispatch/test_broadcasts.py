"""Broadcasts end to end on both engines: occurrences planned into dispatches the worker delivers."""

from __future__ import annotations

from typing import Any

from tests.support import AppClient, Env, add_token, apply_campaign, close_dispatcher, drain, inbox, make_dispatcher


def _users(client: AppClient, env: Env, n: int, *, with_token: int) -> list[str]:
    ids = [f"user-{i:04d}" for i in range(n)]
    for i, user_id in enumerate(ids):
        response = client.post(
            "/v1/properties",
            json={"userId": user_id, "operations": {"$set": {"grade": "GOLD" if i % 2 else "SILVER"}}},
            headers=env.headers,
        )
        assert response.status_code == 200, response.text
        if i < with_token:
            add_token(client, env, device_id=f"dev-{i}", token=f"tok-{i}", user_id=user_id)
    return ids


def _scheduler(client: AppClient, **settings: Any) -> Any:
    from magpie.dispatch.scheduler import Scheduler

    ctx = client.app.ctx
    assert ctx is not None
    merged = client.settings.with_(**settings) if settings else client.settings

    async def build() -> Any:
        return Scheduler(ctx.runtime, settings=merged)

    return client.run(build())


def _occurrence(client: AppClient, env: Env, occurrence_id: int) -> dict[str, Any]:
    response = client.get(f"/admin/v1/environments/{env.name}/occurrences/{occurrence_id}", headers=env.admin)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_send_now_reaches_each_reachable_user_once(client: AppClient, env: Env) -> None:
    _users(client, env, 12, with_token=8)
    apply_campaign(client, env)
    reach = client.get(f"/admin/v1/environments/{env.name}/campaigns/7/reach", headers=env.admin).json()
    assert reach == {
        "channel": "push",
        "users": 12,
        "audience": 12,
        "reachable": 8,
        "unreachable": {"NO_PUSH_TOKEN": 4},
    }
    started = client.post(f"/admin/v1/environments/{env.name}/campaigns/7/send-now", headers=env.admin)
    assert started.status_code == 200, started.text
    occurrence_id = started.json()["occurrence"]["id"]
    scheduler = _scheduler(client, broadcast_page_size=3)
    client.run(scheduler.tick())
    planned = _occurrence(client, env, occurrence_id)
    assert planned["occurrence"]["state"] == "sending"
    assert planned["progress"]["planned"] == 8
    assert planned["occurrence"]["unreachable"] == {"NO_PUSH_TOKEN": 4}
    dispatcher = make_dispatcher(client)
    try:
        drain(client, dispatcher)
    finally:
        close_dispatcher(client, dispatcher)
    client.run(scheduler.tick())
    done = _occurrence(client, env, occurrence_id)
    assert done["occurrence"]["state"] == "completed"
    assert done["progress"]["sent"] == 8 and done["progress"]["remaining"] == 0
    tokens = sorted(m["token"] for m in inbox(client, env))
    assert tokens == sorted(f"tok-{i}" for i in range(8))
