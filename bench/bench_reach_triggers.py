"""Benchmark: what the ``user_reach`` triggers (migration 0012) cost SQLite's profile writes.

    python -m bench.bench_reach_triggers   (BENCH_REACH_TRIGGER_USERS=200000 by default)

The same statements the writer runs, on a store at revision 0011 (no triggers) and at the newest:
inserting N user profiles (empty consent, and with a push consent), then updating each one's
properties with its consent unchanged, in one transaction each. Statement rates only: the
HTTP, parsing and group-commit costs of a real request are not included.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import msgspec

from magpie.store.db import Database

USERS = int(os.environ.get("BENCH_REACH_TRIGGER_USERS", "200000"))
CONSENTED = msgspec.json.encode({"push": {"marketing": {"status": "SUBSCRIBED", "updatedAt": 1}}}).decode()


def measure(revision: str, crm: str) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "magpie.db"
        Database(f"sqlite:///{path}").upgrade(revision)
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("BEGIN")
        started = time.perf_counter()
        conn.executemany(
            "INSERT INTO profiles (env_id, kind, ident, properties, crm, created_at, updated_at) "
            "VALUES (1, 'u', ?, '{}', ?, 0, 0)",
            ((f"user-{i:08d}", crm) for i in range(USERS)),
        )
        inserted = time.perf_counter() - started
        started = time.perf_counter()
        conn.executemany(
            "UPDATE profiles SET properties = ?, crm = ?, phone_enc = NULL, linked_user = NULL, updated_at = 1 "
            "WHERE env_id = 1 AND kind = 'u' AND ident = ?",
            ((f'{{"n":{i}}}', crm, f"user-{i:08d}") for i in range(USERS)),
        )
        updated = time.perf_counter() - started
        conn.execute("COMMIT")
        conn.close()
        return USERS / inserted, USERS / updated


def main() -> None:
    for crm, label in (("{}", "no consent"), (CONSENTED, "push consent")):
        for revision in ("0011_conversion_counts", "head"):
            inserts, updates = measure(revision, crm)
            rates = f"insert {inserts:9,.0f}/s  property update {updates:9,.0f}/s"
            print(f"{label:12} {revision:22} {rates}", file=sys.stderr)


if __name__ == "__main__":
    main()
