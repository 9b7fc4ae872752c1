"""Every error path of the profile endpoints: the right status and code, and nothing stored."""

from __future__ import annotations

from typing import Any

import pytest

from magpie.store import accounts
from tests.support import AppClient, Env

ENDPOINTS = [
    pytest.param("POST", "/v1/properties", {"userId": "u1", "operations": {"$set": {"a": 1}}}, id="properties"),
    pytest.param("POST", "/v1/properties/phone-numbers", {"userId": "u1", "phoneNumber": "+821012345678"}, id="phone"),
    pytest.param(
        "POST",
        "/v1/push-subscriptions",
        {"userId": "u1", "marketingSubscriptionStatus": "SUBSCRIBED"},
        id="push",
    ),
    pytest.param(
        "POST",
        "/v1/kakao-subscriptions",
        {"userId": "u1", "marketingSubscriptionStatus": "SUBSCRIBED"},
        id="kakao",
    ),
    pytest.param(
        "POST",
        "/v1/sms-subscriptions",
        {"userId": "u1", "marketingSubscriptionStatus": "SUBSCRIBED"},
        id="sms",
    ),
]


def _assert_error(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code
    assert isinstance(body["message"], str) and body["message"]
    assert set(body) == {"code", "message"}


def _assert_nothing_stored(client: AppClient, env: Env) -> None:
    with client.app.db.transaction(write=False) as conn:
        rows = client.app.db.fetchall(conn, "SELECT kind, ident FROM profiles WHERE env_id = ?", (env.id,))
    assert rows == []


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_auth_missing_header_is_api_key_not_found(
    client: AppClient, env: Env, method: str, path: str, body: Any
) -> None:
    response = client.request(method, path, json=body)
    _assert_error(response, 401, "API_KEY_NOT_FOUND")
    assert response.json()["message"] == "The API key must be included in the header"
    _assert_nothing_stored(client, env)


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_auth_unknown_key_is_invalid_api_key(client: AppClient, env: Env, method: str, path: str, body: Any) -> None:
    response = client.request(method, path, json=body, headers={"X-HACKLE-API-KEY": "mgp_not-a-key"})
    _assert_error(response, 401, "INVALID_API_KEY")
    assert response.json()["message"] == "Invalid API key"
    _assert_nothing_stored(client, env)


def test_auth_delete_phone_without_key_is_api_key_not_found(client: AppClient, env: Env) -> None:
    _assert_error(client.delete("/v1/properties/phone-numbers?userId=u1"), 401, "API_KEY_NOT_FOUND")


def test_auth_revoked_key_is_rejected_at_once(client: AppClient, env: Env) -> None:
    body = {"userId": "u1", "operations": {"$set": {"a": 1}}}
    assert client.post("/v1/properties", json=body, headers=env.headers).status_code == 200
    # Revoked behind the server's back (as the CLI in another process does): the cached key must not survive.
    accounts.revoke_api_key(client.app.db, key_or_prefix=env.key)
    response = client.post(
        "/v1/properties", json={"userId": "u2", "operations": {"$set": {"a": 1}}}, headers=env.headers
    )
    _assert_error(response, 401, "INVALID_API_KEY")
    _assert_error(client.post("/v1/properties", json=body, headers=env.headers), 401, "INVALID_API_KEY")
    with client.app.db.transaction(write=False) as conn:
        idents = client.app.db.fetchall(conn, "SELECT ident FROM profiles WHERE env_id = ?", (env.id,))
    assert idents == [("u1",)]


def test_auth_key_of_other_environment_sees_nothing(client: AppClient, env: Env) -> None:
    from tests.support import make_env

    other = make_env(client.app.db)
    client.post("/v1/properties", json={"userId": "u1", "operations": {"$set": {"a": 1}}}, headers=env.headers)
    client.post("/v1/properties", json={"userId": "u1", "operations": {"$set": {"a": 2}}}, headers=other.headers)
    assert client.user(env, "u1")["properties"] == {"a": 1}
    assert client.user(other, "u1")["properties"] == {"a": 2}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        pytest.param("/v1/properties", {"operations": {"$set": {"a": 1}}}, id="properties-none"),
        pytest.param("/v1/properties", {"userId": "", "deviceId": "  ", "operations": {}}, id="properties-blank"),
        pytest.param("/v1/properties", {"userId": None, "deviceId": None, "operations": {}}, id="properties-null"),
        pytest.param("/v1/push-subscriptions", {"marketingSubscriptionStatus": "SUBSCRIBED"}, id="push-none"),
        pytest.param(
            "/v1/kakao-subscriptions",
            {"deviceId": "d1", "marketingSubscriptionStatus": "SUBSCRIBED"},
            id="kakao-device-only",
        ),
        pytest.param("/v1/sms-subscriptions", {"marketingSubscriptionStatus": "SUBSCRIBED"}, id="sms-none"),
        pytest.param("/v1/properties/phone-numbers", {"phoneNumber": "+821012345678"}, id="phone-none"),
    ],
)
def test_identifier_missing_is_empty_identifier(client: AppClient, env: Env, path: str, body: Any) -> None:
    _assert_error(client.post(path, json=body, headers=env.headers), 400, "EMPTY_IDENTIFIER")
    _assert_nothing_stored(client, env)


