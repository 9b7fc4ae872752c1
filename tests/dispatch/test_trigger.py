"""Trigger send: the seed example verbatim, every error code, idempotency, the outbox."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from magpie.domain.campaigns import DEMO_CAMPAIGN
from magpie.store import campaigns
from tests.support import (
    SEED_TRIGGER,
    AppClient,
    Env,
    add_token,
    apply_campaign,
    dispatch,
    inbox,
    make_env,
    outcomes,
    run_dispatcher,
    trigger,
)


def _error(response: Any, status: int, code: str, message: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code
    if message is not None:
        assert body["message"] == message


def _rows(client: AppClient, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    with client.app.db.transaction(write=False) as conn:
        return client.app.db.fetchall(conn, sql, params)


def test_trigger_seed_example_against_demo_campaign_is_accepted(client: AppClient, env: Env) -> None:
    campaigns.apply_campaign(client.app.db, env_id=env.id, raw=DEMO_CAMPAIGN)
    response = client.post("/v1/push-message/trigger/send", content=SEED_TRIGGER.encode(), headers=env.headers)
    assert response.status_code == 200
    body = response.json()
    assert body["message"] == "success"
    assert str(uuid.UUID(body["dispatchId"])) == body["dispatchId"]
    assert set(body) == {"dispatchId", "message"}


def test_trigger_acceptance_writes_dispatch_and_work_item_together(client: AppClient, env: Env) -> None:
    apply_campaign(client, env)
    dispatch_id = trigger(client, env, [{"userId": "u1"}, {"deviceId": "d1"}])
    (row,) = _rows(client, "SELECT campaign_key, status, requested FROM dispatches WHERE id = ?", (dispatch_id,))
    assert row == (7, "ACCEPTED", 2)
    items = _rows(client, "SELECT done, available_at > 0 FROM work_items WHERE dispatch_id = ?", (dispatch_id,))
    assert [tuple(bool(v) for v in i) for i in items] == [(False, True)]


def test_trigger_51_users_is_exceed_user_max_length(client: AppClient, env: Env) -> None:
    apply_campaign(client, env)
    users = [{"userId": f"u{i}"} for i in range(51)]
    response = client.post(
        "/v1/push-message/trigger/send", json={"campaignKey": 7, "users": users}, headers=env.headers
    )
    _error(response, 400, "EXCEED_USER_MAX_LENGTH", "Max input length exceeded")


def test_trigger_50_users_is_accepted(client: AppClient, env: Env) -> None:
    apply_campaign(client, env)
    trigger(client, env, [{"userId": f"u{i}"} for i in range(50)])


@pytest.mark.parametrize(
    ("status", "key"),
    [
        pytest.param("ACTIVE", 8, id="no-such-key"),
        pytest.param("DRAFT", 7, id="draft"),
        pytest.param("PAUSED", 7, id="paused"),
    ],
)
def test_trigger_without_active_campaign_is_campaign_not_found(
    client: AppClient, env: Env, status: str, key: int
) -> None:
    apply_campaign(client, env, status=status)
    response = client.post(
        "/v1/push-message/trigger/send",
        json={"campaignKey": key, "users": [{"userId": "u"}]},
        headers=env.headers,
    )
    _error(response, 400, "CAMPAIGN_NOT_FOUND", "Could not find push message campaign with the given key")
    assert _rows(client, "SELECT id FROM dispatches WHERE env_id = ?", (env.id,)) == []


def test_trigger_campaign_of_another_environment_is_campaign_not_found(client: AppClient, env: Env) -> None:
    other = make_env(client.app.db)
    apply_campaign(client, other)
    response = client.post(
        "/v1/push-message/trigger/send",
        json={"campaignKey": 7, "users": [{"userId": "u"}]},
        headers=env.headers,
    )
    _error(response, 400, "CAMPAIGN_NOT_FOUND")


@pytest.mark.parametrize(
    "user",
    [
        pytest.param({}, id="empty"),
        pytest.param({"userId": None, "deviceId": None}, id="nulls"),
        pytest.param({"userId": "", "apiProperties": {"a": "1"}}, id="blank"),
    ],
)
def test_trigger_user_without_identifier_is_empty_identifier(client: AppClient, env: Env, user: dict[str, Any]) -> None:
    apply_campaign(client, env)
    response = client.post(
        "/v1/push-message/trigger/send",
        json={"campaignKey": 7, "users": [{"userId": "ok"}, user]},
        headers=env.headers,
    )
    _error(response, 400, "EMPTY_IDENTIFIER", "At least one identifier should be given")


def test_trigger_auth_errors(client: AppClient, env: Env) -> None:
    body = {"campaignKey": 7, "users": [{"userId": "u"}]}
    _error(
        client.post("/v1/push-message/trigger/send", json=body),
        401,
        "API_KEY_NOT_FOUND",
        "The API key must be included in the header",
    )
    _error(
        client.post("/v1/push-message/trigger/send", json=body, headers={"X-HACKLE-API-KEY": "nope"}),
        401,
        "INVALID_API_KEY",
        "Invalid API key",
    )


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"campaignKey": "7", "users": [{"userId": "u"}]}, id="key-string"),
        pytest.param({"campaignKey": True, "users": [{"userId": "u"}]}, id="key-bool"),
        pytest.param({"users": [{"userId": "u"}]}, id="key-missing"),
        pytest.param({"campaignKey": 7, "users": []}, id="no-users"),
        pytest.param({"campaignKey": 7, "users": {"userId": "u"}}, id="users-object"),
        pytest.param({"campaignKey": 7, "users": ["u"]}, id="user-string"),
        pytest.param(
            {"campaignKey": 7, "users": [{"userId": "u", "apiProperties": {"a": {"b": 1}}}]},
            id="nested-api-prop",
        ),
        pytest.param({"campaignKey": 7, "users": [{"userId": "u", "apiProperties": {"a": [1]}}]}, id="array-api-prop"),
        pytest.param({"campaignKey": 7, "users": [{"userId": "u", "apiProperties": "x"}]}, id="api-props-string"),
        pytest.param({"campaignKey": 7, "users": [{"userId": 5}]}, id="user-id-number"),
    ],
)
def test_trigger_malformed_body_is_invalid_request(client: AppClient, env: Env, body: dict[str, Any]) -> None:
    apply_campaign(client, env)
    _error(client.post("/v1/push-message/trigger/send", json=body, headers=env.headers), 400, "INVALID_REQUEST")
    assert _rows(client, "SELECT id FROM dispatches WHERE env_id = ?", (env.id,)) == []


def test_trigger_api_properties_of_each_type_are_rendered(client: AppClient, env: Env) -> None:
    apply_campaign(
        client,
        env,
        message={
            "title": "{{ api_properties.s }}",
            "body": "{{ api_properties.n }} {{ api_properties.i }} {{ api_properties.b }}",
        },
    )
    add_token(client, env, device_id="d1", user_id="u", token="tok-1")
    dispatch_id = trigger(client, env, [{"userId": "u", "apiProperties": {"s": "x", "n": 1.5, "i": 2, "b": False}}])
    run_dispatcher(client)
    assert outcomes(dispatch(client, env, dispatch_id)) == [("SENT", None)]
    ((title, body),) = [(m["message"]["title"], m["message"]["body"]) for m in inbox(client, env)]
    assert (title, body) == ("x", "1.5 2 false")


def test_trigger_idempotency_key_returns_original_response(client: AppClient, env: Env) -> None:
    apply_campaign(client, env)
    headers = {**env.headers, "Idempotency-Key": "order-42"}
    first = trigger(client, env, [{"userId": "u1"}], headers=headers)
    again = trigger(client, env, [{"userId": "u1"}], headers=headers)
    different = trigger(client, env, [{"userId": "u1"}], headers={**env.headers, "Idempotency-Key": "order-43"})
    assert first == again != different
    assert len(_rows(client, "SELECT id FROM dispatches WHERE env_id = ?", (env.id,))) == 2
    assert len(_rows(client, "SELECT id FROM work_items WHERE env_id = ?", (env.id,))) == 2


def test_trigger_idempotency_key_belongs_to_one_environment(client: AppClient, env: Env) -> None:
    other = make_env(client.app.db)
    for each in (env, other):
        apply_campaign(client, each)
    first = trigger(client, env, [{"userId": "u1"}], headers={**env.headers, "Idempotency-Key": "order-42"})
    second = trigger(client, other, [{"userId": "u1"}], headers={**other.headers, "Idempotency-Key": "order-42"})
    assert first != second
    assert _rows(client, "SELECT id FROM dispatches WHERE env_id = ?", (env.id,)) == [(first,)]
    assert _rows(client, "SELECT id FROM dispatches WHERE env_id = ?", (other.id,)) == [(second,)]
    assert dispatch(client, other, second)["dispatchId"] == second


def test_trigger_idempotency_key_concurrent_repeats_make_one_dispatch(client: AppClient, env: Env) -> None:
    apply_campaign(client, env)
    headers = {**env.headers, "Idempotency-Key": "same"}
    body = {"campaignKey": 7, "users": [{"userId": "u1"}]}
    responses = client.gather([("POST", "/v1/push-message/trigger/send", {"json": body, "headers": headers})] * 20)
    assert {r.status_code for r in responses} == {200}
    assert len({r.json()["dispatchId"] for r in responses}) == 1


def test_trigger_dispatch_of_other_environment_is_not_found(client: AppClient, env: Env) -> None:
    apply_campaign(client, env)
    dispatch_id = trigger(client, env, [{"userId": "u1"}])
    other = make_env(client.app.db)
    response = client.get(f"/v1/push-message/dispatches/{dispatch_id}", headers=other.headers)
    _error(response, 404, "NOT_FOUND")
