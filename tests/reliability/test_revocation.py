"""A key revoked through one server stops working on another within the documented bound, everywhere."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from magpie.config import Settings
from magpie.store import campaigns
from tests.reliability._scenario import Tally, prepared_store, property_load, server_for, stored_users

# Measures time or throughput: runs after the parallel part of `make test`, with the machine to itself.
pytestmark = pytest.mark.alone

BOUND_SECONDS = 5.0  # MAGPIE_KEY_CACHE_SECONDS' default, documented in docs/reliability.md


def _probes(url: str, key: str, *, writes: bool) -> dict[str, int]:
    """The status of each kind of endpoint for ``key``; reads first: they used to trust a cached key."""
    headers = {"X-HACKLE-API-KEY": key}
    with httpx.Client(timeout=5) as http:
        statuses = {
            "config": http.get(f"{url}/api/v2/workspaces/{key}/config").status_code,
            "empty batch": http.post(f"{url}/api/v2/events", json={"trackEvents": []}, headers=headers).status_code,
            "stats": http.get(f"{url}/v1/push-message/campaigns/1/stats", headers=headers).status_code,
        }
        if writes:
            # A write re-checks its key in the writer and empties the cache: probe it only at the end.
            body = {"userId": "late", "operations": {"$set": {"a": 1}}}
            statuses["properties"] = http.post(f"{url}/v1/properties", json=body, headers=headers).status_code
        return statuses


@pytest.mark.slow
def test_key_revoked_on_another_server_is_refused_within_the_bound(settings: Settings) -> None:
    db, env = prepared_store(settings)
    campaigns.bootstrap_demo(db, env_id=env.id)  # campaign 1, so that its statistics answer 200
    with server_for(settings) as first, server_for(settings) as second:
        tally = Tally()
        assert set(_probes(first.url, env.key, writes=True).values()) == {200}  # now cached by the first server
        asyncio.run(property_load(first.url, env.key, seconds=1, tally=tally, prefix="before", workers=4))
        revoke = httpx.delete(f"{second.url}/admin/v1/keys/{env.key[:12]}", headers=env.admin)
        assert revoke.status_code == 200, revoke.text
        revoked_at = time.monotonic()
        refused_after: float | None = None
        while time.monotonic() - revoked_at < BOUND_SECONDS + 3:
            statuses = _probes(first.url, env.key, writes=False)
            if set(statuses.values()) == {401}:
                refused_after = time.monotonic() - revoked_at
                break
            time.sleep(0.25)
        statuses = _probes(first.url, env.key, writes=True)
    stored = stored_users(db, env.id, tally.acknowledged)
    tally.summary("revocation", stored, refused_after_s=None if refused_after is None else round(refused_after, 2))
    assert refused_after is not None and refused_after <= BOUND_SECONDS + 0.5
    assert set(statuses.values()) == {401}, statuses
    assert stored == len(tally.acknowledged) > 0 and tally.server_errors == 0
