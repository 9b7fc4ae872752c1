"""Experiment definitions and assignment: errors, stability, and proportions."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from magpie.domain.campaigns import parse_campaign
from magpie.domain.experiments import Control, Experiment, Variant, assign, parse_experiment
from magpie.errors import InvalidCampaign

BASE: dict[str, Any] = {
    "key": 3,
    "name": "Experiment",
    "status": "ACTIVE",
    "purpose": "INFORMATION",
    "message": {"title": "t", "body": "b"},
}


def _variant(name: str, weight: object = 1) -> dict[str, Any]:
    return {"name": name, "weight": weight, "message": {"title": f"title {name}", "body": "b"}}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param({"controlGroup": 51}, "controlGroup must be a percentage from 0 to 50, got 51", id="control>50"),
        pytest.param({"controlGroup": -1}, "controlGroup must be a percentage from 0 to 50, got -1", id="control<0"),
        pytest.param({"controlGroup": "10"}, "controlGroup must be a percentage from 0 to 50, got '10'", id="text"),
        pytest.param({"variants": [_variant("A", 0)]}, "variants[0].weight must be a positive number, got 0", id="w0"),
        pytest.param({"variants": [_variant("A", -2)]}, "variants[0].weight must be a positive number", id="w<0"),
        pytest.param(
            {"variants": [_variant(c) for c in "ABCDEF"]}, "variants: at most 5 variants, got 6", id="six-variants"
        ),
        pytest.param({"variants": []}, "variants must be a non-empty list of {name?, weight, message}", id="empty"),
        pytest.param(
            {"variants": [_variant("A"), _variant("A")]},
            "variants[1].name 'A' is used twice (or is 'control')",
            id="same-name",
        ),
        pytest.param(
            {"variants": [{"weight": 1, "message": {"title": "t"}}]},
            "variants[0].message.body must be a non-empty string",
            id="variant-message",
        ),
        pytest.param(
            {"channel": "sms", "message": {"text": "hi"}, "variants": [{"message": {"title": "t", "body": "b"}}]},
            "variants[0]: unknown message field 'body'",
            id="other-channel-message",
        ),
        pytest.param({"goal": {"window": "1h"}}, "goal.event must be an event key", id="goal-event"),
        pytest.param({"goal": {"event": "buy", "window": "2w"}}, "goal.window must be a duration", id="goal-window"),
        pytest.param({"goal": {"event": "buy", "window": "31d"}}, "goal.window must be more than 0", id="goal-long"),
        pytest.param({"goal": {"event": "buy", "where": {"a": {}}}}, "goal.where.a must be", id="goal-where"),
        pytest.param({"goal": {"event": "buy", "extra": 1}}, "unknown goal fields: extra", id="goal-unknown"),
    ],
)
def test_experiment_bad_input_is_refused_with_a_clear_message(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidCampaign) as raised:
        parse_campaign({**BASE, **fields})
    assert raised.value.message.startswith(message)


def test_experiment_definition_round_trips_through_to_json() -> None:
    raw = {
        **BASE,
        "goal": {"event": "buy", "window": "90m", "where": {"plan": ["a", "b"], "n": 1}, "value": "amount"},
        "controlGroup": 12.5,
        "variants": [_variant("A", 2), _variant("B", 1)],
    }
    campaign = parse_campaign(raw)
    again = parse_campaign(campaign.to_json())
    assert again.experiment == campaign.experiment
    assert again.experiment is not None and again.experiment.goal is not None
    assert again.experiment.goal.window_ms == 90 * 60_000
    assert [v.push_message.title for v in again.variants] == ["title A", "title B"]


def test_experiment_version_changes_with_variants_not_with_goal() -> None:
    one = parse_campaign({**BASE, "variants": [_variant("A"), _variant("B")], "goal": {"event": "x"}})
    goal = parse_campaign({**BASE, "variants": [_variant("A"), _variant("B")], "goal": {"event": "y"}})
    changed = parse_campaign({**BASE, "variants": [_variant("A"), _variant("B", 3)], "goal": {"event": "x"}})
    assert one.experiment and goal.experiment and changed.experiment
    assert one.experiment.version == goal.experiment.version != changed.experiment.version


def _experiment(control: float, weights: list[float], key: int = 11) -> Experiment:
    variants = [{"name": f"v{i}", "weight": w} for i, w in enumerate(weights)]
    return parse_experiment(
        {"controlGroup": control, "variants": variants}, key=key, messages=[{"i": i} for i in range(len(weights))]
    )


@settings(max_examples=200, deadline=None)
@given(
    user=st.text(min_size=1, max_size=40),
    control=st.floats(min_value=0, max_value=50),
    weights=st.lists(st.floats(min_value=0.01, max_value=100), min_size=1, max_size=5),
)
def test_experiment_assignment_is_stable_and_in_range(user: str, control: float, weights: list[float]) -> None:
    experiment = _experiment(control, weights)
    first = assign(experiment=experiment, user_key=f"u:{user}")
    assert all(assign(experiment=experiment, user_key=f"u:{user}") == first for _ in range(3))
    assert isinstance(first, Control) or 0 <= first.index < len(weights)
    if isinstance(first, Variant):
        # The variant draw ignores the control share: a user keeps its variant when the share changes.
        assert assign(experiment=_experiment(0, weights), user_key=f"u:{user}") == first


@settings(max_examples=5, deadline=None)
@given(
    control=st.integers(min_value=0, max_value=50),
    weights=st.lists(st.integers(min_value=1, max_value=10), min_size=1, max_size=5),
    key=st.integers(min_value=1, max_value=2**31 - 1),
)
def test_experiment_proportions_are_within_one_point_over_100000_users(
    control: int, weights: list[int], key: int
) -> None:
    experiment = _experiment(control, [float(w) for w in weights], key=key)
    counts = [0] * (len(weights) + 1)
    n = 100_000
    for i in range(n):
        arm = assign(experiment=experiment, user_key=f"u:user-{i}")
        counts[arm.arm] += 1
    assert abs(counts[0] / n - control / 100) <= 0.01
    total = sum(weights)
    for index, weight in enumerate(weights):
        expected = (1 - control / 100) * weight / total
        assert abs(counts[index + 1] / n - expected) <= 0.01, (index, counts)
