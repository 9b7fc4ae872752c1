"""What the reliability scenarios share: load that records every acknowledgement, and the tally."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from magpie.config import Settings
from magpie.store.db import Database
from tests.support import Env, ServerProcess, make_env


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


class PrivatePostgres:
    """A PostgreSQL server of the test's own (initdb + pg_ctl as ``postgres``) on a free loopback port.

    Tests that stop the database use this one, never the shared server on 5432.
    """

    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.data = directory / "pgdata"
        self.port = port
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        if not bins:
            message = "Debian's PostgreSQL server package (pg_ctl, initdb) is not installed (make pg-server)"
            if os.environ.get("MAGPIE_REQUIRE_POSTGRES") == "1":
                pytest.fail(message)
            pytest.skip(message)
        self.bin = bins[-1].parent

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def init(self) -> PrivatePostgres:
        self.directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        self._as_postgres("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        return self

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=on"
        self._as_postgres(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.directory / "pg.log"), "-w", "start"
        )

    def stop(self, mode: str = "immediate") -> None:
        self._as_postgres("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def log(self) -> str:
        path = self.directory / "pg.log"
        return path.read_text(errors="replace") if path.exists() else ""


def prepared_store(settings: Settings) -> tuple[Database, Env]:
    """The test's store, migrated, with a fresh environment and key."""
    db = Database(settings.database_url)
    db.upgrade()
    return db, make_env(db)


def server_for(settings: Settings, **env: str) -> ServerProcess:
    """``magpie serve`` on the test's store, without in-process workers unless ``env`` asks for them."""
    return ServerProcess(
        data_dir=settings.data_dir,
        database_url=settings.database_url_override,
        env={"MAGPIE_WORKERS": "0", "MAGPIE_BOOTSTRAP": "0", **env},
    )
