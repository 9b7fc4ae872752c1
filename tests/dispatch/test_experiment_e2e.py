"""End to end: 10,000 users, two variants and a 10% control group, conversions at known rates per arm.

Everything goes through the real app and worker (sandbox provider): tokens and conversions arrive as
Hackle SDK event batches, sends as triggers; the report must find the generated truth.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tests.dispatch.test_experiments import _report, _rows
from tests.sdk.batches import send, track_event
from tests.support import AppClient, Env, apply_campaign, run_dispatcher, trigger

USERS = 10_000
TRUE_RATES = {0: 0.05, 1: 0.08, 2: 0.12}  # control, variant A, variant B
EXPERIMENT: dict[str, Any] = {
    "goal": {"event": "purchase", "window": "24h", "value": "amount"},
    "controlGroup": 10,
    "variants": [
        {"name": "A", "weight": 1, "message": {"title": "A", "body": "a"}},
        {"name": "B", "weight": 1, "message": {"title": "B {{ user.id }}", "body": "b"}},
    ],
}


def _inside(value: float, interval: list[float]) -> bool:
    return interval[0] <= value <= interval[1]


def test_experiment_end_to_end_finds_the_generated_truth(client: AppClient, env: Env) -> None:
    users = [f"customer-{i:05d}" for i in range(USERS)]
    for start in range(0, USERS, 500):
        tokens = [
            track_event(
                "$push_token",
                user_id=user,
                device_id=f"device-{user}",
                properties={"provider_type": "FCM", "token": f"token-{user}"},
            )
            for user in users[start : start + 500]
        ]
        send(client, env, *tokens)
    apply_campaign(client, env, **EXPERIMENT)
    for start in range(0, USERS, 50):
        trigger(client, env, [{"userId": u} for u in users[start : start + 50]])
    run_dispatcher(client)
    arms = dict(_rows(client, "SELECT user_id, variant FROM recipients WHERE env_id = ?", (env.id,)))
    assert len(arms) == USERS and set(arms.values()) == {0, 1, 2}
    (last_exposed,) = _rows(client, "SELECT MAX(exposed_at) FROM exposures WHERE env_id = ?", (env.id,))[0]
    rng = np.random.default_rng(2023)
    converted: dict[int, int] = dict.fromkeys(TRUE_RATES, 0)
    revenue: dict[int, float] = dict.fromkeys(TRUE_RATES, 0.0)
    events = []
    for user in users:
        arm = arms[user]
        if rng.random() < TRUE_RATES[arm]:
            amount = int(rng.integers(1_000, 50_000))
            converted[arm] += 1
            revenue[arm] += amount
            events.append(
                track_event("purchase", user_id=user, properties={"amount": amount}, timestamp=last_exposed + 60_000)
            )
            # A second purchase in the window changes nothing: one conversion per recipient.
            events.append(
                track_event("purchase", user_id=user, properties={"amount": 1}, timestamp=last_exposed + 120_000)
            )
    for start in range(0, len(events), 500):
        send(client, env, *events[start : start + 500])
    report = _report(client, env)
    (version,) = report["versions"]
    by_arm = {a["arm"]: a for a in version["arms"]}
    for number, rate in TRUE_RATES.items():
        arm = by_arm[number]
        assert arm["exposed"] == sum(1 for a in arms.values() if a == number)
        assert arm["conversions"] == converted[number]
        assert arm["revenue"] == revenue[number]
        assert _inside(rate, arm["interval"]), (number, arm["interval"])
    assert abs(by_arm[0]["exposed"] / USERS - 0.10) <= 0.01
    for number in (1, 2):
        uplift = by_arm[number]["vsControl"]
        truth = TRUE_RATES[number] - TRUE_RATES[0]
        assert _inside(truth, uplift["interval"]) and _inside(truth, uplift["alwaysValid"]["interval"])
    # Seven points over about 1,000 held-out users is clear even to the always-valid test.
    assert by_arm[2]["vsControl"]["verdict"] == "better"
    assert by_arm[2]["vsFirst"]["verdict"] == "better"
