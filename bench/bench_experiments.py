"""Benchmark: conversion attribution at event ingestion, and the campaign page of an experiment.

    BENCH_EXPERIMENTS_SCALE=1 python -m bench.bench_experiments [sqlite|pg]   (default: sqlite)

The outcomes and exposures are written in bulk (``executemany`` on SQLite, ``COPY`` on PostgreSQL);
only the measured events go through magpie's write path.

At scale 1, each of two environments holds 1,000,000 recipient outcomes of one experiment campaign
(10% control group, two variants, exposures spread over 30 days, 100,000 users), and 5,000,000 events
are stored through the writer's real job (``StoreEvents``, 100 events a job, 20 jobs a commit), 20% of
them the goal event, each of a random user at a random time of the last 24 hours (events arrive as they
happen; the exposures of the last day are those a 24 h goal can still convert). Environment ``goal``'s
campaign has a goal (its goal events go through attribution); environment ``plain``'s is the same
campaign without one. The rounds (``BENCH_ROUNDS``, default 3) alternate the two on equal slices of
events, so drift on a shared machine hits both alike; the figure is the median of the rounds' rate
ratios (with goal / without).
``BENCH_EXPERIMENTS_SCALE`` scales outcomes, users and events down for a quick run.

Then a real ``magpie serve`` serves the experiment's campaign page to a signed-in client
(``BENCH_DASHBOARD_REQUESTS`` requests, default 50) and the figure is its p95.
"""

from __future__ import annotations

import os
import random
import re
import statistics
import sys
import time
import uuid
from typing import Any

import httpx
import msgspec

from bench._harness import Report, free_port, magpie_serve, rounds, workdir
from bench.bench_dashboard import _Rows, settle
from bench.bench_properties import _drop_pg, _pg_database

OUTCOMES = 1_000_000
EVENTS = 5_000_000
USERS = 100_000
PER_DISPATCH = 1000
DAYS = 30
GOAL_SHARE = 0.2
EVENTS_PER_JOB = 100
JOBS_PER_COMMIT = 20
RATIO_TARGET = 0.85
PAGE_TARGET_MS = 300.0
CAMPAIGN = 1
_enc = msgspec.json.encode

GOAL = {"event": "purchase", "window": "24h", "value": "amount", "where": {"currency": "KRW"}}
VARIANTS = [
    {"name": "A", "weight": 1, "message": {"title": "New arrivals", "body": "Take a look"}},
    {"name": "B", "weight": 1, "message": {"title": "{{ user.id }}, new arrivals", "body": "Take a look"}},
]


def scale() -> float:
    return float(os.environ.get("BENCH_EXPERIMENTS_SCALE", "1"))


def _campaign(with_goal: bool) -> dict[str, Any]:
    from magpie.domain.campaigns import parse_campaign

    definition: dict[str, Any] = {
        "key": CAMPAIGN,
        "name": "New arrivals",
        "status": "ACTIVE",
        "purpose": "INFORMATION",
        "provider": "sandbox",
        "message": VARIANTS[0]["message"],
        "controlGroup": 10,
        "variants": VARIANTS,
    }
    if with_goal:
        definition["goal"] = GOAL
    return parse_campaign(definition).to_json()


