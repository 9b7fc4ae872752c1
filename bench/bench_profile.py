"""Where the CPU goes: sampling profiles of property updates (benchmark 1) and of delivery (benchmarks 4, 8).

wrk sends the seed body (64 connections) while py-spy samples the server process and its writer
process without stopping them (``--nonblocking``). Each sample in which a process was not
waiting for work (py-spy leaves out threads blocked in a poll or on a lock; an fsync counts as
busy) is put in one category; the result is each category's share of those samples, beside the
process's CPU time per request read from ``/proc`` in the same run.

Delivery: the same, for the `magpie worker` processes, their writer processes and the fake
gateway while benchmark 4 (push to the fake FCM) or 8 (AlimTalk to the fake NHN Cloud, SMS to the
fake Solapi) delivers each round; CPU is reported per recipient.

    python -m bench.bench_profile [sqlite|pg]
    python -m bench.bench_profile delivery [fcm|nhn|solapi|nhn-pg|solapi-pg|nhn-broadcast|solapi-broadcast]

Experiments: the store of ``bench.bench_experiments`` (``BENCH_EXPERIMENTS_SCALE``, default 0.05 here), then the same
slice of events stored through the writer's job (``StoreEvents``) in this process, once into the
environment whose campaign has a goal and once into the one whose campaign has none, each under py-spy:
the share of samples per step of the job, beside the rate of each.

    python -m bench.bench_profile experiments
"""

from __future__ import annotations

import ast
import functools
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import bench_experiments as bench
from bench._harness import (
    PYTHON,
    ROOT,
    CpuMeter,
    Report,
    cpu_seconds,
    free_port,
    magpie_cli,
    magpie_serve,
    seconds,
    workdir,
    wrk,
)
from bench.bench_properties import USERS, _drop_pg, _pg_database

RATE = 250  # samples per second per process
WAITING = "waiting"  # a sample of a thread blocked in Python-visible waiting code: not CPU


@dataclass(frozen=True)
class Rules:
    table: list[tuple[str, str | None, str]]  # (file fragment, function or None for any, category)
    innermost: bool


SERVER_RULES = Rules(
    innermost=True,
    table=[
        ("threading.py", "wait", WAITING),
        ("concurrent/futures/thread.py", "_worker", WAITING),
        ("magpie/store/writer.py", None, "hand-off to the writer (pickle, pipe, answers)"),
        ("magpie/api/http/auth.py", None, "API key check and rate limits"),
        ("prometheus_client/", None, "metrics"),
        ("magpie/metrics.py", None, "metrics"),
        ("magpie/api/http/protocol.py", "_arm", "slow-client deadlines"),
        ("magpie/api/http/protocol.py", "_disarm", "slow-client deadlines"),
        ("magpie/", None, "magpie routing and handlers"),
        ("uvicorn/", None, "HTTP: uvicorn protocol, ASGI messages"),
        ("asyncio/", None, "event loop (tasks, futures, callbacks)"),
        ("uvloop/", None, "event loop (tasks, futures, callbacks)"),
    ],
)
WRITER_RULES = Rules(
    innermost=False,
    table=[
        ("threading.py", "wait", WAITING),
        ("multiprocessing/connection.py", "_recv", WAITING),
        ("magpie/store/transaction.py", "flush", "write changed profiles back"),
        ("magpie/store/db.py", "commit", "commit (WAL write and fsync)"),
        ("magpie/store/transaction.py", "commit", "commit (WAL write and fsync)"),
        ("magpie/store/transaction.py", "open", "read and lock the batch's profiles and keys"),
        ("magpie/store/transaction.py", "_load", "read and lock the batch's profiles and keys"),
        ("magpie/store/transaction.py", "profile", "read and lock the batch's profiles and keys"),
        ("magpie/domain/bodies.py", None, "decode and validate request bodies"),
        ("magpie/store/profiles.py", "prepare", "decode and validate request bodies"),
        ("magpie/domain/operations.py", "parse_operations", "decode and validate request bodies"),
        ("magpie/domain/operations.py", None, "apply the operations"),
        ("magpie/store/profiles.py", None, "apply the operations"),
        ("magpie/store/transaction.py", None, "apply the operations"),
        ("magpie/store/writer.py", None, "batch bookkeeping, pipe and pickle"),
    ],
)


