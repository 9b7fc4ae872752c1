"""What the reliability scenarios share: load that records every acknowledgement, and the tally."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from magpie.store.db import Database


@dataclass
class Tally:
    """Requests sent, acknowledged (2xx), and answered 5xx, by user id written."""

    requests: int = 0
    acknowledged: list[str] = field(default_factory=list)
    server_errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    def record(self, user_id: str, response: httpx.Response, seconds: float) -> None:
        self.requests += 1
        self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
        self.latencies.append(seconds)
        if 200 <= response.status_code < 300:
            self.acknowledged.append(user_id)
        elif response.status_code >= 500:
            self.server_errors += 1

    def p99(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[int(len(ordered) * 0.99)] if ordered else 0.0

    def summary(self, name: str, stored: int, **extra: Any) -> str:
        lost = len(self.acknowledged) - stored
        parts = [
            f"requests={self.requests}",
            f"acknowledged={len(self.acknowledged)}",
            f"stored={stored}",
            f"lost={lost}",
            f"5xx={self.server_errors}",
            *(f"{k}={v}" for k, v in extra.items()),
        ]
        line = f"[reliability] {name}: " + " ".join(parts)
        print(line)
        return line


async def property_load(
    url: str, key: str, *, seconds: float, tally: Tally, prefix: str, workers: int = 16, timeout: float = 10
) -> None:
    """POST /v1/properties from ``workers`` clients for ``seconds``: one new user per request."""
    stop_at = time.monotonic() + seconds
    counter = iter(range(10_000_000))

    async def worker(http: httpx.AsyncClient) -> None:
        while time.monotonic() < stop_at:
            user_id = f"{prefix}-{next(counter)}"
            body = {"userId": user_id, "operations": {"$set": {"n": 1}}}
            started = time.monotonic()
            try:
                response = await http.post(url + "/v1/properties", json=body, headers={"X-HACKLE-API-KEY": key})
            except httpx.HTTPError:
                tally.requests += 1
                await asyncio.sleep(0.05)
                continue
            tally.record(user_id, response, time.monotonic() - started)

    async with httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=workers)) as http:
        await asyncio.gather(*(worker(http) for _ in range(workers)))


def stored_users(db: Database, env_id: int, ids: list[str]) -> int:
    """How many of ``ids`` have a stored user profile."""
    wanted = set(ids)
    with db.transaction(write=False) as conn:
        rows = db.fetchall(conn, "SELECT ident FROM profiles WHERE env_id = ? AND kind = 'u'", (env_id,))
    return len(wanted & {r[0] for r in rows})
