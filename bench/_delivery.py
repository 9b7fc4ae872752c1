"""The delivery benchmarks' round loop: `magpie worker` processes delivering accepted dispatches to a fake.

Each round measures the baseline first, then accepts every dispatch of the round in one writer
transaction and times until the fake has received one message per recipient. The benchmark
supplies the parts that differ (the baseline, the dispatches, what a round reports); this runs the
workers, the rounds and the clean-up the same way for all of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from bench._harness import PYTHON, ROOT, CpuMeter, PidGroups, cpu_seconds, descendants, postgres_backends, rounds
from magpie.store.crypto import hash_secret
from magpie.store.db import Database
from magpie.store.dispatches import AcceptTrigger
from magpie.store.writer import FnJob, GroupCommitWriter

B = TypeVar("B")
# (processes by role, recipients of the round) -> what runs around one round's delivery.
Observe = Callable[[dict[str, list[int]], int], AbstractContextManager[object]]


@dataclass
class Round(Generic[B]):
    """One measured round: the baseline's figures, magpie's rate and the dispatches it accepted."""

    number: int
    baseline: B
    rate: float
    dispatch_ids: list[str]


def accept_all(
    writer: GroupCommitWriter, *, key: str, env_id: int, users: int, round_no: int, channel: str = "push"
) -> list[str]:
    """Accept ``users`` recipients of campaign 1 as Hackle's trigger would, 50 per dispatch; returns their ids.

    All dispatches of the round commit in one transaction: the round's clock starts at that commit.
    """
    jobs = []
    for start_at in range(0, users, 50):
        batch = [
            {"userId": f"user-{i}", "apiProperties": {"productNumber": str(i)}} for i in range(start_at, start_at + 50)
        ]
        jobs.append(
            AcceptTrigger(
                key_hash=hash_secret(key),
                env_id=env_id,
                campaign_key=1,
                users=json.dumps(batch),
                requested=len(batch),
                idempotency_key=f"bench-{round_no}-{start_at}",
                channel=channel,
            )
        )
    return [dispatch_id for dispatch_id, _ in writer.run_sync(FnJob(lambda tx: [job.run(tx) for job in jobs]))]


async def send_now(runtime: Any, *, env_id: int, campaign_key: int = 1, channel: str = "push") -> int:
    """Create a "send now" occurrence of a campaign through ``runtime``'s writer; its id."""
    from magpie.store import broadcasts

    occurrence_id = await runtime.writer.submit(
        broadcasts.CreateOccurrence(
            env_id=env_id,
            campaign_key=campaign_key,
            slot_ms=int(time.time() * 1000),
            channel=channel,
            kind=broadcasts.OccurrenceKind.NOW,
        )
    )
    assert occurrence_id is not None
    return int(occurrence_id)


def nothing_accepted(_writer: object, _round_no: int) -> list[str]:
    return []  # a broadcast's dispatches are planned inside the round


def plan_occurrence(
    data: Path,
    db: Database,
    env_id: int,
    *,
    channel: str = "push",
    database_url: str | None = None,
    secret_key: str | None = None,
) -> list[str]:
    """A "send now" occurrence of campaign 1, planned whole by the scheduler's own code; its dispatch ids."""
    import asyncio

    from magpie.config import Settings
    from magpie.dispatch.scheduler import Scheduler
    from magpie.runtime import Runtime

    async def plan() -> int:
        settings = Settings(
            data_dir=data, writer="thread", workers=0, database_url_override=database_url, secret_key=secret_key
        )
        runtime = Runtime.open(settings, migrate=False)
        try:
            occurrence_id = await send_now(runtime, env_id=env_id, channel=channel)
            await Scheduler(runtime, settings=settings).plan_one()
            return occurrence_id
        finally:
            await runtime.close()

    occurrence_id = asyncio.run(plan())
    with db.transaction(write=False) as conn:
        return [
            str(dispatch_id)
            for (dispatch_id,) in db.fetchall(
                conn, "SELECT dispatch_id FROM broadcast_dispatches WHERE occurrence_id = ?", (occurrence_id,)
            )
        ]


# magpie's own processes: the dispatch workers and their writers.
OWN = ("workers", "writers")
CPU_GROUPS = (*OWN, "postgres", "fake", "load")


def groups(
    workers: list[subprocess.Popen[bytes]],
    *,
    fake_pid: int | Callable[[], int] | None,
    database: str | None,
    admin_url: str | None,
) -> PidGroups:
    """The processes of one delivery round by role: the workers, their writer children, the database's
    backends (PostgreSQL), the fake, and this process (acceptance and watching the fake: the load)."""
    found: PidGroups = {
        "workers": [w.pid for w in workers],
        "writers": [child for w in workers for child in descendants(w.pid)],
        "postgres": [],
        "fake": [] if fake_pid is None else [fake_pid() if callable(fake_pid) else fake_pid],
        "load": [os.getpid()],
    }
    if database is not None and admin_url is not None:
        found["postgres"] = postgres_backends(database, admin_url)
    return found


