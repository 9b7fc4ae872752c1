"""Identity resolution: users, devices, the first-link merge, and consent change times."""

from __future__ import annotations

import time

from tests.support import AppClient, Env


def _props(client: AppClient, env: Env, body: dict[str, object]) -> None:
    response = client.post("/v1/properties", json=body, headers=env.headers)
    assert response.status_code == 200, response.text


def _device(client: AppClient, env: Env, device_id: str) -> dict[str, object]:
    response = client.get(f"/admin/v1/environments/{env.name}/devices/{device_id}", headers=env.admin)
    assert response.status_code == 200, response.text
    result: dict[str, object] = response.json()
    return result


def test_identity_device_only_request_builds_anonymous_profile(client: AppClient, env: Env) -> None:
    _props(client, env, {"deviceId": "d1", "operations": {"$set": {"theme": "dark"}}})
    device = _device(client, env, "d1")
    assert device["linkedUserId"] is None
    assert device["properties"] == {"theme": "dark"}


def test_identity_first_link_merges_device_properties_user_wins(client: AppClient, env: Env) -> None:
    _props(client, env, {"deviceId": "d1", "operations": {"$set": {"theme": "dark", "grade": "BRONZE"}}})
    _props(client, env, {"userId": "u1", "operations": {"$set": {"grade": "GOLD"}}})
    _props(client, env, {"userId": "u1", "deviceId": "d1", "operations": {"$set": {"age": 30}}})
    assert client.user(env, "u1")["properties"] == {"grade": "GOLD", "theme": "dark", "age": 30}


def test_identity_device_only_request_on_linked_device_acts_on_user(client: AppClient, env: Env) -> None:
    _props(client, env, {"userId": "u1", "deviceId": "d1", "operations": {"$set": {"a": 1}}})
    _props(client, env, {"deviceId": "d1", "operations": {"$set": {"b": 2}}})
    assert client.user(env, "u1")["properties"] == {"a": 1, "b": 2}
    assert _device(client, env, "d1")["properties"] == {}


def test_identity_relink_to_second_user_does_not_merge_again(client: AppClient, env: Env) -> None:
    _props(client, env, {"deviceId": "d1", "operations": {"$set": {"theme": "dark"}}})
    _props(client, env, {"userId": "u1", "deviceId": "d1", "operations": {}})
    _props(client, env, {"userId": "u2", "deviceId": "d1", "operations": {"$set": {"x": 1}}})
    assert client.user(env, "u1")["properties"] == {"theme": "dark"}
    assert client.user(env, "u2")["properties"] == {"x": 1}
    assert _device(client, env, "d1")["linkedUserId"] == "u2"


def test_identity_user_with_many_devices_lists_them_all(client: AppClient, env: Env) -> None:
    for device in ("d1", "d2", "d3"):
        _props(client, env, {"userId": "u1", "deviceId": device, "operations": {}})
    assert [d["deviceId"] for d in client.user(env, "u1")["devices"]] == ["d1", "d2", "d3"]


def test_identity_anonymous_push_consent_carries_over_on_link(client: AppClient, env: Env) -> None:
    response = client.post(
        "/v1/push-subscriptions",
        json={"deviceId": "d1", "marketingSubscriptionStatus": "SUBSCRIBED"},
        headers=env.headers,
    )
    assert response.status_code == 200
    _props(client, env, {"userId": "u1", "deviceId": "d1", "operations": {}})
    assert client.user(env, "u1")["consents"]["push"]["marketing"]["status"] == "SUBSCRIBED"


def _clock_past(ms: int) -> None:
    """Return once the wall clock, which the writer stamps each transaction with, has passed ``ms``."""
    while int(time.time() * 1000) <= ms:
        time.sleep(0.001)


def test_consent_changed_at_moves_only_on_change(client: AppClient, env: Env) -> None:
    def push(status: str) -> dict[str, int]:
        body = {"userId": "u1", "marketingSubscriptionStatus": status}
        assert client.post("/v1/push-subscriptions", json=body, headers=env.headers).status_code == 200
        marketing: dict[str, int] = client.user(env, "u1")["consents"]["push"]["marketing"]
        return marketing

    first = push("SUBSCRIBED")
    _clock_past(first["updatedAt"])
    again = push("SUBSCRIBED")
    assert again["changedAt"] == first["changedAt"]
    assert again["updatedAt"] > first["updatedAt"]
    _clock_past(again["updatedAt"])
    changed = push("UNSUBSCRIBED")
    assert changed["changedAt"] > again["updatedAt"]


def test_consent_omitted_field_leaves_purpose_unchanged(client: AppClient, env: Env) -> None:
    body = {
        "userId": "u1",
        "marketingSubscriptionStatus": "SUBSCRIBED",
        "informationSubscriptionStatus": "SUBSCRIBED",
    }
    client.post("/v1/sms-subscriptions", json=body, headers=env.headers)
    client.post(
        "/v1/sms-subscriptions",
        json={"userId": "u1", "informationSubscriptionStatus": "UNSUBSCRIBED"},
        headers=env.headers,
    )
    sms = client.user(env, "u1")["consents"]["sms"]
    assert sms["marketing"]["status"] == "SUBSCRIBED"
    assert sms["information"]["status"] == "UNSUBSCRIBED"


def test_consent_and_phone_survive_clear_all(client: AppClient, env: Env) -> None:
    client.post(
        "/v1/properties/phone-numbers",
        json={"userId": "u1", "phoneNumber": "+821012345678"},
        headers=env.headers,
    )
    client.post(
        "/v1/push-subscriptions",
        json={"userId": "u1", "marketingSubscriptionStatus": "SUBSCRIBED"},
        headers=env.headers,
    )
    _props(client, env, {"userId": "u1", "operations": {"$set": {"a": 1}}})
    _props(client, env, {"userId": "u1", "operations": {"$clearAll": {"clearAll": "-"}}})
    user = client.user(env, "u1")
    assert user["properties"] == {}
    assert user["phoneNumber"] == "+82 10-****-5678"
    assert user["consents"]["push"]["marketing"]["status"] == "SUBSCRIBED"


def test_admin_user_lookup_requires_bearer_token(client: AppClient, env: Env) -> None:
    _props(client, env, {"userId": "u1", "operations": {"$set": {"a": 1}}})
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": env.admin_token}):
        response = client.get(f"/admin/v1/environments/{env.name}/users/u1", headers=headers)
        assert response.status_code == 401
        assert response.json()["code"] == "UNAUTHORIZED"


def test_admin_user_lookup_unknown_user_is_not_found(client: AppClient, env: Env) -> None:
    response = client.get(f"/admin/v1/environments/{env.name}/users/ghost", headers=env.admin)
    assert response.status_code == 404
    assert response.json()["code"] == "NOT_FOUND"
