"""Build Hackle SDK event batches exactly as the SDKs serialise them, and read events back."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from tests.support import AppClient, Env

T = TypeVar("T")
_clock = itertools.count(int(time.time() * 1000))


def sdk_headers(env: Env) -> dict[str, str]:
    return {"X-HACKLE-SDK-KEY": env.key, "Content-Type": "application/json"}


def track_event(
    key: str,
    *,
    user_id: str | None = None,
    device_id: str | None = None,
    properties: dict[str, Any] | None = None,
    value: float | None = None,
    insert_id: str | None = None,
    timestamp: int | None = None,
) -> dict[str, Any]:
    """One entry of ``trackEvents``, field for field what hackle-sdk's EventSerializer sends."""
    identifiers: dict[str, str] = {}
    if user_id is not None:
        identifiers["$userId"] = user_id
    if device_id is not None:
        identifiers["$deviceId"] = device_id
    return {
        "insertId": insert_id or str(uuid.uuid4()),
        "timestamp": timestamp if timestamp is not None else next(_clock),
        "userId": None,
        "identifiers": identifiers,
        "userProperties": {},
        "hackleProperties": {},
        "eventTypeId": 0,
        "eventTypeKey": key,
        "value": value,
        "properties": properties or {},
    }


def batch(*track_events: dict[str, Any]) -> dict[str, Any]:
    return {"exposureEvents": [], "trackEvents": list(track_events), "remoteConfigEvents": []}


def send(client: AppClient, env: Env, *track_events: dict[str, Any], status: int = 200) -> dict[str, Any]:
    response = client.post("/api/v2/events", json=batch(*track_events), headers=sdk_headers(env))
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


def events_of(client: AppClient, env: Env, user_id: str, **query: Any) -> dict[str, Any]:
    response = client.get(f"/admin/v1/environments/{env.name}/users/{user_id}/events", params=query, headers=env.admin)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def by_key(page: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {event["key"]: event for event in page["events"]}


def eventually(probe: Callable[[], T | None], *, timeout: float = 20.0, interval: float = 0.05) -> T:
    """Poll ``probe`` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")
        time.sleep(interval)
