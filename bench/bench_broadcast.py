"""Benchmark: a broadcast's reachable count and its planning rate on a generated audience.

    python -m bench.bench_broadcast [sqlite|pg|all]   (BENCH_BROADCAST_USERS=100000 by default)

The store holds N users, each with a device and a live push token; 10% have declined marketing
push, the rest consented. The campaign is a MARKETING push to everyone (SUBSCRIBED_ONLY). Measured
in one process, on the same code the scheduler runs:

- reach: ``store.broadcasts.reach`` over the whole environment (pages of 5,000 users);
- peak RSS: of the measuring process (the store is filled by a child process);
- planning: one "send now" occurrence planned by ``Scheduler.plan_one`` (pages of
  ``MAGPIE_BROADCAST_PAGE_SIZE``, default 1,000): every reachable user written into dispatches and work
  items; the rate is reachable users per second of planning.

- with ``BENCH_BROADCAST_PROCESSES=1``: a ``magpie serve`` and a ``magpie worker`` run on the same store
  (their schedulers off, so that the measured planner plans), delivering what planning enqueues to the
  sandbox while it plans and ``BENCH_BROADCAST_DELIVER_SECONDS`` (default 30) after; the peak RSS
  (``VmHWM``) of each is reported beside the planner's.

Targets (1,000,000 users): reach <= 2 s, planning >= 50,000 users/s, peak RSS of every magpie process
<= 200 MB. Both rates scale with N; the report says what N was run.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import resource
import socket
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import msgspec

from bench._delivery import send_now
from bench._harness import Report, median, rounds, workdir
from bench.bench_dashboard import _Rows, settle
from bench.bench_properties import _drop_pg, _pg_database

USERS = int(os.environ.get("BENCH_BROADCAST_USERS", "100000"))
PROCESSES = os.environ.get("BENCH_BROADCAST_PROCESSES") == "1"
DELIVER_SECONDS = float(os.environ.get("BENCH_BROADCAST_DELIVER_SECONDS", "30"))
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
    # Consented to marketing push at night too, so that what is planned is also sent at any hour.
    consent = {"status": "SUBSCRIBED", "updatedAt": now}
    yes = _enc({"push": {"marketing": consent, "night": consent}}).decode()
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


def _start(command: str, url: str, data_dir: Any) -> subprocess.Popen[bytes]:
    """``magpie serve`` or ``magpie worker`` on the store, its scheduler off."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "MAGPIE_DATA_DIR": str(data_dir),
        "MAGPIE_DATABASE_URL": url,
        "MAGPIE_HOST": "127.0.0.1",
        "MAGPIE_PORT": str(port),
        "MAGPIE_BROADCAST_POLL_SECONDS": "0",
        "PYTHONUNBUFFERED": "1",
    }
    log = open(data_dir.parent / f"{command}.log", "wb")
    return subprocess.Popen([sys.executable, "-m", "magpie.cli", command], env=env, stdout=log, stderr=log)


def _children(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux), e.g. a magpie process's writer."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as listed:
            return [int(p) for p in listed.read().split()]
    except OSError:
        return []


def _peak_rss_mb(pid: int) -> float:
    """VmHWM of a running process, in MB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


async def _measure(url: str, env_id: int, data_dir: Any, *, processes: bool) -> dict[str, Any]:
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
    children = {name: _start(name, url, data_dir) for name in ("serve", "worker")} if processes else {}
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
        occurrence_id = await send_now(runtime, env_id=env_id)
        started = time.perf_counter()
        await Scheduler(runtime, settings=settings).plan_one()
        plan_s = time.perf_counter() - started
        rss = {}
        if children:
            await asyncio.sleep(DELIVER_SECONDS)
            rss = {f"{name}_peak_rss_mb": _peak_rss_mb(child.pid) for name, child in children.items()}
            # Their writer processes (children of each): every magpie process counts.
            rss.update(
                {
                    f"{name}_writer_peak_rss_mb": max((_peak_rss_mb(pid) for pid in _children(child.pid)), default=0.0)
                    for name, child in children.items()
                }
            )
            print("peak RSS beside the planner", rss, file=sys.stderr)
            rss["outcomes_meanwhile"] = await reader.read(
                lambda conn: {
                    f"{outcome} {reason or ''}".strip(): n
                    for outcome, reason, n in runtime.db.fetchall(
                        conn, "SELECT outcome, reason, COUNT(*) FROM recipients GROUP BY outcome, reason"
                    )
                }
            )
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
            **rss,
        }
    finally:
        for name, child in children.items():
            # A stopping magpie finishes the batches it holds first: give it time, then end it.
            child.terminate()
            try:
                child.wait(timeout=120)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            if os.environ.get("BENCH_BROADCAST_SHOW_LOGS"):
                print(name, (data_dir.parent / f"{name}.log").read_text()[-1500:], file=sys.stderr)
        await runtime.close()


def run(engine: str) -> Report:
    """``rounds()`` measurements on one store filled once (each plans a new "send now" occurrence of the
    same audience); with ``BENCH_BROADCAST_PROCESSES=1`` one more, with ``magpie serve`` and ``magpie worker``
    delivering beside the planner, for their peak RSS."""
    runs = []
    with workdir(f"broadcast-{engine}") as tmp:
        url = f"sqlite:///{tmp / 'data' / 'magpie.db'}" if engine == "sqlite" else _pg_database()
        (tmp / "data").mkdir()
        try:
            # Filled in a child process, so that the peak RSS measured is the planner's alone.
            started = time.perf_counter()
            with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
                env_id = pool.submit(fill, url, USERS).result()
            print(engine, "filled in", round(time.perf_counter() - started, 1), "s", file=sys.stderr)
            for _ in range(rounds()):
                runs.append(asyncio.run(_measure(url, env_id, tmp / "data", processes=False)))
                print(engine, runs[-1], file=sys.stderr)
            beside = asyncio.run(_measure(url, env_id, tmp / "data", processes=True)) if PROCESSES else None
            if beside is not None:
                print(engine, "with serve and worker", beside, file=sys.stderr)
        finally:
            if engine == "pg":
                _drop_pg(url)
    reach_s = median([r["reach_s"] for r in runs])
    rate = median([r["plan_users_per_s"] for r in runs])
    summary: dict[str, Any] = {
        "users": USERS,
        "reach_s_median": reach_s,
        "plan_users_per_s_median": rate,
        "planner_peak_rss_mb_max": max((r["peak_rss_mb"] for r in runs), default=None),
    }
    if beside is not None:
        summary["with_serve_and_worker"] = beside
    scale = 1_000_000 / USERS
    return Report(
        name=f"broadcast_{engine}",
        command=f"BENCH_BROADCAST_USERS={USERS}{' BENCH_BROADCAST_PROCESSES=1' if PROCESSES else ''} "
        f"python -m bench.bench_broadcast {engine}",
        target="1,000,000 users: reachable count <= 2 s, planning >= 50,000 users/s, peak RSS <= 200 MB",
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
