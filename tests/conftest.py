"""Shared fixtures: a backend per test (SQLite, PostgreSQL), the app over ASGI, real servers.

PostgreSQL tests are marked ``pg``. Their server is ``MAGPIE_TEST_POSTGRES_URL``, else the
password-less one at 127.0.0.1:5432, else a throwaway server the session starts itself
(``pg_admin_url``). Without any of them they are skipped with a message, unless
``MAGPIE_REQUIRE_POSTGRES=1`` (set by ``.ci/run``) makes them fail instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from magpie.config import Settings
from tests.reliability._scenario import PrivatePostgres
from tests.support import AppClient, Env, free_port, make_env

pytest_plugins = ["tests.chromium"]

PG_DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_CONFIGURED_URL = os.environ.get("MAGPIE_TEST_POSTGRES_URL", "")
REQUIRE_PG = os.environ.get("MAGPIE_REQUIRE_POSTGRES") == "1"


def _pg_problem(url: str) -> str | None:
    """None when ``url`` accepts a connection, else why not."""
    try:
        with psycopg.connect(url, connect_timeout=3):
            return None
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).strip()[:200]}"


def _unavailable(message: str) -> None:
    if REQUIRE_PG:
        pytest.fail(message + "; MAGPIE_REQUIRE_POSTGRES=1 requires it")
    pytest.skip(message + "; PostgreSQL tests skipped")


class _ThrowawayPostgres(PrivatePostgres):
    """The suite's own server when no other is at hand: durability is not what it is for, so it
    skips fsync (the outage test's private server keeps it)."""

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        )
        self._as_postgres(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.directory / "pg.log"), "-w", "start"
        )


@contextlib.contextmanager
def postgres_for_tests(*, configured: str, default: str = PG_DEFAULT_URL) -> Iterator[str]:
    """The PostgreSQL server the tests create their databases on, in this order:

    1. ``configured`` (``MAGPIE_TEST_POSTGRES_URL``) when set; no other is tried;
    2. ``default`` (``postgresql://postgres@127.0.0.1:5432/postgres``) when it accepts a password-less
       connection;
    3. else a throwaway server of the session's own (Debian's ``initdb``/``pg_ctl``, which ``make test``
       installs when it runs as root), on a free loopback port, removed at the end.
    """
    if configured:
        problem = _pg_problem(configured)
        if problem is not None:
            _unavailable(f"PostgreSQL is not reachable at MAGPIE_TEST_POSTGRES_URL={configured} ({problem})")
        yield configured
        return
    if _pg_problem(default) is None:
        yield default
        return
    if not sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")):
        _unavailable(
            f"no password-less PostgreSQL at {default}, and no initdb/pg_ctl to start one "
            "(`make pg-server` installs Debian's postgresql; or set MAGPIE_TEST_POSTGRES_URL)"
        )
    with throwaway_postgres() as url:
        yield url


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[str]:
    """A PostgreSQL server of its own (``_ThrowawayPostgres``) on a free loopback port; its admin URL."""
    directory = Path(tempfile.mkdtemp(prefix="magpie-test-pg-"))
    server = _ThrowawayPostgres(directory, free_port())
    try:
        server.init().start()
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(directory, ignore_errors=True)
        output = (exc.stderr or b"").decode(errors="replace").strip()[-300:]
        _unavailable(f"could not start a throwaway PostgreSQL ({exc.cmd}): {output}")
    try:
        yield server.url
    finally:
        server.stop("fast")
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """The tests' PostgreSQL server (``postgres_for_tests``)."""
    with postgres_for_tests(configured=PG_CONFIGURED_URL) as url:
        yield url


@contextlib.contextmanager
def fresh_pg_database(admin_url: str, prefix: str) -> Iterator[str]:
    """A new PostgreSQL database on ``admin_url``'s server, migrated to the head; dropped at the end."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{admin_url.rsplit('/', 1)[0]}/{name}"
    from magpie.store.db import Database

    try:
        Database(url).upgrade()
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_database(pg_admin_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end: one per process when
    pytest-xdist runs the suite in parallel (named after its worker, ``gw0``, ``gw1``, ...)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with fresh_pg_database(pg_admin_url, f"magpie_test_{worker}") as url:
        yield url


@pytest.fixture(params=[pytest.param("sqlite", id="sqlite"), pytest.param("pg", id="pg", marks=pytest.mark.pg)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """Settings for one test on the current backend: its own data dir, no bootstrap, no workers."""
    override = None
    if backend == "pg":
        override = request.getfixturevalue("pg_database")
    return Settings(
        data_dir=tmp_path / "data",
        database_url_override=override,
        bootstrap=False,
        workers=0,
        secret_key=None,
        # In-process apps: the writer on a thread, and no collector freeze (a test session builds many apps).
        writer="thread",
        freeze_gc=False,
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[AppClient]:
    with AppClient(settings) as c:
        yield c


@pytest.fixture
def env(client: AppClient) -> Env:
    """A fresh environment with an API key and an admin token (isolated even on a shared database)."""
    return make_env(client.app.db)