def fill(url: str, *, outcomes: int, users: int) -> dict[str, Any]:
    """Two environments with the same experiment campaign and outcomes; only ``goal``'s campaign has a goal."""
    from magpie.domain.campaigns import parse_campaign
    from magpie.store import accounts
    from magpie.store.crypto import hash_secret
    from magpie.store.db import Database

    rng = random.Random(23)
    db = Database(url)
    db.upgrade()
    token = accounts.create_admin_token(db, name="bench")
    now = int(time.time() * 1000)
    start = now - DAYS * 86_400_000
    envs: dict[str, dict[str, Any]] = {}
    made: list[tuple[Any, Any]] = []
    for name in ("goal", "plain"):
        env = accounts.create_environment(db, name=name)
        key, _ = accounts.create_api_key(db, environment=name, name="default")
        definition = _campaign(name == "goal")
        campaign = parse_campaign(definition)
        assert campaign.experiment is not None
        with db.transaction() as conn:
            db.execute(
                conn,
                "INSERT INTO campaigns (env_id, key, name, status, definition, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (env.id, CAMPAIGN, campaign.name, campaign.status, _enc(definition).decode(), now, now),
            )
        envs[name] = {"id": env.id, "key_hash": hash_secret(key)}
        made.append((env, campaign))
    out = _Rows(url)
    exec_id = 0
    for env, campaign in made:
        version = campaign.experiment.version
        arms: dict[int, int] = {}
        count = outcomes // PER_DISPATCH
        for n in range(count):
            dispatch_id = str(uuid.UUID(int=rng.getrandbits(128)))
            created = start + (n + 1) * (DAYS * 86_400_000) // count - 3_600_000
            members = [rng.randrange(users) for _ in range(PER_DISPATCH)]
            exec_id += 1
            out.put(
                "dispatches",
                "id, exec_id, env_id, campaign_key, status, users, requested, created_at, completed_at",
                [(dispatch_id, exec_id, env.id, CAMPAIGN, "COMPLETED", "[]", PER_DISPATCH, created, created + 2000)],
            )
            recipients, exposures = [], []
            for idx, u in enumerate(members):
                arm = arms.get(u, -1)
                if arm < 0:
                    arm = arms[u] = campaign.assign(user_key=f"u:user-{u}").arm  # type: ignore[union-attr]
                outcome, reason = ("EXCLUDED", "CONTROL_GROUP") if arm == 0 else ("SENT", None)
                recipients.append((dispatch_id, idx, env.id, f"user-{u}", None, outcome, reason, created + 1000, arm))
                exposures.append((dispatch_id, idx, env.id, CAMPAIGN, version, arm, f"u:user-{u}", created + 1000))
            out.put(
                "recipients",
                "dispatch_id, idx, env_id, user_id, device_id, outcome, reason, updated_at, variant",
                recipients,
            )
            out.put(
                "exposures", "dispatch_id, idx, env_id, campaign_key, version, arm, user_key, exposed_at", exposures
            )
    out.finish()
    # The hourly counts the writer would have kept for these outcomes and exposures (as migrations 0003
    # and 0012 fill them).
    hour = 3_600_000
    with db.transaction() as conn:
        for campaign_key, grouped in (("d.campaign_key", "d.campaign_key, "), ("0", "")):
            db.execute(
                conn,
                "INSERT INTO campaign_counts (env_id, campaign_key, hour, metric, n) "
                f"SELECT d.env_id, {campaign_key}, (r.updated_at / {hour}) * {hour}, "
                "CASE WHEN r.outcome = 'SENT' THEN 'SENT' ELSE r.outcome || ':' || r.reason END, COUNT(*) "
                f"FROM recipients r JOIN dispatches d ON d.id = r.dispatch_id GROUP BY d.env_id, {grouped}"
                f"(r.updated_at / {hour}) * {hour}, CASE WHEN r.outcome = 'SENT' THEN 'SENT' "
                "ELSE r.outcome || ':' || r.reason END",
            )
        metric = "'EXPOSED:' || version || ':' || CAST(arm AS VARCHAR(8))"
        db.execute(
            conn,
            "INSERT INTO campaign_counts (env_id, campaign_key, hour, metric, n) "
            f"SELECT env_id, campaign_key, (exposed_at / {hour}) * {hour}, {metric}, COUNT(*) FROM exposures "
            f"GROUP BY env_id, campaign_key, (exposed_at / {hour}) * {hour}, {metric}",
        )
    settle(url)
    return {"token": token, "envs": envs, "now": now}


def _events(rng: random.Random, *, count: int, users: int, now: int, prefix: str) -> list[Any]:
    from magpie.domain.events import Event

    events = []
    for i in range(count):
        u = rng.randrange(users)
        at = now - rng.randrange(86_400_000)
        if rng.random() < GOAL_SHARE:
            key, properties = "purchase", {"currency": "KRW", "amount": rng.randrange(1000, 90000)}
        else:
            key, properties = "view", {"page": f"/items/{rng.randrange(500)}"}
        events.append(
            Event(
                insert_id=f"{prefix}-{i}",
                key=key,
                timestamp=at,
                user_id=f"user-{u}",
                device_id=None,
                value=None,
                properties=_enc(properties).decode(),
                identifiers="{}",
                context="{}",
                effect=None,
                where=f"events[{i}]",
            )
        )
    return events


def ingest(url: str, env: dict[str, Any], events: list[Any]) -> tuple[float, float]:
    """Store the events through the writer's job; returns events per second of wall-clock time and of
    this process's CPU time (the writer's job runs here; the latter is less moved by a shared machine)."""
    from magpie.store.db import Database
    from magpie.store.events import StoreEvents
    from magpie.store.writer import BatchRunner

    runner = BatchRunner(db=Database(url))
    try:
        began, cpu = time.perf_counter(), time.process_time()
        per_commit = EVENTS_PER_JOB * JOBS_PER_COMMIT
        for start in range(0, len(events), per_commit):
            chunk = events[start : start + per_commit]
            jobs = [
                StoreEvents(key_hash=env["key_hash"], env_id=env["id"], events=chunk[j : j + EVENTS_PER_JOB])
                for j in range(0, len(chunk), EVENTS_PER_JOB)
            ]
            failed = [o for o, bad in runner.run_batch(jobs) if bad]  # type: ignore[arg-type]
            assert not failed, failed
        return len(events) / (time.perf_counter() - began), len(events) / (time.process_time() - cpu)
    finally:
        runner.shutdown()


def conversions(url: str, env_id: int) -> int:
    from magpie.store.db import Database

    db = Database(url)
    with db.transaction(write=False) as conn:
        row = db.fetchone(conn, "SELECT COUNT(*) FROM conversions WHERE env_id = ?", (env_id,))
    return int(row[0]) if row else 0