def test_identifier_missing_on_phone_delete_is_empty_identifier(client: AppClient, env: Env) -> None:
    _assert_error(client.delete("/v1/properties/phone-numbers", headers=env.headers), 400, "EMPTY_IDENTIFIER")


BAD_REQUESTS = [
    pytest.param("/v1/properties", b'{"userId": "u1", "operations": {', id="malformed-json"),
    pytest.param("/v1/properties", b"", id="empty-body"),
    pytest.param("/v1/properties", b"[1, 2]", id="array-body"),
    pytest.param("/v1/properties", b'{"userId": 42, "operations": {"$set": {"a": 1}}}', id="userid-number"),
    pytest.param("/v1/properties", b'{"userId": "u1"}', id="operations-missing"),
    pytest.param("/v1/properties", b'{"userId": "u1", "operations": []}', id="operations-array"),
    pytest.param("/v1/properties", b'{"userId": "u1", "operations": {"$rename": {"a": "b"}}}', id="unknown-operation"),
    pytest.param("/v1/properties", b'{"userId": "u1", "operations": {"$set": [1]}}', id="set-not-object"),
    pytest.param("/v1/properties", b'{"userId": "u1", "operations": {"$set": {"a": null}}}', id="null-value"),
    pytest.param("/v1/properties", b'{"userId": "u1", "operations": {"$set": {"a": {"b": 1}}}}', id="object-value"),
    pytest.param("/v1/properties", b'{"userId": "u1", "operations": {"$set": {"a": [[1]]}}}', id="nested-array"),
    pytest.param("/v1/properties", b'{"userId": "u1", "operations": {"$set": {"a": [true]}}}', id="bool-in-array"),
    pytest.param("/v1/properties", b'{"userId": "u1", "operations": {"$set": {"$a": 1}}}', id="reserved-key"),
    pytest.param("/v1/properties", b'{"userId": "u1", "operations": {"$set": {"": 1}}}', id="empty-key"),
    pytest.param(
        "/v1/properties",
        ('{"userId": "u1", "operations": {"$set": {"%s": 1}}}' % ("k" * 129)).encode(),
        id="key-129",
    ),
    pytest.param(
        "/v1/properties",
        ('{"userId": "u1", "operations": {"$set": {"a": "%s"}}}' % ("v" * 1025)).encode(),
        id="value-1025",
    ),
    pytest.param(
        "/v1/properties",
        ('{"userId": "u1", "operations": {"$set": {' + ",".join(f'"k{i}": {i}' for i in range(129)) + "}}}").encode(),
        id="129-properties",
    ),
    pytest.param("/v1/properties", ('{"userId": "%s", "operations": {}}' % ("u" * 257)).encode(), id="userid-too-long"),
    pytest.param(
        "/v1/push-subscriptions",
        b'{"userId": "u1", "marketingSubscriptionStatus": "YES"}',
        id="status-invalid",
    ),
    pytest.param("/v1/push-subscriptions", b'{"userId": "u1", "informationSubscriptionStatus": 1}', id="status-number"),
    pytest.param(
        "/v1/sms-subscriptions",
        b'{"userId": "u1", "marketingSubscriptionStatus": "subscribed"}',
        id="status-lowercase",
    ),
    pytest.param(
        "/v1/kakao-subscriptions",
        b'{"userId": "u1", "marketingSubscriptionStatus": "UNKNOWN"}',
        id="status-unknown",
    ),
    pytest.param("/v1/properties/phone-numbers", b'{"userId": "u1"}', id="phone-missing"),
    pytest.param(
        "/v1/properties/phone-numbers",
        b'{"userId": "u1", "phoneNumber": 821012345678}',
        id="phone-number-type",
    ),
]


