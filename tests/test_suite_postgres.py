"""The test suite's PostgreSQL: the configured server, else the password-less one on 5432, else its own.

A fresh machine with no PostgreSQL server (or with password authentication) needs nothing beyond
`make test`: the session then starts a throwaway server with Debian's initdb and pg_ctl.
"""

from __future__ import annotations

import re

import psycopg
import pytest

from magpie.store.db import Database
from tests.conftest import PG_DEFAULT_URL, _pg_problem, postgres_for_tests

NOBODY = "postgresql://postgres@127.0.0.1:9/postgres"  # port 9 (discard): nothing answers PostgreSQL there


@pytest.mark.pg
@pytest.mark.slow
def test_without_a_server_at_the_default_address_the_suite_starts_and_removes_its_own() -> None:
    with postgres_for_tests(configured="", default=NOBODY) as url:
        assert url != NOBODY and url.startswith("postgresql://postgres@127.0.0.1:")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute('CREATE DATABASE "magpie_throwaway"')
        db = Database(url.rsplit("/", 1)[0] + "/magpie_throwaway")
        db.upgrade()
        assert db.current_revision()
        db.close_readers()
    assert _pg_problem(url) is not None, "the throwaway server is stopped at the end"


@pytest.mark.pg
def test_a_password_less_server_at_the_default_address_is_used_as_it_is() -> None:
    if _pg_problem(PG_DEFAULT_URL) is not None:
        pytest.skip(f"no password-less server at {PG_DEFAULT_URL} on this machine")
    with postgres_for_tests(configured="", default=PG_DEFAULT_URL) as url:
        assert url == PG_DEFAULT_URL


def test_a_configured_server_that_does_not_answer_is_not_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tests.conftest.REQUIRE_PG", True)
    with pytest.raises(pytest.fail.Exception, match=re.escape(f"MAGPIE_TEST_POSTGRES_URL={NOBODY}")):
        with postgres_for_tests(configured=NOBODY):
            pass