def page_times(url: str, token: str, path: str, requests: int) -> dict[str, float]:
    with httpx.Client(base_url=url, timeout=30) as client:
        form = client.get("/dashboard/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf is not None
        signed = client.post("/dashboard/login", data={"csrf": csrf.group(1), "token": token})
        assert signed.status_code == 303, signed.text
        for _ in range(3):
            response = client.get(path)
            assert response.status_code == 200, (path, response.status_code)
            assert "Experiment" in response.text
        times = []
        for _ in range(requests):
            began = time.perf_counter()
            response = client.get(path)
            times.append((time.perf_counter() - began) * 1000)
            assert response.status_code == 200
        times.sort()
        return {
            "p50_ms": round(statistics.median(times), 1),
            "p95_ms": round(times[max(0, int(len(times) * 0.95) - 1)], 1),
            "max_ms": round(times[-1], 1),
        }


def run(engine: str = "sqlite") -> Report:
    pg_url = _pg_database() if engine == "pg" else None
    try:
        return _run(engine, pg_url)
    finally:
        if pg_url:
            _drop_pg(pg_url)


def _run(engine: str, pg_url: str | None) -> Report:
    factor = scale()
    outcomes = max(PER_DISPATCH, int(OUTCOMES * factor) // PER_DISPATCH * PER_DISPATCH)
    users = max(1000, int(USERS * factor))
    events_total = int(EVENTS * factor)
    n_rounds = rounds()
    requests = int(os.environ.get("BENCH_DASHBOARD_REQUESTS", "50"))
    with workdir("experiments") as tmp:
        data = tmp / "data"
        data.mkdir()
        url = pg_url or f"sqlite:///{data / 'magpie.db'}"
        serve_env = {"MAGPIE_DATABASE_URL": pg_url, "MAGPIE_SECRET_KEY": "A" * 43} if pg_url else None
        began = time.perf_counter()
        store = fill(url, outcomes=outcomes, users=users)
        print(f"filled {outcomes} outcomes per environment in {time.perf_counter() - began:.0f} s", flush=True)
        rng = random.Random(5)
        per_slice = events_total // (2 * n_rounds)
        runs = []
        for r in range(n_rounds):
            order = ["goal", "plain"] if r % 2 == 0 else ["plain", "goal"]
            rates, cpu_rates = {}, {}
            for name in order:
                batch = _events(rng, count=per_slice, users=users, now=store["now"], prefix=f"{name}-{r}")
                rates[name], cpu_rates[name] = ingest(url, store["envs"][name], batch)
            ratio = rates["goal"] / rates["plain"]
            cpu_ratio = cpu_rates["goal"] / cpu_rates["plain"]
            runs.append(
                {
                    "round": r + 1,
                    "goal_eps": round(rates["goal"]),
                    "plain_eps": round(rates["plain"]),
                    "ratio": round(ratio, 3),
                    "cpu_ratio": round(cpu_ratio, 3),
                }
            )
            print(
                f"  round {r + 1}: with goal {rates['goal']:.0f}/s, without {rates['plain']:.0f}/s, ratio {ratio:.3f}"
                f" (per CPU second: {cpu_rates['goal']:.0f}/s, {cpu_rates['plain']:.0f}/s, ratio {cpu_ratio:.3f})",
                flush=True,
            )
        made = conversions(url, store["envs"]["goal"]["id"])
        settle(url)
        server = magpie_serve(data_dir=data, port=free_port(), env=serve_env)
        try:
            page = page_times(server.url, store["token"], f"/dashboard/goal/campaigns/{CAMPAIGN}", requests)
        finally:
            server.stop()
    ratio = statistics.median(r["ratio"] for r in runs)
    cpu_ratio = statistics.median(r["cpu_ratio"] for r in runs)
    print(f"median ratio {ratio:.3f} (per CPU second {cpu_ratio:.3f}); {made} conversions; campaign page {page}")
    return Report(
        name=f"experiments_{engine}",
        command=(
            f"BENCH_EXPERIMENTS_SCALE={factor:g} BENCH_ROUNDS={n_rounds} python -m bench.bench_experiments {engine}"
        ),
        target=(
            f"event ingestion with a goal >= {RATIO_TARGET} x its rate without (median of rounds), and the "
            f"experiment's campaign page p95 <= {PAGE_TARGET_MS:.0f} ms, with 1,000,000 recipient outcomes and "
            "5,000,000 events at scale 1"
        ),
        met=ratio >= RATIO_TARGET and page["p95_ms"] <= PAGE_TARGET_MS,
        summary={
            "engine": engine,
            "scale": factor,
            "outcomes_per_environment": outcomes,
            "users": users,
            "events_stored": per_slice * 2 * n_rounds,
            "goal_share": GOAL_SHARE,
            "conversions": made,
            "median_ratio": round(ratio, 3),
            "median_cpu_ratio": round(cpu_ratio, 3),
            "campaign_page": page,
            "requests": requests,
        },
        runs=runs,
    )


def main(argv: list[str]) -> int:
    report = run(argv[0] if argv else "sqlite")
    print(f"wrote {report.save()}")
    return 0 if report.met else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
