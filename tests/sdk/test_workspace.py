"""The workspace document an unmodified Hackle SDK initialises from, with Last-Modified caching."""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest
from hackle.internal.workspace.workspace import Workspace

from tests.sdk.batches import send, track_event
from tests.support import AppClient, Env


def _config(client: AppClient, env: Env, **headers: str) -> tuple[int, str, dict[str, str]]:
    response = client.get(f"/api/v2/workspaces/{env.key}/config", headers={"X-HACKLE-SDK-KEY": env.key, **headers})
    return response.status_code, response.text, dict(response.headers)


def _settled(client: AppClient) -> None:
    """Move the app's clock past the settling delay, so Last-Modified is sent."""
    ctx = client.app.ctx
    assert ctx is not None
    ctx.runtime.clock = lambda: time.time() + 60


def test_workspace_of_a_new_environment_is_empty_but_valid(client: AppClient, env: Env) -> None:
    status, text, _ = _config(client, env)
    assert status == 200
    workspace = Workspace(text)  # hackle-sdk's own parser
    assert workspace.experiment_key_map == {}
    assert workspace.feature_flag_key_map == {}
    assert workspace.event_type_key_map == {}


def test_workspace_lists_event_types_the_environment_has_seen(client: AppClient, env: Env) -> None:
    send(
        client,
        env,
        track_event("purchase", user_id="u1"),
        track_event("view", user_id="u1"),
        track_event("$properties", user_id="u1", properties={"$set": {"a": 1}}),
    )
    tracked = client.post("/v1/track", json={"event": {"key": "signup"}, "user": {"userId": "u2"}}, headers=env.headers)
    assert tracked.status_code == 200
    workspace = Workspace(_config(client, env)[1])
    assert set(workspace.event_type_key_map) == {"purchase", "view", "signup"}
    purchase = workspace.get_event_type_or_none("purchase")
    # blake2b("purchase", 6 bytes) read big-endian: the same id in every process and environment.
    assert (purchase.id, purchase.key) == (112_569_713_164_166, "purchase")
    assert purchase.id > 0


def test_workspace_not_modified_until_a_new_event_type(client: AppClient, env: Env) -> None:
    send(client, env, track_event("purchase", user_id="u1"))
    _settled(client)
    status, _, headers = _config(client, env)
    assert status == 200
    last_modified = headers["last-modified"]
    status, text, _ = _config(client, env, **{"If-Modified-Since": last_modified})
    assert (status, text) == (304, "")
    send(client, env, track_event("purchase", user_id="u2"))  # a known type changes nothing
    assert _config(client, env, **{"If-Modified-Since": last_modified})[0] == 304
    # HTTP dates have whole seconds: a real new type comes at least a settling delay later.
    second = int(time.time())
    while int(time.time()) == second:
        time.sleep(0.02)
    send(client, env, track_event("refund", user_id="u1"))
    status, text, headers = _config(client, env, **{"If-Modified-Since": last_modified})
    assert status == 200
    assert "refund" in Workspace(text).event_type_key_map


def test_workspace_fresh_change_is_sent_without_last_modified(client: AppClient, env: Env) -> None:
    send(client, env, track_event("purchase", user_id="u1"))
    status, _, headers = _config(client, env, **{"If-Modified-Since": formatdate(time.time() + 3600, usegmt=True)})
    assert status == 200
    assert "last-modified" not in headers


@pytest.mark.parametrize("since", ["garbage", "Thu, 01 Jan 1970 00:00:00 GMT"])
def test_workspace_unusable_or_old_if_modified_since_gets_the_document(client: AppClient, env: Env, since: str) -> None:
    _settled(client)
    assert _config(client, env, **{"If-Modified-Since": since})[0] == 200


def test_workspace_unknown_key_is_401(client: AppClient, env: Env) -> None:
    response = client.get("/api/v2/workspaces/not-a-key/config")
    assert response.status_code == 401
    assert response.json()["code"] == "INVALID_API_KEY"


def test_workspace_header_key_must_match_the_path(client: AppClient, env: Env) -> None:
    from tests.support import make_env

    other = make_env(client.app.db)
    response = client.get(f"/api/v2/workspaces/{env.key}/config", headers={"X-HACKLE-SDK-KEY": other.key})
    assert response.status_code == 401
    assert response.json()["code"] == "INVALID_API_KEY"


def test_workspace_key_stays_out_of_metrics(client: AppClient, env: Env) -> None:
    _config(client, env)
    client.get("/api/v2/workspaces/wrong-key-value/config")
    metrics = client.get("/metrics").text
    assert "/api/v2/workspaces/{sdkKey}/config" in metrics
    assert env.key not in metrics
    assert "wrong-key-value" not in metrics
