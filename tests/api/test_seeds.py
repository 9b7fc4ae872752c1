"""Every user-property request of the Hackle documents, verbatim, against magpie."""

from __future__ import annotations

from tests.support import AppClient, Env

# The request bodies exactly as the seed documents show them (curl -d '...').
SEED_PROPERTIES = """{
    "userId": "19285035",
    "deviceId": "ae2182e0",
    "operations": {
      "$set": {
        "age": 42,
        "grade": "GOLD"
      },
      "$setOnce": {
        "sign_up_date": "2020-01-01"
      },
      "$unset": {
        "membership_type": "-"
      }
    }
  }"""
SEED_PHONE = """{
    "userId": "19285035",
    "phoneNumber": "+821012345678"
  }"""
SEED_PUSH = """{
    "userId": "19285035",
    "deviceId": null,
    "marketingSubscriptionStatus": "UNSUBSCRIBED",
    "informationSubscriptionStatus" : "SUBSCRIBED"
 }"""
SEED_KAKAO = """{
    "userId": "19285035",
    "marketingSubscriptionStatus": "UNSUBSCRIBED",
    "informationSubscriptionStatus" : "SUBSCRIBED"
 }"""
SEED_SMS = SEED_KAKAO


def _post(client: AppClient, env: Env, path: str, body: str) -> None:
    response = client.post(path, content=body.encode(), headers=env.headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"message": "success"}


def test_seed_properties_example_applies_set_setonce_unset(client: AppClient, env: Env) -> None:
    _post(client, env, "/v1/properties", SEED_PROPERTIES)
    user = client.user(env, "19285035")
    assert user["properties"] == {"age": 42, "grade": "GOLD", "sign_up_date": "2020-01-01"}
    assert [d["deviceId"] for d in user["devices"]] == ["ae2182e0"]


def test_seed_properties_example_twice_keeps_first_sign_up_date(client: AppClient, env: Env) -> None:
    _post(client, env, "/v1/properties", SEED_PROPERTIES)
    client.post(
        "/v1/properties",
        json={"userId": "19285035", "operations": {"$setOnce": {"sign_up_date": "2024-05-05"}}},
        headers=env.headers,
    )
    _post(client, env, "/v1/properties", SEED_PROPERTIES)
    assert client.user(env, "19285035")["properties"]["sign_up_date"] == "2020-01-01"


def test_seed_phone_number_example_stores_masked_number(client: AppClient, env: Env) -> None:
    _post(client, env, "/v1/properties/phone-numbers", SEED_PHONE)
    assert client.user(env, "19285035")["phoneNumber"] == "+82 10-****-5678"


def test_seed_phone_number_delete_example_removes_number(client: AppClient, env: Env) -> None:
    _post(client, env, "/v1/properties/phone-numbers", SEED_PHONE.replace("19285035", "targetUserId"))
    response = client.delete(
        "/v1/properties/phone-numbers?userId=targetUserId",
        headers={"X-HACKLE-API-KEY": env.key, "Content-Type": "application/json"},
    )
    assert response.status_code == 200
    assert response.json() == {"message": "success"}
    assert client.user(env, "targetUserId")["phoneNumber"] is None


def test_seed_phone_number_is_encrypted_at_rest(client: AppClient, env: Env) -> None:
    _post(client, env, "/v1/properties/phone-numbers", SEED_PHONE)
    with client.app.db.transaction(write=False) as conn:
        rows = client.app.db.fetchall(
            conn, "SELECT phone_enc, properties, crm FROM profiles WHERE env_id = ?", (env.id,)
        )
    stored = b"".join(bytes(r[0] or b"") + r[1].encode() + r[2].encode() for r in rows)
    assert stored
    assert b"1012345678" not in stored and b"5678" not in stored


def test_seed_push_subscription_example_records_both_purposes(client: AppClient, env: Env) -> None:
    _post(client, env, "/v1/push-subscriptions", SEED_PUSH)
    push = client.user(env, "19285035")["consents"]["push"]
    assert push["marketing"]["status"] == "UNSUBSCRIBED"
    assert push["information"]["status"] == "SUBSCRIBED"
    assert push["marketing"]["changedAt"] > 0


def test_seed_kakao_subscription_example_records_both_purposes(client: AppClient, env: Env) -> None:
    _post(client, env, "/v1/kakao-subscriptions", SEED_KAKAO)
    kakao = client.user(env, "19285035")["consents"]["kakao"]
    assert (kakao["marketing"]["status"], kakao["information"]["status"]) == ("UNSUBSCRIBED", "SUBSCRIBED")


def test_seed_sms_subscription_example_records_both_purposes(client: AppClient, env: Env) -> None:
    _post(client, env, "/v1/sms-subscriptions", SEED_SMS)
    sms = client.user(env, "19285035")["consents"]["sms"]
    assert (sms["marketing"]["status"], sms["information"]["status"]) == ("UNSUBSCRIBED", "SUBSCRIBED")