WORKER_RULES = Rules(
    innermost=True,
    table=[
        ("threading.py", "wait", WAITING),
        ("concurrent/futures/thread.py", "_worker", WAITING),
        ("magpie/store/reader.py", None, "load: reads (in the reader thread)"),
        ("magpie/store/deliveries.py", "load_snapshot", "load: reads (in the reader thread)"),
        ("magpie/store/deliveries.py", "_resolve_targets", "load: reads (in the reader thread)"),
        ("magpie/store/db.py", None, "load: reads (in the reader thread)"),
        ("magpie/store/writer.py", None, "hand-off to the writer (pickle, pipe, answers)"),
        ("magpie/domain/campaigns.py", None, "render"),
        ("liquid/", None, "render"),
        ("magpie/domain/", None, "decide"),
        ("magpie/store/crypto.py", None, "decrypt phone numbers"),
        ("cryptography/", None, "decrypt phone numbers"),
        ("magpie/providers/", None, "gateway or provider client (build requests, parse answers)"),
        ("aiohttp/", None, "HTTP client (aiohttp)"),
        ("httpx/", None, "HTTP client (httpx)"),
        ("prometheus_client/", None, "metrics"),
        ("magpie/dispatch/", None, "pipeline stages and senders"),
        ("msgspec/", None, "pipeline stages and senders"),
        ("asyncio/", None, "event loop (tasks, futures, callbacks)"),
        ("uvloop/", None, "event loop (tasks, futures, callbacks)"),
    ],
)
DELIVERY_WRITER_RULES = Rules(
    innermost=False,
    table=[
        ("threading.py", "wait", WAITING),
        ("multiprocessing/connection.py", "_recv", WAITING),
        ("magpie/store/db.py", "commit", "commit (WAL write and fsync)"),
        ("magpie/store/transaction.py", "commit", "commit (WAL write and fsync)"),
        ("magpie/store/deliveries.py", "ClaimWork", "claim work items"),
        ("magpie/store/deliveries.py", "HoldLease", "hold the lease before a gateway batch"),
        ("magpie/store/deliveries.py", "RecordOutcomes", "record outcomes"),
        ("magpie/store/deliveries.py", "ReserveBatch", "reserve (recipients, caps, daily limit, deliveries)"),
        ("magpie/store/deliveries.py", "PrepareRecipients", "reserve (recipients, caps, daily limit, deliveries)"),
        ("magpie/store/deliveries.py", "_capped", "reserve (recipients, caps, daily limit, deliveries)"),
        ("magpie/store/deliveries.py", "_has_delivery", "reserve (recipients, caps, daily limit, deliveries)"),
        ("magpie/store/deliveries.py", "_reserve_paid", "reserve (recipients, caps, daily limit, deliveries)"),
        ("magpie/store/deliveries.py", "RecordRecipient", "record outcomes"),
        ("magpie/store/deliveries.py", "RecordRecipients", "record outcomes"),
        ("magpie/store/stats.py", None, "record outcomes"),
        ("magpie/store/deliveries.py", "FinishItem", "finish work items"),
        ("magpie/store/deliveries.py", "ExtendLease", "hold the lease before a gateway batch"),
        ("magpie/store/deliveries.py", "InboxRecord", "sandbox inbox"),
        ("magpie/store/writer.py", None, "batch bookkeeping, pipe and pickle"),
    ],
)
INGEST_RULES = Rules(
    innermost=False,
    table=[
        ("threading.py", "wait", WAITING),
        ("bench/bench_experiments.py", "_events", WAITING),  # building the slice is not the measured work
        ("magpie/store/conversions.py", "_goals", "attribution: the environment's goals"),
        ("magpie/store/conversions.py", "_linked_users", "attribution: linked devices"),
        ("magpie/store/conversions.py", "_exposures", "attribution: read the exposures"),
        ("magpie/store/conversions.py", "_attribute", "attribution: match events, store conversions"),
        ("magpie/store/conversions.py", None, "attribution: other"),
        ("magpie/store/stats.py", None, "hourly counts"),
        ("magpie/store/db.py", "commit", "commit (WAL write and fsync)"),
        ("magpie/store/transaction.py", "commit", "commit (WAL write and fsync)"),
        ("magpie/store/transaction.py", "open", "read and lock the batch's profiles and keys"),
        ("magpie/store/events.py", "_claim", "insert the events"),
        ("magpie/store/events.py", "_stored_ids", "look up stored event ids"),
        ("magpie/store/events.py", None, "events: apply and side effects"),
        ("magpie/store/", None, "store: other"),
    ],
)
FAKE_RULES = Rules(innermost=False, table=[("threading.py", "wait", WAITING), ("selectors.py", "select", WAITING)])


