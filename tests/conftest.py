"""Shared fixtures: a backend per test (SQLite, PostgreSQL), the app over ASGI, real servers.

PostgreSQL tests are marked ``pg``. Without a reachable server they are skipped with a
message, unless ``MAGPIE_REQUIRE_POSTGRES=1`` (set by ``.ci/run``) makes them fail instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from magpie.config import Settings
from tests.support import AppClient, Env, make_env

pytest_plugins = ["tests.chromium"]

PG_ADMIN_URL = os.environ.get("MAGPIE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REQUIRE_PG = os.environ.get("MAGPIE_REQUIRE_POSTGRES") == "1"


def _pg_available() -> str | None:
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return None
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).strip()[:200]}"


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    problem = _pg_available()
    if problem is not None:
        message = f"PostgreSQL is not reachable at {PG_ADMIN_URL} ({problem})"
        if REQUIRE_PG:
            pytest.fail(message + "; MAGPIE_REQUIRE_POSTGRES=1 requires it")
        pytest.skip(message + "; PostgreSQL tests skipped (set MAGPIE_TEST_POSTGRES_URL to run them)")
    name = f"magpie_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    url = f"{base}/{name}"
    from magpie.store.db import Database

    Database(url).upgrade()
    yield url
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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
