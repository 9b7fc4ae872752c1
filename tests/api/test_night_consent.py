"""Night consent (magpie's `nightSubscriptionStatus`) on the channels that have one, from one definition.

`consent.NIGHT_CHANNELS` says which channels take it; the endpoints and the OpenAPI document follow it.
"""

from __future__ import annotations

import pytest

from magpie.domain import consent
from tests.support import AppClient, Env

PATHS = {"push": "/v1/push-subscriptions", "sms": "/v1/sms-subscriptions", "kakao": "/v1/kakao-subscriptions"}


def test_sms_takes_night_consent_alone_as_the_channels_guide_says(client: AppClient, env: Env) -> None:
    body = {"userId": "u1", "nightSubscriptionStatus": "SUBSCRIBED"}
    response = client.post("/v1/sms-subscriptions", json=body, headers=env.headers)
    assert response.status_code == 200, response.text
    sms = client.user(env, "u1")["consents"]["sms"]
    assert sms["night"]["status"] == "SUBSCRIBED" and "marketing" not in sms


@pytest.mark.parametrize("channel", consent.CHANNELS)
def test_each_endpoint_and_its_schema_take_night_consent_exactly_on_the_night_channels(
    client: AppClient, env: Env, channel: str
) -> None:
    body = {"userId": "u2", "nightSubscriptionStatus": "UNSUBSCRIBED"}
    response = client.post(PATHS[channel], json=body, headers=env.headers)
    schema = client.get("/openapi.json").json()["paths"][PATHS[channel]]["post"]["requestBody"]["content"]
    properties = schema["application/json"]["schema"]["properties"]
    if channel in consent.NIGHT_CHANNELS:
        assert response.status_code == 200, response.text
        assert client.user(env, "u2")["consents"][channel]["night"]["status"] == "UNSUBSCRIBED"
        assert "nightSubscriptionStatus" in properties
    else:
        assert response.status_code == 400 and "nightSubscriptionStatus" in response.json()["message"]
        assert "nightSubscriptionStatus" not in properties