@pytest.mark.parametrize(("path", "raw"), BAD_REQUESTS)
def test_bad_input_is_invalid_request_and_stores_nothing(client: AppClient, env: Env, path: str, raw: bytes) -> None:
    _assert_error(client.post(path, content=raw, headers=env.headers), 400, "INVALID_REQUEST")
    _assert_nothing_stored(client, env)


@pytest.mark.parametrize(
    "number",
    [
        pytest.param("+8210123", id="too-short"),
        pytest.param("hello", id="letters"),
        pytest.param("+999123456789", id="no-such-country"),
        pytest.param("010-1234", id="korean-too-short"),
    ],
)
def test_bad_phone_number_is_invalid_phone_number(client: AppClient, env: Env, number: str) -> None:
    response = client.post(
        "/v1/properties/phone-numbers", json={"userId": "u1", "phoneNumber": number}, headers=env.headers
    )
    _assert_error(response, 400, "INVALID_PHONE_NUMBER")
    _assert_nothing_stored(client, env)


def test_phone_number_without_country_code_is_read_as_korean(client: AppClient, env: Env) -> None:
    response = client.post(
        "/v1/properties/phone-numbers",
        json={"userId": "u1", "phoneNumber": "010-9876-5432"},
        headers=env.headers,
    )
    assert response.status_code == 200
    assert client.user(env, "u1")["phoneNumber"] == "+82 10-****-5432"


def test_too_many_properties_after_update_keeps_profile_unchanged(client: AppClient, env: Env) -> None:
    first = {"userId": "u1", "operations": {"$set": {f"k{i}": i for i in range(100)}}}
    assert client.post("/v1/properties", json=first, headers=env.headers).status_code == 200
    more = {"userId": "u1", "operations": {"$set": {f"x{i}": i for i in range(29)}}}
    response = client.post("/v1/properties", json=more, headers=env.headers)
    _assert_error(response, 400, "INVALID_REQUEST")
    assert "128" in response.json()["message"]
    assert len(client.user(env, "u1")["properties"]) == 100


def test_rejected_request_in_a_batch_leaves_the_others_applied(client: AppClient, env: Env) -> None:
    calls = []
    for i in range(40):
        value: Any = {"b": 1} if i % 4 == 0 else i
        calls.append(
            (
                "POST",
                "/v1/properties",
                {"json": {"userId": f"u{i}", "operations": {"$set": {"a": value}}}, "headers": env.headers},
            )
        )
    responses = client.gather(calls)
    for i, response in enumerate(responses):
        assert response.status_code == (400 if i % 4 == 0 else 200)
    with client.app.db.transaction(write=False) as conn:
        idents = {r[0] for r in client.app.db.fetchall(conn, "SELECT ident FROM profiles WHERE env_id = ?", (env.id,))}
    assert idents == {f"u{i}" for i in range(40) if i % 4}


def test_body_of_2_mib_is_payload_too_large(client: AppClient, env: Env) -> None:
    big = b'{"userId": "u1", "operations": {"$set": {"a": "' + b"x" * (2 << 20) + b'"}}}'
    _assert_error(client.post("/v1/properties", content=big, headers=env.headers), 413, "PAYLOAD_TOO_LARGE")
    _assert_nothing_stored(client, env)


def test_body_of_2_mib_without_content_length_is_payload_too_large(client: AppClient, env: Env) -> None:
    def chunks() -> Any:
        async def gen() -> Any:
            for _ in range(32):
                yield b"x" * (64 << 10)

        return gen()

    response = client.post("/v1/properties", content=chunks(), headers=env.headers)
    _assert_error(response, 413, "PAYLOAD_TOO_LARGE")


def test_unknown_path_under_v1_is_json_not_found(client: AppClient, env: Env) -> None:
    _assert_error(client.post("/v1/nothing-here", json={}, headers=env.headers), 404, "NOT_FOUND")


def test_wrong_method_is_json_method_not_allowed(client: AppClient, env: Env) -> None:
    _assert_error(client.get("/v1/properties", headers=env.headers), 405, "METHOD_NOT_ALLOWED")
