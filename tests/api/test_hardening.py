"""Hostile input on every endpoint: a 4xx in the ``{code, message}`` format, nothing stored, no batch hurt."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from magpie.store import accounts
from tests.support import AppClient, Env, apply_campaign

NOT_UTF8 = b'{"userId":"u","operations":{"$set":{"a":"\xff"}}}'
DEEP = b'{"userId":"u","x":' + b"[" * 3000 + b"]" * 3000 + b"}"

# Every endpoint that decodes a body, with a valid body to compare against.
BODY_ENDPOINTS = [
    pytest.param("/v1/properties", {"userId": "u1", "operations": {"$set": {"a": 1}}}, id="properties"),
    pytest.param("/v1/properties/phone-numbers", {"userId": "u1", "phoneNumber": "+821012345678"}, id="phone"),
    pytest.param("/v1/push-subscriptions", {"userId": "u1", "marketingSubscriptionStatus": "SUBSCRIBED"}, id="push"),
    pytest.param("/v1/kakao-subscriptions", {"userId": "u1", "marketingSubscriptionStatus": "SUBSCRIBED"}, id="kakao"),
    pytest.param("/v1/sms-subscriptions", {"userId": "u1", "marketingSubscriptionStatus": "SUBSCRIBED"}, id="sms"),
    pytest.param("/v1/push-message/trigger/send", {"campaignKey": 7, "users": [{"userId": "u1"}]}, id="trigger"),
    pytest.param("/v1/push-tokens", {"deviceId": "d1", "providerType": "FCM", "token": "t1"}, id="token"),
    pytest.param("/v1/track", {"event": {"key": "buy"}, "user": {"userId": "u1"}}, id="track"),
    pytest.param("/api/v2/events", {"trackEvents": []}, id="sdk-events"),
]


def _error(response: Any, status: int, code: str = "INVALID_REQUEST") -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "message"} and body["code"] == code, body
    message: str = body["message"]
    return message


def _profiles(client: AppClient, env: Env) -> list[tuple[Any, ...]]:
    with client.app.db.transaction(write=False) as conn:
        return client.app.db.fetchall(conn, "SELECT kind, ident, properties FROM profiles WHERE env_id = ?", (env.id,))


@pytest.mark.parametrize(("path", "valid"), BODY_ENDPOINTS)
@pytest.mark.parametrize("raw", [pytest.param(NOT_UTF8, id="not-utf8"), pytest.param(DEEP, id="deep")])
def test_undecodable_body_is_invalid_request(client: AppClient, env: Env, path: str, valid: Any, raw: bytes) -> None:
    apply_campaign(client, env)
    if path == "/api/v2/events" and raw == NOT_UTF8:
        # The batch decoder skips fields it does not know without reading them: put the bad byte in one it reads.
        raw = b'{"trackEvents":[{"insertId":"\xff","timestamp":1,"eventTypeKey":"k","identifiers":{"$userId":"u"}}]}'
    _error(client.post(path, content=raw, headers=env.headers), 400)
    assert _profiles(client, env) == []
    # The same endpoint still takes a good body.
    assert client.post(path, json=valid, headers=env.headers).status_code == 200


def test_bad_bodies_never_fail_the_batch_they_share(client: AppClient, env: Env, caplog: Any) -> None:
    good = [
        ("POST", "/v1/properties", {"json": {"userId": f"g{i}", "operations": {"$set": {"n": i}}}}) for i in range(40)
    ]
    bad = [("POST", "/v1/properties", {"content": raw}) for raw in (NOT_UTF8, DEEP) * 20]
    calls = [call for pair in zip(good, bad, strict=True) for call in pair]
    calls = [(m, u, {**kw, "headers": env.headers}) for m, u, kw in calls]
    with caplog.at_level("WARNING", logger="magpie.writer"):
        responses = client.gather(calls)
    statuses = [r.status_code for r in responses]
    assert statuses[0::2] == [200] * 40 and statuses[1::2] == [400] * 40, statuses
    assert not [r for r in caplog.records if "retrying jobs one by one" in r.getMessage()]
    assert len([p for p in _profiles(client, env) if p[0] == "u"]) == 40


CONTROL_IDS = [
    pytest.param("bad\x00", id="nul"),
    pytest.param("bad\x1b[2J", id="escape"),
    pytest.param("a\x85", id="c1"),
]


@pytest.mark.parametrize("ident", CONTROL_IDS)
@pytest.mark.parametrize(
    ("path", "body"),
    [
        pytest.param("/v1/properties", lambda i: {"userId": i, "operations": {"$set": {"a": 1}}}, id="properties-user"),
        pytest.param(
            "/v1/properties", lambda i: {"deviceId": i, "operations": {"$set": {"a": 1}}}, id="properties-dev"
        ),
        pytest.param("/v1/properties/phone-numbers", lambda i: {"userId": i, "phoneNumber": "01012345678"}, id="phone"),
        pytest.param(
            "/v1/push-subscriptions", lambda i: {"deviceId": i, "marketingSubscriptionStatus": "SUBSCRIBED"}, id="push"
        ),
        pytest.param(
            "/v1/sms-subscriptions", lambda i: {"userId": i, "marketingSubscriptionStatus": "SUBSCRIBED"}, id="sms"
        ),
        pytest.param("/v1/push-tokens", lambda i: {"deviceId": "d", "providerType": "FCM", "token": i}, id="token"),
        pytest.param("/v1/push-tokens", lambda i: {"deviceId": i, "providerType": "FCM", "token": "t"}, id="token-dev"),
        pytest.param("/v1/track", lambda i: {"event": {"key": "k"}, "user": {"userId": i}}, id="track"),
        pytest.param(
            "/v1/push-message/trigger/send",
            lambda i: {"campaignKey": 7, "users": [{"userId": "good-user"}, {"userId": i}]},
            id="trigger",
        ),
    ],
)
def test_identifier_with_control_characters_is_invalid_request(
    client: AppClient, env: Env, path: str, body: Any, ident: str
) -> None:
    apply_campaign(client, env)
    message = _error(client.post(path, json=body(ident), headers=env.headers), 400)
    assert "control characters" in message
    assert _profiles(client, env) == []
    with client.app.db.transaction(write=False) as conn:
        assert client.app.db.fetchall(conn, "SELECT id FROM dispatches WHERE env_id = ?", (env.id,)) == []


@pytest.mark.parametrize("ident", CONTROL_IDS)
def test_phone_delete_with_control_characters_is_invalid_request(client: AppClient, env: Env, ident: str) -> None:
    response = client.delete("/v1/properties/phone-numbers", params={"userId": ident}, headers=env.headers)
    _error(response, 400)


def test_idempotency_key_with_nul_is_invalid_request(client: AppClient, env: Env) -> None:
    apply_campaign(client, env)
    response = client.post(
        "/v1/push-message/trigger/send",
        json={"campaignKey": 7, "users": [{"userId": "u"}]},
        headers={**env.headers, "Idempotency-Key": "a\x01b"},
    )
    _error(response, 400)


@pytest.mark.parametrize(
    "suffix",
    [
        pytest.param("/v1/push-message/campaigns/17197166650435091859277946377836953600/stats", id="huge-key"),
        pytest.param("/v1/push-message/campaigns/%C2%B2/stats", id="superscript-key"),
        pytest.param("/v1/push-message/campaigns/7/stats?from=%C2%B2", id="superscript-from"),
        pytest.param("/v1/push-message/campaigns/7/stats?from=-99999999999999999999999999", id="huge-from"),
        pytest.param("/v1/push-message/campaigns/7/stats?to=99999999999999999", id="far-to"),
        pytest.param("/v1/push-message/campaigns/7/stats?from=0001-01-01T00:00:00", id="year-one"),
    ],
)
def test_campaign_stats_path_and_query_are_checked(client: AppClient, env: Env, suffix: str) -> None:
    _error(client.get(suffix, headers=env.headers), 400)


def test_campaign_key_out_of_64_bits_is_invalid_request(client: AppClient, env: Env) -> None:
    body = {"campaignKey": 2**64, "users": [{"userId": "u"}]}
    _error(client.post("/v1/push-message/trigger/send", json=body, headers=env.headers), 400)


@pytest.mark.parametrize(
    ("start", "step"),
    [
        pytest.param(1.7e308, 1.7e308, id="float"),
        pytest.param(2**63 - 1, 1, id="int"),
        pytest.param(-(2**63), -1, id="neg"),
    ],
)
def test_increment_overflow_is_invalid_request_and_stores_nothing(
    client: AppClient, env: Env, start: float, step: float
) -> None:
    set_body = {"userId": "u", "operations": {"$set": {"n": start}}}
    assert client.post("/v1/properties", json=set_body, headers=env.headers).status_code == 200
    response = client.post(
        "/v1/properties", json={"userId": "u", "operations": {"$increment": {"n": step}}}, headers=env.headers
    )
    _error(response, 400)
    assert client.user(env, "u")["properties"]["n"] == start


def test_array_elements_are_limited(client: AppClient, env: Env) -> None:
    chunk = [f"v{i}" for i in range(600)]
    append = {"userId": "u", "operations": {"$append": {"tags": chunk}}}
    assert client.post("/v1/properties", json=append, headers=env.headers).status_code == 200
    message = _error(client.post("/v1/properties", json=append, headers=env.headers), 400)
    assert "1024" in message
    assert len(client.user(env, "u")["properties"]["tags"]) == 600
    too_long = {"userId": "u", "operations": {"$set": {"big": list(range(1025))}}}
    _error(client.post("/v1/properties", json=too_long, headers=env.headers), 400)


def test_profile_size_is_limited(client: AppClient, env: Env) -> None:
    value = "x" * 1000
    for n in range(2):
        body = {"userId": "u", "operations": {"$append": {f"list{n}": [value] * 1000}}}
        # 1 MB in one array is over the profile limit (256 KiB) even though each part is allowed.
        message = _error(client.post("/v1/properties", json=body, headers=env.headers), 400)
        assert "262144" in message
    fits = {"userId": "u", "operations": {"$append": {"list": [value] * 200}}}
    assert client.post("/v1/properties", json=fits, headers=env.headers).status_code == 200
    assert len(json.dumps(client.user(env, "u")["properties"])) < 256 * 1024


@pytest.fixture
def short_cache_client(settings: Any) -> Any:
    with AppClient(settings.with_(key_cache_seconds=0.5)) as c:
        yield c


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param("POST", "/api/v2/events", {"trackEvents": []}, id="empty-batch"),
        pytest.param("GET", "/api/v2/workspaces/{key}/config", None, id="sdk-config"),
        pytest.param("POST", "/v1/properties", {"userId": "u", "operations": {"$set": {"a": 1}}}, id="properties"),
    ],
)
def test_key_revoked_elsewhere_is_refused_within_the_bound(
    short_cache_client: AppClient, method: str, path: str, body: Any
) -> None:
    client = short_cache_client
    from tests.support import make_env

    env = make_env(client.app.db)
    url = path.format(key=env.key)
    kwargs: dict[str, Any] = {"headers": env.headers}
    if body is not None:
        kwargs["json"] = body
    assert client.request(method, url, **kwargs).status_code == 200
    # Revoked by another process (the CLI): this app learns it only from the database.
    accounts.revoke_api_key(client.app.db, key_or_prefix=env.key)
    time.sleep(0.6)
    _error(client.request(method, url, **kwargs), 401, "INVALID_API_KEY")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param("POST", "/admin/v1/environments", {"name": "tz-int", "timezone": 123}, id="timezone-number"),
        pytest.param("POST", "/admin/v1/environments", {"name": "tz-bad", "timezone": "\x00"}, id="timezone-nul"),
        pytest.param("POST", "/admin/v1/environments", NOT_UTF8, id="not-utf8"),
        pytest.param("POST", "/admin/v1/environments", DEEP, id="deep"),
        pytest.param("PUT", "/admin/v1/environments/{env}", {"settings": {}, "timezone": 123}, id="update-timezone"),
        pytest.param(
            "GET",
            "/admin/v1/environments/{env}/users/u/events?cursor=99999999999999999999999:abc",
            None,
            id="cursor-huge",
        ),
        pytest.param("GET", "/admin/v1/environments/{env}/users/u/events?cursor=1:a%00b", None, id="cursor-nul"),
        pytest.param("GET", "/admin/v1/environments/{env}/users/u/events?limit=%C2%B2", None, id="events-limit"),
        pytest.param(
            "GET", "/admin/v1/environments/{env}/campaigns/17197166650435091859277946377836953600", None, id="key-huge"
        ),
        pytest.param("GET", "/admin/v1/environments/{env}/campaigns/%C2%B2", None, id="key-superscript"),
        pytest.param("GET", "/admin/v1/environments/{env}/campaigns/7/stats?from=%C2%B2", None, id="stats-from"),
        pytest.param("GET", "/admin/v1/environments/{env}/inbox?limit=abc", None, id="inbox-limit"),
        pytest.param("GET", "/admin/v1/environments/{env}/inbox?before=-1", None, id="inbox-before"),
    ],
)
def test_admin_bad_input_is_a_json_400(client: AppClient, env: Env, method: str, path: str, body: Any) -> None:
    kwargs: dict[str, Any] = {"headers": env.admin}
    if isinstance(body, bytes):
        kwargs["content"] = body
    elif body is not None:
        kwargs["json"] = body
    _error(client.request(method, path.format(env=env.name), **kwargs), 400)


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/admin/v1/environments/{env}/users/a%00b", id="user"),
        pytest.param("/admin/v1/environments/{env}/devices/a%00b", id="device"),
        pytest.param("/admin/v1/environments/a%00b/campaigns", id="env-name"),
        pytest.param("/admin/v1/environments/{env}/dispatches/a%00b", id="admin-dispatch"),
        pytest.param("/admin/v1/environments/{env}/cohorts/a%00b", id="cohort"),
    ],
)
def test_admin_nul_in_path_is_a_4xx(client: AppClient, env: Env, path: str) -> None:
    response = client.get(path.format(env=env.name), headers=env.admin)
    assert response.status_code in (400, 404), response.text
    assert set(response.json()) == {"code", "message"}


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/v1/push-message/dispatches/a%00b", id="nul"),
        pytest.param("/v1/push-message/dispatches/x", id="short"),
    ],
)
def test_unknown_dispatch_id_is_not_found(client: AppClient, env: Env, path: str) -> None:
    _error(client.get(path, headers=env.headers), 404, "NOT_FOUND")


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/v1/push-message/dispatches/5e72c80d-8f18-432c-a5c2-614c5f0b0cba", id="dispatch"),
        pytest.param("/v1/push-message/campaigns/7/stats", id="stats"),
        pytest.param("/api/v2/workspaces/abc/config", id="sdk-config"),
    ],
)
def test_wrong_method_on_a_route_with_parameters_is_405(client: AppClient, env: Env, path: str) -> None:
    _error(client.post(path, json={}, headers=env.headers), 405, "METHOD_NOT_ALLOWED")


def test_metrics_label_requests_by_route_template(client: AppClient, env: Env) -> None:
    for n in range(300):
        client.get(f"/v1/push-message/dispatches/{n}-not-a-dispatch", headers=env.headers)
        client.get(f"/v1/no-such-route-{n}", headers=env.headers)
    metrics = client.get("/metrics").text
    assert 'path="/v1/push-message/dispatches/{dispatchId}",status="404"} 300.0' in metrics
    assert 'path="unmatched",status="404"} 300.0' in metrics
    assert "not-a-dispatch" not in metrics and "no-such-route" not in metrics


def test_idempotency_key_reused_with_another_body_is_422(client: AppClient, env: Env) -> None:
    apply_campaign(client, env)
    headers = {**env.headers, "Idempotency-Key": "order-42"}
    body = {"campaignKey": 7, "users": [{"userId": "u1", "apiProperties": {"n": 1}}]}
    first = client.post("/v1/push-message/trigger/send", json=body, headers=headers)
    assert first.status_code == 200
    again = client.post("/v1/push-message/trigger/send", json=body, headers=headers)
    assert again.status_code == 200 and again.json() == first.json()
    changed = {"campaignKey": 7, "users": [{"userId": "u2", "apiProperties": {"n": 1}}]}
    _error(client.post("/v1/push-message/trigger/send", json=changed, headers=headers), 422, "IDEMPOTENCY_KEY_REUSED")
    with client.app.db.transaction(write=False) as conn:
        rows = client.app.db.fetchall(conn, "SELECT id FROM dispatches WHERE env_id = ?", (env.id,))
    assert [r[0] for r in rows] == [first.json()["dispatchId"]]


def test_idempotency_key_belongs_to_one_environment(client: AppClient, env: Env) -> None:
    from tests.support import make_env

    other = make_env(client.app.db)
    apply_campaign(client, env)
    apply_campaign(client, other)
    body = {"campaignKey": 7, "users": [{"userId": "u1"}]}
    ids = [
        client.post(
            "/v1/push-message/trigger/send", json=body, headers={**e.headers, "Idempotency-Key": "shared"}
        ).json()["dispatchId"]
        for e in (env, other)
    ]
    assert ids[0] != ids[1]


@pytest.mark.parametrize(
    ("path", "body", "named"),
    [
        pytest.param(
            "/v1/push-subscriptions",
            {"userId": "a", "marketingStatus": "SUBSCRIBED"},
            "marketingStatus",
            id="misspelled",
        ),
        pytest.param("/v1/sms-subscriptions", {"userId": "a"}, "marketingSubscriptionStatus", id="nothing"),
        pytest.param(
            "/v1/properties", {"users": [{"userId": "a", "operations": {"$set": {"a": 1}}}]}, "users", id="users"
        ),
        pytest.param("/v1/properties", {"userId": "a", "$set": {"a": 1}}, "$set", id="operation-at-top"),
    ],
)
def test_body_with_nothing_to_act_on_names_the_fields(
    client: AppClient, env: Env, path: str, body: Any, named: str
) -> None:
    message = _error(client.post(path, json=body, headers=env.headers), 400)
    assert named in message and "expected" in message
    assert _profiles(client, env) == []


@pytest.mark.parametrize(
    "number", ["not-a-phone-01099990000x", "01099990000x", "call 010-1234-5678", "010-1234-5678 ext 5"]
)
def test_text_that_is_not_a_phone_number_is_refused(client: AppClient, env: Env, number: str) -> None:
    body = {"userId": "u", "phoneNumber": number}
    _error(client.post("/v1/properties/phone-numbers", json=body, headers=env.headers), 400, "INVALID_PHONE_NUMBER")
    assert _profiles(client, env) == []


@pytest.mark.alone  # a token bucket refilled in real time: the requests must come quickly
def test_failed_authentication_is_throttled_per_address(client: AppClient, env: Env) -> None:
    body = {"userId": "u", "operations": {"$set": {"a": 1}}}
    bad = {"X-HACKLE-API-KEY": "mgp_guessing-a-key"}
    statuses = [client.post("/v1/properties", json=body, headers=bad).status_code for _ in range(40)]
    # The burst (4 x 5 a second) is answered 401; guessing on is 429 with Retry-After.
    assert statuses[:20] == [401] * 20 and statuses[-1] == 429, statuses
    limited = client.post("/v1/properties", json=body, headers=bad)
    assert _error(limited, 429, "RATE_LIMITED") and int(limited.headers["retry-after"]) >= 1
    # The right key from the same address is never refused for those failures.
    assert client.post("/v1/properties", json=body, headers=env.headers).status_code == 200
    admin = client.get("/admin/v1/environments", headers={"Authorization": "Bearer nope"})
    _error(admin, 429, "RATE_LIMITED")
    time.sleep(1.1)
    assert client.post("/v1/properties", json=body, headers=bad).status_code == 401


def test_failed_authentication_throttle_is_per_address() -> None:
    from magpie.api.http.auth import FailedAuthThrottle

    now = [0.0]
    throttle = FailedAuthThrottle(rate=1.0, clock=lambda: now[0])
    for _ in range(4):
        assert throttle.failed(address="10.0.0.1") is None
    assert throttle.failed(address="10.0.0.1") is not None
    assert throttle.failed(address="10.0.0.2") is None
    now[0] += 1.0  # four failures on a burst of four: one second until one token is back
    assert throttle.failed(address="10.0.0.1") is None
