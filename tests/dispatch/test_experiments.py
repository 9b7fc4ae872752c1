"""Experiments through the real app and worker: control group, variants, recorded arms, conversions."""

from __future__ import annotations

from typing import Any

from magpie.domain.campaigns import parse_campaign
from magpie.domain.experiments import Control, Variant
from tests.support import AppClient, Env, add_token, apply_campaign, dispatch, inbox, run_dispatcher, trigger

VARIANTS = [
    {"name": "A", "weight": 1, "message": {"title": "A for {{ user.id }}", "body": "a"}},
    {"name": "B", "weight": 1, "message": {"title": "B for {{ user.id }}", "body": "b"}},
]
EXPERIMENT: dict[str, Any] = {
    "goal": {"event": "purchase", "window": "1h", "value": "amount", "where": {"currency": "KRW"}},
    "controlGroup": 30,
    "variants": VARIANTS,
}


def _rows(client: AppClient, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    with client.app.db.transaction(write=False) as conn:
        return client.app.db.fetchall(conn, sql, params)


def _track(client: AppClient, env: Env, user_id: str, *, at: int, insert_id: str, **properties: Any) -> None:
    body = {
        "event": {"key": "purchase", "properties": properties},
        "user": {"userId": user_id},
        "timestamp": at,
        "insertId": insert_id,
    }
    response = client.post("/v1/track", json=body, headers=env.headers)
    assert response.status_code == 200, response.text


def _send(client: AppClient, env: Env, users: list[str]) -> tuple[str, dict[str, Any]]:
    for user in users:
        add_token(client, env, device_id=f"dev-{user}", token=f"tok-{user}", user_id=user)
    definition = apply_campaign(client, env, **EXPERIMENT)
    dispatch_id = trigger(client, env, [{"userId": u} for u in users])
    run_dispatcher(client)
    return dispatch_id, definition


def test_experiment_control_is_excluded_and_variants_render_their_message(client: AppClient, env: Env) -> None:
    users = [f"user{i}" for i in range(40)]
    dispatch_id, definition = _send(client, env, users)
    campaign = parse_campaign(definition)
    expected = {u: campaign.assign(user_key=f"u:{u}") for u in users}
    assert {type(a) for a in expected.values()} == {Control, Variant}, "the sample must hold both kinds"
    view = dispatch(client, env, dispatch_id)
    by_user = {r["userId"]: (r["outcome"], r["reason"]) for r in view["recipients"]}
    for user, arm in expected.items():
        if isinstance(arm, Control):
            assert by_user[user] == ("EXCLUDED", "CONTROL_GROUP")
        else:
            assert by_user[user] == ("SENT", None)
    titles = {m["message"]["title"] for m in inbox(client, env)}
    wanted = {f"{'AB'[a.index]} for {u}" for u, a in expected.items() if isinstance(a, Variant)}
    assert titles == wanted
    recorded = dict(_rows(client, "SELECT user_id, variant FROM recipients WHERE dispatch_id = ?", (dispatch_id,)))
    assert recorded == {u: (0 if isinstance(a, Control) else a.index + 1) for u, a in expected.items()}
    # Held out users are not counted against caps: no marketing reservation, no delivery row.
    held = [u for u, a in expected.items() if isinstance(a, Control)]
    assert not _rows(
        client,
        f"SELECT 1 FROM deliveries WHERE dispatch_id = ? AND user_key IN ({','.join('?' * len(held))})",
        (dispatch_id, *[f"u:{u}" for u in held]),
    )


def test_experiment_assignment_is_the_same_on_every_trigger(client: AppClient, env: Env) -> None:
    users = [f"user{i}" for i in range(20)]
    first, _ = _send(client, env, users)
    second = trigger(client, env, [{"userId": u} for u in reversed(users)])
    run_dispatcher(client)
    one = dict(_rows(client, "SELECT user_id, variant FROM recipients WHERE dispatch_id = ?", (first,)))
    two = dict(_rows(client, "SELECT user_id, variant FROM recipients WHERE dispatch_id = ?", (second,)))
    assert one == two


def test_experiment_conversion_is_attributed_once_within_window_and_matching(client: AppClient, env: Env) -> None:
    users = [f"user{i}" for i in range(30)]
    dispatch_id, definition = _send(client, env, users)
    campaign = parse_campaign(definition)
    (sent_at,) = _rows(client, "SELECT MIN(exposed_at) FROM exposures WHERE dispatch_id = ?", (dispatch_id,))[0]
    control = next(u for u in users if isinstance(campaign.assign(user_key=f"u:{u}"), Control))
    variant = next(u for u in users if isinstance(campaign.assign(user_key=f"u:{u}"), Variant))
    other = next(u for u in users if u not in (control, variant))
    _track(client, env, variant, at=sent_at + 1000, insert_id="e1", currency="KRW", amount=1500)
    _track(client, env, variant, at=sent_at + 2000, insert_id="e2", currency="KRW", amount=99)  # second: ignored
    _track(client, env, control, at=sent_at + 5000, insert_id="e3", currency="KRW", amount=700)
    _track(client, env, other, at=sent_at + 1000, insert_id="e4", currency="USD", amount=5)  # condition fails
    _track(client, env, other, at=sent_at + 3_600_000 + 1, insert_id="e5", currency="KRW")  # past the window
    _track(client, env, other, at=sent_at - 1, insert_id="e6", currency="KRW")  # before the send
    rows = _rows(
        client,
        "SELECT r.user_id, c.arm, c.insert_id, c.value FROM conversions c "
        "JOIN recipients r ON r.dispatch_id = c.dispatch_id AND r.idx = c.idx WHERE c.dispatch_id = ? ORDER BY 3",
        (dispatch_id,),
    )
    variant_arm = campaign.assign(user_key=f"u:{variant}")
    assert isinstance(variant_arm, Variant)
    assert rows == [(variant, variant_arm.index + 1, "e1", 1500.0), (control, 0, "e3", 700.0)]
