"""Benchmark: a broadcast's reachable count and its planning rate on a generated audience.

    python -m bench.bench_broadcast [sqlite|pg|all]   (BENCH_BROADCAST_USERS=100000 by default)

The store holds N users, each with a device and a live push token; 10% have declined marketing
push, the rest consented. The campaign is a MARKETING push to everyone (SUBSCRIBED_ONLY). Measured
in one process, on the same code the scheduler runs:

- reach: ``store.broadcasts.reach`` over the whole environment (pages of 5,000 users);
- planning: one "send now" occurrence planned by ``Scheduler.plan_one`` (pages of
  ``MAGPIE_BROADCAST_PAGE_SIZE``, default 1,000): every reachable user written into dispatches and work
  items; the rate is reachable users per second of planning.

Targets of the issue (1,000,000 users): reach <= 2 s, planning >= 50,000 users/s. Both figures scale
with N; the report says what N was run.
"""

from __future__ import annotations

import asyncio
import os
import resource
import sys
import time
from typing import Any

import msgspec

from bench._harness import Report, median, rounds, workdir
from bench.bench_dashboard import _Rows, settle
from bench.bench_properties import _drop_pg, _pg_database

USERS = int(os.environ.get("BENCH_BROADCAST_USERS", "100000"))
_enc = msgspec.json.encode
CAMPAIGN = {
    "key": 1,
    "name": "Winter sale",
    "status": "ACTIVE",
    "purpose": "MARKETING",
    "provider": "sandbox",
    "consentRule": "SUBSCRIBED_ONLY",
    "message": {"title": "겨울 세일", "body": "지금 확인하세요"},
}


def fill(url: str, users: int) -> int:
    from magpie.store import accounts, campaigns
    from magpie.store.db import Database

    db = Database(url)
    db.upgrade()
    env = accounts.create_environment(db, name="bench", timezone="Asia/Seoul")
    campaigns.apply_campaign(db, env_id=env.id, raw=CAMPAIGN)
    rows = _Rows(url)
    now = int(time.time() * 1000)
    yes = _enc({"push": {"marketing": {"status": "SUBSCRIBED", "updatedAt": now}}}).decode()
    no = _enc({"push": {"marketing": {"status": "UNSUBSCRIBED", "updatedAt": now}}}).decode()
    rows.put(
        "profiles",
        "env_id, kind, ident, properties, crm, created_at, updated_at",
        (
            (env.id, "u", f"user-{i:08d}", '{"grade":"GOLD"}', no if i % 10 == 0 else yes, now, now)
            for i in range(users)
        ),
    )
    rows.put(
        "profiles",
        "env_id, kind, ident, properties, crm, linked_user, created_at, updated_at",
        ((env.id, "d", f"dev-{i:08d}", "{}", "{}", f"user-{i:08d}", now, now) for i in range(users)),
    )
    rows.put(
        "push_tokens",
        "env_id, token, device_id, provider_type, status, created_at, updated_at",
        ((env.id, f"tok-{i:08d}", f"dev-{i:08d}", "FCM", "ACTIVE", now, now) for i in range(users)),
    )
    rows.finish()
    settle(url)
    return env.id


async def _measure(url: str, env_id: int, data_dir: Any) -> dict[str, Any]:
    from magpie.config import Settings
    from magpie.dispatch.scheduler import Scheduler
    from magpie.domain.campaigns import parse_campaign
    from magpie.runtime import Runtime
    from magpie.store import broadcasts

    settings = Settings(
        data_dir=data_dir, database_url_override=None if url.startswith("sqlite") else url, writer="thread"
    )
    if url.startswith("sqlite"):
        settings = settings.with_(database_url_override=url)
    runtime = Runtime.open(settings, migrate=False)
    try:
        campaign = parse_campaign(CAMPAIGN)
        reader = runtime.reader
        started = time.perf_counter()
        found = await reader.call(
            lambda: broadcasts.reach(
                reader.read_here, runtime.db, env_id=env_id, campaign=campaign, now_ms=int(time.time() * 1000)
            )
        )
        reach_s = time.perf_counter() - started
        occurrence_id = await runtime.writer.submit(
            broadcasts.CreateOccurrence(
                env_id=env_id,
                campaign_key=1,
                slot_ms=int(time.time() * 1000),
                channel="push",
                kind=broadcasts.OccurrenceKind.NOW,
            )
        )
        started = time.perf_counter()
        await Scheduler(runtime, settings=settings).plan_one()
        plan_s = time.perf_counter() - started
        progress = await reader.read(
            lambda conn: broadcasts.occurrence_progress(
                conn, runtime.db, env_id=env_id, occurrence_id=occurrence_id, now_ms=int(time.time() * 1000)
            )
        )
        return {
            "reach_s": round(reach_s, 3),
            "reachable": found.reachable,
            "unreachable": found.unreachable,
            "planned": progress.planned,
            "plan_s": round(plan_s, 3),
            "plan_users_per_s": round(progress.planned / plan_s),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
    finally:
        await runtime.close()


def run(engine: str) -> Report:
    runs = []
    for _ in range(rounds()):
        with workdir(f"broadcast-{engine}") as tmp:
            url = f"sqlite:///{tmp / 'data' / 'magpie.db'}" if engine == "sqlite" else _pg_database()
            (tmp / "data").mkdir()
            try:
                env_id = fill(url, USERS)
                runs.append(asyncio.run(_measure(url, env_id, tmp / "data")))
            finally:
                if engine == "pg":
                    _drop_pg(url)
        print(engine, runs[-1], file=sys.stderr)
    reach_s = median([r["reach_s"] for r in runs])
    rate = median([r["plan_users_per_s"] for r in runs])
    summary = {"users": USERS, "reach_s_median": reach_s, "plan_users_per_s_median": rate}
    scale = 1_000_000 / USERS
    return Report(
        name=f"broadcast_{engine}",
        command=f"BENCH_BROADCAST_USERS={USERS} python -m bench.bench_broadcast {engine}",
        target="1,000,000 users: reachable count <= 2 s, planning >= 50,000 users/s",
        met=USERS >= 1_000_000 and reach_s <= 2.0 and rate >= 50_000,
        summary={**summary, "reach_s_scaled_to_1m_estimate": round(reach_s * scale, 1)},
        runs=runs,
    )


def main() -> None:
    which = sys.argv[1] if len(sys.argv) > 1 else "all"
    for engine in ("sqlite", "pg") if which == "all" else (which,):
        report = run(engine)
        print(report.name, report.summary, "saved to", report.save())


if __name__ == "__main__":
    main()
