"""Where a property update's CPU goes: a sampling profile of `magpie serve` under benchmark 1's load.

wrk sends the seed body (64 connections) while py-spy samples the server process and its writer
process without stopping them (``--nonblocking``). Each sample in which a process was not
waiting for work (py-spy leaves out threads blocked in a poll or on a lock; an fsync counts as
busy) is put in one category; the result is each category's share of those samples, beside the
process's CPU time per request read from ``/proc`` in the same run.

    python -m bench.bench_profile [sqlite|pg]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._harness import (
    PYTHON,
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


def _matches(frame: str, fragment: str, name: str | None) -> bool:
    function, _, where = frame.partition(" (")
    return fragment in where and (name is None or function.rsplit(".", 1)[-1] == name)


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
        counts[categorize(stack.split(";"), rules)] += int(count)
    busy = sum(n for category, n in counts.items() if category != WAITING)
    return {category: n / busy for category, n in counts.most_common() if category != WAITING} if busy else {}


def _spy(pid: int, duration: int, out: Path) -> subprocess.Popen[bytes]:
    command = [
        str(Path(PYTHON).parent / "py-spy"),
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(duration),
        "--rate",
        str(RATE),
        "--nonblocking",
        "--format",
        "raw",
        "--output",
        str(out),
    ]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


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


def main(argv: list[str]) -> list[Report]:
    engines = argv or ["sqlite", "pg"]
    reports = [profile(engine) for engine in engines]
    for report in reports:
        report.save()
    return reports


if __name__ == "__main__":
    main(sys.argv[1:])
