"""Benchmark 7: every dashboard page on a store with 100,000 users and 1,000,000 recipient outcomes.

    python -m bench.bench_dashboard [sqlite|pg|all]   (BENCH_DASHBOARD_REQUESTS=50 per page by default)

The store is filled at schema revision 0002 (the rows an older magpie would have written), then
brought to the newest revision, so the run also times the migration that backfills the hourly
counts and the click attribution. A real ``magpie serve`` (no workers) then serves every
page to a signed-in client, one request at a time; the figure is the client-observed time of the
whole response on loopback, an upper bound of the server-side render time.
"""

from __future__ import annotations

import os
import random
import re
import sqlite3
import statistics
import sys
import time
import uuid
from collections.abc import Iterable
from typing import Any

import httpx
import msgspec
import psycopg

from bench._harness import Report, free_port, magpie_serve, workdir
from bench.bench_properties import _drop_pg, _pg_database

USERS = 100_000
RECIPIENTS = 1_000_000
PER_DISPATCH = 50
CAMPAIGNS = 20
DAYS = 30
TARGET_MS = 300.0
_enc = msgspec.json.encode


class _Rows:
    """Bulk writes for the fill: executemany on SQLite, COPY on PostgreSQL."""

    def __init__(self, url: str) -> None:
        self.sqlite = url.startswith("sqlite")
        if self.sqlite:
            self.conn: Any = sqlite3.connect(url.split("sqlite:///", 1)[1], isolation_level=None)
            self.conn.execute("PRAGMA synchronous=OFF")
            self.conn.execute("BEGIN")
        else:
            self.conn = psycopg.connect(url)

    def put(self, table: str, columns: str, rows: Iterable[tuple[Any, ...]]) -> None:
        if self.sqlite:
            marks = ", ".join("?" * (columns.count(",") + 1))
            self.conn.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)
            return
        with self.conn.cursor().copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def finish(self) -> None:
        self.conn.execute("COMMIT") if self.sqlite else self.conn.commit()
        self.conn.close()