def _matches(frame: str, fragment: str, name: str | None) -> bool:
    function, _, where = frame.partition(" (")
    return fragment in where and (name is None or name in function.split("."))


@functools.cache
def _classes(path: str) -> list[tuple[int, int, str]]:
    """``(first line, last line, class name)`` of the top-level classes of a module of ``src``."""
    tree = ast.parse((ROOT / "src" / path).read_text())
    return [(n.lineno, n.end_lineno or n.lineno, n.name) for n in tree.body if isinstance(n, ast.ClassDef)]


def _qualified(frame: str) -> str:
    """``run (…/magpie/store/deliveries.py:412)`` -> ``PrepareRecipients.run (…)``: py-spy names no class,
    and every writer job's method is ``run``."""
    function, _, where = frame.partition(" (")
    at = where.find("magpie/store/")
    if at < 0 or "." in function:
        return frame
    path, _, line = where[at:].rstrip(")").rpartition(":")
    if not line.isdigit():
        return frame
    for first, last, name in _classes(path):
        if first <= int(line) <= last:
            return f"{name}.{function} ({where}"
    return frame


def categorize(stack: list[str], rules: Rules) -> str:
    """The category of one sample; ``stack`` holds py-spy frames ``function (file:line)``, outermost first.

    ``innermost`` rules: the innermost frame that any rule names decides (the server: whose code runs,
    uvicorn's or magpie's, whoever called it). Otherwise the first rule that names any frame decides
    (the writer: what step of the batch the sample is in, whatever helper runs it).
    """
    if rules.innermost:
        for frame in reversed(stack):
            for fragment, name, category in rules.table:
                if _matches(frame, fragment, name):
                    return category
        return "other"
    for fragment, name, category in rules.table:
        if any(_matches(frame, fragment, name) for frame in stack):
            return category
    return "other"


def shares(raw: str, rules: Rules) -> dict[str, float]:
    """Share of CPU samples per category, from py-spy's ``--format raw`` (collapsed stacks)."""
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        # py-spy puts the thread first when asked for it; we did not, so every part is a frame.
        counts[categorize([_qualified(frame) for frame in stack.split(";")], rules)] += int(count)
    busy = sum(n for category, n in counts.items() if category != WAITING)
    return {category: n / busy for category, n in counts.most_common() if category != WAITING} if busy else {}


