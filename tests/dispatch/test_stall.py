"""No work item can stall a dispatch: a failure retrying cannot fix ends its recipients FAILED, visibly."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.support import (
    AppClient,
    Env,
    FakeClock,
    apply_campaign,
    close_dispatcher,
    dispatch,
    drain,
    make_dispatcher,
    trigger,
)


def _break(client: AppClient, sql: str, params: tuple[Any, ...]) -> None:
    with client.app.db.transaction() as conn:
        client.app.db.execute(conn, sql, params)


def _run_rounds(client: AppClient, env: Env, rounds: int) -> Any:
    # The clock runs minutes ahead: work left by earlier tests on this store would fall due and be counted here.
    _break(client, "DELETE FROM work_items WHERE env_id <> ?", (env.id,))
    clock = FakeClock(time.time())
    dispatcher = make_dispatcher(client, clock=clock, max_item_attempts=3)
    try:
        for _ in range(rounds):
            drain(client, dispatcher)
            clock.advance(120)  # past any retry backoff and any lease
    finally:
        close_dispatcher(client, dispatcher)
    return dispatcher


def _metric(client: AppClient, result: str) -> float:
    value = client.app.metrics.work_item_failures.labels(result)._value.get()
    return float(value)


def test_item_failing_every_time_ends_its_recipients_failed(client: AppClient, env: Env, caplog: Any) -> None:
    apply_campaign(client, env)
    dispatch_id = trigger(client, env, [{"userId": "good-user"}, {"userId": "other"}])
    # A campaign definition the worker cannot read: every attempt at the item fails the same way.
    _break(client, "UPDATE campaigns SET definition = ? WHERE env_id = ?", ('{"broken', env.id))
    with caplog.at_level("ERROR", logger="magpie.worker"):
        _run_rounds(client, env, 5)
    view = dispatch(client, env, dispatch_id)
    assert [(r["outcome"], r["reason"]) for r in view["recipients"]] == [("FAILED", "PROCESSING_ERROR")] * 2
    assert view["status"] == "COMPLETED" and view["counts"]["PENDING"] == 0 and view["counts"]["FAILED"] == 2
    messages = [r.getMessage() for r in caplog.records]
    assert any("attempt 3 of 3" in m and "giving up" in m for m in messages), messages
    assert _metric(client, "retried") == 2 and _metric(client, "given_up") == 1
    stats = client.get("/v1/push-message/campaigns/7/stats", headers=env.headers).json()
    assert stats["failed"] == 2 and stats["requested"] == 2, stats


def test_item_failing_once_is_retried_and_delivered(client: AppClient, env: Env) -> None:
    apply_campaign(client, env)
    dispatch_id = trigger(client, env, [{"userId": "nobody"}])
    with client.app.db.transaction(write=False) as conn:
        good = client.app.db.fetchone(conn, "SELECT definition FROM campaigns WHERE env_id = ?", (env.id,))
    assert good is not None
    _break(client, "UPDATE campaigns SET definition = ? WHERE env_id = ?", ('{"broken', env.id))
    clock = FakeClock(time.time())
    dispatcher = make_dispatcher(client, clock=clock, max_item_attempts=3)
    try:
        drain(client, dispatcher)
        assert dispatch(client, env, dispatch_id)["counts"]["PENDING"] == 1
        _break(client, "UPDATE campaigns SET definition = ? WHERE env_id = ?", (good[0], env.id))
        clock.advance(120)
        drain(client, dispatcher)
    finally:
        close_dispatcher(client, dispatcher)
    view = dispatch(client, env, dispatch_id)
    assert [(r["outcome"], r["reason"]) for r in view["recipients"]] == [("EXCLUDED", "UNKNOWN_USER")]


@pytest.mark.parametrize("backend", [pytest.param("pg", marks=pytest.mark.pg)])
def test_dispatch_holding_nul_accepted_earlier_cannot_stall(client: AppClient, env: Env) -> None:
    # A dispatch accepted before identifiers were checked: PostgreSQL refuses the NUL when the worker
    # records the recipients, on every attempt.
    apply_campaign(client, env)
    dispatch_id = trigger(client, env, [{"userId": "good-user"}, {"userId": "bad"}])
    _break(
        client,
        "UPDATE dispatches SET users = ? WHERE id = ?",
        ('[{"userId":"good-user"},{"userId":"bad\\u0000"}]', dispatch_id),
    )
    _run_rounds(client, env, 5)
    view = dispatch(client, env, dispatch_id)
    assert [r["outcome"] for r in view["recipients"]] == ["FAILED", "FAILED"]
    assert {r["reason"] for r in view["recipients"]} == {"PROCESSING_ERROR"}