def settle(url: str) -> None:
    """Statistics and, on PostgreSQL, the visibility map, as autovacuum leaves a store that took inserts."""
    if url.startswith("sqlite"):
        with sqlite3.connect(url.split("sqlite:///", 1)[1]) as conn:
            conn.execute("ANALYZE")
        return
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def fill(url: str) -> dict[str, Any]:
    """Write the store; returns the admin token and ids the pages will look at."""
    from magpie.domain.campaigns import parse_campaign
    from magpie.store import accounts
    from magpie.store.db import Database

    rng = random.Random(7)
    db = Database(url)
    db.upgrade("0002_sdk_events")
    env = accounts.create_environment(db, name="bench")
    token = accounts.create_admin_token(db, name="bench")
    accounts.create_api_key(db, environment="bench", name="default")
    # Written as a store at revision 0002 holds them (no channel column yet: the migrations add it).
    now_ms = int(time.time() * 1000)
    with db.transaction() as conn:
        for key in range(1, CAMPAIGNS + 1):
            marketing = key % 3 == 0
            campaign = parse_campaign(
                {
                    "key": key,
                    "name": f"캠페인 {key}: 재입고 알림" if not marketing else f"캠페인 {key}: 주말 할인",
                    "status": "ACTIVE",
                    "purpose": "MARKETING" if marketing else "INFORMATION",
                    "provider": "sandbox",
                    "tags": ["bench"],
                    "message": {
                        "title": "{{ user_properties.name | default: '고객' }}님, 소식이 있어요",
                        "body": "상품 {{ api_properties.productNumber | default: '' }} 확인해 보세요.",
                    },
                }
            )
            db.execute(
                conn,
                "INSERT INTO campaigns (env_id, key, name, status, definition, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (env.id, key, campaign.name, campaign.status, _enc(campaign.to_json()).decode(), now_ms, now_ms),
            )
    out = _Rows(url)
    now = int(time.time() * 1000)
    start = now - DAYS * 86_400_000
    out.put(
        "profiles",
        "env_id, kind, ident, properties, crm, linked_user, created_at, updated_at",
        (
            row
            for i in range(USERS)
            for row in (
                (
                    env.id,
                    "u",
                    f"user-{i}",
                    _enc({"name": f"사용자{i}", "grade": rng.choice("ABC")}).decode(),
                    "{}",
                    None,
                    start,
                    start,
                ),
                (env.id, "d", f"dev-{i}", "{}", "{}", f"user-{i}", start, start),
            )
        ),
    )
    out.put(
        "push_tokens",
        "env_id, token, device_id, provider_type, status, created_at, updated_at",
        (
            (env.id, f"tok-{i:08d}-{uuid.UUID(int=i).hex}", f"dev-{i}", "FCM", "ACTIVE", start, start)
            for i in range(USERS)
        ),
    )
    dispatch_ids: list[str] = []
    delivery_id = 0
    click_rows: list[tuple[Any, ...]] = []
    event_rows: list[tuple[Any, ...]] = []
    inbox_rows: list[tuple[Any, ...]] = []
    dispatch_rows: list[tuple[Any, ...]] = []
    recipients: list[tuple[Any, ...]] = []
    deliveries: list[tuple[Any, ...]] = []
    count = RECIPIENTS // PER_DISPATCH
    for n in range(count):
        dispatch_id = str(uuid.UUID(int=rng.getrandbits(128)))
        dispatch_ids.append(dispatch_id)
        created = start + n * (DAYS * 86_400_000) // count
        key = rng.randint(1, CAMPAIGNS)
        users = [rng.randrange(USERS) for _ in range(PER_DISPATCH)]
        dispatch_rows.append(
            (
                dispatch_id,
                n + 1,
                env.id,
                key,
                "COMPLETED",
                _enc([{"userId": f"user-{u}"} for u in users]).decode(),
                PER_DISPATCH,
                created,
                created + 2000,
            )
        )
        for idx, u in enumerate(users):
            roll = rng.random()
            outcome, reason = (
                ("SENT", None)
                if roll < 0.85
                else ("FAILED", "UNAVAILABLE")
                if roll < 0.9
                else ("EXCLUDED", rng.choice(["NO_CONSENT", "FREQUENCY_CAP", "NOT_IN_AUDIENCE"]))
            )
            recipients.append((dispatch_id, idx, env.id, f"user-{u}", None, outcome, reason, created + 1000))
            if outcome == "EXCLUDED":
                continue
            delivery_id += 1
            deliveries.append(
                (
                    delivery_id,
                    env.id,
                    dispatch_id,
                    idx,
                    key,
                    f"u:user-{u}",
                    f"dev-{u}",
                    f"tok-{u:08d}",
                    "sandbox",
                    outcome,
                    None if outcome == "SENT" else "UNAVAILABLE",
                    1,
                    created + 500,
                    created + 1000,
                )
            )
            if outcome == "SENT" and rng.random() < 0.06:
                insert_id = f"click-{delivery_id}"
                click_rows.append((env.id, insert_id, key, dispatch_id, delivery_id, created + 60_000))
                event_rows.append(
                    (env.id, insert_id, "u", f"user-{u}", "$push_click", created + 60_000, created + 60_000, "{}", "{}")
                )
            if len(inbox_rows) < 20_000 and rng.random() < 0.03:
                payload = {"title": f"사용자{u}님, 소식이 있어요", "body": "상품 확인해 보세요.", "image_url": None}
                inbox_rows.append((env.id, delivery_id, f"tok-{u:08d}", _enc(payload).decode(), created + 1000))
        if len(dispatch_rows) == 1000 or n == count - 1:
            out.put(
                "dispatches",
                "id, exec_id, env_id, campaign_key, status, users, requested, created_at, completed_at",
                dispatch_rows,
            )
            out.put(
                "recipients", "dispatch_id, idx, env_id, user_id, device_id, outcome, reason, updated_at", recipients
            )
            out.put(
                "deliveries",
                "id, env_id, dispatch_id, recipient_idx, campaign_key, user_key, device_id, token, provider, status, "
                "error_code, attempts, created_at, updated_at",
                deliveries,
            )
            dispatch_rows, recipients, deliveries = [], [], []
    for i in range(USERS):
        at = start + rng.randrange(DAYS * 86_400_000)
        event_rows.append(
            (
                env.id,
                f"purchase-{i}",
                "u",
                f"user-{i}",
                "purchase",
                at,
                at,
                _enc({"amount": rng.randrange(1000, 90000)}).decode(),
                _enc({"name": f"사용자{i}"}).decode(),
            )
        )
    out.put(
        "events", "env_id, insert_id, kind, ident, event_key, ts, received_at, properties, user_properties", event_rows
    )
    out.put("push_clicks", "env_id, insert_id, campaign_key, dispatch_id, delivery_id, clicked_at", click_rows)
    out.put("inbox", "env_id, delivery_id, token, payload, created_at", inbox_rows)
    out.finish()
    if not db.is_sqlite:  # rows written with explicit ids: move the sequence past them
        with db.transaction() as conn:
            db.execute(
                conn, "SELECT setval(pg_get_serial_sequence('deliveries', 'id'), (SELECT MAX(id) FROM deliveries))"
            )
    began = time.perf_counter()
    db.upgrade()
    migration_s = time.perf_counter() - began
    settle(url)
    return {
        "token": token,
        "dispatch": dispatch_ids[-1],
        "recipients": RECIPIENTS,
        "deliveries": delivery_id,
        "clicks": len(click_rows),
        "events": len(event_rows),
        "migration_seconds": round(migration_s, 1),
    }