def cpu_summary(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Median µs of CPU per recipient by role over the rounds, and magpie's own (workers + writers)."""
    from bench._harness import median

    out = {role: round(median([r["cpu_us"].get(role, 0.0) for r in runs]), 1) for role in (*CPU_GROUPS, "other")}
    out["magpie"] = round(median([sum(r["cpu_us"].get(role, 0.0) for role in OWN) for r in runs]), 1)
    return out


def cpu_line(cpu: dict[str, float]) -> str:
    return ", ".join(f"{role} {cpu.get(role, 0):.0f}" for role in (*CPU_GROUPS, "other"))


def peak_rss_mb(pid: int) -> float:
    """The peak resident set of ``pid`` so far (``VmHWM`` of /proc/PID/status), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start_workers(data: Path, processes: int, env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    """``processes`` `magpie worker` processes on the data directory, polling every 50 ms."""
    worker_env = {"MAGPIE_DATA_DIR": str(data), "MAGPIE_POLL_INTERVAL": "0.05", **env}
    return [
        subprocess.Popen(
            [PYTHON, "-m", "magpie.cli", "worker"],
            cwd=ROOT,
            env={**os.environ, **worker_env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(processes)
    ]


def settled(workers: list[subprocess.Popen[bytes]], *, limit: float = 60.0) -> None:
    """Wait until the workers have started (their writers too) and sit idle: their CPU grows by less
    than 50 ms in a second. A worker still importing when the first round starts would count its
    start-up in that round's CPU per recipient."""
    deadline = time.monotonic() + limit
    time.sleep(1)
    before = sum(cpu_seconds(pid) for w in workers for pid in [w.pid, *descendants(w.pid)])
    while time.monotonic() < deadline:
        time.sleep(1)
        pids = [pid for w in workers for pid in [w.pid, *descendants(w.pid)]]
        now = sum(cpu_seconds(pid) for pid in pids)
        if len(pids) > len(workers) and now - before < 0.05:
            return
        before = now


def outcomes(db: Database) -> dict[str, int]:
    """Recipients by outcome (``PENDING`` for those without one yet)."""
    with db.transaction(write=False) as conn:
        return dict(db.fetchall(conn, "SELECT COALESCE(outcome, 'PENDING'), COUNT(*) FROM recipients GROUP BY 1"))


def run_rounds(
    *,
    db: Database,
    data: Path,
    processes: int,
    worker_env: dict[str, str],
    recipients: int,
    received: Callable[[], int],
    baseline: Callable[[], B],
    accept: Callable[[GroupCommitWriter, int], list[str]],
    report: Callable[[Round[B]], dict[str, Any]],
    settle_seconds: float = 0.0,
    fake_pid: int | Callable[[], int] | None = None,
    observe: Observe | None = None,
    database: str | None = None,
    admin_url: str | None = None,
    first_round: int = 1,
    before_round: Callable[[], None] | None = None,
    plan: Callable[[], list[str]] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Run ``rounds()`` rounds; answer each round's ``report`` and the recipients' outcomes at the end.

    ``received`` counts what the fake has received so far; ``accept(writer, round_no)`` accepts the
    round's dispatches (``recipients`` messages in all) and answers their ids. With
    ``settle_seconds``, the workers get up to that long after the last round to complete every
    dispatch (reports included) before they are stopped. With ``observe``, each round's delivery
    (from acceptance to the fake's receipt of the last message) runs inside ``observe(pids, recipients)``,
    ``pids`` naming the processes at work: the workers, their writers and the fake (``fake_pid``). With
    ``plan``, the round's recipients are planned inside the round (a broadcast occurrence) and ``plan``
    answers their dispatch ids.
    """
    runs: list[dict[str, Any]] = []
    workers = start_workers(data, processes, worker_env)
    writer = GroupCommitWriter(db=db)
    writer.start()
    try:
        settled(workers)
        for round_no in range(first_round, first_round + rounds()):
            if before_round is not None:
                before_round()
            figures = baseline()
            before = received()
            roles = groups(workers, fake_pid=fake_pid, database=database, admin_url=admin_url)
            pids = {role: roles[role] for role in ("workers", "writers", "fake")}
            meter = CpuMeter(lambda: groups(workers, fake_pid=fake_pid, database=database, admin_url=admin_url))
            with observe(pids, recipients) if observe is not None else nullcontext(), meter:
                # The round's clock starts at the commit of its dispatches, as ``accept_all`` says: the
                # delivery of accepted dispatches is what is timed (the CPU meters run from before it).
                accepting = time.perf_counter()
                ids = accept(writer, round_no)
                started = time.perf_counter()
                if plan is not None:
                    # A broadcast's slice: its audience is planned (the workers take each page as it is
                    # written) inside the round.
                    ids = plan()
                deadline = time.monotonic() + 300
                while received() - before < recipients and time.monotonic() < deadline:
                    time.sleep(0.02)
                elapsed = time.perf_counter() - started
            rate = (received() - before) / elapsed
            cpu = {role: round(seconds * 1e6 / recipients, 1) for role, seconds in meter.seconds.items()}
            cpu.pop("wall", None)
            cpu.pop("wrk", None)
            accept_s = round(started - accepting, 3)
            runs.append({**report(Round(round_no, figures, rate, ids)), "cpu_us": cpu, "accept_seconds": accept_s})
            print(f"      CPU µs/recipient: {cpu_line(cpu)}; acceptance {accept_s} s before the clock", flush=True)
        deadline = time.monotonic() + settle_seconds
        while time.monotonic() < deadline:
            with db.transaction(write=False) as conn:
                pending = db.fetchone(conn, "SELECT COUNT(*) FROM dispatches WHERE status <> 'COMPLETED'")
            if pending and pending[0] == 0:
                break
            time.sleep(0.2)
    finally:
        writer.stop()
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)
    return runs, outcomes(db)