def _spy(pid: int, duration: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy on ``pid`` for ``duration`` seconds (0: until interrupted with SIGINT)."""
    command = [
        str(Path(PYTHON).parent / "py-spy"),
        "record",
        "--pid",
        str(pid),
        *(["--duration", str(duration)] if duration else []),
        "--rate",
        str(RATE),
        "--nonblocking",
        "--format",
        "raw",
        "--output",
        str(out),
    ]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@dataclass
class DeliveryProfile:
    """Observes delivery rounds (``bench._delivery.run_rounds``): CPU per recipient and py-spy samples."""

    rounds: list[dict[str, float]] = field(default_factory=list)
    raw: dict[str, list[str]] = field(default_factory=dict)

    @contextmanager
    def __call__(self, pids: dict[str, list[int]], recipients: int) -> Iterator[None]:
        with tempfile.TemporaryDirectory() as spy_dir:
            spies: list[tuple[str, subprocess.Popen[bytes], Path]] = []
            for role, members in pids.items():
                for pid in members:
                    out = Path(spy_dir) / f"{role}-{pid}.txt"
                    spies.append((role, _spy(pid, 0, out), out))
            meter = CpuMeter(lambda: pids)
            with meter:
                yield
            for _, spy, _ in spies:
                spy.send_signal(signal.SIGINT)  # py-spy writes what it sampled when interrupted
            for role, spy, out in spies:
                spy.wait(timeout=60)
                if out.exists():
                    self.raw.setdefault(role, []).append(out.read_text())
                    keep = os.environ.get("BENCH_PROFILE_RAW")  # a directory to keep py-spy's collapsed stacks in
                    if keep:
                        Path(keep).mkdir(parents=True, exist_ok=True)
                        shutil.copy(out, Path(keep) / out.name)
        self.rounds.append({role: meter.seconds[role] * 1e6 / recipients for role in (*pids, "other")})

    def summary(self) -> dict[str, Any]:
        rules = {"workers": WORKER_RULES, "writers": DELIVERY_WRITER_RULES, "fake": FAKE_RULES}
        out: dict[str, Any] = {}
        for role in self.rounds[0] if self.rounds else ():
            figures = sorted(r[role] for r in self.rounds)
            entry: dict[str, Any] = {"cpu_us_per_recipient_median": round(figures[len(figures) // 2], 1)}
            if role in self.raw and role in rules:
                entry["shares"] = {
                    c: round(share, 3) for c, share in shares("\n".join(self.raw[role]), rules[role]).items()
                }
            out[role] = entry
        return out


def profile_delivery(target: str) -> Report:
    observer = DeliveryProfile()
    if target == "fcm":
        from bench import bench_delivery

        bench_delivery.main(observe=observer)
    else:
        from bench import bench_messages

        # ``nhn-pg``, ``solapi-pg``: on PostgreSQL, one worker's rounds and then two workers' (both profiled);
        # ``nhn-broadcast``, ``solapi-broadcast`` (``-pg``): a broadcast's slice.
        gateway, *rest = target.split("-")
        bench_messages.delivery(
            gateway,
            engine="pg" if "pg" in rest else "sqlite",
            observe=observer,
            shape="broadcast" if "broadcast" in rest else "trigger",
        )
    summary = observer.summary()
    for role, entry in summary.items():
        print(f"  [profile delivery {target}] {role}: {entry['cpu_us_per_recipient_median']:.0f} µs per recipient")
        for category, share in entry.get("shares", {}).items():
            print(f"      {share:6.1%}  {category}")
    return Report(
        name=f"profile_delivery_{target}",
        command=f"python -m bench.bench_profile delivery {target}",
        target="(no target: where each recipient's CPU goes, by process)",
        met=True,
        summary=summary,
    )


def profile(engine: str) -> Report:
    url = _pg_database() if engine == "pg" else None
    try:
        with workdir(f"profile-{engine}") as tmp:
            data = tmp / "data"
            env = {"MAGPIE_DATABASE_URL": url, "MAGPIE_SECRET_KEY": "A" * 43} if url else {}
            key = magpie_cli("env", "create", "bench", data_dir=data, env=env)["apiKey"]
            server = magpie_serve(data_dir=data, port=free_port(), env=env)
            load = {"BENCH_KEY": key, "BENCH_USERS": str(USERS)}
            try:
                wrk(server.url + "/v1/properties", script="properties.lua", seconds=3, env=load)  # warm up
                # The writer is the child that worked during the warm-up (not multiprocessing's resource tracker).
                writer_pid = max(server.pids()[1:], key=cpu_seconds)
                duration = seconds()
                with tempfile.TemporaryDirectory() as spy_dir:
                    outputs = {"server": Path(spy_dir) / "server.txt", "writer": Path(spy_dir) / "writer.txt"}
                    result: dict[str, Any] = {}
                    with CpuMeter(lambda: {"server": [server.proc.pid], "writer": [writer_pid]}) as cpu:
                        spies = [
                            _spy(server.proc.pid, duration, outputs["server"]),
                            _spy(writer_pid, duration, outputs["writer"]),
                        ]
                        runner = threading.Thread(
                            target=lambda: result.update(
                                run=wrk(
                                    server.url + "/v1/properties",
                                    script="properties.lua",
                                    seconds=duration + 1,
                                    env=load,
                                )
                            )
                        )
                        runner.start()
                        for spy in spies:
                            spy.wait(timeout=duration + 60)
                        runner.join()
                    run = result["run"]
                    us = cpu.per_request_us(run.requests)
                    profiles = {
                        "server": shares(outputs["server"].read_text(), SERVER_RULES),
                        "writer": shares(outputs["writer"].read_text(), WRITER_RULES),
                    }
            finally:
                server.stop()
    finally:
        if url:
            _drop_pg(url)
    summary: dict[str, Any] = {"engine": engine, "requests_per_second": round(run.requests_per_second)}
    for process in ("server", "writer"):
        summary[process] = {
            "cpu_us_per_request": round(us[process], 1),
            "shares": {c: round(share, 3) for c, share in profiles[process].items()},
        }
        print(f"  [profile {engine}] {process}: {us[process]:.0f} µs of CPU per request; of its busy samples:")
        for category, share in profiles[process].items():
            print(f"      {share:6.1%}  {category}")
    return Report(
        name=f"profile_{engine}",
        command=f"python -m bench.bench_profile {engine}",
        target="(no target: where each property update's CPU goes)",
        met=True,
        summary=summary,
    )


def profile_experiments() -> Report:
    factor = float(os.environ.get("BENCH_EXPERIMENTS_SCALE", "0.05"))
    outcomes = max(bench.PER_DISPATCH, int(bench.OUTCOMES * factor) // bench.PER_DISPATCH * bench.PER_DISPATCH)
    users = max(1000, int(bench.USERS * factor))
    count = int(bench.EVENTS * factor) // 4
    summary: dict[str, Any] = {"scale": factor, "events_per_environment": count}
    with workdir("profile-experiments") as tmp:
        url = f"sqlite:///{tmp / 'magpie.db'}"
        store = bench.fill(url, outcomes=outcomes, users=users)
        rng = random.Random(7)
        for name in ("plain", "goal", "plain", "goal"):  # the first pair warms the caches
            events = bench._events(rng, count=count, users=users, now=store["now"], prefix=f"p-{name}-{rng.random()}")
            out = tmp / f"{name}.txt"
            spy = _spy(os.getpid(), 0, out)
            time.sleep(1)  # py-spy attaches
            rate, _ = bench.ingest(url, store["envs"][name], events)
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
            summary[name] = {
                "events_per_second": round(rate),
                "shares": {c: round(v, 3) for c, v in shares(out.read_text(), INGEST_RULES).items()},
            }
    for name in ("goal", "plain"):
        print(f"  [profile experiments] {name}: {summary[name]['events_per_second']} events/s; of its busy samples:")
        for category, share in summary[name]["shares"].items():
            print(f"      {share:6.1%}  {category}")
    return Report(
        name="profile_experiments",
        command=f"BENCH_EXPERIMENTS_SCALE={factor:g} python -m bench.bench_profile experiments",
        target="(no target: where event ingestion's CPU goes, with and without a conversion goal)",
        met=True,
        summary=summary,
    )


def main(argv: list[str]) -> list[Report]:
    if argv[:1] == ["experiments"]:
        report = profile_experiments()
        report.save()
        return [report]
    if argv[:1] == ["delivery"]:
        reports = [profile_delivery(target) for target in argv[1:] or ["fcm", "nhn", "solapi"]]
        for report in reports:
            report.save()
        return reports
    engines = argv or ["sqlite", "pg"]
    reports = [profile(engine) for engine in engines]
    for report in reports:
        report.save()
    return reports


if __name__ == "__main__":
    main(sys.argv[1:])