def pages(store: dict[str, Any]) -> dict[str, str]:
    e = "/dashboard/bench"
    return {
        "overview": f"{e}/",
        "overview of one channel": f"{e}/?channel=push",
        "campaigns": f"{e}/campaigns",
        "campaigns sorted by CTR": f"{e}/campaigns?sort=ctr",
        "campaign, 7 days per day": f"{e}/campaigns/3",
        "campaign, 90 days per hour": f"{e}/campaigns/3?range=90d&grain=hour",
        "campaign previewed as a user": f"{e}/campaigns/3?as=user-4242",
        "dispatch": f"{e}/dispatches/{store['dispatch']}",
        "dispatch, failed only": f"{e}/dispatches/{store['dispatch']}?outcome=FAILED",
        "user lookup by user id": f"{e}/users?q=user-4242",
        "user lookup by device id": f"{e}/users?q=dev-4242",
        "inbox": f"{e}/inbox",
        "inbox of one user": f"{e}/inbox?user=user-4242",
        "keys": f"{e}/keys",
        "gateways": f"{e}/gateways",
        "compare two campaigns": f"{e}/compare?a=3&b=4",
        "campaign figures CSV": f"{e}/campaigns/3/figures.csv",
        "broadcasts": f"{e}/broadcasts",
        "broadcast page (reachable count)": f"{e}/broadcasts/3",
    }


def measure(url: str, store: dict[str, Any], requests: int) -> dict[str, dict[str, float]]:
    with httpx.Client(base_url=url, timeout=30) as client:
        form = client.get("/dashboard/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf is not None
        signed = client.post("/dashboard/login", data={"csrf": csrf.group(1), "token": store["token"]})
        assert signed.status_code == 303, signed.text
        results: dict[str, dict[str, float]] = {}
        for name, path in pages(store).items():
            for _ in range(3):  # warm the templates and the page cache
                assert client.get(path).status_code == 200, (name, path)
            times = []
            for _ in range(requests):
                began = time.perf_counter()
                response = client.get(path)
                times.append((time.perf_counter() - began) * 1000)
                assert response.status_code == 200, (name, response.status_code)
            times.sort()
            results[name] = {
                "p50_ms": round(statistics.median(times), 1),
                "p95_ms": round(times[int(len(times) * 0.95) - 1], 1),
                "max_ms": round(times[-1], 1),
            }
            print(f"  {name:32} p50 {results[name]['p50_ms']:7.1f} ms  p95 {results[name]['p95_ms']:7.1f} ms")
    return results


def run(backend: str) -> Report:
    requests = int(os.environ.get("BENCH_DASHBOARD_REQUESTS", "50"))
    with workdir("dashboard") as tmp:
        data = tmp / "data"
        data.mkdir()
        url = f"sqlite:///{data / 'magpie.db'}" if backend == "sqlite" else _pg_database()
        try:
            began = time.perf_counter()
            store = fill(url)
            print(f"{backend}: filled in {time.perf_counter() - began:.0f} s: {store}", flush=True)
            env = {} if backend == "sqlite" else {"MAGPIE_DATABASE_URL": url}
            server = magpie_serve(data_dir=data, port=free_port(), env=env)
            try:
                results = measure(server.url, store, requests)
            finally:
                server.stop()
        finally:
            if backend == "pg":
                _drop_pg(url)
    worst = max(r["p95_ms"] for r in results.values())
    return Report(
        name=f"dashboard_{backend}",
        command=f"python -m bench.bench_dashboard {backend}",
        target=f"every dashboard page p95 <= {TARGET_MS:.0f} ms with 100,000 users and 1,000,000 recipient outcomes",
        met=worst <= TARGET_MS,
        summary={
            "worst_p95_ms": worst,
            "requests_per_page": requests,
            "users": USERS,
            "recipients": store["recipients"],
            "deliveries": store["deliveries"],
            "attributed_click_rows": store["clicks"],
            "events": store["events"],
            "migration_backfill_seconds": store["migration_seconds"],
            "pages": results,
        },
    )


def main(argv: list[str] | None = None) -> int:
    which = (argv or sys.argv[1:] or ["all"])[0]
    backends = ["sqlite", "pg"] if which == "all" else [which]
    met = True
    for backend in backends:
        report = run(backend)
        print(f"wrote {report.save()}")
        met = met and report.met
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
